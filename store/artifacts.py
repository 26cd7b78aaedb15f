"""Sleep-time artifacts in the trace store (table ``artifacts``).

:class:`ArtifactTable` implements ``ttc.core.artifacts.ArtifactStore`` over an engine:
plain records in, plain records out, keyed by the artifact key (context hash +
checkpoint digest + sleep configuration hash). It knows nothing about the layers above;
the orchestrator turns records into ``core.artifacts.Artifact`` objects.

Writes are upserts committed at once (an artifact is written once per precompute, so
there is nothing to batch), on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import Engine, delete, insert, select
from sqlalchemy.dialects import postgresql, sqlite

from ttc.store.engine import StoreError, translate_errors, write_transaction
from ttc.store.records import utcnow
from ttc.store.schema import Artifact

__all__ = ["ARTIFACT_FIELDS", "ArtifactTable"]

#: The fields of an artifact record, as the table holds them.
ARTIFACT_FIELDS = ("key", "task", "context_hash", "checkpoint_digest", "config_hash", "kind", "model",
                   "prompt_tokens", "completion_tokens", "calls", "run_id", "created_at", "payload")
_REQUIRED = ("key", "task", "context_hash", "checkpoint_digest", "config_hash")
# JSONB rejects NaN, and a payload that JSON cannot hold should fail in the caller's thread.
_PAYLOAD = TypeAdapter(dict[str, Any])


def _upsert(dialect_name: str, row: dict[str, Any]):
    table = Artifact.__table__
    changed = {k: v for k, v in row.items() if k != "key"}
    if dialect_name == "postgresql":
        return postgresql.insert(table).values(**row).on_conflict_do_update(index_elements=["key"], set_=changed)
    if dialect_name == "sqlite":
        return sqlite.insert(table).values(**row).on_conflict_do_update(index_elements=["key"], set_=changed)
    return insert(table).values(**row)


def _row(record: Mapping[str, Any]) -> dict[str, Any]:
    missing = [f for f in _REQUIRED if not record.get(f)]
    if missing:
        raise StoreError(f"artifact record lacks {', '.join(missing)}")
    unknown = sorted(set(record) - set(ARTIFACT_FIELDS))
    if unknown:
        raise StoreError(f"artifact record has unknown field(s) {', '.join(unknown)}")
    created = record.get("created_at")
    return {
        "key": str(record["key"]), "task": str(record["task"]), "context_hash": str(record["context_hash"]),
        "checkpoint_digest": str(record["checkpoint_digest"]), "config_hash": str(record["config_hash"]),
        "kind": str(record.get("kind") or "notes"), "model": str(record.get("model") or ""),
        "prompt_tokens": int(record.get("prompt_tokens") or 0),
        "completion_tokens": int(record.get("completion_tokens") or 0), "calls": int(record.get("calls") or 0),
        "run_id": record.get("run_id"), "created_at": created if isinstance(created, datetime) else utcnow(),
        "payload": _PAYLOAD.dump_python(dict(record.get("payload") or {}), mode="json"),
    }


def _record(row: Artifact) -> dict[str, Any]:
    return {f: getattr(row, f) for f in ARTIFACT_FIELDS}


class ArtifactTable:
    """Sleep-time artifacts over an engine whose database is migrated.

    Args:
        engine: From ``TraceStore.open(url).engine`` (or ``make_engine`` + ``migrate``).
    """

    def __init__(self, engine: Engine):
        self.engine = engine

    def put_artifact(self, record: Mapping[str, Any]) -> None:
        """Stores ``record``, replacing the one with the same key.

        Raises:
            StoreError: A record without its key parts, or the write failed.
        """
        row = _row(record)
        with write_transaction(self.engine) as conn:
            conn.execute(_upsert(conn.dialect.name, row))

    def get_artifact(self, key: str) -> dict[str, Any] | None:
        """The record stored under ``key``, or None."""
        with translate_errors(self.engine), self.engine.connect() as conn:
            row = conn.execute(select(Artifact.__table__).where(Artifact.key == key)).mappings().first()
        return dict(row) if row is not None else None

    def list_artifacts(self, *, task: str | None = None, context_hash: str | None = None,
                       limit: int = 100) -> list[dict[str, Any]]:
        """Records, newest first, of one task and/or one context when given."""
        stmt = select(Artifact.__table__).order_by(Artifact.created_at.desc(), Artifact.key).limit(limit)
        if task is not None:
            stmt = stmt.where(Artifact.task == task)
        if context_hash is not None:
            stmt = stmt.where(Artifact.context_hash == context_hash)
        with translate_errors(self.engine), self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(stmt).mappings()]

    def delete_artifacts(self, *, task: str | None = None, context_hash: str | None = None) -> int:
        """Deletes the records of a task and/or a context (all with neither); returns how many."""
        stmt = delete(Artifact.__table__)
        if task is not None:
            stmt = stmt.where(Artifact.task == task)
        if context_hash is not None:
            stmt = stmt.where(Artifact.context_hash == context_hash)
        with write_transaction(self.engine) as conn:
            return conn.execute(stmt).rowcount or 0
