"""Records every backend speaks: sampling parameters, completions, usage, model cost facts."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import BadInputError

__all__ = ["SamplingParams", "Completion", "Generation", "Usage", "ModelInfo", "FinishReason", "UserInput"]

FinishReason = Literal["stop", "length"]


class UserInput(BaseModel):
    """A record built from user input: an invalid field raises BadInputError (exit code 2).

    pydantic wraps errors raised in validators into its own ValidationError; callers of
    ttc catch TTCError, so the first problem is re-raised as one BadInputError line.
    """

    def __init__(self, **data):
        try:
            super().__init__(**data)
        except ValidationError as exc:
            err = exc.errors()[0]
            msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
            loc = ".".join(str(p) for p in err.get("loc", ()))
            raise BadInputError(msg if not loc or loc in msg else f"{loc}: {msg}") from None


class SamplingParams(UserInput):
    """How to sample. Mirrors the OpenAI request fields so that bodies map one to one.

    Attributes:
        n: Completions per prompt. They share the prompt's prefill (counted once).
        max_tokens: Generated tokens per completion, at most.
        temperature: 0 means greedy.
        top_p: Nucleus sampling mass.
        stop: Strings that end a completion; the stop string is not part of the text.
        seed: Makes sampling reproducible where the backend supports it.
        logprobs: Return the log-probability of each generated token.
        ignore_eos: Keep generating past end-of-sequence (benchmarks of fixed length).
    """

    model_config = ConfigDict(frozen=True)

    n: int = 1
    max_tokens: int = 128
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    logprobs: bool = False
    ignore_eos: bool = False

    @field_validator("n", "max_tokens")
    @classmethod
    def _positive(cls, v: int, info) -> int:
        if v < 1:
            raise BadInputError(f"{info.field_name} must be at least 1, got {v}")
        return v

    @field_validator("temperature")
    @classmethod
    def _temperature(cls, v: float) -> float:
        if v < 0:
            raise BadInputError(f"temperature must be >= 0, got {v}")
        return v

    @field_validator("top_p")
    @classmethod
    def _top_p(cls, v: float) -> float:
        if not 0 < v <= 1:
            raise BadInputError(f"top_p must be in (0, 1], got {v}")
        return v


class Usage(BaseModel):
    """Tokens billed for one or more model calls.

    ``prompt_tokens`` counts the prompt tokens actually prefilled: a prompt shared by n
    samples counts once. ``completion_tokens`` counts every generated token of every
    sample. This is the one accounting rule of DESIGN.md.
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: "Usage") -> "Usage":
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            calls=self.calls + other.calls,
        )


class Completion(BaseModel):
    """One sampled continuation of a prompt."""

    text: str
    completion_tokens: int
    finish_reason: FinishReason
    token_ids: list[int] | None = None
    logprobs: list[float] | None = None


class Generation(BaseModel):
    """What one prompt of one backend call produced: ``n`` completions and their bill.

    Attributes:
        prompt_tokens: Length of the prompt in tokens (prefilled once for all samples).
        usage: Billed tokens for this prompt, by the accounting rule.
        latency_s: Wall time of the call that produced it.
        model: The backend's model name.
    """

    model: str
    prompt_tokens: int
    completions: list[Completion]
    usage: Usage
    latency_s: float = 0.0


class ModelInfo(BaseModel):
    """A model's shape, as far as it is known, so usage converts to FLOPs and bytes.

    Unknown fields stay None (a remote endpoint may not say); cost functions then fall
    back to what they can compute.
    """

    name: str
    path: str | None = None
    parameters: int | None = Field(None, description="all parameters, embeddings included")
    non_embedding_parameters: int | None = None
    layers: int | None = None
    hidden_size: int | None = None
    intermediate_size: int | None = None
    attention_heads: int | None = None
    kv_heads: int | None = None
    head_dim: int | None = None
    vocab_size: int | None = None
    max_context: int | None = None
    dtype_bytes: int = 2
    checkpoint_digest: str | None = None

    @property
    def kv_dim(self) -> int | None:
        """Width of one layer's key (or value) projection: kv_heads x head_dim."""
        if self.kv_heads is None or self.head_dim is None:
            return None
        return self.kv_heads * self.head_dim

    @property
    def kv_bytes_per_token(self) -> int | None:
        """Bytes of KV cache one token occupies across all layers (keys and values)."""
        if self.layers is None or self.kv_dim is None:
            return None
        return 2 * self.layers * self.kv_dim * self.dtype_bytes
