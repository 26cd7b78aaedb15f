"""What the step structures of the tasks share (``tasks.*.steps``)."""

from __future__ import annotations

__all__ = ["split_steps"]


def split_steps(partial_text: str, delimiter: str, end: str) -> list[str]:
    """The steps written so far, split at ``delimiter``.

    A trailing delimiter or end marker (and surrounding blanks) is dropped; empty steps are
    kept as ``""`` so that a malformed answer stays malformed.
    """
    text = partial_text.strip().removesuffix(end).removesuffix(delimiter)
    if not text.strip():
        return []
    return text.split(delimiter)
