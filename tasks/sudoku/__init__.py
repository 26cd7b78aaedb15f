"""The Sudoku task: generator of uniquely solvable puzzles, exact solver (data and
references only), direct and backtracking-trace formats.

Problem shape (``ttc solve --task sudoku --problem JSON``)::

    {"grid": "1.3..6/..2.../....../....../...4../5.....", "size": 6, "id": "optional"}

``grid`` lists the cells row by row with ``.`` (or ``0`` / ``_``) for a blank; ``/``, ``|``,
commas and whitespace between cells are ignored, and a list of row strings is accepted too.
``size`` (4, 6, 8 or 9; boxes 2x2, 2x3, 2x4, 3x3) is optional when the cell count says it.
The givens must not conflict; uniqueness of the solution is not required of user input.

``SUDOKU`` is the task object strategies and the orchestrator use::

    from ttc.tasks.sudoku import SUDOKU
    problems = SUDOKU.make_problems(200, seed=0, split="test")
    text = SUDOKU.prompt(problems[0])            # "1.3..6/..2.../...:"
    verdict = SUDOKU.verifier.verify(problems[0], completion_text)
"""

from __future__ import annotations

from ttc.backends.errors import BadInputError
from ttc.tasks.registry import register_task
from ttc.verifiers.sudoku import SudokuVerifier, format_grid, parse_grid

from .formats import END, direct_completion, prompt, reference_solution, replay_trace, search_trace, training_example
from .generate import DEFAULT_GIVENS, MIN_GIVENS, SPLITS, make_problems, make_puzzle, split_of, train_puzzles, transform
from .solver import count_solutions, solve
from .steps import SudokuSteps

__all__ = [
    "SUDOKU",
    "SudokuTask",
    "DEFAULT_GIVENS",
    "MIN_GIVENS",
    "SPLITS",
    "make_problems",
    "make_puzzle",
    "split_of",
    "train_puzzles",
    "transform",
    "prompt",
    "direct_completion",
    "search_trace",
    "replay_trace",
    "training_example",
    "reference_solution",
    "solve",
    "count_solutions",
    "SudokuSteps",
]

#: Board size of the built-in models and of the held-out card measurements.
DEFAULT_SIZE = 6


class SudokuTask:
    """Sudoku as a task: problems, prompts, parsing of user input, verifier, stops.

    Attributes:
        name: "sudoku".
        verifier: A :class:`SudokuVerifier`.
        stop: Stop strings for sampling: every completion ends with ".".
    """

    name = "sudoku"
    formats = ("direct", "search")

    #: The model ``ttc solve`` uses when none is named.
    default_model = "sudoku-direct"

    #: Step structure of direct answers (one row per step), for ``tree_search``.
    steps = SudokuSteps()

    def __init__(self) -> None:
        self.verifier = SudokuVerifier()
        self.stop: tuple[str, ...] = (END,)

    def max_tokens(self, problem: dict | None = None, fmt: str = "direct") -> int:
        """Generation limit for the problem's board: a direct answer is the grid (size x
        (size+1) characters, about 90 tokens on 9x9); a search trace is long: 980, what the
        1,024-token context of ``sudoku-search`` leaves after a 6x6 prompt (traces were
        trained up to 1,000). Without a problem: the built-in 6x6 board."""
        size = DEFAULT_SIZE
        if isinstance(problem, dict):
            try:
                size = parse_grid(problem.get("grid"), problem.get("size"))[1]
            except (ValueError, TypeError):
                size = problem.get("size") if isinstance(problem.get("size"), int) else DEFAULT_SIZE
        return size * (size + 1) + 8 if fmt == "direct" else 980

    def make_problems(self, n: int, seed: int = 0, split: str = "test", size: int = DEFAULT_SIZE,
                      givens: int | None = None) -> list[dict]:
        """Seeded uniquely solvable puzzles; see :func:`generate.make_problems`."""
        try:
            return make_problems(n, seed=seed, split=split, size=size, givens=givens)
        except (ValueError, KeyError) as exc:
            raise BadInputError(str(exc)) from None

    def prompt(self, problem: dict, fmt: str = "direct", hint=None) -> str:
        """The prompt for a problem ("direct" or "search"); Sudoku takes no hints."""
        if hint is not None:
            raise BadInputError("the Sudoku formats take no hint")
        try:
            return prompt(problem, fmt)
        except ValueError as exc:
            raise BadInputError(str(exc)) from None

    def parse_problem(self, obj) -> dict:
        """Validates user JSON ``{"grid": "1.3..6/...", "size"?: 6, "id"?: str}``.

        Raises:
            BadInputError: With a one-line message naming what is wrong.
        """
        if not isinstance(obj, dict):
            raise BadInputError('a Sudoku problem is a JSON object like {"grid": "1.3..6/..2.../...", "size": 6}')
        unknown = set(obj) - {"id", "grid", "size", "givens"}
        if unknown:
            raise BadInputError(f"unknown field(s) in Sudoku problem: {', '.join(sorted(map(str, unknown)))}")
        if "grid" not in obj:
            raise BadInputError('a Sudoku problem needs "grid", e.g. {"grid": "1.3..6/..2.../...", "size": 6}')
        size = obj.get("size")
        if size is not None and (isinstance(size, bool) or not isinstance(size, int)):
            raise BadInputError(f'"size" must be an integer (4, 6, 8 or 9), got {size!r}')
        try:
            cells, size = parse_grid(obj["grid"], size)
        except ValueError as exc:
            raise BadInputError(f'bad "grid": {exc}') from None
        grid = format_grid(cells, size)
        pid = obj.get("id")
        if pid is None:
            pid = f"sd{size}-" + grid.replace("/", "")
        elif not isinstance(pid, (str, int)) or isinstance(pid, bool):
            raise BadInputError(f'"id" must be a string, got {type(pid).__name__}')
        return {"id": str(pid), "grid": grid, "size": size, "givens": sum(1 for v in cells if v)}

    def verify(self, problem: dict, text: str):
        """Shorthand for ``self.verifier.verify``."""
        return self.verifier.verify(problem, text)

    def canonical(self, problem: dict, text: str) -> str | None:
        """Shorthand for ``self.verifier.canonical``."""
        return self.verifier.canonical(problem, text)


SUDOKU = SudokuTask()
register_task(SUDOKU)
