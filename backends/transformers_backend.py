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

__all__ = ["TransformersBackend", "TokenStream", "checkpoint_digest", "load_tokenizer", "refuse_remote_code"]

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


class _PooledDecoder(_PooledDecoding, _Decoder):
    """A prompt's samples under a pooled token cap (see :mod:`._pooled`).

    Defined here, not in ``_pooled``, because it needs ``_Decoder``'s sampling and stop
    checks and ``_pooled`` must not import this module back.
    """


class TokenStream:
    """Iterator of text deltas of one completion; ``generation`` is set once it ends.

    Consumers (TrimR) may stop iterating early: ``close()`` then bills what was
    generated so far, with finish reason ``"stop"``.
    """

    def __init__(self, decoder: _Decoder):
        self._d = decoder
        self._t0 = time.perf_counter()
        self._emitted = ""
        self._done = False
        self.generation: Generation | None = None

    def __iter__(self) -> "TokenStream":
        return self

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
        self.generation = self._d.generations(time.perf_counter() - self._t0)[0]
