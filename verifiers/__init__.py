"""Verifiers judge candidates with the shared ``Verdict`` (from ``ttc.core``)."""

from ttc.core.types import Verdict

from .countdown import CountdownVerifier
from .sudoku import SudokuVerifier

__all__ = ["Verdict", "CountdownVerifier", "SudokuVerifier"]
