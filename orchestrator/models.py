"""Turning a model name, checkpoint path or endpoint into a Backend."""

from __future__ import annotations

from pathlib import Path

from ttc.backends.base import Backend
from ttc.backends.errors import CheckpointError
from ttc.tasks.registry import builtin_models, find_builtin

__all__ = ["resolve_checkpoint", "load_backend"]


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


def load_backend(model: str, *, base_url: str | None = None, device: str = "auto", **options) -> Backend:
    """A backend for ``model``: an OpenAI-compatible server when ``base_url`` is given,
    else a local checkpoint (built-in name or directory) loaded in-process."""
    if base_url:
        from ttc.backends.openai_backend import OpenAIBackend

        return OpenAIBackend(base_url=base_url, model=model, **options)
    from ttc.backends.transformers_backend import TransformersBackend

    name, path = resolve_checkpoint(model)
    return TransformersBackend(path, name=name, device=device)
