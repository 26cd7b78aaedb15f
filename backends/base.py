"""The backend protocol: the one seam between ttc and a model.

Like an httpx transport, a backend is small: it turns prompts plus sampling parameters
into completions with exact token counts. Everything above (budgets, strategies,
tracing) is written against this protocol, so a scripted backend can stand in for a
model in unit tests of control flow.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol, runtime_checkable

from .types import Generation, ModelInfo, SamplingParams

__all__ = ["Backend", "CompletionStream"]


@runtime_checkable
class CompletionStream(Protocol):
    """Text deltas of one completion as it decodes.

    Attributes:
        generation: None while decoding; the finished Generation (text, exact token
            counts, usage) once the stream ends or is closed.
    """

    generation: Generation | None

    def __iter__(self) -> Iterator[str]: ...

    def __next__(self) -> str: ...

    def close(self) -> None:
        """Stops decoding early (TrimR does); what was generated so far stays billed."""
        ...

    def inject(self, text: str) -> None:
        """Appends ``text`` after what was generated so far and decodes on from it.

        TrimR injects its conclusion prompts this way. The injected text comes out as the
        next delta and is part of the completion's text; its tokens are billed as
        prompt tokens (prefilled), never as generated ones. The transformers backend
        prefills them into the running KV cache; an OpenAI-compatible server gets a new
        completion of prompt + text so far + ``text`` (its whole prompt is billed again,
        as the server prefills it again); ``max_tokens`` still bounds the generated tokens.
        """
        ...

    def inject_tokens(self, text: str) -> int:
        """Prompt tokens ``inject(text)`` would prefill (what a ledger must hold first)."""
        ...


@runtime_checkable
class Backend(Protocol):
    """What every backend implements.

    Attributes:
        name: The model name recorded in traces (``gen_ai.request.model``).
        pools_tokens: True when ``generate`` enforces ``SamplingParams.max_total_tokens``
            itself (never generating more than the pool for all samples of a prompt), so a
            ledger may reserve the pool instead of ``max_tokens x n``. False where the cap
            cannot be enforced (an OpenAI-compatible server): callers then reserve the
            worst case and should not send the cap.
    """

    name: str
    pools_tokens: bool

    @property
    def info(self) -> ModelInfo:
        """The model's shape and checkpoint digest, for cost accounting."""
        ...

    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[Generation]:
        """Sample ``params.n`` completions for each prompt.

        Args:
            prompts: Raw prompt strings (no chat template is applied here).
            params: Sampling parameters shared by all prompts.

        Returns:
            One Generation per prompt, in order, each with ``params.n`` completions (fewer
            under a pooled cap, see ``pools_tokens``) and usage billed by the accounting
            rule (each prompt prefilled once).

        Raises:
            BackendError: The model could not be reached or failed.
        """
        ...

    def stream(self, prompt: str, params: SamplingParams) -> CompletionStream:
        """Streams one completion (``params.n`` must be 1) as text deltas."""
        ...

    def count_tokens(self, text: str) -> int:
        """Prompt tokens ``text`` costs on this backend (for budget reservations)."""
        ...

    def close(self) -> None:
        """Release connections or memory. Safe to call twice."""
        ...
