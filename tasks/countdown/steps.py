"""CountDown's step structure, for step-level search (``strategies.tree_search``).

A direct completion is a list of steps separated by "," and ended by "."::

    "18 49 35 17>25:"  ->  "18+17=35,35*35=1225,1225/49=25."

(each step may carry the numbers it leaves, ``81-48=33:27 5 33``, which is ignored here as
by the verifier, whose parser reads each step). :class:`CountdownSteps` tells a search
controller where steps end and which partial answers are already hopeless, from the
problem's constraints alone: every operand must be a number still available, every result
a positive integer (exact division) equal to what the step writes, and once one number is
left it must be the target. It never solves the problem and never looks at a reference
answer.
"""

from __future__ import annotations

from collections import Counter

from ttc.verifiers.countdown import parse_answer

from .._steps import split_steps
from .formats import END

__all__ = ["CountdownSteps", "DELIMITER"]

DELIMITER = ","

_MAX_VALUE = 10**15  # the verifier's cap on intermediate values


def _read_step(step: str) -> tuple[int, str, int, int] | None:
    """``(a, op, b, claimed)`` of one step as the verifier reads it, or None when the
    verifier would not read this text as exactly one step.

    The verifier reads only the last line of an answer and only what follows an ``A:``,
    and cannot read an answer with a "." inside it: a step holding any of them is no step.
    """
    if "\n" in step or "A:" in step or "." in step:
        return None
    parsed = parse_answer(step)
    if parsed is None or not parsed.steps or len(parsed.steps) != 1:
        return None
    return parsed.steps[0]


def _apply(a: int, op: str, b: int) -> int | None:
    """The value of one legal CountDown operation, or None when the rules forbid it.

    The verifier's rules (its private ``_apply``), kept here until it exposes them.
    """
    if op == "+":
        r = a + b
    elif op == "-":
        r = a - b
    elif op == "*":
        r = a * b
    else:
        if b == 0 or a % b:
            return None
        r = a // b
    return r if 0 < r <= _MAX_VALUE else None


class CountdownSteps:
    """The step structure of CountDown answers (direct format).

    Attributes:
        delimiter: Ends a step that is not the last (",").
        end: Ends the answer (".", the task's stop string).
        formats: Prompt formats whose completions are made of such steps.
        step_tokens: A generous token limit for one step (character tokens).
    """

    delimiter = DELIMITER
    end = END
    formats = ("direct",)
    step_tokens = 32

    def parse(self, partial_text: str) -> list[str]:
        """The steps written so far: ``"3*5=15,15+7=22."`` -> ``["3*5=15", "15+7=22"]``.

        A trailing delimiter or end marker (and surrounding blanks) is dropped; empty
        steps are kept as ``""`` so that a malformed answer stays malformed.
        """
        return split_steps(partial_text, self.delimiter, self.end)

    def _pool(self, problem: dict, partial_text: str) -> Counter | None:
        """Numbers left after the written steps, or None when a step breaks a rule."""
        pool = Counter(int(n) for n in problem["numbers"])
        for step in self.parse(partial_text):
            read = _read_step(step)
            if read is None:
                return None
            a, op, b, claimed = read
            for x in (a, b):
                if pool[x] <= 0:
                    return None  # not available (never given, or already used)
                pool[x] -= 1
            value = _apply(a, op, b)
            if value is None or value != claimed:
                return None
            pool[value] += 1
        return +pool

    def dead_end(self, problem: dict, partial_text: str) -> bool:
        """True when no continuation of ``partial_text`` can be a correct answer.

        Checks the constraints only: a malformed step, an operand that is not
        available, a result that is not a positive integer or not what the step says,
        or one number left that is not the target.
        """
        pool = self._pool(problem, partial_text)
        if pool is None:
            return True
        left = sum(pool.values())
        return left == 1 and pool[int(problem["target"])] != 1

    def complete(self, text: str, problem: dict | None = None) -> bool:
        """True when ``text`` is a finished answer.

        Without a problem: the text ends with the end marker. With one, also when the
        steps written leave a single number, so no further step can follow (backends
        drop the stop string, so which of "," and "." ended a step is not visible).
        """
        if text.rstrip().endswith(self.end) and self.parse(text):
            return True
        if problem is None:
            return False
        pool = self._pool(problem, text)
        return pool is not None and sum(pool.values()) == 1

    def max_steps(self, problem: dict) -> int:
        """Steps in a complete answer: each one combines two numbers into one."""
        return max(1, len(problem["numbers"]) - 1)
