"""A backend for any OpenAI-compatible server: vLLM, SGLang, llama.cpp, Ollama, ``ttc serve``.

Token counts come from the server's ``usage``, because budgets settle in exact tokens;
a server is untrusted, so each count is checked before anything is billed. Transient
failures are retried with jittered backoff (see ``_retry``); rejected requests are not.
Streams live in ``_openai_stream`` and the checks and splitting of usage in ``_usage``;
``OpenAIStream`` is re-exported here, where callers have always found it.
The injectable ``httpx`` client is also the tests' seam (``httpx.MockTransport``), and
the injectable sleep and clock let them check the retry schedule without waiting.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import httpx
import openai

from ._openai_stream import OpenAIStream
from ._retry import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
    RetryPolicy,
    call_with_retries,
    env_text,
    one_line,
    retries_option,
    seconds_option,
)
from ._usage import Choice, finish_reason, split_total, usage_pair, utf8_len
from .errors import BackendError, BadInputError, TTCError
from .types import Completion, Generation, ModelInfo, SamplingParams, Usage

__all__ = ["OpenAIBackend", "OpenAIStream"]

Mode = Literal["completions", "chat"]

# Byte-level tokenizers never need more tokens than UTF-8 bytes, but a server may add
# special tokens (BOS, a SentencePiece dummy-prefix piece) and, in chat mode, a whole chat
# template around the text. These allowances keep the fallback count an upper bound.
_SPECIAL_TOKEN_ALLOWANCE = 4
_CHAT_TEMPLATE_ALLOWANCE = 64


class OpenAIBackend:
    """Talk to a model behind an OpenAI-compatible HTTP API.

    Args:
        base_url: API root including the version prefix, e.g. ``http://localhost:8000/v1``.
        model: Model name the server knows; also this backend's ``name``.
        api_key: Bearer token; defaults to ``$OPENAI_API_KEY``, else ``"EMPTY"`` (vLLM
            accepts any key unless started with ``--api-key``).
        mode: ``"completions"`` sends raw prompts to ``/completions``; ``"chat"`` sends
            each prompt as one user message to ``/chat/completions`` (the server applies
            its chat template).
        timeout: Seconds to wait for a response once connected (read timeout; also
            write and pool). None: ``$TTC_TIMEOUT``, else 600.
        max_retries: Retries after the first attempt on 429, 5xx, connection errors and
            timeouts. None: ``$TTC_MAX_RETRIES``, else 3.
        backoff_initial: First backoff wait in seconds; waits double up to ``backoff_max``.
        backoff_max: Longest single wait, a server's Retry-After included.
        info: The model's shape for FLOPs accounting; ``ModelInfo(name=model)`` if unknown.
        tokenizer: The served model's tokenizer, as a local directory, a Hugging Face
            name, or a loaded tokenizer: makes ``count_tokens`` exact and counts usage a
            server omits. None: ``$TTC_TOKENIZER``, else none (an upper-bound count).
            A built-in model name is resolved to its directory by ``load_backend``.
        http_client: An ``httpx.Client`` to send requests through (proxies, tests).
        connect_timeout: Seconds to wait for a connection. None:
            ``$TTC_CONNECT_TIMEOUT``, else 5; with the default retries an endpoint where
            nothing listens fails within about 25 s.
        trust_remote_code: Let a tokenizer directory run its own Python (``auto_map``).
        sleep: Called with each backoff wait; tests pass a recorder.
        clock: Monotonic seconds for latencies and the time a failure took; tests pass
            a fake.

    Attributes:
        pools_tokens: False: a server cannot be made to enforce a pooled token cap for
            all ``n`` samples of a request, so ``SamplingParams.max_total_tokens`` is
            never sent and callers reserve ``max_tokens x n``.
        last_usage: Bill of the latest ``stream``, set when it ends (per instance, so
            not meaningful across threads; prefer the stream's own ``usage``).
        last_generation: The latest stream as a Generation, once finished or closed.

    Raises:
        BadInputError: A malformed base_url, unknown mode, invalid timeout or retry
            count (an argument or its ``TTC_*`` variable), or an unloadable tokenizer.
    """

    pools_tokens = False

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        mode: Mode = "completions",
        timeout: float | None = None,
        max_retries: int | None = None,
        backoff_initial: float = 0.5,
        backoff_max: float = 20.0,
        info: ModelInfo | None = None,
        tokenizer: Any = None,
        http_client: httpx.Client | None = None,
        *,
        connect_timeout: float | None = None,
        trust_remote_code: bool = False,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        parsed = urlparse(base_url)
        # Checked here because httpx reports a missing scheme as a connection error,
        # which the retry loop would then dutifully repeat.
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise BadInputError(f"base_url must look like http://HOST:PORT/v1, got {base_url!r}")
        if mode not in ("completions", "chat"):
            raise BadInputError(f"mode must be 'completions' or 'chat', got {mode!r}")
        if not 0 <= backoff_initial <= backoff_max:
            raise BadInputError(
                "need 0 <= backoff_initial <= backoff_max, got "
                f"{backoff_initial}, {backoff_max}"
            )
        self.connect_timeout = seconds_option(
            connect_timeout, "connect_timeout", "TTC_CONNECT_TIMEOUT", DEFAULT_CONNECT_TIMEOUT
        )
        self.timeout = seconds_option(timeout, "timeout", "TTC_TIMEOUT", DEFAULT_TIMEOUT)
        self.max_retries = retries_option(
            max_retries, "max_retries", "TTC_MAX_RETRIES", DEFAULT_MAX_RETRIES
        )
        self.base_url = base_url.rstrip("/")
        self.model = self.name = model
        self.mode: Mode = mode
        self._info = info if info is not None else ModelInfo(name=model)
        source = "tokenizer"
        if tokenizer is None and env_text("TTC_TOKENIZER") is not None:
            tokenizer, source = env_text("TTC_TOKENIZER"), "TTC_TOKENIZER"
        self._tokenizer = _load_tokenizer(tokenizer, trust_remote_code, source)
        self._clock = clock
        self._policy = RetryPolicy(
            self.base_url, self.max_retries, backoff_initial, backoff_max, sleep, clock
        )
        self._client = openai.OpenAI(
            base_url=self.base_url,
            api_key=api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY",
            # Split so that a dead host costs seconds while a long generation may take
            # minutes; the client applies this per request, a passed-in client included.
            timeout=openai.Timeout(self.timeout, connect=self.connect_timeout),
            max_retries=0,  # ours is the only retry loop, so attempts are counted once
            http_client=http_client,
        )
        self._closed = False
        self.last_usage: Usage | None = None
        self.last_generation: Generation | None = None

    @property
    def info(self) -> ModelInfo:
        """The model's shape as given at construction (a remote server does not say)."""
        return self._info

    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[Generation]:
        """Sample ``params.n`` completions per prompt, one request per prompt.

        Raises:
            EndpointError: The server stayed unreachable or overloaded through all retries.
            BackendError: The server rejected a request or reported no usage.
        """
        if isinstance(prompts, str):
            raise BadInputError("generate takes a list of prompts, got one string")
        if self.mode == "chat":
            return [self.chat([{"role": "user", "content": p}], params) for p in prompts]
        return [self._complete(p, params) for p in prompts]

    def chat(self, messages: list[dict], params: SamplingParams) -> Generation:
        """Sample ``params.n`` replies to a conversation of ``{"role", "content"}`` dicts.

        Works in either mode: it always posts to ``/chat/completions``.
        """
        self._check_open()
        kwargs = self._sampling_kwargs(params, chat=True)
        create = self._client.chat.completions.create
        start = self._clock()
        resp = call_with_retries(lambda: create(messages=messages, **kwargs), self._policy)
        latency = self._clock() - start

        def parse(c: Any) -> Choice:
            lps = c.logprobs.content if c.logprobs is not None else None
            lps = None if lps is None else [t.logprob for t in lps]
            return c.message.content or "", c.finish_reason, lps

        choices, usage = self._parse(resp, parse)
        return self._build(choices, usage, params, latency, lambda: self._count_chat(messages))

    def stream(self, prompt: str, params: SamplingParams) -> OpenAIStream:
        """Stream one completion as text chunks; see OpenAIStream for how it is billed.

        Nothing is sent until the first ``next()``. A failure before the first chunk is
        retried like any request; a stream cut after chunks were yielded raises
        BackendError instead of passing off a truncated completion as finished.

        Raises:
            BadInputError: ``params.n`` is not 1 (at the call, not at the first next()).
        """
        if params.n != 1:
            raise BadInputError(f"stream needs n=1, got n={params.n}")
        self._check_open()
        self.last_usage = self.last_generation = None
        return OpenAIStream(self, prompt, params)

    def count_tokens(self, text: str) -> int:
        """Prompt tokens ``text`` costs: exact with a tokenizer, else an upper bound.

        Without a tokenizer this is the UTF-8 byte length plus an allowance for special
        tokens (in chat mode, for the chat template): never fewer than the server will
        bill, because budgets reserve the worst case before a call.
        """
        if self._tokenizer is not None:
            if self.mode == "chat":
                return self._count_chat([{"role": "user", "content": text}])
            return len(self._tokenizer.encode(text))
        allowance = _CHAT_TEMPLATE_ALLOWANCE if self.mode == "chat" else _SPECIAL_TOKEN_ALLOWANCE
        return len(text.encode("utf-8")) + allowance

    def close(self) -> None:
        """Close the HTTP client (including one passed in). Safe to call twice."""
        if not self._closed:
            self._closed = True
            self._client.close()

    def __enter__(self) -> OpenAIBackend:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"OpenAIBackend({self.base_url!r}, model={self.model!r}, mode={self.mode!r})"

    # -- requests and accounting ------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise BackendError(f"{self.base_url}: backend is closed")

    def _sampling_kwargs(self, params: SamplingParams, chat: bool) -> dict[str, Any]:
        kwargs: dict[str, Any] = dict(
            model=self.model, n=params.n, max_tokens=params.max_tokens,
            temperature=params.temperature, top_p=params.top_p,
        )
        if params.stop:
            kwargs["stop"] = list(params.stop)
        if params.seed is not None:
            kwargs["seed"] = params.seed
        if params.logprobs:
            # The sampled token's own logprob: chat takes a flag, completions the number
            # of alternatives, and 1 is the smallest every server honours.
            kwargs["logprobs"] = True if chat else 1
        if params.ignore_eos:
            # A vLLM/SGLang extension, sent only when asked so that stricter servers work.
            kwargs["extra_body"] = {"ignore_eos": True}
        return kwargs

    def _complete(self, prompt: str, params: SamplingParams) -> Generation:
        self._check_open()
        kwargs = self._sampling_kwargs(params, chat=False)
        create = self._client.completions.create
        start = self._clock()
        resp = call_with_retries(lambda: create(prompt=prompt, **kwargs), self._policy)
        latency = self._clock() - start

        def parse(c: Any) -> Choice:
            lps = c.logprobs.token_logprobs if c.logprobs is not None else None
            # Only an echoed prompt's first token lacks a logprob; count it as certain.
            lps = None if lps is None else [0.0 if x is None else float(x) for x in lps]
            return c.text or "", c.finish_reason, lps

        choices, usage = self._parse(resp, parse)
        return self._build(choices, usage, params, latency, lambda: self.count_tokens(prompt))

    def _parse(
        self, resp: Any, parse: Callable[[Any], Choice]
    ) -> tuple[list[Choice], tuple[int, int] | None]:
        """Choices in index order, and (prompt, completion) tokens if the server said."""
        try:
            choices = [parse(c) for c in sorted(resp.choices, key=lambda c: c.index)]
            reported = resp.usage
        except (AttributeError, TypeError, ValueError) as exc:
            # The openai client hands back a plain string when a proxy answers with HTML.
            raise BackendError(
                f"{self.base_url}: unexpected response ({type(exc).__name__}): "
                f"{one_line(repr(resp), 120)}"
            ) from exc
        if not choices:
            raise BackendError(f"{self.base_url}: the server returned no choices")
        return choices, usage_pair(reported, self.base_url)

    def _build(
        self,
        choices: list[Choice],
        usage: tuple[int, int] | None,
        params: SamplingParams,
        latency: float,
        count_prompt: Callable[[], int],
    ) -> Generation:
        """A Generation billed by the server's usage, or by the tokenizer if it gave none."""
        if usage is not None:
            prompt_tokens, total = usage
        elif self._tokenizer is not None:
            # The tokenizer's count of the returned text is the best figure left (an
            # end-of-sequence token the server sampled but did not return is not in it).
            prompt_tokens = count_prompt()
            total = sum(self._count_text(text) for text, _, _ in choices)
        else:
            raise BackendError(
                f"{self.base_url}: the server reported no token usage (or only part of "
                "it); pass tokenizer= so ttc can count tokens (budgets need exact counts)"
            )
        finishes = [finish_reason(reason) for _, reason, _ in choices]
        counts = self._split(total, choices, finishes, params.max_tokens)
        return Generation(
            model=self.model,
            prompt_tokens=prompt_tokens,
            completions=[
                Completion(text=text, completion_tokens=k, finish_reason=f, logprobs=lps)
                for (text, _, lps), f, k in zip(choices, finishes, counts)
            ],
            # Servers report the prompt once per request even for n > 1: exactly the
            # budget's rule that a shared prefix counts once.
            usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=total, calls=1),
            latency_s=latency,
        )

    def _split(
        self, total: int, choices: list[Choice], finishes: list[str], max_tokens: int
    ) -> list[int]:
        """Per-choice counts summing to ``total``, weighed by tokenizer or UTF-8 length."""
        count = self._count_text if self._tokenizer is not None else utf8_len
        return split_total(total, choices, finishes, max_tokens, count)

    def _count_text(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False))

    def _count_chat(self, messages: list[dict]) -> int:
        """Prompt tokens of a chat, through the tokenizer's chat template if it has one."""
        tok = self._tokenizer
        if getattr(tok, "chat_template", None):
            ids = tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
            if hasattr(ids, "keys"):  # transformers 5 returns a BatchEncoding
                ids = ids["input_ids"]
            return len(ids)
        return sum(len(tok.encode(str(m.get("content", "")))) for m in messages)


