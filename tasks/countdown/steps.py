"""CountDown's step structure, for step-level search (``strategies.tree_search``).

A direct completion is a list of steps separated by "," and ended by "."::

    "18 49 35 17>25:"  ->  "18+17=35,35*35=1225,1225/49=25."

(each step may carry the numbers it leaves, ``81-48=33:27 5 33``, which is ignored here as
by the verifier). :class:`CountdownSteps` tells a search controller where steps end and
which partial answers are already hopeless, from the problem's constraints alone: every
operand must be a number still available, every result a positive integer (exact
division) equal to what the step writes, and once one number is left it must be the
target. It never solves the problem and never looks at a reference answer.
"""

from __future__ import annotations

import re
from collections import Counter

from .._steps import split_steps
from .formats import END

__all__ = ["CountdownSteps", "DELIMITER"]

DELIMITER = ","

# The verifier's step syntax (verifiers/countdown.py): "a op b = r", optionally in
# parentheses, optionally followed by the numbers it leaves (":27 5 33").
_STEP = re.compile(r"\s*\(?\s*([0-9]{1,10})\s*([-+*/])\s*([0-9]{1,10})\s*\)?\s*=\s*([0-9]{1,16})(?:\s*:[0-9 ]*)?\s*")
_TRANS = str.maketrans({"×": "*", "x": "*", "X": "*", "÷": "/", "−": "-", "–": "-"})
_MAX_VALUE = 10**15  # the verifier's cap on intermediate values


def _apply(a: int, op: str, b: int) -> int | None:
    """The value of one legal CountDown operation, or None when the rules forbid it."""
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
            if "\n" in step:
                return None  # not a step: the verifier would read only the last line
            m = _STEP.fullmatch(step.translate(_TRANS))
            if m is None:
                return None
            a, op, b, claimed = int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4))
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
