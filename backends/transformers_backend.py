"""In-process backend over any local Hugging Face causal-LM checkpoint (CPU or GPU).

Sampling runs a hand-written batched decode loop (``_decode``: why not ``model.generate``
is said there): each prompt is prefilled once and its N samples share that KV cache.

Under a pooled token cap (``SamplingParams.max_total_tokens``) a prompt's samples decode
instead by continuous batching over its cached prefix (:class:`_PooledDecoder`): a row
whose sample ends is refilled with a fresh sample of the same prompt. Its bookkeeping
lives in ``_pooled``.

A checkpoint never runs its own Python (``auto_map``, an unknown ``model_type``) unless
the caller passes ``trust_remote_code=True``; the check (``refuse_remote_code``, in
``_remote_code``) is re-exported here for callers that import it from this module.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from ._decode import MAX_BATCH_ROWS, _Decoder
from ._pooled import _pool_binds, _PooledDecoding
from ._remote_code import refuse_remote_code
from .errors import BadInputError, CheckpointError
from .types import Generation, ModelInfo, SamplingParams

__all__ = ["TransformersBackend", "TokenStream", "StreamGroup", "checkpoint_digest", "load_tokenizer",
           "refuse_remote_code"]

def checkpoint_digest(path: str | Path) -> str:
    """SHA-256 over a checkpoint's weight files, in name order (identity of a model)."""
    path = Path(path)
    h = hashlib.sha256()
    files = sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin"))
    for f in files:
        h.update(f.name.encode())
        with f.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def load_tokenizer(path: str | Path, trust_remote_code: bool = False):
    """The checkpoint's tokenizer, as its ``tokenizer.json`` defines it.

    transformers 5's ``AutoTokenizer`` picks the tokenizer class from the model type for
    some architectures (Qwen2 among them) and rebuilds the pre-tokenizer from that class,
    ignoring the saved one: a character-level tokenizer saved beside a Qwen2 model then
    silently drops spaces. A checkpoint that declares the generic fast tokenizer class
    is therefore loaded with exactly that class. ``trust_remote_code`` is always passed
    on, so that transformers never asks on stdin whether to run a checkpoint's code.
    """
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    path = Path(path)
    config = path / "tokenizer_config.json"
    declared = json.loads(config.read_text()).get("tokenizer_class") if config.is_file() else None
    if declared in ("TokenizersBackend", "PreTrainedTokenizerFast") and (path / "tokenizer.json").is_file():
        return PreTrainedTokenizerFast.from_pretrained(path, trust_remote_code=trust_remote_code)
    return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)


def _pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise BadInputError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BadInputError(f"device {device!r} asked for, but no CUDA GPU is available here")
    return dev


def _pick_dtype(dtype: str | None, device: torch.device) -> torch.dtype:
    if dtype is None:
        return torch.float32 if device.type == "cpu" else torch.bfloat16
    value = getattr(torch, dtype, None) if isinstance(dtype, str) else None
    if not isinstance(value, torch.dtype):
        raise BadInputError(f"unknown dtype {dtype!r}: use float32, float16 or bfloat16")
    return value


