"""Sleep-time artifacts: what a model worked out about a context before any query came.

An :class:`Artifact` holds the notes a sleep phase wrote for one context (and, where the
task's model can anticipate queries, answers worked out ahead), with what writing them
cost. It is found again by its key (:func:`artifact_key`): the context's hash, the
checkpoint digest of the model that wrote it and the hash of the sleep configuration. A
changed context, checkpoint or configuration therefore gives another key, and stale
artifacts are never reused.

Artifacts go through the :class:`ArtifactStore` protocol as plain JSON records
(``Artifact.to_record`` / ``Artifact.from_record``), so the store that implements it
(``ttc.store.artifacts``) needs nothing from this layer. Its method names differ from
``contracts.RecordedRuns.latest`` (the lookup of recorded runs), so one object may serve
both protocols.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, Field
from ttc.backends.types import Usage

__all__ = ["Artifact", "ArtifactStore", "artifact_key", "config_hash", "context_hash", "model_digest"]


def context_hash(context: str) -> str:
    """SHA-256 of a context, whitespace runs collapsed and ends stripped (so a trailing
    newline from ``@file`` finds the same artifacts; any other change does not)."""
    text = re.sub(r"\s+", " ", str(context)).strip()
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def config_hash(config: Mapping[str, Any]) -> str:
    """SHA-256 of a sleep configuration as canonical JSON (sorted keys)."""
    canonical = json.dumps(dict(config), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def model_digest(info: Any) -> str:
    """The checkpoint digest of a backend's ``ModelInfo``; its name where none is known
    (a served model), so two different served models still key apart."""
    digest = getattr(info, "checkpoint_digest", None)
    return str(digest) if digest else f"name:{getattr(info, 'name', '?')}"


def artifact_key(context: str, checkpoint_digest: str, sleep_config: Mapping[str, Any] | str) -> str:
    """The key of a context's artifacts: a hash over the context hash, the sleep model's
    checkpoint digest and the sleep configuration (a mapping, or its hash)."""
    cfg = sleep_config if isinstance(sleep_config, str) else config_hash(sleep_config)
    raw = f"{context_hash(context)}|{checkpoint_digest}|{cfg}"
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()[:40]


class Artifact(BaseModel):
    """A context's sleep-time artifacts and their cost.

    Attributes:
        key: :func:`artifact_key` of the three parts below.
        task: Task family.
        context_hash, checkpoint_digest, config_hash: The key's parts.
        model: The sleep model's name.
        notes: The combined notes: quantity -> value.
        notes_text: The notes as the model wrote them (one per parallel sample).
        notes_tokens: Generated tokens of each of them.
        anticipated: Normalised anticipated query -> answer worked out ahead (empty unless
            the task's model can propose queries).
        config: The sleep configuration itself.
        usage: Sleep tokens spent on this context (prefill counted once + generated).
        trace_id: The precompute run that wrote it.
        created_at: When it was written (UTC).
    """

    key: str
    task: str
    context_hash: str
    checkpoint_digest: str
    config_hash: str
    model: str = ""
    notes: dict[str, int] = Field(default_factory=dict)
    notes_text: list[str] = Field(default_factory=list)
    notes_tokens: list[int] = Field(default_factory=list)
    anticipated: dict[str, str] = Field(default_factory=dict)
    config: dict[str, Any] = Field(default_factory=dict)
    usage: Usage = Field(default_factory=Usage)
    trace_id: str | None = None
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    @property
    def sleep_tokens(self) -> int:
        return self.usage.total_tokens

    def to_record(self) -> dict[str, Any]:
        """The plain record an :class:`ArtifactStore` keeps."""
        return {
            "key": self.key, "task": self.task, "context_hash": self.context_hash,
            "checkpoint_digest": self.checkpoint_digest, "config_hash": self.config_hash, "kind": "notes",
            "model": self.model, "prompt_tokens": self.usage.prompt_tokens,
            "completion_tokens": self.usage.completion_tokens, "calls": self.usage.calls, "run_id": self.trace_id,
            "created_at": self.created_at,
            "payload": {"notes": self.notes, "notes_text": self.notes_text, "notes_tokens": self.notes_tokens,
                        "anticipated": self.anticipated,
                        "config": self.config},
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> "Artifact":
        payload = record.get("payload") or {}
        return cls(
            key=record["key"], task=record["task"], context_hash=record["context_hash"],
            checkpoint_digest=record["checkpoint_digest"], config_hash=record["config_hash"],
            model=record.get("model") or "", notes={str(k): int(v) for k, v in (payload.get("notes") or {}).items()},
            notes_text=list(payload.get("notes_text") or []),
            notes_tokens=[int(t) for t in payload.get("notes_tokens") or []], anticipated=dict(payload.get("anticipated") or {}),
            config=dict(payload.get("config") or {}),
            usage=Usage(prompt_tokens=int(record.get("prompt_tokens") or 0),
                        completion_tokens=int(record.get("completion_tokens") or 0),
                        calls=int(record.get("calls") or 0)),
            trace_id=record.get("run_id"), **({"created_at": record["created_at"]} if record.get("created_at") else {}),
        )


@runtime_checkable
class ArtifactStore(Protocol):
    """Where sleep-time artifacts are kept, as plain records keyed by :func:`artifact_key`."""

    def put_artifact(self, record: Mapping[str, Any]) -> None:
        """Stores a record (``Artifact.to_record()``), replacing one with the same key."""
        ...

    def get_artifact(self, key: str) -> dict[str, Any] | None:
        """The record stored under ``key``, or None."""
        ...

    def list_artifacts(self, *, task: str | None = None, context_hash: str | None = None,
                       limit: int = 100) -> list[dict[str, Any]]:
        """Records, newest first, optionally of one task or one context (any model, any config)."""
        ...
