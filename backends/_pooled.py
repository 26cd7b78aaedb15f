"""Decoding under a pooled token cap, by continuous batching over one cached prompt.

``SamplingParams.max_total_tokens`` caps the tokens all ``n`` samples of a prompt may
generate together (the budget ledger reserves that cap instead of ``max_tokens x n``).
The plain decoder would start every sample at once and cut them all short together; here
a fixed number of rows decode over copies of the prompt's KV cache, and a row whose
sample ends takes a fresh sample, so the pool is spent on whole samples while it lasts.

This module holds the pooled bookkeeping only. Sampling, stop-string checks and text
decoding are the plain decoder's, so :class:`_PooledDecoding` is a mixin that
``transformers_backend`` puts in front of its ``_Decoder``; it does not import that
module, which imports this one (no import circles, see ``.importlinter``).
"""

from __future__ import annotations

from typing import Any

import torch

from .types import Completion, Generation, SamplingParams, Usage

# A new sample starts only if the pool left, after what the samples in flight still need
# plus _SLACK x the spread of lengths x sqrt(samples in flight), holds a sample of this
# quantile of the lengths finished so far. Chosen on 100 held-out CountDown problems at a
# 1,024-token pool (countdown-direct, best_of_n without early stop): uncut samples per
# problem 22.9 with the mean and no slack, 23.0 with the 0.75 quantile, 23.5 with slack 2
# (24.7 drawn, accuracy unchanged at 60%).
_START_QUANTILE = 0.75
_SLACK = 2.0


def _pool_binds(backend: Any, prompt_len: int, params: SamplingParams) -> bool:
    """Whether a pooled cap can cut anything: a slack one leaves the plain decode as it is."""
    ctx = backend.info.max_context
    per_sample = min(params.max_tokens, ctx - prompt_len) if ctx else params.max_tokens
    return params.max_total_tokens < params.n * per_sample


