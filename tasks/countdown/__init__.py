"""The CountDown task: generator, exact solver (data and references only), formats.

``COUNTDOWN`` is the task object strategies and the orchestrator use::

    from ttc.tasks.countdown import COUNTDOWN
    problems = COUNTDOWN.make_problems(200, seed=0, split="test")
    text = COUNTDOWN.prompt(problems[0])            # "48 27 5 81>30:"
    verdict = COUNTDOWN.verifier.verify(problems[0], completion_text)
"""

from __future__ import annotations

from ttc.backends.errors import BadInputError
from ttc.tasks.registry import register_task
from ttc.verifiers.countdown import CountdownVerifier

from .formats import END, follows_hint, hint_for, prompt, search_trace
from .reflective import REFLECTIVE_MAX_TOKENS
from .generate import HELD_OUT_TARGETS, SPLITS, make_problems, split_of
from .solver import format_steps, solvable, solve
from .steps import CountdownSteps

__all__ = [
    "COUNTDOWN",
    "CountdownTask",
    "HELD_OUT_TARGETS",
    "SPLITS",
    "make_problems",
    "split_of",
    "prompt",
    "search_trace",
    "hint_for",
    "follows_hint",
    "solve",
    "solvable",
    "format_steps",
]

_MAX_GIVEN = 10**6


class CountdownTask:
    """CountDown as a task: problems, prompts, parsing of user input, verifier, stops.

    Attributes:
        name: "countdown".
        verifier: A :class:`CountdownVerifier`.
        stop: Stop strings for sampling: every completion ends its answer with ".".
    """

    name = "countdown"
    formats = ("direct", "search", "reflective")

    #: The model ``ttc solve`` uses when none is named.
    default_model = "countdown-direct"

    #: Step structure of direct answers, for ``tree_search`` (constraint checks only, no solver).
    steps = CountdownSteps()

    def __init__(self) -> None:
        self.verifier = CountdownVerifier()
        self.stop: tuple[str, ...] = (END,)

    def max_tokens(self, problem: dict | None = None, fmt: str = "direct") -> int:
        """Generation limit per format: a direct answer is three short lines (one more step
        per number past four); a search trace runs to the 1,024-token context
        ``countdown-search`` was trained for, a reflective one to the 512-token context of
        ``countdown-reflective`` (less its prompt)."""
        if fmt == "reflective":
            return REFLECTIVE_MAX_TOKENS
        if fmt != "direct":
            return 1024
        extra = max(0, len(problem.get("numbers", ())) - 4) if isinstance(problem, dict) else 0
        return 64 + 16 * extra

    def make_problems(self, n: int, seed: int = 0, split: str = "test", n_numbers: int = 4) -> list[dict]:
        """Seeded problems of the paper's distribution; see :func:`generate.make_problems`."""
        try:
            return make_problems(n, seed=seed, split=split, n_numbers=n_numbers)
        except ValueError as exc:
            raise BadInputError(str(exc)) from None

    def prompt(self, problem: dict, fmt: str = "direct", hint: str | int | None = None) -> str:
        """The prompt for a problem ("direct", with an optional hint, "search" or "reflective").

        A problem may carry its own ``hint`` (a first operation or an intermediate value,
        e.g. from an upstream stage of a task graph); the direct format then conditions on it."""
        if hint is None and fmt == "direct":
            hint = problem.get("hint")
        try:
            return prompt(problem, fmt, hint)
        except ValueError as exc:
            raise BadInputError(str(exc)) from None

    def parse_problem(self, obj) -> dict:
        """Validates user JSON ``{"numbers": [...], "target": N, "id"?: str}``.

        Raises:
            BadInputError: With a one-line message naming what is wrong.
        """
        if not isinstance(obj, dict):
            raise BadInputError('a CountDown problem is a JSON object like {"numbers": [3, 5, 7], "target": 22}')
        unknown = set(obj) - {"id", "numbers", "target", "hint"}
        if unknown:
            raise BadInputError(f"unknown field(s) in CountDown problem: {', '.join(sorted(map(str, unknown)))}")
        nums, target = obj.get("numbers"), obj.get("target")
        if not isinstance(nums, list) or not nums:
            raise BadInputError('"numbers" must be a non-empty list of positive integers')
        if not 2 <= len(nums) <= 6:
            raise BadInputError(f'"numbers" must hold 2 to 6 numbers, got {len(nums)}')
        for n in nums:
            if isinstance(n, bool) or not isinstance(n, int) or not 0 < n <= _MAX_GIVEN:
                raise BadInputError(f'"numbers" must be positive integers up to {_MAX_GIVEN}, got {n!r}')
        if isinstance(target, bool) or not isinstance(target, int) or not 0 < target <= _MAX_GIVEN:
            raise BadInputError(f'"target" must be a positive integer up to {_MAX_GIVEN}, got {target!r}')
        pid = obj.get("id")
        if pid is None:
            pid = "cd-" + "-".join(map(str, nums)) + f"-to-{target}"
        elif not isinstance(pid, (str, int)) or isinstance(pid, bool):
            raise BadInputError(f'"id" must be a string, got {type(pid).__name__}')
        out = {"id": str(pid), "numbers": list(nums), "target": target}
        hint = obj.get("hint")
        if hint is not None:
            if isinstance(hint, bool) or not isinstance(hint, (str, int)) or (isinstance(hint, str) and (
                    not hint or len(hint) > 64 or any(c in hint for c in ":|\n>"))):
                raise BadInputError(f'"hint" must be a first operation like "81-48=33" or a number, got {hint!r}')
            out["hint"] = hint
        return out

    def verify(self, problem: dict, text: str):
        """Shorthand for ``self.verifier.verify``."""
        return self.verifier.verify(problem, text)

    def canonical(self, problem: dict, text: str) -> str | None:
        """Shorthand for ``self.verifier.canonical``."""
        return self.verifier.canonical(problem, text)


COUNTDOWN = CountdownTask()
register_task(COUNTDOWN)
