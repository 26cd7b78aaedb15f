"""Verifiers judge candidates with the shared ``Verdict`` (from ``ttc.core``).

Exact checkers (CountDown, Sudoku), math answer equivalence (``math``, math-verify) and
code run against tests in the sandbox (``code``)."""

from ttc.core.types import Verdict

from .code import (
           CodeVerifier,
           SandboxError,
           SandboxLimits,
           SandboxResult,
           SandboxUnavailableError,
           run_code_tests,
)
from .countdown import CountdownVerifier
from .math import MathVerifier
from .sudoku import SudokuVerifier

__all__ = ["CodeVerifier", "CountdownVerifier", "MathVerifier", "SandboxError", "SandboxLimits", "SandboxResult",
           "SandboxUnavailableError", "SudokuVerifier", "Verdict", "run_code_tests"]
