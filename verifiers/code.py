"""Code verifier: runs a candidate program against tests in the sandbox.

Candidate code is untrusted (DESIGN "Trust": code from a model runs only in the sandbox), so
it runs only through :func:`run_code_tests`, which isolates it in namespaces and cgroups
(see :mod:`ttc.verifiers._sandbox` for what is enforced). The tests run after the program
in the same namespace, as one script; the candidate passes when the whole script
completes. The verdict is read from a result the harness writes with a per-run nonce,
never from an exit code: ``os._exit(0)`` or ``sys.exit`` cannot pass a candidate. The
nonce cannot stop in-process forgery: code running in the harness's process can fake
results without it (an object whose ``__eq__`` is always true passes
``assert f(x) == y``), or read the nonce from memory.

A problem for :class:`CodeVerifier` is ``{"id", "tests": str, "prefix"?: str}``: ``prefix``
(e.g. imports or a function signature) goes before the candidate's code. Task families
with their own layout (HumanEval) subclass it and override :meth:`CodeVerifier.program`
and :meth:`CodeVerifier.tests`.
"""

from __future__ import annotations

import ast
import hashlib
import re

from ttc.backends.errors import BadInputError
from ttc.core.types import Verdict

from ._sandbox import (
    SandboxError,
    SandboxLimits,
    SandboxResult,
    SandboxUnavailableError,
    Status,
    run_sandboxed,
)

__all__ = ["CodeVerifier", "SandboxError", "SandboxLimits", "SandboxResult", "SandboxUnavailableError", "Status",
           "extract_code", "normalize_code", "run_code_tests"]

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)```", re.DOTALL)


def run_code_tests(program: str, tests: str, *, timeout: float = 10.0,
                   limits: SandboxLimits | None = None) -> SandboxResult:
    """Runs ``program`` then ``tests`` as one script in the sandbox.

    Args:
        program: The candidate code.
        tests: Code run after it in the same namespace.
        timeout: Wall-clock and CPU-time limit in seconds (ignored when ``limits`` is given).
        limits: All limits of the run.

    Returns:
        The verdict (``status`` passed, failed, timeout, crashed or limit_exceeded).

    Raises:
        SandboxUnavailableError: Isolation cannot be set up here; nothing was run.
        SandboxError: The sandbox itself failed.
    """
    return run_sandboxed(program, tests, limits or SandboxLimits(timeout=timeout))


def extract_code(text: str, prefer: str | None = None) -> str:
    """The code in a model's reply: a fenced block if there is one, else the text itself.

    Among fenced blocks, the last one tagged python (or untagged) wins, unless one mentions
    ``prefer`` (e.g. ``def entry_point(``), in which case the last of those does.
    """
    blocks = [(tag.lower(), body) for tag, body in _FENCE.findall(text)]
    python = [body for tag, body in blocks if tag in ("", "python", "py", "python3")]
    if not python:
        return text
    if prefer:
        chosen = [body for body in python if prefer in body]
        if chosen:
            return chosen[-1]
    return python[-1]


def normalize_code(code: str) -> str | None:
    """The code with formatting and comments normalised away (``ast.unparse``), or None
    when it does not parse."""
    try:
        return ast.unparse(ast.parse(code))
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None


class CodeVerifier:
    """Judges code candidates by running them against the problem's tests in the sandbox.

    Args:
        limits: Limits of each run (default: 10 s, 512 MiB, 64 processes).
    """

    def __init__(self, limits: SandboxLimits | None = None):
        self.limits = limits or SandboxLimits()

    def program(self, problem: dict, text: str) -> str:
        """The program to run for candidate ``text``: the problem's prefix and the code."""
        code = extract_code(text)
        prefix = problem.get("prefix") or ""
        return f"{prefix}\n{code}" if prefix else code

    def tests(self, problem: dict) -> str:
        """The test script run after the program."""
        tests = problem.get("tests")
        if not isinstance(tests, str):
            raise BadInputError("a code problem needs its tests as text under 'tests'")
        return tests

    def run(self, problem: dict, text: str) -> SandboxResult:
        """The sandbox's full result for candidate ``text``."""
        return run_sandboxed(self.program(problem, text), self.tests(problem), self.limits)

    def verify(self, problem: dict, text: str, ctx=None) -> Verdict:
        """Runs the candidate; correct when its tests ran to the end.

        Raises:
            SandboxUnavailableError: Isolation cannot be set up (nothing is run unconfined).
        """
        result = self.run(problem, text)
        return Verdict(correct=result.passed, score=1.0 if result.passed else 0.0,
                       reason=f"{result.status}: {result.reason}", answer=extract_code(text))

    def canonical(self, problem: dict, text: str) -> str | None:
        """A hash of the normalised program (equal for code that differs only in layout and
        comments), or None when the code does not parse."""
        norm = normalize_code(self.program(problem, text))
        return None if norm is None else "code:" + hashlib.sha256(norm.encode()).hexdigest()[:24]
