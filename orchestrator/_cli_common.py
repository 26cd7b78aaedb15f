"""Pieces every CLI command shares: JSON output, consoles, option types."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from ttc.backends.errors import BadInputError

__all__ = ["stdout", "stderr", "emit_json", "DbOption", "JsonOption", "jsonable", "read_text_arg", "open_orchestrator"]

# Human output on stdout; progress bars, logs and warnings on stderr, so that
# `--json` keeps stdout to exactly one JSON object.
stdout = Console()
stderr = Console(stderr=True)

DbOption = Annotated[
    str | None,
    typer.Option("--db", help="SQLAlchemy URL of the trace store (default: $TTC_DB, then sqlite:///ttc.db)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print exactly one JSON object on stdout.")]


def jsonable(obj: Any) -> Any:
    """Pydantic models and datetimes turned into plain JSON values."""
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    return obj


def emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(jsonable(obj)) + "\n")
    sys.stdout.flush()


def read_text_arg(value: str, what: str) -> str:
    """``@path`` reads a file, ``-`` reads stdin, anything else is the value itself."""
    if value == "-":
        return sys.stdin.read()
    if value.startswith("@"):
        path = Path(value[1:])
        try:
            return path.read_text()
        except OSError as exc:
            raise BadInputError(f"cannot read {what} file {path}: {exc.strerror or exc}") from exc
    return value


def open_orchestrator(db: str | None, device: str = "auto"):
    """The Orchestrator a command works with (imported late: `ttc --help` loads no model code)."""
    from .api import Orchestrator

    return Orchestrator(db=db, device=device)
