"""Streaming one completion from an OpenAI-compatible server, and billing it when it ends.

Split from ``openai_backend`` because a stream has its own life cycle (opened lazily,
retried only until its first chunk, stopped early or cut mid-way) and its own billing
fallbacks, which read more clearly apart from the request/response path. The stream
reaches into its backend through ``StreamHost`` rather than importing ``OpenAIBackend``,
so the two modules do not import each other (the layer check forbids import circles).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from itertools import chain
from typing import Any, Protocol

import openai

from ._retry import RetryPolicy, StreamCut, call_with_retries, describe
from ._usage import Choice, usage_pair
from .errors import BackendError
from .types import Generation, SamplingParams, Usage

__all__ = ["OpenAIStream", "StreamHost"]


class StreamHost(Protocol):
    """What OpenAIStream uses of its backend: an ``OpenAIBackend`` in practice."""

    base_url: str
    last_usage: Usage | None
    last_generation: Generation | None
    _tokenizer: Any
    _client: openai.OpenAI
    _policy: RetryPolicy
    _clock: Callable[[], float]

    @property
    def mode(self) -> str: ...  # read-only here, so the backend's Literal fits

    def count_tokens(self, text: str) -> int: ...

    def _sampling_kwargs(self, params: SamplingParams, chat: bool) -> dict[str, Any]: ...

    def _build(
        self,
        choices: list[Choice],
        usage: tuple[int, int] | None,
        params: SamplingParams,
        latency: float,
        count_prompt: Callable[[], int],
    ) -> Generation: ...


class OpenAIStream:
    """Iterator of the text chunks of one streamed completion, billed when it ends.

    Like the transformers backend's TokenStream: ``generation`` is set once the stream
    finishes, or when a consumer (TrimR) stops early with ``close()``, which bills what
    was received so far with finish reason ``"stop"``. ``usage`` is set whenever tokens
    were spent, a stream cut by the network included.

    An early stop or a cut gets no final usage from the server, so it is billed by the
    last per-chunk usage if the server sent one, else by the tokenizer's count of the
    text received, else by the number of chunks received (vLLM and llama.cpp send one
    token per chunk by default).

    ``inject(text)`` stops the request under way (billed as an early stop) and continues
    with a new completion of prompt + text so far + ``text`` (in chat mode, the partial
    reply is continued as the assistant's message, a vLLM/SGLang extension); the new
    request's whole prompt is billed, as the server prefills it again. The finished
    generation sums every request's usage; its text is the whole reply, ``text``
    included, and ``max_tokens`` bounds the generated tokens of all requests together.
    """

    def __init__(self, backend: StreamHost, prompt: str, params: SamplingParams):
        self._backend, self._prompt, self._params = backend, prompt, params
        self._original, self._before = prompt, ""  # text of earlier requests + injections
        self._earlier: list[Generation] = []
        self._pieces: list[str] = []
        self._finish: str | None = None
        self._usage: Any = None
        self._opened = False
        self._start = 0.0
        self._chunks = self._run()
        self.generation: Generation | None = None
        self.usage: Usage | None = None

    def __iter__(self) -> OpenAIStream:
        return self

    def __next__(self) -> str:
        return next(self._chunks)

    def inject_tokens(self, text: str) -> int:
        """Prompt tokens the continuation request after ``inject(text)`` will be billed."""
        return self._backend.count_tokens(self._original + self._before + "".join(self._pieces) + text)

    def inject(self, text: str) -> None:
        """Ends this request and continues with a new one after ``text`` (see the class)."""
        if self.generation is not None:
            raise BackendError("cannot inject into a finished stream")
        self._chunks.close()
        if self._opened:
            self._earlier.append(self._bill(exact=False, merge=False))
        self._before += "".join(self._pieces) + text
        used = sum(c.completion_tokens for g in self._earlier for c in g.completions)
        self._params = self._params.model_copy(update={"max_tokens": max(1, self._params.max_tokens - used)})
        self._prompt = self._original + self._before
        self._pieces, self._finish, self._usage, self._opened = [], None, None, False
        self.usage = None
        self._chunks = self._after(text)

    def _after(self, text: str) -> Iterator[str]:
        # A generator (not itertools.chain) so that close() before the next request ends it.
        yield text
        yield from self._run()

    def close(self) -> None:
        """Stop reading (the server then aborts the request) and bill what arrived."""
        if self.usage is None:
            self._chunks.close()
            if self._opened and self.usage is None:
                self._settle(self._finish or "stop", exact=False)
            elif self.usage is None and self._earlier:
                # Closed after an injection, before its request was sent: bill the earlier ones.
                last, rest = self._earlier[-1], self._earlier[:-1]
                gen = _merged(rest, last, "") if rest else last
                c = gen.completions[0]
                text = self._before
                gen = gen.model_copy(update={"completions": [c.model_copy(update={"text": text,
                                                                                 "finish_reason": "stop"})]})
                self.generation = self._backend.last_generation = gen
                self.usage = self._backend.last_usage = gen.usage

    def __enter__(self) -> OpenAIStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _run(self) -> Iterator[str]:
        b = self._backend
        self._start = b._clock()
        stream, it, head = call_with_retries(self._open, b._policy)
        self._opened = True
        try:
            for chunk in chain(head, it):
                self._finish = _chunk_finish(chunk) or self._finish
                self._usage = getattr(chunk, "usage", None) or self._usage
                text = _chunk_text(chunk, b.mode)
                if text:
                    self._pieces.append(text)
                    yield text
        except (openai.OpenAIError, ValueError) as exc:  # ValueError: a garbled event
            if self._finish is not None:
                # Lost only the usage chunk after a finished completion: the text is
                # whole, so settle with the fallback bill rather than fail the call.
                self._settle(self._finish, exact=False)
                return
            self._bill(exact=False)
            raise BackendError(
                f"{b.base_url}: stream was cut after {len(self._pieces)} chunks: {describe(exc)}"
            ) from exc
        finally:
            stream.close()
        if self._finish is None:
            self._bill(exact=False)
            raise BackendError(
                f"{b.base_url}: stream was cut after {len(self._pieces)} chunks "
                "(it ended without a finish reason)"
            )
        self._settle(self._finish, exact=True)

    def _open(self) -> tuple[Any, Any, list[Any]]:
        """Start the stream and read ahead to its first text chunk.

        Until that chunk nothing has reached the caller, so any failure up to here can be
        retried like an ordinary request.
        """
        b, params = self._backend, self._params
        # Logprobs are not collected from streams; asking would only bloat every chunk.
        kwargs = b._sampling_kwargs(params.model_copy(update={"logprobs": False}),
                                    chat=b.mode == "chat")
        kwargs.update(stream=True, stream_options={"include_usage": True})
        if b.mode == "chat":
            messages = [{"role": "user", "content": self._original}]
            if self._before:  # after an injection: continue the partial reply
                messages.append({"role": "assistant", "content": self._before})
                kwargs["extra_body"] = {**kwargs.get("extra_body", {}), "continue_final_message": True,
                                        "add_generation_prompt": False}
            stream = b._client.chat.completions.create(messages=messages, **kwargs)
        else:
            stream = b._client.completions.create(prompt=self._prompt, **kwargs)
        head: list[Any] = []
        try:
            it = iter(stream)
            for chunk in it:
                head.append(chunk)
                if _chunk_text(chunk, b.mode):
                    return stream, it, head
        except BaseException:
            stream.close()
            raise
        if not any(_chunk_finish(c) for c in head):
            raise StreamCut("stream ended before any text and without a finish reason")
        return stream, it, head

    def _bill(self, exact: bool, merge: bool = True) -> Generation:
        b = self._backend
        usage = usage_pair(self._usage, b.base_url)
        if usage is None and not exact and b._tokenizer is None:
            usage = (b.count_tokens(self._prompt), len(self._pieces))  # one token per chunk
        gen = b._build(
            [("".join(self._pieces), self._finish, None)], usage, self._params,
            b._clock() - self._start, lambda: b.count_tokens(self._prompt),
        )
        if merge and self._earlier:
            gen = _merged(self._earlier, gen, self._before)
        self.usage = b.last_usage = gen.usage
        return gen

    def _settle(self, finish: str, exact: bool) -> None:
        self._finish = finish
        self.generation = self._backend.last_generation = self._bill(exact)


def _merged(earlier: list[Generation], last: Generation, before: str) -> Generation:
    """One generation for a reply that took several requests (TrimR's injections)."""
    gens = [*earlier, last]
    usage = gens[0].usage
    for g in gens[1:]:
        usage = usage + g.usage
    c = last.completions[0]
    comp = c.model_copy(update={"text": before + c.text,
                                "completion_tokens": sum(g.completions[0].completion_tokens for g in gens),
                                "token_ids": None, "logprobs": None})
    return last.model_copy(update={"completions": [comp], "usage": usage,
                                   "prompt_tokens": sum(g.prompt_tokens for g in gens),
                                   "latency_s": sum(g.latency_s for g in gens)})


def _chunk_text(chunk: Any, mode: str) -> str:
    if not chunk.choices:
        return ""
    choice = chunk.choices[0]
    if mode == "chat":
        return (choice.delta.content if choice.delta is not None else None) or ""
    return choice.text or ""


def _chunk_finish(chunk: Any) -> str | None:
    return chunk.choices[0].finish_reason if chunk.choices else None
