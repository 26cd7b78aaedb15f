"""Sudoku prompts and the two completion formats.

Grids are written row by row, rows joined by ``/``, blanks as ``.``. Cells are named by
their 1-based row and column digits (``35`` = row 3, column 5). Every completion ends with
``.`` (the stop string).

Prompt::

    direct:  "1.3..6/..2.../....../....../...4../5.....:"
    search:  "11=1\\n13=3\\n16=6\\n23=2\\n54=4\\n61=5\\n?\\n"

The search prompt lists the givens in the trace's own placement notation (one ``rc=v``
line each, reading order), so that the state the model must track (givens and placements
alike) is addressed the same way: by row and column digits, not by position in a grid. A
first trial with the grid in the prompt (10 minutes of training) learned the line format
but not the placements.

Direct completion: the filled grid, ``"153426/462315/.../...".``

Search trace: constraint-ordered depth-first search with explicit undo. At every node the
empty cell with the fewest candidates is taken (ties: reading order), values in ascending
order. One short line per event::

    23=4        the cell has a single candidate: place it
    41?36       branch: r4c1 has candidates 3 and 6; the first is tried on the next line
    41=3
    56x         r5c6 has no candidate left: dead end
    <41=6       undo everything placed since the branch at r4c1, try its next candidate
    A:153426/462315/...  the solved grid, then "."

A branch whose candidates are all exhausted is undone as a whole, and the search returns to
the branch before it (the ``<`` line names the branch it resumes). The last placement of a
cell in a trace is its value in the final grid. Traces longer than ``max_chars`` are not
written (None), so training data holds only traces that fit.
"""

from __future__ import annotations

import random
import re

from verifiers.sudoku import format_grid, parse_grid

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
        return "".join(f"{_name(i, size)}={v}\n" for i, v in enumerate(cells) if v) + "?\n"
    raise ValueError(f"unknown format {fmt!r}; expected 'direct' or 'search'")


def direct_completion(solution: list[int], size: int) -> str:
    """The filled grid and the end mark."""
    return format_grid(solution, size) + END


def _name(i: int, size: int) -> str:
    return f"{i // size + 1}{i % size + 1}"


def search_trace(cells: list[int], size: int, max_chars: int = 1000) -> str | None:
    """The DFS trace of a puzzle that ends in its solution, or None (no solution, or the
    trace would be longer than ``max_chars`` characters = tokens)."""
    cells = list(cells)
    lines: list[str] = []
    chars = 0
    # Stack of placements: [cell, remaining candidates (None for a forced placement)].
    stack: list[list] = []

    def emit(line: str) -> bool:
        nonlocal chars
        lines.append(line)
        chars += len(line) + 1
        return chars <= max_chars

    while True:
        masks = candidates_mask(cells, size)
        best, best_n = -1, 99
        for i, v in enumerate(cells):
            if not v:
                n = masks[i].bit_count()
                if n < best_n:
                    best, best_n = i, n
                    if n == 0:
                        break
        if best < 0:
            break  # solved
        if best_n == 0:
            if not emit(f"{_name(best, size)}x"):
                return None
            # Undo to the most recent branch with an untried candidate.
            while stack:
                cell, rest = stack[-1]
                cells[cell] = 0
                if rest:
                    v = rest.pop(0)
                    cells[cell] = v
                    if not emit(f"<{_name(cell, size)}={v}"):
                        return None
                    break
                stack.pop()
            else:
                return None  # no solution
            continue
        vals = [d for d in range(1, size + 1) if masks[best] >> d & 1]
        name = _name(best, size)
        if best_n == 1:
            ok = emit(f"{name}={vals[0]}")
            stack.append([best, None])
        else:
            ok = emit(f"{name}?{''.join(map(str, vals))}") and emit(f"{name}={vals[0]}")
            stack.append([best, vals[1:]])
        if not ok:
            return None
        cells[best] = vals[0]
    text = "\n".join(lines + [f"A:{format_grid(cells, size)}{END}"])
    return text if len(text) <= max_chars else None


_LINE = re.compile(r"^(<?)([1-9])([1-9])(=([1-9])|\?([1-9]+)|x)$")


def replay_trace(problem: dict, text: str) -> dict:
    """Reads a trace back: the grid its placements leave (following the undo semantics)
    and whether every line was well formed and every placement legal when made.

    Returns:
        ``{"cells": [...], "lines": n, "well_formed": bool, "legal": bool, "answer": str | None}``
        where ``answer`` is the ``A:`` grid as written (without the end mark).
    """
    cells, size = _grid(problem)
    given = list(cells)
    placed: list[tuple[int, bool]] = []  # (cell, is_branch)
    well_formed = legal = True
    answer = None
    n = 0
    for raw in text.split("\n"):
        line = raw.strip()
        if not line:
            continue
        n += 1
        if line.startswith("A:"):
            answer = line[2:].rstrip(END)
            break
        m = _LINE.match(line)
        if not m:
            well_formed = False
            continue
        undo, r, c = m.group(1), int(m.group(2)) - 1, int(m.group(3)) - 1
        if r >= size or c >= size:
            well_formed = False
            continue
        i = r * size + c
        if m.group(6) is not None:  # branch announcement
            placed.append((i, True))
            continue
        if m.group(4) == "x":
            continue
        v = int(m.group(5))
        if undo:
            # Pop back to (and including) the branch placement of this cell.
            while placed and placed[-1] != (i, True):
                j, _ = placed.pop()
                if not given[j]:
                    cells[j] = 0
            cells[i] = 0
        elif placed and placed[-1] == (i, True) and cells[i] == 0:
            pass  # first try of a branch announced on the previous line
        else:
            placed.append((i, False))
        if given[i] or v > size or v in _peers_values(cells, size, i):
            legal = False
        cells[i] = v
    return {"cells": cells, "lines": n, "well_formed": well_formed, "legal": legal, "answer": answer}


def _peers_values(cells: list[int], size: int, i: int) -> set[int]:
    from .solver import geometry

    g = geometry(size)
    r, c, b = g.rcb[i]
    return {cells[j] for j, (rr, cc, bb) in enumerate(g.rcb) if j != i and (rr == r or cc == c or bb == b) and cells[j]}


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