class TransformersBackend:
    """Samples from a checkpoint directory loaded with ``AutoModelForCausalLM``.

    Args:
        path: A directory holding ``config.json``, weights and tokenizer files.
        name: The model name recorded in traces (default: the directory name).
        device: ``"auto"`` (GPU if present), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        dtype: Torch dtype name; default float32 on CPU, bfloat16 on GPU.
        trust_remote_code: Allow the checkpoint to run its own Python (``auto_map``).

    Attributes:
        pools_tokens: True: ``generate`` enforces ``max_total_tokens`` itself.

    Raises:
        CheckpointError: ``path`` is missing, not a checkpoint, or fails to load.
        BadInputError: The checkpoint would run its own code and ``trust_remote_code``
            is False.
    """

    pools_tokens = True

    def __init__(
        self,
        path: str | Path,
        *,
        name: str | None = None,
        device: str = "auto",
        dtype: str | None = None,
        trust_remote_code: bool = False,
    ):
        from transformers import AutoModelForCausalLM

        self.path = Path(path)
        if not self.path.exists():
            raise CheckpointError(f"model path {self.path} does not exist")
        if not self.path.is_dir() or not (self.path / "config.json").is_file():
            raise CheckpointError(f"{self.path} is not a checkpoint directory (no config.json)")
        if not trust_remote_code:
            refuse_remote_code(self.path)
        self.name = name or self.path.name
        self.device = _pick_device(device)
        torch_dtype = _pick_dtype(dtype, self.device)
        try:
            self.tokenizer = load_tokenizer(self.path, trust_remote_code=trust_remote_code)
            self.model = AutoModelForCausalLM.from_pretrained(
                self.path, dtype=torch_dtype, trust_remote_code=trust_remote_code)
        except Exception as exc:  # any loader failure is a bad checkpoint to the user
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(f"cannot load checkpoint {self.path}: {first}") from exc
        self.model.to(self.device).eval()
        # transformers 5.x renamed past_key_values to cache; accept either release.
        params = inspect.signature(self.model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self._eos_ids = self._eos_token_ids()
        self._special_ids = set(self.tokenizer.all_special_ids)
        self._pad_id = self.tokenizer.pad_token_id
        if self._pad_id is None:
            self._pad_id = next(iter(self._eos_ids), 0)
        self._info = self._read_info()

    # ------------------------------------------------------------------ protocol

    @property
    def info(self) -> ModelInfo:
        return self._info

    def count_tokens(self, text: str) -> int:
        return len(self._encode(text))

    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[Generation]:
        """Samples ``params.n`` completions per prompt; see :class:`backends.Backend`."""
        if isinstance(prompts, str):
            raise BadInputError("generate() takes a list of prompts, not one string")
        encoded = [self._encode(p) for p in prompts]
        if params.max_total_tokens is not None and any(_pool_binds(self, len(e), params) for e in encoded):
            return self._generate_pooled(encoded, params)
        per_chunk = max(1, MAX_BATCH_ROWS // params.n)
        out: list[Generation] = []
        for i, start in enumerate(range(0, len(encoded), per_chunk)):
            chunk = encoded[start : start + per_chunk]
            t0 = time.perf_counter()
            # Each chunk draws from its own seeded stream, so chunks are not copies of each other.
            chunk_params = params if params.seed is None or i == 0 else params.model_copy(
                update={"seed": params.seed + 1_000_003 * i})
            decoder = _Decoder(self, chunk, chunk_params)
            while decoder.step():
                pass
            latency = time.perf_counter() - t0
            out.extend(decoder.generations(latency))
        return out

    def _generate_pooled(self, encoded: list[list[int]], params: SamplingParams) -> list[Generation]:
        # Each prompt has its own pool, so prompts decode one after another.
        out: list[Generation] = []
        for i, ids in enumerate(encoded):
            t0 = time.perf_counter()
            own = params if params.seed is None or i == 0 else params.model_copy(
                update={"seed": params.seed + 1_000_003 * i})
            decoder = _PooledDecoder(self, ids, own)
            while decoder.step():
                pass
            out.extend(decoder.generations(time.perf_counter() - t0))
        return out

    def stream(self, prompt: str, params: SamplingParams) -> "TokenStream":
        """Streams one completion as text deltas; ``.generation`` holds its bill at the end."""
        if params.n != 1:
            raise BadInputError("stream() samples one completion: n must be 1")
        ids = self._encode(prompt)
        if params.max_total_tokens is not None and _pool_binds(self, len(ids), params):
            return TokenStream(_PooledDecoder(self, ids, params))
        return TokenStream(_Decoder(self, [ids], params))

    def stream_batch(self, prompts: Sequence[str], params: Sequence[SamplingParams]) -> "StreamGroup":
        """Streams one completion per prompt, all decoded as one batch (TrimR's bench).

        Each row's random draws are a function of its seed and its token position only
        (a counter-based hash, not a shared generator), so a row draws the same tokens
        whatever else is in the batch and whichever rows end or get injections: runs of
        the same seeds stay paired draw for draw (up to float rounding of the batched
        forward). The draws differ from ``stream()``'s for the same seed."""
        if len(prompts) != len(params) or not prompts:
            raise BadInputError("stream_batch() takes one SamplingParams per prompt, and at least one prompt")
        if any(p.n != 1 for p in params):
            raise BadInputError("stream_batch() samples one completion per prompt: n must be 1")
        reqs = [([self._encode(t)], p.model_copy(update={"max_total_tokens": None})) for t, p in zip(prompts, params)]
        return StreamGroup(self, _GroupDecoder(self, *reqs[0], more=reqs[1:]))

    def close(self) -> None:
        # Nothing to release beyond what the garbage collector frees.
        pass

    def __enter__(self) -> "TransformersBackend":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ helpers

    def _encode(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise BadInputError(f"a prompt must be a string, got {type(text).__name__}")
        ids = self.tokenizer(text, add_special_tokens=True)["input_ids"]
        if not ids:
            bos = self.tokenizer.bos_token_id
            if bos is None:
                raise BadInputError("empty prompt and the tokenizer has no BOS token to start from")
            ids = [bos]
        limit = self._info.max_context
        if limit and len(ids) >= limit:
            raise BadInputError(f"prompt of {len(ids)} tokens does not fit the context of {limit}")
        return ids

    def _eos_token_ids(self) -> set[int]:
        ids: set[int] = set()
        for source in (self.tokenizer.eos_token_id, getattr(self.model.generation_config, "eos_token_id", None)):
            if isinstance(source, int):
                ids.add(source)
            elif isinstance(source, (list, tuple)):
                ids.update(int(i) for i in source)
        return ids

    def _read_info(self) -> ModelInfo:
        cfg = self.model.config
        total = sum(p.numel() for p in self.model.parameters())
        in_embed = self.model.get_input_embeddings().weight
        embed = in_embed.numel()
        # The input lookup costs no matmul, but an output head tied to it does (see
        # strategies/cost.py); parameters() lists a tied weight once, so add it back.
        out_embed = self.model.get_output_embeddings()
        if out_embed is not None and out_embed.weight.data_ptr() == in_embed.data_ptr():
            embed -= out_embed.weight.numel()
        heads = getattr(cfg, "num_attention_heads", None)
        hidden = getattr(cfg, "hidden_size", None)
        head_dim = getattr(cfg, "head_dim", None) or (hidden // heads if hidden and heads else None)
        return ModelInfo(
            name=self.name,
            path=str(self.path),
            parameters=total,
            non_embedding_parameters=total - embed,
            layers=getattr(cfg, "num_hidden_layers", None),
            hidden_size=hidden,
            intermediate_size=getattr(cfg, "intermediate_size", None),
            attention_heads=heads,
            kv_heads=getattr(cfg, "num_key_value_heads", None) or heads,
            head_dim=head_dim,
            vocab_size=getattr(cfg, "vocab_size", None),
            max_context=getattr(cfg, "max_position_embeddings", None),
            dtype_bytes=torch.finfo(self.model.dtype).bits // 8,
            checkpoint_digest=checkpoint_digest(self.path),
        )


_M32 = 0xFFFFFFFF


def _hash_uniform(seeds: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Uniforms in (0, 1) from (seed, position) pairs: Murmur3's 32-bit finaliser.

    int64 products wrap modulo 2**64, which keeps the low 32 bits exact."""
    h = (seeds * 0x9E3779B1 + positions * 0x85EBCA77 + 0x165667B1) & _M32
    for mul in (0x85EBCA6B, 0xC2B2AE35):
        h = h ^ (h >> 16)
        h = (h * mul) & _M32
    h = h ^ (h >> 16)
    return (h.double() + 0.5) / 2.0**32


class _GroupDecoder(_Decoder):
    """A decode whose rows sample from counter-based draws (see ``stream_batch``)."""

    def _sample_rows(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rows = self.active.tolist()
        ps = [self._row_params(r) for r in rows]
        if any(p.top_p < 1.0 for p in ps):
            return super()._sample_rows(logits)  # nucleus sampling: the generator path
        dev = logits.device
        temps = torch.tensor([p.temperature for p in ps], dtype=logits.dtype, device=dev)
        greedy = temps == 0
        seeds = torch.tensor([(p.seed if p.seed is not None else self.reqs[self.row_req[r]].first_row) & _M32
                              for r, p in zip(rows, ps)], dtype=torch.long, device=dev)
        pos = torch.tensor([len(self.tokens[r]) for r in rows], dtype=torch.long, device=dev)
        u = _hash_uniform(seeds, pos).to(logits.dtype)
        probs = (logits / torch.where(greedy, torch.ones_like(temps), temps).view(-1, 1)).softmax(dim=-1)
        cdf = probs.cumsum(dim=-1)
        tok = torch.searchsorted(cdf, (u * cdf[:, -1]).view(-1, 1)).view(-1).clamp(max=logits.shape[-1] - 1)
        tok = torch.where(greedy, logits.argmax(dim=-1), tok)
        if any(p.logprobs for p in ps):
            lp = torch.log_softmax(logits, dim=-1).gather(-1, tok.view(-1, 1)).view(-1)
        else:
            lp = tok.float()
        return tok, lp


class _PooledDecoder(_PooledDecoding, _Decoder):
    """A prompt's samples under a pooled token cap (see :mod:`._pooled`).

    Defined here, not in ``_pooled``, because it needs ``_Decoder``'s sampling and stop
    checks and ``_pooled`` must not import this module back.
    """


def _inject_rows(d: _Decoder, rows: dict[int, list[int]]) -> None:
    """Prefills ``ids`` after each given row's last token, in the decode's KV cache.

    The block of new columns is as wide as the longest injection; each row's ids are
    right-aligned in it (so its last column is its last injected token) and every other
    column is masked out, rows without an injection included: they keep their pending
    logits and attend past the masked columns as if they were not there.
    """
    act = d.active.tolist()
    rows = {r: ids for r, ids in rows.items() if ids and r in act}
    if not rows:
        return
    width = max(len(ids) for ids in rows.values())
    n = len(act)
    dev = d.b.device
    ids_t = torch.full((n, width), d.b._pad_id, dtype=torch.long, device=dev)
    mask = torch.zeros((n, width), dtype=d.mask.dtype, device=dev)
    pos = d.next_pos.view(-1, 1).repeat(1, width).clone()
    for r, ids in rows.items():
        j, k = act.index(r), len(ids)
        ids_t[j, width - k:] = torch.tensor(ids, device=dev)
        mask[j, width - k:] = 1
        pos[j, width - k:] = d.next_pos[j] + torch.arange(k, device=dev)
    d.mask = torch.cat([d.mask, mask], dim=1)
    with torch.inference_mode():
        out = d.b.model(input_ids=ids_t, attention_mask=d.mask, position_ids=pos, use_cache=True,
                        logits_to_keep=1, **{d.b._cache_kw: d.cache})
    last = out.logits[:, -1, :].float()
    sel = torch.tensor([act.index(r) for r in rows], device=dev)
    # Rebuilt rather than updated in place: decode tensors are inference tensors.
    keep = torch.ones(n, dtype=torch.bool, device=dev)
    keep[sel] = False
    d.logits = torch.where(keep.view(-1, 1), d.logits, last)
    add = torch.zeros_like(d.next_pos)
    for r, ids in rows.items():
        add[act.index(r)] = len(ids)
    d.next_pos = d.next_pos + add
    for r, ids in rows.items():
        d.tokens[r].extend(ids)
        d.max_new[r] += len(ids)  # injected tokens are prompt, not part of the generation limit
    d.unpadded = False


def _drop_rows(d: _Decoder, rows: set[int]) -> None:
    """Ends some rows of a running decode now (finish reason "stop")."""
    act = d.active.tolist()
    keep = [j for j, r in enumerate(act) if r not in rows]
    for r in rows:
        if r in act and d.finish[r] is None:
            d.finish[r] = "stop"
            req = d.reqs[d.row_req[r]]
            req.left -= 1
            if req.left == 0:
                d.completed.append(d.row_req[r])
    if len(keep) == len(act):
        return
    if not keep:
        d.active = d.active[:0]
        return
    idx = torch.tensor(keep, device=d.active.device)
    d.cache.batch_select_indices(idx)
    d.active, d.mask, d.next_pos, d.logits = d.active[idx], d.mask[idx], d.next_pos[idx], d.logits[idx]


def _billed(gen: Generation, injected: int) -> Generation:
    """A generation whose injected tokens are billed as prompt (prefilled), not generated."""
    if not injected:
        return gen
    comps = [c.model_copy(update={"completion_tokens": c.completion_tokens - injected}) for c in gen.completions]
    usage = gen.usage.model_copy(update={"prompt_tokens": gen.usage.prompt_tokens + injected,
                                         "completion_tokens": gen.usage.completion_tokens - injected})
    return gen.model_copy(update={"completions": comps, "usage": usage, "prompt_tokens": gen.prompt_tokens + injected})


class TokenStream:
    """Iterator of text deltas of one completion; ``generation`` is set once it ends.

    Consumers (TrimR) may stop iterating early: ``close()`` then bills what was
    generated so far, with finish reason ``"stop"``. ``inject(text)`` prefills ``text``
    into the KV cache after the tokens so far and decoding continues from it; the
    injected tokens are billed as prompt tokens and come out as the next delta.
    """

    def __init__(self, decoder: _Decoder):
        self._d = decoder
        self._t0 = time.perf_counter()
        self._emitted = ""
        self._done = False
        self._injected = 0
        self.generation: Generation | None = None

    def __iter__(self) -> "TokenStream":
        return self

    @property
    def token_ids(self) -> list[int]:
        """Token ids so far (injected ones included)."""
        return list(self._d.tokens[0])

    def __next__(self) -> str:
        while not self._done:
            more = self._d.step()
            text = self._d.text(0)
            if not more:
                self._finish()
            if not self._done:
                text = text[: len(text) - self._held_back(text)]
            if len(text) > len(self._emitted) and text.startswith(self._emitted):
                delta, self._emitted = text[len(self._emitted) :], text
                return delta
        raise StopIteration

    def inject_tokens(self, text: str) -> int:
        """Prompt tokens ``inject(text)`` will prefill."""
        return len(self._d.b.tokenizer(text, add_special_tokens=False)["input_ids"])

    def inject(self, text: str) -> None:
        """Prefills ``text`` after the tokens so far; the next delta starts with it."""
        if self._done:
            raise BadInputError("cannot inject into a finished stream")
        if isinstance(self._d, _PooledDecoding):
            raise BadInputError("inject() is not supported under a pooled token cap")
        ids = self._d.b.tokenizer(text, add_special_tokens=False)["input_ids"]
        _inject_rows(self._d, {0: ids})
        self._injected += len(ids)

    def _held_back(self, text: str) -> int:
        """Characters not yet safe to emit: a partial multi-byte char or a stop-string prefix."""
        partial = len(text) - len(text.rstrip("\ufffd"))
        if partial:
            return partial
        for k in range(min(self._d.max_stop, len(text)), 0, -1):
            if any(s.startswith(text[-k:]) for s in self._d.params.stop):
                return k
        return 0

    def close(self) -> None:
        """Stops decoding now; the tokens generated so far stay billed."""
        if not self._done:
            self._d.finish[0] = self._d.finish[0] or "stop"
            self._d.active = self._d.active[:0]
            self._finish()

    def _finish(self) -> None:
        self._done = True
        self.generation = _billed(self._d.generations(time.perf_counter() - self._t0)[0], self._injected)


class StreamGroup:
    """Several completions decoded as one batch, one row per prompt, each with ``inject``.

    ``step()`` advances every live row by one token and returns the rows' new text;
    ``inject(row, text)`` and ``close(row)`` act on one row. A row's bill (injected tokens
    as prompt) is in ``generation(row)`` once it has ended.
    """

    def __init__(self, backend: "TransformersBackend", decoder: _Decoder):
        self._b, self._d = backend, decoder
        n = len(decoder.row_req)
        self._t0 = time.perf_counter()
        self._emitted = [""] * n
        self._injected = [0] * n
        self._pending: dict[int, list[int]] = {}
        self._offsets: dict[int, tuple[int, int]] = {}  # row -> (prefix, read) token offsets
        self._latency: list[float | None] = [None] * n

    def __len__(self) -> int:
        return len(self._emitted)

    @property
    def live(self) -> list[int]:
        return self._d.active.tolist()

    def token_ids(self, row: int) -> list[int]:
        return self._d.tokens[row]

    def step(self) -> dict[int, str]:
        """One token for every live row (after any pending injections): row -> new text."""
        if self._pending:
            live = set(self.live)
            # A row that ended in the step that queued its injection has nothing to continue.
            applied = {r: ids for r, ids in self._pending.items() if r in live}
            _inject_rows(self._d, applied)
            for r, ids in applied.items():
                self._injected[r] += len(ids)
            self._pending = {}
        before = self.live
        self._d.step()
        out: dict[int, str] = {}
        for r in before:
            if self._d.finish[r] is not None:
                # A row that ended: its whole text once (stop strings cut, EOS dropped).
                if self._latency[r] is None:
                    self._latency[r] = time.perf_counter() - self._t0
                text = self._d.text(r)
                if len(text) > len(self._emitted[r]) and text.startswith(self._emitted[r]):
                    out[r], self._emitted[r] = text[len(self._emitted[r]):], text
                continue
            delta = self._incremental(r)
            if delta:
                out[r] = delta
                self._emitted[r] += delta
        return out

    def _incremental(self, r: int) -> str:
        # Decoding a row's whole text every step costs O(length) per token; decode a short
        # window instead (the incremental detokenizing of vLLM and HF's TextStreamer): the
        # text of the tokens since ``prefix`` minus that of the already-read ones.
        ids, (prefix, read) = self._d.tokens[r], self._offsets.get(r, (0, 0))
        dec = self._b.tokenizer.decode
        old = dec(ids[prefix:read], skip_special_tokens=True)
        new = dec(ids[prefix:], skip_special_tokens=True)
        if len(new) <= len(old) or new.endswith("\ufffd"):
            return ""  # a partial multi-byte character: wait for its next token
        self._offsets[r] = (read, len(ids))
        return new[len(old):]

    def inject(self, row: int, text: str) -> int:
        """Queues ``text`` to be prefilled after row's tokens before the next step; its token count."""
        ids = self._b.tokenizer(text, add_special_tokens=False)["input_ids"]
        self._pending[row] = self._pending.get(row, []) + ids
        return len(ids)

    def close(self, row: int) -> None:
        """Ends a row now."""
        self._pending.pop(row, None)
        _drop_rows(self._d, {row})
        if self._latency[row] is None:
            self._latency[row] = time.perf_counter() - self._t0

    def generation(self, row: int) -> Generation:
        """Row's generation so far (billed: injected tokens as prompt)."""
        lat = self._latency[row] if self._latency[row] is not None else time.perf_counter() - self._t0
        return _billed(self._d.request_generations(self._d.row_req[row], lat)[0], self._injected[row])
