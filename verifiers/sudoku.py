"""Exact Sudoku checker.

Checks a candidate against the problem's constraints only (never a stored solution): the
candidate must be a complete ``size`` x ``size`` grid of digits 1..size, every row, column
and box a permutation, and every given of the puzzle kept. Any text is accepted; garbage
gives ``correct=False`` with a reason, the checker never raises.

Where the grid is read (the answer region is the text after the last ``A:`` if there is one,
else the whole text): the first run of digit groups separated only by ``/``, ``|``, ``,``,
``;`` or whitespace that holds exactly size x size digits. So all of these are read::

    153624/241365/...              (the built-in models' format, rows split by "/")
    A:153624/241365/....           (the end of a search trace)
    1 5 3 6 2 4\\n2 4 1 3 6 5\\n...   (rows on lines, cells split by spaces)
    153624241365...                (36 digits in a row)

Boxes: 4x4 -> 2x2, 6x6 -> 2 rows x 3 columns, 8x8 -> 2x4, 9x9 -> 3x3.
"""

from __future__ import annotations

import re

from ttc.core.types import Verdict

__all__ = ["SudokuVerifier", "BOX_SHAPES", "box_shape", "parse_grid", "format_grid", "read_candidate_grid", "grid_errors"]

#: Box shape (rows, columns) per board size.
BOX_SHAPES: dict[int, tuple[int, int]] = {4: (2, 2), 6: (2, 3), 8: (2, 4), 9: (3, 3)}

_MAX_TEXT = 20_000  # longer candidates are cut to their last 20,000 characters
_RUN = re.compile(r"[0-9]+(?:[\s/|,;]+[0-9]+)*")
_BLANKS = set("._0")
_SEPARATORS = set(" \t\r\n/|,;-+")


def box_shape(size: int) -> tuple[int, int]:
    """(rows, columns) of a box for a board size.

    Raises:
        ValueError: Unsupported size.
    """
    try:
        return BOX_SHAPES[size]
    except KeyError:
        raise ValueError(f"unsupported Sudoku size {size}; supported: {', '.join(map(str, sorted(BOX_SHAPES)))}") from None


def parse_grid(grid, size: int | None = None) -> tuple[list[int], int]:
    """Reads a puzzle grid: a string of digits with ``.``, ``_`` or ``0`` for blanks
    (``/``, ``|``, ``,``, ``;``, ``-``, ``+`` and whitespace ignored), or a list of rows.

    Returns:
        (cells, size): cells row-major, 0 for a blank.

    Raises:
        ValueError: Not a square grid of a supported size, a digit out of range, or a
            given that repeats in a row, column or box.
    """
    if isinstance(grid, list):
        if grid and all(isinstance(r, list) for r in grid):
            grid = "/".join("".join(str(x) if x not in (None, 0, "") else "." for x in r) for r in grid)
        elif grid and all(isinstance(r, str) for r in grid):
            grid = "/".join(grid)
        else:
            raise ValueError("grid must be a string like '1.3.../...' or a list of rows")
    if not isinstance(grid, str):
        raise ValueError("grid must be a string like '1.3.../...' or a list of rows")
    cells: list[int] = []
    for ch in grid:
        if ch in _SEPARATORS:
            continue
        if ch in _BLANKS:
            cells.append(0)
        elif ch.isdigit() and ch.isascii():
            cells.append(int(ch))
        else:
            raise ValueError(f"unexpected character {ch!r} in grid (use digits and '.' for blanks)")
    n = len(cells)
    if size is None:
        size = round(n**0.5)
    if size not in BOX_SHAPES:
        raise ValueError(f"unsupported Sudoku size {size}; supported: {', '.join(map(str, sorted(BOX_SHAPES)))}")
    if n != size * size:
        raise ValueError(f"a {size}x{size} grid has {size * size} cells, got {n}")
    for i, v in enumerate(cells):
        if v > size:
            raise ValueError(f"digit {v} at row {i // size + 1}, column {i % size + 1} is out of range 1..{size}")
    errors = grid_errors(cells, size, complete=False)
    if errors:
        raise ValueError(f"the givens conflict: {errors[0]}")
    return cells, size