class _PooledDecoding:
    """One prompt's samples under a pooled token cap, by continuous batching.

    The prompt is prefilled once; ``min(n, WIDTH)`` rows decode over copies of its KV
    cache. When a row's sample ends, the row is refilled with a fresh sample: its old
    generated columns are masked out of the 2D attention mask and explicit position ids
    restart right after the prompt, so the new sample sees exactly what a fresh one
    would (holes in the mask are skipped by the attention, positions come from the ids).
    Dead columns are squeezed out of the cache now and then (:meth:`_compact`).

    A new sample is started only while the pool left, less what the samples in flight
    are still expected to need, is at least the mean length of the samples finished so
    far: a sample that would likely be cut is not worth starting. Once the samples have
    generated ``max_total_tokens`` together, those still running end with "budget".

    Per-sample lists (``tokens``, ``finish``...) are indexed by sample id, in start
    order; ``active`` lists the sample id of each row of the batch.

    A mixin: ``_sample``, ``_hits_stop`` and ``text`` come from the plain ``_Decoder``
    placed after it (``transformers_backend._PooledDecoder``).
    """

    WIDTH = 16

    def __init__(self, backend: Any, prompt: list[int], params: SamplingParams):
        from transformers import DynamicCache

        self.b, self.params = backend, params
        self.prompt_lens = [len(prompt)]
        ctx = backend.info.max_context
        self.max_new = [min(params.max_tokens, ctx - len(prompt)) if ctx else params.max_tokens]
        self.max_stop = max((len(s.encode("utf-8")) for s in params.stop), default=0)
        dev = backend.device
        self.generator = None if params.seed is None else torch.Generator(device=dev).manual_seed(params.seed)
        self.tokens: list[list[int]] = []
        self.logprobs: list[list[float]] = []
        self.finish: list[str | None] = []
        self.stop_hit: list[bool] = []
        self.pool_left = params.max_total_tokens
        self.done_lens: list[int] = []  # lengths of samples that ended on their own
        # A full-attention cache on every layer, so that refills and compaction only
        # ever deal with plain key/value tensors.
        self.cache = DynamicCache()
        ids = torch.tensor([prompt], device=dev)
        with torch.inference_mode():
            out = backend.model(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                position_ids=torch.arange(len(prompt), device=dev).view(1, -1),
                use_cache=True,
                logits_to_keep=1,
                **{backend._cache_kw: self.cache},
            )
        self.first_logits = out.logits[:, -1, :].float()  # what every fresh sample starts from
        # Until a sample finishes nothing says how long samples run: start as many as the
        # pool holds at max_tokens each (as an unpooled call would), at least one, so that
        # a small pool is not spread over samples that would all be cut. Rows refill later.
        width = min(params.n, self.WIDTH, max(1, params.max_total_tokens // self.max_new[0]))
        if width > 1:
            self.cache.batch_repeat_interleave(width)
        self.active: list[int] = [self._new_sample() for _ in range(width)]
        self.mask = torch.ones((width, len(prompt)), dtype=torch.long, device=dev)
        self.logits = self.first_logits.expand(width, -1)

    def _row_params(self, row: int) -> SamplingParams:
        return self.params  # one prompt, one request: every sample shares its parameters

    def _new_sample(self) -> int:
        for per_sample in (self.tokens, self.logprobs):
            per_sample.append([])
        self.finish.append(None)
        self.stop_hit.append(False)
        return len(self.tokens) - 1

    def _take(self, rows: list[int], tok: torch.Tensor, lp: torch.Tensor) -> list[int]:
        """Appends one sampled token to each row's sample; returns the rows whose sample ended.

        Tokens the pool cannot pay for are dropped unseen (rows are paid in order).
        """
        ended = []
        for j, row in enumerate(rows):
            if self.pool_left == 0:
                break
            s = self.active[row]
            self.tokens[s].append(int(tok[j]))
            self.pool_left -= 1
            if self.params.logprobs:
                self.logprobs[s].append(float(lp[j]))
            if self.tokens[s][-1] in self.b._eos_ids and not self.params.ignore_eos:
                self.finish[s] = "stop"
            elif self.max_stop and self._hits_stop(s):
                self.finish[s], self.stop_hit[s] = "stop", True
            elif len(self.tokens[s]) >= self.max_new[0]:
                self.finish[s] = "length"
            else:
                continue
            self.done_lens.append(len(self.tokens[s]))
            ended.append(row)
        return ended

    def _may_start(self) -> bool:
        if len(self.tokens) >= self.params.n or self.pool_left == 0:
            return False
        flying = [len(self.tokens[s]) for s in self.active if self.finish[s] is None]
        if not self.done_lens:
            # Nothing has finished, so nothing says how long a sample runs: assume the
            # worst (max_tokens), as an unpooled call would, so a small pool is not spread
            # over samples that are all cut. The first sample always starts.
            cap = self.max_new[0]
            return not flying or self.pool_left - sum(max(cap - g, 1) for g in flying) >= cap
        lens = sorted(self.done_lens)
        # Room for a sample of the length most finished samples stayed within: starting one
        # that is likely to be cut spends tokens on nothing.
        room = lens[min(len(lens) - 1, int(_START_QUANTILE * len(lens)))]
        need = sum(self._still_needs(g) for g in flying)
        # What the samples in flight need is uncertain; the more of them, the more slack
        # they need together (their spread adds up as sqrt(k)).
        mean = sum(lens) / len(lens)
        spread = (sum((n - mean) ** 2 for n in lens) / len(lens)) ** 0.5
        return self.pool_left - need - _SLACK * spread * len(flying) ** 0.5 >= room

    def _still_needs(self, generated: int) -> float:
        """Expected tokens a sample in flight still needs: E[L - g | L > g] over the lengths
        of the samples finished so far (a sample already past most of them is expected to
        run on, not to stop at the mean), at least one token."""
        longer = [n - generated for n in self.done_lens if n > generated]
        return max(sum(longer) / len(longer), 1.0) if longer else 1.0

    def step(self) -> bool:
        """Samples one token per row, refills or drops ended rows, runs the model once."""
        if not self.active:
            return False
        tok, lp = self._sample(self.logits)
        ended = self._take(list(range(len(self.active))), tok, lp)
        plen = self.prompt_lens[0]
        while ended and self.pool_left:
            fresh = []
            for row in ended:
                if self._may_start():
                    self.active[row] = self._new_sample()
                    self.mask[row, plen:] = 0
                    fresh.append(row)
            if not fresh:
                break
            # A fresh sample's first token comes from the cached prompt's logits; it may
            # end the sample at once, and the row is then refilled again.
            tok, lp = self._sample(self.first_logits.expand(len(fresh), -1))
            ended = self._take(fresh, tok, lp)
        if self.pool_left == 0:
            for s in self.active:
                if self.finish[s] is None:
                    self.finish[s] = "budget"
            self.active = []
            return False
        keep = [j for j, s in enumerate(self.active) if self.finish[s] is None]
        if not keep:
            self.active = []
            return False
        dev = self.mask.device
        if len(keep) < len(self.active):
            idx = torch.tensor(keep, device=dev)
            self.cache.batch_select_indices(idx)
            self.mask = self.mask[idx]
            self.active = [self.active[j] for j in keep]
        self._compact()
        last = torch.tensor([self.tokens[s][-1] for s in self.active], device=dev).view(-1, 1)
        pos = torch.tensor([plen + len(self.tokens[s]) - 1 for s in self.active], device=dev).view(-1, 1)
        self.mask = torch.cat([self.mask, self.mask.new_ones((self.mask.shape[0], 1))], dim=1)
        with torch.inference_mode():
            out = self.b.model(
                input_ids=last, attention_mask=self.mask, position_ids=pos, use_cache=True,
                **{self.b._cache_kw: self.cache},
            )
        self.logits = out.logits[:, -1, :].float()
        return True

    def _compact(self) -> None:
        """Squeezes the masked-out columns of ended samples out of the KV cache.

        Each row keeps the prompt, then its live columns right-aligned after holes, so
        the cache stays about prompt + longest sample wide however many samples ran.
        """
        from transformers.cache_utils import DynamicLayer

        plen, width = self.prompt_lens[0], self.mask.shape[1]
        gen = self.mask[:, plen:]
        live = int(gen.sum(-1).max())
        if width - plen - live < max(live, 32) or any(type(x) is not DynamicLayer for x in self.cache.layers):
            return
        # A stable sort puts each row's holes first and keeps its live columns in order.
        order = gen.sort(dim=-1, stable=True).indices[:, gen.shape[1] - live :]
        prefix = torch.arange(plen, device=gen.device).expand(gen.shape[0], -1)
        cols = torch.cat([prefix, order + plen], dim=1)
        with torch.inference_mode():
            for layer in self.cache.layers:
                for attr in ("keys", "values"):
                    t = getattr(layer, attr)
                    setattr(layer, attr, t.gather(2, cols[:, None, :, None].expand(-1, t.shape[1], -1, t.shape[3])))
        self.mask = torch.cat([self.mask[:, :plen], gen.gather(1, order)], dim=1)

    def generations(self, latency: float) -> list[Generation]:
        comps = [
            Completion(
                text=self.text(s),
                completion_tokens=len(self.tokens[s]),
                finish_reason=self.finish[s] or "budget",
                token_ids=list(self.tokens[s]),
                logprobs=list(self.logprobs[s]) if self.params.logprobs else None,
            )
            for s in range(len(self.tokens))
        ]
        plen = self.prompt_lens[0]
        usage = Usage(prompt_tokens=plen, completion_tokens=sum(c.completion_tokens for c in comps), calls=1)
        return [Generation(model=self.b.name, prompt_tokens=plen, completions=comps, usage=usage, latency_s=latency)]
