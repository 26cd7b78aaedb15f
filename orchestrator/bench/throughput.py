"""``ttc bench throughput``: what the shared-prefix batched sampling path buys.

Sixteen completions of exactly 128 tokens (end-of-sequence ignored) from one prompt,
three ways through the same TransformersBackend with its KV cache on:

(a) ``separate``: 16 calls of one sample each;
(b) ``batched_repeat``: one call with the prompt repeated 16 times (16 prefills, one batch);
(c) ``shared_prefix``: one call with n = 16 (one prefill whose KV cache the 16 samples share).

The modes run interleaved, round after round, and each reports its median wall time, so
that machine noise hits all three alike. ``speedup`` is tokens/s of (c) over (a).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from ttc.backends.types import SamplingParams

from .common import bench_header, write_result

__all__ = ["random_checkpoint", "run_throughput"]

N_SAMPLES = 16
MAX_TOKENS = 128
SEED = 0
# A CountDown-style prompt: the shape of what ttc's built-in models are asked.
PROMPT = "numbers: 12 47 3 88 | target: 65 | solve step by step, one operation per line:\n"


def random_checkpoint(out_dir: Path, *, seed: int = SEED) -> Path:
    """A seeded random ~1M-parameter Llama-style model (4 layers, hidden 128) with ttc's
    character tokenizer: the same weights on every run, so its digest is stable."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from ttc.tasks.tokenizer import build_tokenizer

    tok = build_tokenizer()
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=128, intermediate_size=512, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id, tie_word_embeddings=True)
    LlamaForCausalLM(cfg).save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return out_dir


def run_throughput(*, quick: bool = False, model: str | None = None, out_dir: Path = Path("bench/results"),
                   progress=None) -> dict[str, Any]:
    """Runs the benchmark, writes ``throughput.json`` and ``throughput.png``, returns the result."""
    started = time.time()
    from ttc.backends.transformers_backend import TransformersBackend

    from ..models import resolve_checkpoint

    rounds = 3 if quick else 9
    with tempfile.TemporaryDirectory(prefix="ttc-bench-") as tmp:
        if model is None:
            name, path = "random-llama-1m", random_checkpoint(Path(tmp) / "random-llama-1m")
        else:
            name, path = resolve_checkpoint(model)
        backend = TransformersBackend(path, name=name, device="cpu")
    params = SamplingParams(n=1, max_tokens=MAX_TOKENS, temperature=1.0, seed=SEED, ignore_eos=True)

    def separate():
        return [g for _ in range(N_SAMPLES) for g in backend.generate([PROMPT], params)]

    def batched_repeat():
        return backend.generate([PROMPT] * N_SAMPLES, params)

    def shared_prefix():
        return backend.generate([PROMPT], params.model_copy(update={"n": N_SAMPLES}))

    modes = {"separate": separate, "batched_repeat": batched_repeat, "shared_prefix": shared_prefix}
    walls: dict[str, list[float]] = {m: [] for m in modes}
    usage: dict[str, dict] = {}
    for fn in modes.values():  # warm-up: first calls pay for lazy initialisation
        fn()
    for r in range(rounds):
        for mode, fn in modes.items():
            t0 = time.perf_counter()
            gens = fn()
            walls[mode].append(time.perf_counter() - t0)
            lengths = [c.completion_tokens for g in gens for c in g.completions]
            if len(lengths) != N_SAMPLES or set(lengths) != {MAX_TOKENS}:
                raise RuntimeError(f"{mode}: expected {N_SAMPLES} x {MAX_TOKENS} tokens, got {lengths}")
            usage[mode] = {"prompt_tokens": sum(g.usage.prompt_tokens for g in gens),
                           "completion_tokens": sum(g.usage.completion_tokens for g in gens)}
        if progress is not None:
            progress.print(f"round {r + 1}/{rounds}: " + ", ".join(f"{m} {walls[m][-1]:.2f}s" for m in modes))
    generated = N_SAMPLES * MAX_TOKENS
    rows = {m: {"tokens_per_s": generated / statistics.median(w), "wall_s_median": statistics.median(w),
                "wall_s": w, **usage[m]} for m, w in walls.items()}
    info = backend.info
    model_row = {"name": name, "path": str(path) if model else None, "params": info.parameters,
                 "digest": info.checkpoint_digest}
    result = bench_header("throughput", seed=SEED, quick=quick, models=[model_row], n_problems=1, started=started)
    result.update({
        "model": model_row, "n_samples": N_SAMPLES, "max_tokens": MAX_TOKENS,
        "prompt_tokens": backend.count_tokens(PROMPT), "rounds": rounds, "modes": rows,
        "speedup": rows["shared_prefix"]["tokens_per_s"] / rows["separate"]["tokens_per_s"],
        "speedup_batched_repeat": rows["batched_repeat"]["tokens_per_s"] / rows["separate"]["tokens_per_s"],
        "prefix_sharing_gain": rows["shared_prefix"]["tokens_per_s"] / rows["batched_repeat"]["tokens_per_s"],
        "goal": {"speedup_at_least": 6.0},
    })
    png = out_dir / "throughput.png"
    result["files"] = {"json": str(out_dir / "throughput.json"), "png": str(png)}
    _plot(rows, name, png)
    write_result("throughput", result, out_dir)
    return result


def _plot(rows: dict, name: str, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    png.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    labels = list(rows)
    ax.bar(labels, [rows[m]["tokens_per_s"] for m in labels], color=["#999", "#69c", "#2a6"])
    ax.set_ylabel("generated tokens / s")
    ax.set_title(f"{N_SAMPLES} x {MAX_TOKENS} tokens, {name}")
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)
