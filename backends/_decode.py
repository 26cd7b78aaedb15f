"""The batched decode loop of the transformers backend, for one call or many at once.

Why a hand-written loop instead of ``model.generate``: budgets need the exact number of
tokens each sample spent, stop strings must end one sample without ending the batch, and
the N samples of one prompt must share a single prefill. The loop prefills each prompt
once, copies its KV cache for each of its samples and decodes all samples of all prompts
as one batch, dropping rows as they finish.

A decode may hold several generate requests (``GenerationQueue`` gathers them from
concurrent jobs). Each request keeps its own sampling parameters and its own seeded
random stream, and its rows are sampled apart from the others', so a request draws the
same tokens whether it decodes alone or beside others (up to float rounding of the
batched forward, which moves a draw only when it falls on a boundary between tokens).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .types import Completion, Generation, SamplingParams, Usage

__all__ = ["MAX_BATCH_ROWS", "_Decoder"]

# Rows decoded together at most; more prompts x samples are processed in chunks.
MAX_BATCH_ROWS = 256


class _Request:
    """One generate call's share of a decode: its prompts, parameters and random stream."""

    def __init__(self, prompts: list[list[int]], params: SamplingParams, first_row: int, first_prompt: int,
                 device: torch.device):
        self.params = params
        self.first_row, self.first_prompt = first_row, first_prompt
        self.n_prompts = len(prompts)
        self.rows = len(prompts) * params.n
        self.left = self.rows  # rows still decoding
        self.generator = None if params.seed is None else torch.Generator(device=device).manual_seed(params.seed)
        # In UTF-8 bytes: every token that is not special decodes to at least one byte,
        # so a stop string of k bytes spans at most k such tokens (a character may not).
        self.max_stop = max((len(s.encode("utf-8")) for s in params.stop), default=0)


