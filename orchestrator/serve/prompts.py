"""Prompts for in-process models: their chat template (or ttc's), cut to fit their context.

Prompts of in-process models (the built-in checkpoints, ``--model`` paths) are rendered
with the model's chat template when it has one, else with ttc's own
(:func:`~ttc.orchestrator.chat.render_messages`, the built-in models' prompt format), and
cut from the left so that ``min(max_tokens, context/2)`` tokens remain for generation;
``max_tokens`` is clamped to what the context holds. A length never rejects a request.
Remote models decide about templates and lengths themselves.
"""

from __future__ import annotations

import logging
from typing import Any

from ttc.backends.base import Backend
from ttc.backends.errors import BadInputError
from ttc.backends.types import SamplingParams

from ..chat import render_messages

__all__ = ["FittedBackend", "chat_prompt", "fit_prompt", "fitted", "tokenizer_of"]

log = logging.getLogger("ttc.serve")


def tokenizer_of(backend: Backend) -> Any:
    # A GenerationQueue wraps the in-process backend; only in-process models have one.
    return getattr(getattr(backend, "inner", backend), "tokenizer", None)


def chat_prompt(backend: Backend, messages: list[dict[str, str]]) -> str:
    """The conversation as ``backend``'s prompt: its chat template, else ttc's.

    A template that refuses the conversation (some insist that roles alternate) falls back
    to ttc's rendering, so any sequence of roles works.
    """
    tok = tokenizer_of(backend)
    if tok is not None and getattr(tok, "chat_template", None):
        try:
            return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception as exc:  # noqa: BLE001 - a Jinja error of the checkpoint's own template
            log.info("chat template of %s refused the conversation (%s); using ttc's", backend.name, exc)
    return render_messages(messages)


def fit_prompt(backend: Backend, prompt: str, max_tokens: int) -> tuple[str, int, int]:
    """Cuts ``prompt`` from the left so ``min(max_tokens, context/2)`` tokens remain, and
    clamps ``max_tokens`` to the room left.

    Returns:
        The prompt, the clamped max_tokens and how many prompt tokens were cut. A model
        whose context is unknown (a remote one) gets all three unchanged.
    """
    tok, ctx = tokenizer_of(backend), backend.info.max_context
    if tok is None or not ctx or ctx < 2:
        return prompt, max_tokens, 0
    allowed = ctx - min(max_tokens, ctx // 2)
    length = len(tok(prompt, add_special_tokens=True)["input_ids"])
    original = length
    if length > allowed:
        body = tok(prompt, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = body["input_ids"], body.get("offset_mapping")
        drop = length - allowed
        while True:
            if drop >= len(ids):
                prompt = ""
            elif offsets is not None:
                prompt = prompt[offsets[drop][0]:]
            else:
                prompt = tok.decode(ids[drop:], skip_special_tokens=True)
            length = len(tok(prompt, add_special_tokens=True)["input_ids"])
            # Tokens can merge differently at the new start: cut again until it fits.
            if length <= allowed or not prompt:
                break
            body = tok(prompt, add_special_tokens=False, return_offsets_mapping=True)
            ids, offsets, drop = body["input_ids"], body.get("offset_mapping"), length - allowed
    return prompt, max(1, min(max_tokens, ctx - length)), max(0, original - length)


class FittedBackend:
    """An in-process model whose every prompt is cut from the left to fit its context.

    Strategies and verifiers build prompts of their own (a judge's prompt quotes the
    problem and the candidate), which may not fit a small built-in model; a request must
    still never fail for a length, so each call fits its prompts as :func:`fit_prompt` does.
    """

    def __init__(self, backend: Backend):
        self._backend = backend
        self.inner = getattr(backend, "inner", backend)
        self.name = backend.name
        self.pools_tokens = getattr(backend, "pools_tokens", False)

    @property
    def info(self) -> Any:
        return self._backend.info

    def count_tokens(self, text: str) -> int:
        # An upper bound of what the call prefills once the prompt is fitted.
        tok, ctx = tokenizer_of(self._backend), self._backend.info.max_context
        return min(len(tok(text, add_special_tokens=True)["input_ids"]), ctx - 1)

    def _fit(self, prompts: list[str], params: SamplingParams) -> tuple[list[str], SamplingParams]:
        fitted = [fit_prompt(self._backend, p, params.max_tokens) for p in prompts]
        limit = min((m for _, m, _ in fitted), default=params.max_tokens)
        return [p for p, _, _ in fitted], params.model_copy(update={"max_tokens": limit})

    def generate(self, prompts: list[str], params: SamplingParams) -> list[Any]:
        if isinstance(prompts, str):
            raise BadInputError("generate() takes a list of prompts, not one string")
        fitted, used = self._fit(list(prompts), params)
        return self._backend.generate(fitted, used)

    def stream(self, prompt: str, params: SamplingParams) -> Any:
        fitted, used = self._fit([prompt], params)
        return self._backend.stream(fitted[0], used)

    def close(self) -> None:
        pass  # the orchestrator owns the model


def fitted(backend: Backend) -> Backend:
    if tokenizer_of(backend) is None or not backend.info.max_context or backend.info.max_context < 2:
        return backend  # a remote model decides about lengths itself
    return FittedBackend(backend)  # type: ignore[return-value]
