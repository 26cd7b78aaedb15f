"""Math answers: final-answer extraction and equivalence with ``math-verify``.

:func:`extract_answer` reads the final answer of a solution: the last ``\\boxed{...}``
(nested braces included), else the last "answer:" / "the answer is" line, else the last
number. :func:`equivalent` decides whether two answers are the same mathematical object
with `math-verify <https://github.com/huggingface/Math-Verify>`_ (``1/2`` = ``0.5`` =
``\\frac{1}{2}``, ``\\{1,2\\}`` = ``\\{2,1\\}``, ``[1,2)`` != ``(1,2)``).

math-verify bounds its own work with ``signal.alarm``, which raises outside the main
thread, so it is always called here with ``parsing_timeout=None, timeout_seconds=None``
and bounded by our own timeout instead: the work runs in a daemon thread the caller stops
waiting for. A comparison that times out is undecided (``correct=None``); at most
:data:`MAX_STUCK` timed-out comparisons may still be running before new ones are refused.

A problem is ``{"id", "answer": "..."}``: the reference answer of a graded benchmark.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from ttc.backends.errors import RunFailure
from ttc.core.types import Verdict

__all__ = ["MAX_STUCK", "MathVerifier", "canonical_answer", "equivalent", "extract_answer"]

#: Timed-out comparisons still running (their threads cannot be stopped) before new ones are refused.
MAX_STUCK = 8
_MAX_ANSWER = 1000  # longer "answers" are compared as text only: sympy on them may never end
_BOX = re.compile(r"\\(?:boxed|fbox)\s*\{")
_ANSWER_LINE = re.compile(r"\b(?:final\s+answer|answer)\s*(?:is\s*:?|:)\s*(.+)", re.IGNORECASE)
_NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?(?:\s*/\s*\d+)?|-?\.\d+")

_lock = threading.Lock()
_stuck = 0


class _TimedOut(Exception):
    pass


def _boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` whose braces close, or None."""
    found = None
    for m in _BOX.finditer(text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            c = text[i]
            if c == "\\":
                i += 2  # \{ and \} are literal braces, not groups
                continue
            depth += (c == "{") - (c == "}")
            i += 1
        if depth == 0:
            found = text[m.end(): i - 1]
    return found


def _clean(answer: str) -> str:
    answer = answer.strip().strip("*").strip().rstrip(".").strip()
    if answer.startswith("$") and answer.endswith("$") and len(answer) > 1:
        answer = answer.strip("$").strip()
    answer = re.sub(r"^\\\(|\\\)$|^\\\[|\\\]$", "", answer).strip()
    return answer.rstrip(".").strip()


def extract_answer(text: str) -> str | None:
    """The final answer in a solution text, or None when there is none.

    Order: the last ``\\boxed{...}``/``\\fbox{...}``; else the last line saying "answer:" or
    "the answer is"; else the last number (``1,000``, ``-2.5``, ``3/4``).
    """
    if not isinstance(text, str):
        return None
    boxed = _boxed(text)
    if boxed is not None and boxed.strip():
        return _clean(boxed)
    lines = [m.group(1) for ln in text.splitlines() if (m := _ANSWER_LINE.search(ln))]
    if lines and _clean(lines[-1]):
        return _clean(lines[-1])
    numbers = _NUMBER.findall(text)
    return re.sub(r"\s+", "", numbers[-1]).replace(",", "") if numbers else None


def _bounded(fn: Callable[..., Any], *args: Any, timeout: float) -> Any:
    """``fn(*args)`` in a daemon thread; raises _TimedOut when it takes longer than ``timeout``."""
    global _stuck
    with _lock:
        if _stuck >= MAX_STUCK:
            raise _TimedOut(f"{_stuck} earlier comparisons are still running")
    box: dict[str, Any] = {}
    done = threading.Event()

    def work() -> None:
        global _stuck
        try:
            box["value"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            box["error"] = exc
        finally:
            with _lock:
                done.set()
                if box.get("late"):
                    _stuck -= 1

    threading.Thread(target=work, daemon=True, name="ttc-math-verify").start()
    if not done.wait(timeout):
        with _lock:
            if not done.is_set():
                box["late"] = True
                _stuck += 1
                raise _TimedOut(f"no decision within {timeout:g} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


class _QuietTimeoutWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Timeout is disabled" not in record.getMessage()


@lru_cache(maxsize=1)
def _mv() -> Any:
    try:
        import math_verify
    except ImportError as exc:
        raise RunFailure("math-verify is not installed (pip install math-verify)") from exc
    for name in ("math_verify.parser", "math_verify.grader"):
        logging.getLogger(name).addFilter(_QuietTimeoutWarning())
    return math_verify


@lru_cache(maxsize=4096)
def _parse(answer: str) -> tuple:
    if len(answer) > _MAX_ANSWER:
        return ()
    return tuple(_mv().parse(f"${answer}$", parsing_timeout=None))


def _same(gold: str, answer: str) -> bool:
    g, a = _parse(gold), _parse(answer)
    if g and a:
        return bool(_mv().verify(list(g), list(a), timeout_seconds=None))
    return _norm(gold) == _norm(answer)


def _norm(answer: str) -> str:
    s = re.sub(r"\\(?:left|right|displaystyle|,|!|;)|\s+", "", answer)
    return s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").lower()


def equivalent(gold: str, answer: str, timeout: float = 5.0) -> bool | None:
    """Whether ``answer`` is mathematically ``gold`` (math-verify; ``gold`` is the reference,
    the relation is not symmetric). None when no decision came within ``timeout`` seconds.
    Safe to call from any thread."""
    try:
        return _bounded(_same, str(gold), str(answer), timeout=timeout)
    except _TimedOut:
        return None


def _canonical(answer: str) -> str:
    import sympy

    if re.fullmatch(r"[A-Za-z]{2,}", answer.strip()):
        return _norm(answer)  # a word, not a product of symbols
    for expr in _parse(answer):
        if not isinstance(expr, sympy.Basic):
            continue
        if expr.is_number and expr.is_real:
            value = sympy.N(expr, 20)
            if value.is_Integer or (value.is_Float and value == int(value) and abs(value) < 10**15):
                return str(int(value))
            return format(round(float(value), 6), ".15g")
        return str(sympy.simplify(expr))
    return _norm(answer)


def canonical_answer(answer: str, timeout: float = 5.0) -> str:
    """A key equal for answers math-verify would call equal in the common cases (numbers are
    rounded to 6 decimals, like its comparison; other expressions simplified); a normalised
    string when they do not parse or time out. Voting keys only: :func:`equivalent` decides."""
    try:
        return _bounded(_canonical, answer, timeout=timeout)
    except _TimedOut:
        return _norm(answer)
    except Exception:  # noqa: BLE001 - sympy can fail in many ways on odd input
        return _norm(answer)


class MathVerifier:
    """Judges math solutions by their final answer against the problem's reference answer.

    Args:
        timeout: Seconds one equivalence check may take before it is undecided.
    """

    def __init__(self, timeout: float = 5.0):
        self.timeout = timeout

    def verify(self, problem: dict, text: str, ctx=None) -> Verdict:
        """Correct when the extracted answer is equivalent to ``problem["answer"]``; None when
        the check timed out or the problem has no reference answer."""
        answer = extract_answer(text)
        gold = problem.get("answer") if isinstance(problem, dict) else None
        if answer is None:
            return Verdict(correct=False, score=0.0, reason="no final answer found")
        if gold is None or str(gold).strip() == "":
            return Verdict(correct=None, score=0.0, reason="the problem has no reference answer", answer=answer)
        same = equivalent(str(gold), answer, self.timeout)
        if same is None:
            return Verdict(correct=None, score=0.0, reason=f"equivalence check timed out ({self.timeout:g} s)",
                           answer=answer)
        reason = f"{answer} {'equals' if same else 'differs from'} the reference {gold}"
        return Verdict(correct=same, score=1.0 if same else 0.0, reason=reason[:300], answer=answer)

    def canonical(self, problem: dict, text: str) -> str | None:
        """The voting key of the extracted answer (:func:`canonical_answer`), or None."""
        answer = extract_answer(text)
        return None if answer is None else canonical_answer(answer, self.timeout)
