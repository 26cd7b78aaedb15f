"""Backends: the seam between ttc and a model (in-process transformers, OpenAI-compatible HTTP, scripted)."""

from ._remote_code import refuse_remote_code
from .base import Backend, CompletionStream
from .errors import BackendError, BadInputError, CheckpointError, EndpointError, RunFailure, TTCError
from .scripted import ScriptedBackend
from .types import Completion, FinishReason, Generation, ModelInfo, SamplingParams, Usage


def __getattr__(name: str):
    # Heavy imports (torch, openai) load only when a backend is actually asked for.
    if name in ("TransformersBackend", "TokenStream", "checkpoint_digest"):
        from . import transformers_backend

        return getattr(transformers_backend, name)
    if name in ("OpenAIBackend", "OpenAIStream"):
        from . import openai_backend

        return getattr(openai_backend, name)
    raise AttributeError(f"module 'backends' has no attribute {name!r}")


__all__ = [
    "Backend",
    "BackendError",
    "BadInputError",
    "CheckpointError",
    "Completion",
    "CompletionStream",
    "EndpointError",
    "FinishReason",
    "Generation",
    "ModelInfo",
    "OpenAIBackend",
    "OpenAIStream",
    "RunFailure",
    "SamplingParams",
    "ScriptedBackend",
    "TTCError",
    "TokenStream",
    "TransformersBackend",
    "Usage",
    "checkpoint_digest",
    "refuse_remote_code",
]
