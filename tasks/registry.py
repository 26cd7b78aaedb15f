"""The task registry, and the built-in checkpoints that ship with ttc.

Task families register themselves (``register_task``); installed packages add theirs
through the entry-point group ``ttc.tasks``, naming a task object or a class/factory
that makes one.

Each shipped model is a directory ``tasks/checkpoints/<name>/`` holding an ordinary
Hugging Face checkpoint plus ``card.json`` (name, task, kind, params, results).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from typing import Any, TypeVar

from pydantic import BaseModel

from ttc.core.contracts import Task
from ttc.core.registry import Registry

__all__ = ["BuiltinModel", "CHECKPOINT_DIR", "TASKS", "builtin_models", "describe_task", "find_builtin", "get_task",
           "register_task", "task_names"]

T = TypeVar("T")

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


def _adapt(name: str, obj: Any) -> Task:
    task = obj() if isinstance(obj, type) or (callable(obj) and not hasattr(obj, "parse_problem")) else obj
    missing = [a for a in ("name", "parse_problem", "prompt", "max_tokens", "verifier", "stop") if not hasattr(task, a)]
    if missing:
        raise TypeError(f"task plug-in {name!r} lacks {', '.join(missing)}")
    return task


TASKS: Registry[Task] = Registry("task", "ttc.tasks", ("ttc.tasks.countdown", "ttc.tasks.sudoku", "ttc.tasks.humaneval", "ttc.tasks.stateful_arith"),
                                 _adapt)


def register_task(obj: T) -> T:
    """Registers a task object (or a class, which is instantiated) under its ``name``.

    Usable as a decorator on a class or called with an instance; returns ``obj``.
    """
    task = _adapt(getattr(obj, "name", "?"), obj)
    TASKS.register(task.name, task)
    return obj


def task_names() -> list[str]:
    """Names of the task families ttc knows, plug-ins included."""
    return TASKS.names()


def get_task(name: str) -> Task:
    """The task object called ``name``.

    Raises:
        BadInputError: Unknown name; the message lists the valid ones.
    """
    return TASKS.get(name)


def describe_task(name: str) -> dict[str, Any]:
    """JSON-ready summary for ``ttc tasks list``."""
    task = get_task(name)
    return {"name": name, "formats": list(getattr(task, "formats", ())), "default_model":
            getattr(task, "default_model", None), "verifier": type(task.verifier).__name__,
            "builtin_models": [m.name for m in builtin_models() if m.task == name], "origin": TASKS.origin(name)}
