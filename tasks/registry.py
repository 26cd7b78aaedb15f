"""The built-in checkpoints that ship with ttc, found by their model cards.

Each shipped model is a directory ``tasks/checkpoints/<name>/`` holding an ordinary
Hugging Face checkpoint plus ``card.json`` (name, task, kind, params, results).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel

__all__ = ["BuiltinModel", "CHECKPOINT_DIR", "builtin_models", "find_builtin", "get_task", "task_names"]

CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoints"


class BuiltinModel(BaseModel):
    """One shipped checkpoint, as its card describes it."""

    name: str
    path: str
    task: str
    kind: str
    params: int
    card: dict


@lru_cache(maxsize=1)
def builtin_models() -> tuple[BuiltinModel, ...]:
    """All shipped checkpoints, by name."""
    out = []
    for card_path in sorted(CHECKPOINT_DIR.glob("*/card.json")):
        card = json.loads(card_path.read_text())
        out.append(BuiltinModel(
            name=card.get("name", card_path.parent.name), path=str(card_path.parent),
            task=card.get("task", "?"), kind=card.get("kind", "?"), params=int(card.get("params", 0)), card=card,
        ))
    return tuple(out)


def find_builtin(name: str) -> BuiltinModel | None:
    """The shipped checkpoint called ``name``, or None."""
    return next((m for m in builtin_models() if m.name == name), None)


def task_names() -> list[str]:
    """Names of the task families ttc knows."""
    return sorted(_tasks())


def get_task(name: str):
    """The task object called ``name``.

    Raises:
        BadInputError: Unknown name; the message lists the valid ones.
    """
    from ttc.backends.errors import BadInputError

    tasks = _tasks()
    if name not in tasks:
        raise BadInputError(f"unknown task {name!r}; valid tasks: {', '.join(sorted(tasks))}")
    return tasks[name]


def _tasks() -> dict:
    from .countdown import COUNTDOWN
    from .sudoku import SUDOKU

    return {COUNTDOWN.name: COUNTDOWN, SUDOKU.name: SUDOKU}