class _Decoder:
    """One batched decode: prompts prefilled once, their samples decoded as one batch.

    Args:
        backend: The TransformersBackend whose model runs.
        prompts, params: One request: its encoded prompts and sampling parameters.
        more: Further ``(prompts, params)`` requests decoded in the same batch.
    """

    def __init__(self, backend: Any, prompts: list[list[int]], params: SamplingParams,
                 more: Sequence[tuple[list[list[int]], SamplingParams]] = ()):
        self.b = backend
        self.reqs: list[_Request] = []
        self.prompt_lens: list[int] = []
        self.row_req: list[int] = []
        self.max_new: list[int] = []  # per row: never decode past the model's context ("length")
        self.tokens: list[list[int]] = []
        self.logprobs: list[list[float]] = []
        self.finish: list[str | None] = []
        self.stop_hit: list[bool] = []
        self.completed: list[int] = []  # requests whose rows all finished, not yet collected
        rows, flat = self._add_requests([(prompts, params), *more])
        # The first request's view, which streams and the pooled decoder read.
        self.params, self.generator = self.reqs[0].params, self.reqs[0].generator
        self.cache, logits, mask, positions = self._prefill(flat)
        # The shared prefix is now cached once; copy it for each sample of its prompt.
        index = torch.tensor(rows, device=backend.device)
        if len(rows) != len(flat):
            self.cache.batch_select_indices(index)
        self.logits, self.mask, self.next_pos = logits[index], mask[index], positions[:, -1][index] + 1
        self.unpadded = bool(self.mask.all())
        self.active = torch.arange(len(rows), device=backend.device)  # row ids still decoding, in batch order

    def _add_requests(self, requests: Sequence[tuple[list[list[int]], SamplingParams]]
                      ) -> tuple[list[int], list[list[int]]]:
        # Row bookkeeping of new requests; returns each new row's prompt (an index into the
        # returned prompts) and those prompts.
        ctx = self.b.info.max_context
        row_prompt: list[int] = []
        flat: list[list[int]] = []
        for ps, p in requests:
            g = len(self.reqs)
            self.reqs.append(_Request(ps, p, len(self.row_req), len(self.prompt_lens), self.b.device))
            for ids in ps:
                cap = min(p.max_tokens, ctx - len(ids)) if ctx else p.max_tokens
                row_prompt += [len(flat)] * p.n
                self.row_req += [g] * p.n
                self.max_new += [cap] * p.n
                self.prompt_lens.append(len(ids))
                flat.append(ids)
        self.max_stop = max(r.max_stop for r in self.reqs)  # bytes of the longest stop string
        added = len(row_prompt)
        self.tokens += [[] for _ in range(added)]
        self.logprobs += [[] for _ in range(added)]
        self.finish += [None] * added
        self.stop_hit += [False] * added
        return row_prompt, flat

    def _prefill(self, prompts: list[list[int]]):
        """Runs prompts once, left-padded to a common length: their cache, last logits, mask, positions."""
        from transformers import DynamicCache

        b, dev = self.b, self.b.device
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), b._pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, width - len(p) :] = torch.tensor(p)
            mask[i, width - len(p) :] = 1
        ids, mask = ids.to(dev), mask.to(dev)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=b.model.config)
        with torch.inference_mode():
            out = b.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                          logits_to_keep=1, **{b._cache_kw: cache})
        return cache, out.logits[:, -1, :].float(), mask, positions

    def can_admit(self) -> bool:
        """Whether requests can join this decode: every cache layer a plain growing one."""
        from transformers.cache_utils import DynamicLayer

        return self.active.numel() > 0 and all(type(x) is DynamicLayer for x in self.cache.layers)

    def admit(self, requests: Sequence[tuple[list[list[int]], SamplingParams]]) -> None:
        """Adds requests to the running decode (continuous batching).

        Their prompts are prefilled on their own; the new cache and the batch's are
        left-padded to a common width (padding is masked out, positions are explicit) and
        stacked, so each new row continues exactly as in a decode of its own.
        """
        first_row = len(self.row_req)
        rows, flat = self._add_requests(requests)
        cache, logits, mask, positions = self._prefill(flat)
        index = torch.tensor(rows, device=self.b.device)
        width = max(mask.shape[1], self.mask.shape[1])
        with torch.inference_mode():
            for old, new in zip(self.cache.layers, cache.layers):
                for attr in ("keys", "values"):
                    a, n = getattr(old, attr), getattr(new, attr)[index]
                    a = torch.nn.functional.pad(a, (0, 0, width - a.shape[2], 0))
                    n = torch.nn.functional.pad(n, (0, 0, width - n.shape[2], 0))
                    setattr(old, attr, torch.cat([a, n], dim=0))
        pad = torch.nn.functional.pad
        self.mask = torch.cat([pad(self.mask, (width - self.mask.shape[1], 0)),
                               pad(mask[index], (width - mask.shape[1], 0))], dim=0)
        self.logits = torch.cat([self.logits, logits[index]], dim=0)
        self.next_pos = torch.cat([self.next_pos, positions[:, -1][index] + 1], dim=0)
        self.unpadded = bool(self.mask.all())
        self.active = torch.cat([self.active, torch.arange(first_row, len(self.row_req), device=self.b.device)])

    def _trim(self) -> None:
        # Columns no active row attends to any more (the padding of rows that ended) cost
        # attention at every step: cut them. Only in merged decodes, so that a lone call
        # computes exactly what it always did.
        if len(self.reqs) == 1:
            return
        used = self.mask.any(dim=0).nonzero()
        first = int(used[0]) if used.numel() else 0
        if first < 32 or not self.can_admit():
            return
        with torch.inference_mode():
            for layer in self.cache.layers:
                layer.keys, layer.values = layer.keys[:, :, first:], layer.values[:, :, first:]
        self.mask = self.mask[:, first:]

    def _row_params(self, row: int) -> SamplingParams:
        return self.reqs[self.row_req[row]].params

    def step(self) -> bool:
        """Samples one token for every active row; returns False once all rows finished."""
        if self.active.numel() == 0:
            return False
        tok, lp = self._sample_rows(self.logits)
        keep: list[int] = []
        # One conversion per step, not one tensor index per row: this loop runs every token.
        toks = tok.tolist()
        lps = lp.tolist() if any(r.params.logprobs for r in self.reqs) else None
        for j, row in enumerate(self.active.tolist()):
            t = toks[j]
            p = self._row_params(row)
            self.tokens[row].append(t)
            if p.logprobs:
                self.logprobs[row].append(float(lps[j]))
            if t in self.b._eos_ids and not p.ignore_eos:
                self.finish[row] = "stop"
            elif self.reqs[self.row_req[row]].max_stop and self._hits_stop(row):
                self.finish[row], self.stop_hit[row] = "stop", True
            elif len(self.tokens[row]) >= self.max_new[row]:
                self.finish[row] = "length"
            else:
                keep.append(j)
                continue
            req = self.reqs[self.row_req[row]]
            req.left -= 1
            if req.left == 0:
                self.completed.append(self.row_req[row])
        if not keep:
            self.active = self.active[:0]
            return False
        if len(keep) < self.active.numel():
            # Drop finished rows so that they stop costing compute.
            idx = torch.tensor(keep, device=self.active.device)
            self.cache.batch_select_indices(idx)
            self.active, self.mask, self.next_pos, tok = (
                self.active[idx], self.mask[idx], self.next_pos[idx], tok[idx]
            )
            self._trim()
            self.unpadded = self.unpadded or bool(self.mask.all())
        self.mask = torch.cat([self.mask, self.mask.new_ones((self.mask.shape[0], 1))], dim=1)
        with torch.inference_mode():
            out = self.b.model(
                input_ids=tok.view(-1, 1),
                # No padding left in the batch (one prompt, or prompts of one length): the
                # model needs no mask, and building its 4D form every step costs time.
                attention_mask=None if self.unpadded else self.mask,
                position_ids=self.next_pos.view(-1, 1),
                use_cache=True,
                **{self.b._cache_kw: self.cache},
            )
        self.next_pos = self.next_pos + 1
        self.logits = out.logits[:, -1, :].float()
        return True

    def _sample_rows(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # One request: one draw over all its rows (as a lone call always did). Several:
        # each request's rows are drawn from its own stream, in its own row order.
        if len(self.reqs) == 1:
            return self._sample(logits)
        owner = torch.tensor([self.row_req[r] for r in self.active.tolist()], device=logits.device)
        tok = torch.empty(len(owner), dtype=torch.long, device=logits.device)
        lp = torch.zeros(len(owner), dtype=torch.float, device=logits.device)
        for g in owner.unique().tolist():
            sel = (owner == g).nonzero().view(-1)
            req = self.reqs[g]
            t, l = self._sample_with(logits[sel], req.params, req.generator)
            tok[sel] = t
            lp[sel] = l.float()
        return tok, lp

    def _sample(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._sample_with(logits, self.params, self.generator)

    @staticmethod
    def _sample_with(logits: torch.Tensor, p: SamplingParams,
                     generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        raw_lp = torch.log_softmax(logits, dim=-1) if p.logprobs else None
        if p.temperature == 0:
            tok = logits.argmax(dim=-1)
        else:
            scaled = logits / p.temperature
            if p.top_p < 1.0:
                sorted_logits, order = scaled.sort(dim=-1, descending=True)
                cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
                # Keep the smallest prefix whose mass reaches top_p (always the top token).
                drop = cum - sorted_logits.softmax(dim=-1) >= p.top_p
                sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
                scaled = torch.full_like(scaled, float("-inf")).scatter(-1, order, sorted_logits)
            probs = scaled.softmax(dim=-1)
            tok = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        lp = raw_lp.gather(-1, tok.view(-1, 1)).squeeze(-1) if raw_lp is not None else tok
        return tok, lp

    def _hits_stop(self, row: int) -> bool:
        # A stop string of k bytes spans at most k non-special tokens: decode only that
        # tail plus one token of left context. Special tokens decode to nothing, so they
        # do not count towards the tail.
        ids, special = self.tokens[row], self.b._special_ids
        start, real = len(ids), 0
        while start > 0 and real <= self.max_stop:
            start -= 1
            real += ids[start] not in special
        tail = self.b.tokenizer.decode(ids[start:], skip_special_tokens=True)
        return any(s in tail for s in self._row_params(row).stop)

    def text(self, row: int) -> str:
        p = self._row_params(row)
        ids = self.tokens[row]
        if ids and ids[-1] in self.b._eos_ids and not p.ignore_eos:
            ids = ids[:-1]
        text = self.b.tokenizer.decode(ids, skip_special_tokens=True)
        if self.stop_hit[row]:
            cut = min((i for i in (text.find(s) for s in p.stop) if i >= 0), default=len(text))
            text = text[:cut]
        return text

    def request_generations(self, g: int, latency: float) -> list[Generation]:
        """The generations of request ``g``, one per prompt, once its rows finished."""
        req = self.reqs[g]
        n, out = req.params.n, []
        for i in range(req.n_prompts):
            first = req.first_row + i * n
            comps = [
                Completion(
                    text=self.text(r),
                    completion_tokens=len(self.tokens[r]),
                    finish_reason=self.finish[r] or "length",
                    token_ids=list(self.tokens[r]),
                    logprobs=list(self.logprobs[r]) if req.params.logprobs else None,
                )
                for r in range(first, first + n)
            ]
            plen = self.prompt_lens[req.first_prompt + i]
            usage = Usage(prompt_tokens=plen, completion_tokens=sum(c.completion_tokens for c in comps), calls=1)
            out.append(
                Generation(model=self.b.name, prompt_tokens=plen, completions=comps, usage=usage, latency_s=latency)
            )
        return out

    def generations(self, latency: float) -> list[Generation]:
        """Every request's generations, in request order."""
        return [gen for g in range(len(self.reqs)) for gen in self.request_generations(g, latency)]
