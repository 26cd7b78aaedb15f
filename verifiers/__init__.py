"""Verifiers judge candidates; ``Verdict`` is their shared result type."""

from .countdown import CountdownVerifier
from .sudoku import SudokuVerifier
from .verdict import Verdict

__all__ = ["Verdict", "CountdownVerifier", "SudokuVerifier"]