def format_grid(cells, size: int, blank: str = ".") -> str:
    """Rows joined by ``/``, blanks as ``blank``: ``"1.3..6/..2.../..."``."""
    return "/".join("".join(str(v) if v else blank for v in cells[r * size : (r + 1) * size]) for r in range(size))


def grid_errors(cells, size: int, complete: bool = True) -> list[str]:
    """Rule violations of a grid (blanks are 0); with ``complete`` a blank is one too."""
    br, bc = box_shape(size)
    errs: list[str] = []
    if complete:
        for i, v in enumerate(cells):
            if not 1 <= v <= size:
                errs.append(f"cell r{i // size + 1}c{i % size + 1} is not a digit 1..{size}")
                return errs
    units = []
    for r in range(size):
        units.append((f"row {r + 1}", [r * size + c for c in range(size)]))
    for c in range(size):
        units.append((f"column {c + 1}", [r * size + c for r in range(size)]))
    for b in range(size):
        r0, c0 = (b // (size // bc)) * br, (b % (size // bc)) * bc
        units.append((f"box {b + 1}", [(r0 + i) * size + c0 + j for i in range(br) for j in range(bc)]))
    for name, idx in units:
        seen: set[int] = set()
        for i in idx:
            v = cells[i]
            if v and v in seen:
                errs.append(f"{name} repeats {v}")
                break
            seen.add(v)
    return errs


def read_candidate_grid(text, size: int) -> list[int] | None:
    """The grid a candidate text states (see the module doc), or None."""
    if not isinstance(text, str):
        return None
    text = text[-_MAX_TEXT:]
    idx = text.rfind("A:")
    region = text[idx + 2 :] if idx >= 0 else text
    want = size * size
    for m in _RUN.finditer(region):
        digits = [int(ch) for ch in m.group(0) if ch.isdigit()]
        if len(digits) == want:
            return digits
    return None


class SudokuVerifier:
    """Exact checker: a valid complete grid that keeps the puzzle's givens.

    ``verify(problem, text)`` takes a problem ``{"grid": "1.3.../...", "size": 6}`` and any
    candidate text; it returns a :class:`Verdict` with ``correct`` True/False, ``score``
    1.0/0.0, a one-line ``reason`` and the grid read as ``answer`` (rows joined by ``/``).
    """

    name = "sudoku"

    def verify(self, problem: dict, text, ctx=None) -> Verdict:
        """Checks a candidate grid against the puzzle's rules and givens; never raises.
        An exact check: ``ctx`` (for verifiers that call models) is not used."""
        try:
            return self._verify(problem, text)
        except Exception as exc:  # never raise on any input
            return Verdict(correct=False, score=0.0, reason=f"unreadable: {type(exc).__name__}")

    def canonical(self, problem: dict, text) -> str | None:
        """The grid a candidate states, as ``"153624/..."``, for voting; None if none.

        The board size comes from the problem: a 9x9 answer read as 6x6 is no answer."""
        try:
            _, size = parse_grid(problem.get("grid"), problem.get("size"))
            cells = read_candidate_grid(text, size)
        except Exception:
            return None
        return format_grid(cells, size) if cells else None

    def _verify(self, problem: dict, text) -> Verdict:
        try:
            givens, size = parse_grid(problem.get("grid"), problem.get("size"))
        except (ValueError, TypeError, AttributeError) as exc:
            return Verdict(correct=None, score=0.0, reason=f"bad problem: {exc}")
        cells = read_candidate_grid(text, size)
        if cells is None:
            return Verdict(correct=False, score=0.0, reason=f"no {size}x{size} grid of digits found")
        answer = format_grid(cells, size)
        errs = grid_errors(cells, size, complete=True)
        if errs:
            return Verdict(correct=False, score=0.0, reason=errs[0], answer=answer)
        for i, (g, v) in enumerate(zip(givens, cells)):
            if g and g != v:
                return Verdict(
                    correct=False, score=0.0, answer=answer,
                    reason=f"changes the given {g} at r{i // size + 1}c{i % size + 1} to {v}",
                )
        return Verdict(correct=True, score=1.0, reason="valid grid that keeps every given", answer=answer)
