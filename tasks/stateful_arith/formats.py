"""Prompt formats of ``stateful-arith`` and the completions the model is trained on.

Every completion ends with ``.`` (the stop string). Context ``a=7;b=a*3;c=b-4;d=c+a``:

- (a) ``query_prompt(ctx, "c+a")`` = ``a=7;b=a*3;c=b-4;d=c+a?c+a:`` -> derivation of just
  what the query needs, ``a=7,b=7*3=21,c=21-4=17;17+7=24.``; a counterfactual
  ``if a=9,c`` substitutes first: ``a=9,b=9*3=27,c=27-4=23;23.``
- (b) ``notes_prompt(ctx)`` = ``a=7;b=a*3;c=b-4;d=c+a#`` -> notes, every quantity with its
  work: ``a=7,b=7*3=21,c=21-4=17,d=17+7=24.``
- (c) ``notes_query_prompt(ctx, notes, q)`` = ``a=7;b=a*3;c=b-4;d=c+a|a=7,b=21,c=17,d=24?q:``
  (the notes reduced to values) -> ``c=17.`` for a defined quantity, ``c+a=17+7=24.`` for a
  combination, and for a counterfactual a derivation of only what the change affects,
  unchanged operands read from the notes: ``a=9,b=9*3=27,c=27-4=23;23.``
- (d) anticipated queries: not built (the queries are random, so there is little to
  anticipate beyond the notes themselves).
"""

from __future__ import annotations

import re

# parse_answer is re-exported: the final answer of any completion is its last integer.
from ttc.verifiers.arith import normalize_context, normalize_query, parse_answer

from .solver import derivation, notes_text

__all__ = ["END", "format_notes", "notes_prompt", "notes_query_prompt", "parse_answer", "parse_notes",
           "query_prompt", "training_example"]

END = "."
_ENTRY = re.compile(r"^([a-z])=.*?([0-9]+)$")


def query_prompt(context: str, query: str) -> str:
    """(a) Prompt to answer ``query`` by derivation from ``context``."""
    return f"{normalize_context(context)}?{normalize_query(query)}:"


def notes_prompt(context: str) -> str:
    """(b) Prompt to write notes (every quantity worked out) from ``context`` alone."""
    return f"{normalize_context(context)}#"


def parse_notes(text: str) -> dict[str, int]:
    """Quantity -> value read from notes (``a=7,b=7*3=21`` -> ``{"a": 7, "b": 21}``).

    Each entry's value is its last integer; unreadable entries are skipped, and a quantity
    noted twice keeps its first value.
    """
    out: dict[str, int] = {}
    for part in str(text).strip().rstrip(".").split(","):
        m = _ENTRY.match(part.strip())
        if m and m.group(1) not in out:
            out[m.group(1)] = int(m.group(2))
    return out


def format_notes(values: dict[str, int]) -> str:
    """Notes reduced to values, in name order: ``a=7,b=21,c=17``."""
    return ",".join(f"{k}={values[k]}" for k in sorted(values))


def notes_query_prompt(context: str, notes: str | dict[str, int], query: str) -> str:
    """(c) Prompt to answer ``query`` from ``context`` plus notes.

    ``notes`` is a notes completion (as written for :func:`notes_prompt`, work shown or
    not) or a quantity -> value mapping; either way the prompt holds only the values.
    """
    values = notes if isinstance(notes, dict) else parse_notes(notes)
    return f"{normalize_context(context)}|{format_notes(values)}?{normalize_query(query)}:"


def training_example(context: str, query: str, fmt: str) -> tuple[str, str]:
    """A (prompt, completion) pair in format "derive" (a), "notes" (b) or "with_notes" (c)."""
    if fmt == "derive":
        return query_prompt(context, query), derivation(context, query) + END
    if fmt == "notes":
        return notes_prompt(context), notes_text(context) + END
    if fmt == "with_notes":
        notes = notes_text(context)
        return notes_query_prompt(context, notes, query), derivation(context, query, with_notes=True) + END
    raise ValueError(f"unknown format {fmt!r}; valid formats: derive, notes, with_notes")
