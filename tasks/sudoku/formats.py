"""Sudoku prompts and the two completion formats.

Grids are written row by row, rows joined by ``/``, blanks as ``.``. Cells are named by
their 1-based row and column digits (``35`` = row 3, column 5). Every completion ends with
``.`` (the stop string).

Prompt (the puzzle grid, then a format mark)::

    direct:  "1.3..6/..2.../....../....../...4../5.....:"
    search:  "1_3__6/__2___/______/______/___4__/5_____?\n"   (blanks "_": "." is the stop)

Direct completion: the filled grid, ``"153426/462315/.../...".``

Search trace: depth-first search with constraint propagation and explicit undo, written
as a sequence of whole grids, one per line. Each grid line is the previous one with every
cell that had a single candidate filled in at once, so a line can be checked cell by cell
against the line above it (the same column offset), the one computation a small model
learned to do on the direct format. Other lines::

    41?36       no cell has a single candidate: branch on the cell with the fewest
                (ties: reading order); the next grid line places the first of them
    x           the last grid is dead: an empty cell without candidates or a repeated digit
    <41=6       undo back to the grid before the branch at r4c1 and place its next
                candidate; the next line is that grid with it placed
    A:153426/462315/...   the first complete, valid grid, then "."

A branch whose candidates are exhausted is undone as a whole and the search resumes at the
branch before it. Traces longer than ``max_chars`` are not written (None), so training
data holds only traces that fit. (A first trace format listed single placements like
``23=4``; a model trained 35 minutes on it never learned which cells were filled.)
"""

from __future__ import annotations

import random
import re

from ttc.verifiers.sudoku import format_grid, grid_errors, parse_grid

from .solver import candidates_mask, solve

__all__ = [
    "END",
    "prompt",
    "direct_completion",
    "search_trace",
    "replay_trace",
    "training_example",
]

END = "."


def _grid(problem: dict) -> tuple[list[int], int]:
    return parse_grid(problem["grid"], problem.get("size"))


def prompt(problem: dict, fmt: str = "direct") -> str:
    """The prompt text for a problem (``"direct"`` or ``"search"``)."""
    cells, size = _grid(problem)
    if fmt == "direct":
        return format_grid(cells, size) + ":"
    if fmt == "search":
        return _trace_grid(cells, size) + "?\n"
    raise ValueError(f"unknown format {fmt!r}; expected 'direct' or 'search'")


def direct_completion(solution: list[int], size: int) -> str:
    """The filled grid and the end mark."""
    return format_grid(solution, size) + END


def _trace_grid(cells: list[int], size: int) -> str:
    """A grid as search prompts and traces write it: blanks as "_", since "." ends a
    completion (the stop string) and would cut a trace at its first blank."""
    return format_grid(cells, size).replace(".", "_")


def _name(i: int, size: int) -> str:
    return f"{i // size + 1}{i % size + 1}"


def _dead(cells: list[int], size: int, masks: list[int]) -> bool:
    """True when a grid repeats a digit in a unit or has an empty cell with no candidate
    (``masks``: its :func:`candidates_mask`, all zero when a digit repeats)."""
    if all(m == 0 for m in masks):
        return not all(cells) or bool(grid_errors(cells, size))
    return any(m == 0 and not v for m, v in zip(masks, cells))


