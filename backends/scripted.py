"""A deterministic backend for unit tests of control flow (never for benchmarks).

Like httpx's MockTransport, it takes a handler: a function from (prompt, sample index,
params) to the completion text. Tokens are counted as whitespace-free characters would
be by a character tokenizer: one token per character, so budgets are easy to reason
about in tests.

A pooled cap (``max_total_tokens``) is honoured as the transformers backend honours it,
with samples drawn one after another: a sample is started while the pool left is at
least the mean length of the samples finished so far (the first always starts), and the
sample running when the pool runs out is cut with finish reason ``"budget"``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from .types import Completion, Generation, ModelInfo, SamplingParams, Usage

__all__ = ["ScriptedBackend"]

Handler = Callable[[str, int, SamplingParams], str]


class ScriptedBackend:
    """Returns scripted completions with exact character-level token counts.

    Args:
        handler: ``(prompt, sample_index, params) -> text``; or a list of texts served
            in order, cycling, whatever the prompt.
        name: Model name recorded in traces.
        info: Cost facts to report (default: a 1M-parameter, 4-layer shape).
    """

    def __init__(self, handler: Handler | Sequence[str], *, name: str = "scripted", info: ModelInfo | None = None):
        if callable(handler):
            self._handler = handler
        else:
            texts = list(handler)
            counter = iter(range(10**12))
            self._handler = lambda prompt, i, params: texts[next(counter) % len(texts)]
        self.name = name
        self._info = info or ModelInfo(
            name=name, parameters=1_000_000, non_embedding_parameters=950_000, layers=4, hidden_size=128,
            intermediate_size=512, attention_heads=4, kv_heads=4, head_dim=32, vocab_size=100, max_context=4096,
        )
        self.calls: list[tuple[list[str], SamplingParams]] = []
        # generate() enforces SamplingParams.max_total_tokens itself.
        self.pools_tokens = True

    @property
    def info(self) -> ModelInfo:
        return self._info

    def count_tokens(self, text: str) -> int:
        return len(text)

    def _complete(self, prompt: str, i: int, params: SamplingParams) -> Completion:
        text = self._handler(prompt, i, params)
        finish = "stop"
        for s in params.stop:
            if s in text:
                text = text[: text.index(s)]
        if len(text) > params.max_tokens:
            text, finish = text[: params.max_tokens], "length"
        return Completion(text=text, completion_tokens=len(text), finish_reason=finish)

    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[Generation]:
        self.calls.append((list(prompts), params))
        out = []
        for p in prompts:
            if params.max_total_tokens is None:
                comps = [self._complete(p, i, params) for i in range(params.n)]
            else:
                comps = self._pooled(p, params)
            usage = Usage(prompt_tokens=len(p), completion_tokens=sum(c.completion_tokens for c in comps), calls=1)
            out.append(Generation(model=self.name, prompt_tokens=len(p), completions=comps, usage=usage))
        return out

    def _pooled(self, prompt: str, params: SamplingParams) -> list[Completion]:
        left, comps = params.max_total_tokens, []
        for i in range(params.n):
            finished = [c.completion_tokens for c in comps]
            if left < 1 or (finished and left < sum(finished) / len(finished)):
                break  # the rest are never started
            c = self._complete(prompt, i, params)
            if c.completion_tokens > left:
                c = Completion(text=c.text[:left], completion_tokens=left, finish_reason="budget")
            left -= c.completion_tokens
            comps.append(c)
        return comps

    def stream(self, prompt: str, params: SamplingParams) -> "_ScriptedStream":
        return _ScriptedStream(self.generate([prompt], params.model_copy(update={"n": 1}))[0], self, prompt, params)

    def close(self) -> None:
        pass


class _ScriptedStream:
    """Yields the scripted text one character (= one token) at a time.

    ``inject(text)`` emits ``text`` as the next delta and continues with the handler's
    completion of ``prompt + text so far + text`` (so a test scripts what follows an
    injection by looking at the prompt), within what is left of ``max_tokens``.
    """

    def __init__(self, generation: Generation, backend: "ScriptedBackend | None" = None, prompt: str = "",
                 params: SamplingParams | None = None):
        self._full = generation
        self._backend, self._prompt, self._params = backend, prompt, params
        self._chars: Iterator[str] = iter(generation.completions[0].text)
        self._sent = 0           # generated characters emitted (injected ones excluded)
        self._text = ""          # everything emitted, injected text included
        self._injected = 0
        self._queued: str | None = None
        self.generation: Generation | None = None

    def __iter__(self) -> "_ScriptedStream":
        return self

    def __next__(self) -> str:
        if self.generation is None:
            if self._queued is not None:
                text, self._queued = self._queued, None
                self._text += text
                return text
            for ch in self._chars:
                self._sent += 1
                self._text += ch
                return ch
            self._settle("stop")
        raise StopIteration

    def inject_tokens(self, text: str) -> int:
        return len(text)

    def inject(self, text: str) -> None:
        if self.generation is not None:
            raise RuntimeError("cannot inject into a finished stream")
        if self._backend is None or self._params is None:
            raise RuntimeError("this scripted stream cannot continue after an injection")
        left = max(0, self._params.max_tokens - self._sent)
        cont = self._backend._complete(self._prompt + self._text + text, 0,
                                       self._params.model_copy(update={"max_tokens": max(1, left)}))
        self._chars = iter(cont.text[:left])
        self._queued = (self._queued or "") + text
        self._injected += len(text)

    def close(self) -> None:
        if self.generation is None:
            self._settle("stop")

    def _settle(self, finish: str) -> None:
        if not self._injected and self._sent == len(self._full.completions[0].text):
            self.generation = self._full  # read to its end: exactly the scripted completion
            return
        text = self._text if self._queued is None else self._text + self._queued
        comp = Completion(text=text, completion_tokens=self._sent, finish_reason=finish)
        prompt = self._full.prompt_tokens + self._injected
        usage = Usage(prompt_tokens=prompt, completion_tokens=self._sent, calls=1)
        self.generation = self._full.model_copy(update={"completions": [comp], "usage": usage,
                                                        "prompt_tokens": prompt})
