"""Verifiers judge candidates with the shared ``Verdict`` (from ``ttc.core``).

Exact checkers (CountDown, Sudoku, stateful arithmetic), math answer equivalence (``math``, math-verify),
code run against tests in the sandbox (``code``) and an LLM judge scoring against a rubric
(``judge``)."""

from ttc.core.types import Verdict

from .code import (
           CodeVerifier,
           SandboxError,
           SandboxLimits,
           SandboxResult,
           SandboxUnavailableError,
           run_code_tests,
)
from .arith import ArithVerifier
from .countdown import CountdownVerifier
from .judge import JudgeVerifier
from .math import MathVerifier
from .sudoku import SudokuVerifier

__all__ = ["ArithVerifier", "CodeVerifier", "CountdownVerifier", "JudgeVerifier", "MathVerifier", "SandboxError", "SandboxLimits",
           "SandboxResult", "SandboxUnavailableError", "SudokuVerifier", "Verdict", "run_code_tests"]