def search_trace(cells: list[int], size: int, max_chars: int = 1000) -> str | None:
    """The DFS trace of a puzzle that ends in its solution, or None (no solution, or the
    trace would be longer than ``max_chars`` characters = tokens)."""
    cells = list(cells)
    lines: list[str] = []
    chars = 0
    # Open branches: [cell, grid before the branch, candidates not tried yet].
    stack: list[tuple[int, list[int], list[int]]] = []

    def emit(line: str) -> bool:
        nonlocal chars
        lines.append(line)
        chars += len(line) + 1
        return chars <= max_chars

    while True:
        if all(cells) and not grid_errors(cells, size):
            break
        masks = candidates_mask(cells, size)
        if _dead(cells, size, masks):
            if not emit("x"):
                return None
            while stack and not stack[-1][2]:
                stack.pop()
            if not stack:
                return None  # no solution
            cell, before, rest = stack[-1]
            cells = list(before)
            cells[cell] = rest.pop(0)
            if not (emit(f"<{_name(cell, size)}={cells[cell]}") and emit(_trace_grid(cells, size))):
                return None
            continue
        singles = {i: m.bit_length() - 1 for i, m in enumerate(masks) if not cells[i] and m.bit_count() == 1}
        if singles:
            for i, v in singles.items():
                cells[i] = v
        else:
            best = min((i for i, v in enumerate(cells) if not v), key=lambda i: (masks[i].bit_count(), i))
            vals = [d for d in range(1, size + 1) if masks[best] >> d & 1]
            if not emit(f"{_name(best, size)}?{''.join(map(str, vals))}"):
                return None
            stack.append((best, list(cells), vals[1:]))
            cells[best] = vals[0]
        if not emit(_trace_grid(cells, size)):
            return None
    text = "\n".join(lines + [f"A:{format_grid(cells, size)}{END}"])
    return text if len(text) <= max_chars else None


_GRID_LINE = re.compile(r"^[1-9_.]+(/[1-9_.]+)*$")
_OTHER_LINE = re.compile(r"^(x|<[1-9][1-9]=[1-9]|[1-9][1-9]\?[1-9]+)$")


def replay_trace(problem: dict, text: str) -> dict:
    """Reads a trace back and checks each grid line against the puzzle.

    Returns:
        ``{"grids": n, "lines": n, "well_formed": bool, "legal": bool, "answer": str | None}``:
        ``well_formed`` when every line is a grid, a branch, an undo or a dead-end mark;
        ``legal`` when every grid keeps the givens and only fills cells (never changes a
        digit of the grid it continues, except after an undo); ``answer`` is the ``A:``
        grid as written (without the end mark).
    """
    given, size = _grid(problem)
    prev = list(given)
    well_formed = legal = True
    answer = None
    n = grids = 0
    undo = False
    for raw in text.split("\n"):
        line = raw.strip()
        if not line:
            continue
        n += 1
        if line.startswith("A:"):
            answer = line[2:].rstrip(END)
            break
        if _OTHER_LINE.match(line):
            undo = undo or line.startswith("<")
            continue
        if not _GRID_LINE.match(line):
            well_formed = False
            continue
        # Read digit by digit: a grid that repeats a digit is a dead state, not malformed.
        digits = line.replace("/", "")
        if len(digits) != size * size:
            well_formed = False
            continue
        cells = [0 if c in "._" else int(c) for c in digits]
        grids += 1
        if any(g and c != g for g, c in zip(given, cells)):
            legal = False
        if not undo and any(p and c != p for p, c in zip(prev, cells)):
            legal = False
        prev, undo = cells, False
    return {"grids": grids, "lines": n, "well_formed": well_formed, "legal": legal, "answer": answer}


def training_example(
    cells: list[int], solution: list[int], size: int, fmt: str, max_chars: int = 1000
) -> tuple[str, str] | None:
    """(prompt, completion) for one puzzle in "direct" or "search" format (None: the trace
    does not fit in ``max_chars``)."""
    problem = {"grid": format_grid(cells, size), "size": size}
    if fmt == "search":
        trace = search_trace(cells, size, max_chars=max_chars)
        return None if trace is None else (prompt(problem, "search"), trace)
    if fmt != "direct":
        raise ValueError(f"unknown format {fmt!r}")
    return prompt(problem, "direct"), direct_completion(solution, size)


def reference_solution(problem: dict, rng: random.Random | None = None) -> list[int] | None:
    """The (unique) solution of a problem, for references and data only."""
    cells, size = _grid(problem)
    return solve(cells, size, rng)