def _load_tokenizer(tokenizer: Any, trust_remote_code: bool, source: str) -> Any:
    """A tokenizer from a directory or Hugging Face name; a loaded one passes through.

    Args:
        tokenizer: None, a loaded tokenizer, or a directory or name to load.
        trust_remote_code: Let the tokenizer run its own Python (``auto_map``).
        source: Where the value came from (``tokenizer`` or ``TTC_TOKENIZER``), named
            in errors so a stale variable is easy to spot.

    Raises:
        BadInputError: The directory is missing, would run its own code without
            ``trust_remote_code``, or cannot be loaded.
    """
    if tokenizer is None or not isinstance(tokenizer, (str, os.PathLike)):
        return tokenizer
    spec = os.fspath(tokenizer)
    if not spec.strip():
        raise BadInputError(f"{source} must not be empty")
    path = Path(spec).expanduser()
    try:
        if path.is_dir():
            # The same loader and remote-code check as in-process checkpoints, so a
            # built-in model's tokenizer counts exactly as it does when run locally.
            from .transformers_backend import load_tokenizer, refuse_remote_code

            if not trust_remote_code:
                try:
                    refuse_remote_code(path)
                except BadInputError as exc:
                    raise BadInputError(f"{source}: {exc}") from exc
            return load_tokenizer(path, trust_remote_code=trust_remote_code)
        # A hub id also contains "/", so only what is plainly a path is refused here.
        if spec.startswith(("/", ".", "~")) or path.exists():
            raise BadInputError(f"{source}: tokenizer directory {spec!r} does not exist")
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(spec, trust_remote_code=trust_remote_code)
    except TTCError:
        raise
    except Exception as exc:  # OSError, ValueError, HFValidationError, ...
        message = f"{source}: cannot load tokenizer {spec!r}: {one_line(exc, 200)}"
        raise BadInputError(message) from exc
