"""Turning a model name, checkpoint path or endpoint into a Backend."""

from __future__ import annotations

import os
from pathlib import Path

from ttc.backends.base import Backend
from ttc.backends.errors import BadInputError, CheckpointError
from ttc.tasks.registry import builtin_models, find_builtin

__all__ = ["resolve_checkpoint", "resolve_tokenizer", "load_backend"]


def resolve_checkpoint(model: str) -> tuple[str, Path]:
    """The name and directory of a built-in model name or a checkpoint path.

    Raises:
        CheckpointError: Neither a built-in name nor an existing path (exit code 2).
    """
    builtin = find_builtin(model)
    if builtin is not None:
        return builtin.name, Path(builtin.path)
    path = Path(model).expanduser()
    if path.exists():
        return path.resolve().name, path
    names = ", ".join(m.name for m in builtin_models()) or "none shipped"
    raise CheckpointError(f"unknown model {model!r}: not a checkpoint directory nor a built-in model ({names})")


def resolve_tokenizer(tokenizer: str | None) -> str | None:
    """A built-in model name (given, or in ``TTC_TOKENIZER``) as its checkpoint directory.

    The backends layer cannot know the shipped checkpoints, so the name is resolved here;
    any other value passes through unchanged (None stays None, so the backend reads the
    variable itself and names it in its errors).
    """
    name = tokenizer if tokenizer is not None else os.environ.get("TTC_TOKENIZER", "").strip()
    builtin = find_builtin(name) if name else None
    return builtin.path if builtin is not None else tokenizer


def load_backend(
    model: str,
    *,
    base_url: str | None = None,
    device: str = "auto",
    trust_remote_code: bool = False,
    connect_timeout: float | None = None,
    timeout: float | None = None,
    max_retries: int | None = None,
    tokenizer: str | None = None,
) -> Backend:
    """A backend for ``model``: an OpenAI-compatible server when ``base_url`` is given,
    else a local checkpoint (built-in name or directory) loaded in-process.

    Args:
        model: Built-in model name, checkpoint directory, or (with ``base_url``) the name
            the server knows the model by.
        base_url: Root of an OpenAI-compatible API, e.g. ``http://localhost:8000/v1``.
        device: Where an in-process model runs: ``"auto"``, ``"cpu"``, ``"cuda"``...
        trust_remote_code: Let a checkpoint or tokenizer run its own Python code.
        connect_timeout, timeout, max_retries: For a served model; None takes the
            ``TTC_*`` variable, else the backend's default (5 s, 600 s, 3).
        tokenizer: For a served model: a tokenizer directory, Hugging Face name or
            built-in model name, to count its tokens exactly. None: ``TTC_TOKENIZER``.

    Raises:
        BadInputError: A remote option given without ``base_url``, or an invalid one.
        CheckpointError: ``model`` is neither a built-in name nor a checkpoint directory.
    """
    if base_url:
        from ttc.backends.openai_backend import OpenAIBackend

        return OpenAIBackend(
            base_url=base_url, model=model, timeout=timeout, max_retries=max_retries,
            tokenizer=resolve_tokenizer(tokenizer), connect_timeout=connect_timeout,
            trust_remote_code=trust_remote_code,
        )
    given = {"connect_timeout": connect_timeout, "timeout": timeout, "max_retries": max_retries,
             "tokenizer": tokenizer}
    remote_only = [k for k, v in given.items() if v is not None]
    if remote_only:
        # Explicit arguments only: the TTC_* variables may well be set for other runs.
        raise BadInputError(f"{', '.join(remote_only)} apply only to a served model (give base_url)")
    from ttc.backends.transformers_backend import TransformersBackend

    name, path = resolve_checkpoint(model)
    return TransformersBackend(path, name=name, device=device, trust_remote_code=trust_remote_code)
