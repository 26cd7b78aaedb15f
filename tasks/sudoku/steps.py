"""Sudoku's step structure, for step-level search (``strategies.tree_search``).

A direct completion is the filled grid, one row per step, rows separated by "/" and the
grid ended by "."::

    ".3..../6.2.../.1.25./...1.3/25..6./......:"  ->  "135624/642315/.../461532."

:class:`SudokuSteps` tells a search controller where a step (a row) ends and which
partial grids are already hopeless, from the rules and the givens alone: a row must be
``size`` digits 1..size, keep the givens of that row, and repeat no digit in its row, in
a column or in a box with the rows above it. It never solves the puzzle and never looks
at a reference answer.
"""

from __future__ import annotations

from ttc.verifiers.sudoku import box_shape, parse_grid

from .._steps import split_steps
from .formats import END

__all__ = ["SudokuSteps", "DELIMITER"]

DELIMITER = "/"


class SudokuSteps:
    """The step structure of Sudoku answers (direct format): one step per row.

    Attributes:
        delimiter: Ends a row that is not the last ("/").
        end: Ends the grid (".", the task's stop string).
        formats: Prompt formats whose completions are made of such steps.
        step_tokens: A token limit for one row (character tokens: up to 9 digits).
    """

    delimiter = DELIMITER
    end = END
    formats = ("direct",)
    step_tokens = 12

    def parse(self, partial_text: str) -> list[str]:
        """The rows written so far: ``"135624/642315/"`` -> ``["135624", "642315"]``."""
        return [row.strip() for row in split_steps(partial_text, self.delimiter, self.end)]

    def _rows(self, problem: dict, partial_text: str) -> tuple[list[list[int]], int] | None:
        """The rows as digits and the board size, or None when a rule is already broken."""
        given, size = parse_grid(problem["grid"], problem.get("size"))
        br, bc = box_shape(size)
        rows: list[list[int]] = []
        for r, row in enumerate(self.parse(partial_text)):
            if r >= size or len(row) != size or not all(c.isdigit() and 1 <= int(c) <= size for c in row):
                return None
            digits = [int(c) for c in row]
            if len(set(digits)) != size:
                return None
            if any(g and g != d for g, d in zip(given[r * size:(r + 1) * size], digits)):
                return None
            for c, d in enumerate(digits):
                if any(prev[c] == d for prev in rows):
                    return None  # column repeat
                top, left = r // br * br, c // bc * bc
                if any(rows[rr][cc] == d for rr in range(top, r) for cc in range(left, left + bc)):
                    return None  # box repeat
            rows.append(digits)
        return rows, size

    def dead_end(self, problem: dict, partial_text: str) -> bool:
        """True when no continuation of ``partial_text`` can be a correct grid: a malformed
        row, a changed given, or a digit repeated in a row, column or box."""
        return self._rows(problem, partial_text) is None

    def complete(self, text: str, problem: dict | None = None) -> bool:
        """True when ``text`` is a finished answer: it ends with the end marker, or (with
        the problem) it already holds every row."""
        if text.rstrip().endswith(self.end) and self.parse(text):
            return True
        if problem is None:
            return False
        rows = self._rows(problem, text)
        return rows is not None and len(rows[0]) == rows[1]

    def max_steps(self, problem: dict) -> int:
        """Rows in a complete answer."""
        return parse_grid(problem["grid"], problem.get("size"))[1]
