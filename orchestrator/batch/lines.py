"""Reading a batch file: OpenAI Batch lines checked into jobs or error lines, never a crash.

A line is ``{"custom_id": ..., "body": {...}}`` (``method`` and ``url`` optional). Its body
is a ttc task request ``{"task", "problem", "strategy" | "allocation", "budget", "models",
"params", "seed"}`` or an OpenAI chat request (``model``, ``messages``). Everything that
can be checked without a model is checked here, so a bad line costs nothing and becomes
an error line with the reason; only an unreadable file is an error of the whole batch.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from ttc.backends.errors import BadInputError
from ttc.core.budget import Budget
from ttc.strategies.registry import get_strategy
from ttc.tasks.registry import get_task

from ..chat import plan_chat

__all__ = ["BatchLine", "TASK_KEYS", "canonical_hash", "in_shard", "parse_line", "read_batch_file"]

#: Keys a task body may have.
TASK_KEYS = frozenset({"task", "problem", "strategy", "allocation", "policy", "budget", "model", "models", "params",
                       "seed"})
_URLS = ("/v1/chat/completions", "/v1/ttc/solve")


class BatchLine(BaseModel):
    """One input line, checked.

    Attributes:
        line: 1-based line number in the file.
        key: The job's key in the store: its ``custom_id``, or a line tag for a line that
            has no usable one (or repeats one).
        custom_id: As given (None when missing or not a string).
        kind: ``task``, ``graph`` or ``chat`` for a valid line; None for a bad one.
        body: The request body of a valid line.
        error: Why the line is bad input (its error line says so).
        request_hash: sha256 of the canonical body: with ``custom_id`` and the models'
            checkpoint digests, the job's identity.
    """

    line: int
    key: str
    custom_id: str | None = None
    kind: Literal["task", "graph", "chat"] | None = None
    body: dict[str, Any] | None = None
    error: str | None = None
    request_hash: str | None = None


def canonical_hash(obj: Any) -> str:
    """sha256 of the JSON form with sorted keys and no spaces (the same request, the same hash)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def in_shard(key: str, shard: tuple[int, int] | None) -> bool:
    """Whether a job belongs to shard ``i`` of ``N`` (sha256 of its key mod N; never Python's hash)."""
    if shard is None:
        return True
    i, n = shard
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % n == i


def _check_task_body(body: dict[str, Any]) -> Literal["task", "graph"]:
    from ttc.orchestrator.graph.builtin import BUILTIN_GRAPHS

    unknown = sorted(set(body) - TASK_KEYS)
    if unknown:
        raise BadInputError(f"unknown body key(s): {', '.join(unknown)} (a task body has {', '.join(sorted(TASK_KEYS))})")
    if not isinstance(body.get("task"), str):
        raise BadInputError("body.task must be a task name (or a built-in graph name with an allocation)")
    if "problem" not in body:
        raise BadInputError("body.problem is missing")
    for name in ("models", "params", "budget"):
        if name in body and not isinstance(body[name], dict):
            raise BadInputError(f"body.{name} must be a JSON object")
    budget = body.get("budget") or {}
    unknown = sorted(set(budget) - set(Budget.model_fields))
    if unknown:
        raise BadInputError(f"unknown budget key(s): {', '.join(unknown)}")
    Budget(**budget)
    seed = body.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or seed < 0):
        raise BadInputError("body.seed must be a non-negative integer")
    if "allocation" in body:
        if "strategy" in body:
            raise BadInputError("give body.strategy or body.allocation, not both")
        if body["task"] not in BUILTIN_GRAPHS:
            raise BadInputError(f"an allocation body runs a built-in graph ({', '.join(BUILTIN_GRAPHS)}), "
                                f"not {body['task']!r}")
        if not isinstance(body["problem"], dict):
            raise BadInputError("body.problem must be a JSON object")
        return "graph"
    task = get_task(body["task"])
    task.parse_problem(body["problem"])
    spec = get_strategy(body.get("strategy", "sample"))
    spec.check_params(body.get("params") or {})
    models = body.get("models") or {}
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in models.items()):
        raise BadInputError("body.models maps roles to model names")
    if "model" in body and not isinstance(body["model"], str):
        raise BadInputError("body.model must be a model name")
    return "task"


def parse_line(number: int, text: str) -> BatchLine:
    """Checks one non-blank line; a bad one comes back with ``error`` set."""
    tag = f"<line {number}>"
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        return BatchLine(line=number, key=tag, error=f"line {number} is not JSON: {exc.msg} (column {exc.colno})")
    if not isinstance(obj, dict):
        return BatchLine(line=number, key=tag, error=f"line {number} is not a JSON object")
    cid = obj.get("custom_id")
    if not isinstance(cid, str) or not cid:
        return BatchLine(line=number, key=tag, error=f"line {number} has no custom_id (a non-empty string)")
    bad = BatchLine(line=number, key=cid, custom_id=cid)
    body = obj.get("body")
    if not isinstance(body, dict):
        return bad.model_copy(update={"error": "body is missing or not a JSON object"})
    if obj.get("method", "POST") != "POST":
        return bad.model_copy(update={"error": f"method must be POST, not {obj.get('method')!r}"})
    if "url" in obj and obj["url"] not in _URLS:
        return bad.model_copy(update={"error": f"url must be one of {', '.join(_URLS)}, not {obj['url']!r}"})
    try:
        if "messages" in body:
            plan_chat(body)
            kind: Literal["task", "graph", "chat"] = "chat"
        else:
            kind = _check_task_body(body)
    except BadInputError as exc:
        return bad.model_copy(update={"error": str(exc).splitlines()[0] if str(exc) else "bad request body"})
    return bad.model_copy(update={"kind": kind, "body": body, "request_hash": canonical_hash(body)})


def read_batch_file(path: Path) -> list[BatchLine]:
    """Every non-blank line of a batch file, checked; a repeated ``custom_id`` is an error line.

    Raises:
        BadInputError: The file cannot be read or is not UTF-8 text.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadInputError(f"batch file {path} does not exist") from None
    except IsADirectoryError:
        raise BadInputError(f"batch file {path} is a directory") from None
    except UnicodeDecodeError as exc:
        raise BadInputError(f"batch file {path} is not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise BadInputError(f"cannot read batch file {path}: {exc.strerror}") from None
    out: list[BatchLine] = []
    first: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        line = parse_line(number, raw)
        if line.custom_id is not None and line.key == line.custom_id:
            if line.custom_id in first:
                line = line.model_copy(update={"key": f"{line.custom_id}<line {number}>", "kind": None, "body": None,
                                               "error": f"duplicate custom_id {line.custom_id!r} "
                                                        f"(first on line {first[line.custom_id]})"})
            else:
                first[line.custom_id] = number
        out.append(line)
    return out
