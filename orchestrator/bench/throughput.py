"""``ttc bench throughput``: what the shared-prefix batched sampling path buys.

Sixteen completions of exactly 128 tokens (end-of-sequence ignored; fewer where the
model's context is shorter) from one prompt, three ways through the same
TransformersBackend with its KV cache on:

(a) ``separate``: 16 calls of one sample each;
(b) ``batched_repeat``: one call with the prompt repeated 16 times (16 prefills, one batch);
(c) ``shared_prefix``: one call with n = 16 (one prefill whose KV cache the 16 samples share);

and two references that bypass ttc's decoder, a bare KV-cached loop of forward calls over
the same model (:func:`hf_forward`), the least work that yields the same tokens:

(d) ``hf_forward_1``: 16 loops of batch 1, the same work as (a);
(e) ``hf_forward_16``: one prefill, its cache copied 16 times, 16 rows decoded, as (c).

All modes run interleaved, round after round (every other round in reverse order), and
each reports its median wall and CPU time, so that machine noise hits them alike.
``speedup`` is tokens/s of (c) over (a); ``shared_prefix_vs_hf`` is (c) over (e) and
``separate_vs_hf`` is (a) over (d): how close the backend's decoder comes to the bare loop
at batch 16 and at batch 1 (``cpu_ratios``: the same in CPU seconds).
"""

from __future__ import annotations

import inspect
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from ttc.backends.errors import BadInputError
from ttc.backends.types import SamplingParams

from .common import bench_header, write_result

__all__ = ["GOALS", "hf_forward", "random_checkpoint", "run_throughput"]

N_SAMPLES = 16
MAX_TOKENS = 128
SEED = 0
# Fewer new tokens than this (a model whose context barely fits the prompt) measures nothing.
MIN_TOKENS = 8
# A CountDown-style prompt: the shape of what ttc's built-in models are asked.
PROMPT = "numbers: 12 47 3 88 | target: 65 | solve step by step, one operation per line:\n"
GOALS = {"speedup_at_least": 6.0, "shared_prefix_vs_hf_at_least": 0.95, "separate_vs_hf_at_least": 0.95}


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


def hf_forward(model, prompt_ids: list[int], *, n: int, max_tokens: int, seed: int):
    """``n`` samples of exactly ``max_tokens`` tokens at temperature 1 by a bare decoding loop.

    The reference the backend is measured against: one prefill of the prompt into a
    ``DynamicCache`` (only the last position's logits), the cache copied ``n`` times
    (``batch_repeat_interleave``), then ``model(next_tokens, cache)`` once per token with
    ``torch.multinomial`` on the softmax; no attention mask, no stop checks, no log-probs,
    no per-row bookkeeping. Like the backend, the last token is sampled without a forward
    after it.

    Args:
        model: A loaded causal LM (``AutoModelForCausalLM``), in eval mode.
        prompt_ids: The prompt's token ids.
        n: Rows decoded together, all continuing the one prompt.
        max_tokens: New tokens per row (at least 1).
        seed: Seed of the sampling generator.

    Returns:
        A ``(n, max_tokens)`` long tensor of the sampled tokens.
    """
    import torch
    from transformers import DynamicCache

    # transformers 5.x names the forward's cache argument ``cache``; earlier releases past_key_values.
    cache_kw = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    dev = model.device
    generator = torch.Generator(device=dev).manual_seed(seed)
    cache = DynamicCache(config=model.config)
    out: list[torch.Tensor] = []
    with torch.inference_mode():
        ids = torch.tensor([prompt_ids], dtype=torch.long, device=dev)
        logits = model(input_ids=ids, use_cache=True, logits_to_keep=1, **{cache_kw: cache}).logits[:, -1, :]
        if n > 1:
            cache.batch_repeat_interleave(n)
            logits = logits.expand(n, -1)
        for i in range(max_tokens):
            tok = torch.multinomial(logits.softmax(dim=-1), 1, generator=generator)
            out.append(tok)
            if i + 1 < max_tokens:
                logits = model(input_ids=tok, use_cache=True, **{cache_kw: cache}).logits[:, -1, :]
    return torch.cat(out, dim=1)


def run_throughput(*, quick: bool = False, model: str | None = None, out_dir: Path = Path("bench/results"),
                   progress=None, max_tokens: int = MAX_TOKENS, rounds: int | None = None) -> dict[str, Any]:
    """Runs the benchmark, writes ``throughput.json`` and ``throughput.png``, returns the result.

    Args:
        quick: 3 rounds instead of 9.
        model: A built-in model name or checkpoint directory (None: a seeded random ~1M model).
        out_dir: Where the JSON and the plot go.
        progress: A Rich console that gets one line per round (None: silent).
        max_tokens: New tokens per sample (tests shrink it); capped by the model's context.
        rounds: Measured rounds, overriding ``quick``'s choice (tests).

    Raises:
        BadInputError: The model's context leaves room for fewer than 8 new tokens.
    """
    started = time.time()
    from ttc.backends.transformers_backend import TransformersBackend

    from ..models import resolve_checkpoint

    rounds = rounds or (3 if quick else 9)
    with tempfile.TemporaryDirectory(prefix="ttc-bench-") as tmp:
        if model is None:
            name, path = "random-llama-1m", random_checkpoint(Path(tmp) / "random-llama-1m")
        else:
            name, path = resolve_checkpoint(model)
        backend = TransformersBackend(path, name=name, device="cpu")
    prompt_tokens = backend.count_tokens(PROMPT)
    # A built-in model may have a short context (countdown-direct: 128): the backend would
    # end each sample early, so every mode asks for what fits.
    ctx = backend.info.max_context
    max_tokens = min(max_tokens, ctx - prompt_tokens) if ctx else max_tokens
    if max_tokens < MIN_TOKENS:
        raise BadInputError(f"{name}: a context of {ctx} tokens leaves {max_tokens} new tokens after the "
                            f"{prompt_tokens}-token prompt; the bench needs at least {MIN_TOKENS}")
    params = SamplingParams(n=1, max_tokens=max_tokens, temperature=1.0, seed=SEED, ignore_eos=True)

    def billed(gens) -> tuple[int, list[int]]:
        return sum(g.usage.prompt_tokens for g in gens), [c.completion_tokens for g in gens for c in g.completions]

    def bare(n: int) -> tuple[int, list[int]]:
        # Tokenising the prompt is part of the work, as it is in every backend call.
        ids = backend.tokenizer(PROMPT, add_special_tokens=True)["input_ids"]
        toks = hf_forward(backend.model, ids, n=n, max_tokens=max_tokens, seed=SEED)
        return len(ids), [toks.shape[1]] * toks.shape[0]

    def separate():
        return billed([g for _ in range(N_SAMPLES) for g in backend.generate([PROMPT], params)])

    def hf_forward_1():
        calls = [bare(1) for _ in range(N_SAMPLES)]
        return sum(p for p, _ in calls), [t for _, ts in calls for t in ts]

    def batched_repeat():
        return billed(backend.generate([PROMPT] * N_SAMPLES, params))

    def shared_prefix():
        return billed(backend.generate([PROMPT], params.model_copy(update={"n": N_SAMPLES})))

    def hf_forward_16():
        return bare(N_SAMPLES)

    # Each reference runs next to the mode it is compared with, so both see the same load;
    # odd rounds run the modes in reverse order, so neither always goes first.
    modes = {"separate": separate, "hf_forward_1": hf_forward_1, "batched_repeat": batched_repeat,
             "shared_prefix": shared_prefix, "hf_forward_16": hf_forward_16}
    walls: dict[str, list[float]] = {m: [] for m in modes}
    cpus: dict[str, list[float]] = {m: [] for m in modes}
    usage: dict[str, dict] = {}
    for fn in modes.values():  # warm-up: first calls pay for lazy initialisation
        fn()
    for r in range(rounds):
        for mode, fn in (reversed(modes.items()) if r % 2 else modes.items()):
            t0, c0 = time.perf_counter(), time.process_time()
            prompt, lengths = fn()
            walls[mode].append(time.perf_counter() - t0)
            cpus[mode].append(time.process_time() - c0)
            if len(lengths) != N_SAMPLES or set(lengths) != {max_tokens}:
                raise RuntimeError(f"{mode}: expected {N_SAMPLES} x {max_tokens} tokens, got {lengths}")
            usage[mode] = {"prompt_tokens": prompt, "completion_tokens": sum(lengths)}
        if progress is not None:
            progress.print(f"round {r + 1}/{rounds}: " + ", ".join(f"{m} {walls[m][-1]:.2f}s" for m in modes))
    generated = N_SAMPLES * max_tokens
    # CPU seconds beside wall seconds: on a shared machine the process's own CPU time is
    # less disturbed by other processes than its wall time (tokens/s stay wall-based).
    rows = {m: {"tokens_per_s": generated / statistics.median(w), "wall_s_median": statistics.median(w),
                "wall_s": w, "cpu_s_median": statistics.median(cpus[m]), "cpu_s": cpus[m], **usage[m]}
            for m, w in walls.items()}
    info = backend.info

    def ratio(a: str, b: str) -> float:
        return rows[a]["tokens_per_s"] / rows[b]["tokens_per_s"]

    def cpu_ratio(a: str, b: str) -> float:
        return rows[b]["cpu_s_median"] / rows[a]["cpu_s_median"]

    model_row = {"name": name, "path": str(path) if model else None, "params": info.parameters,
                 "digest": info.checkpoint_digest}
    result = bench_header("throughput", seed=SEED, quick=quick, models=[model_row], n_problems=1, started=started)
    result.update({
        "model": model_row, "n_samples": N_SAMPLES, "max_tokens": max_tokens,
        "prompt_tokens": prompt_tokens, "rounds": rounds, "modes": rows,
        "speedup": ratio("shared_prefix", "separate"),
        "speedup_batched_repeat": ratio("batched_repeat", "separate"),
        "prefix_sharing_gain": ratio("shared_prefix", "batched_repeat"),
        "shared_prefix_vs_hf": ratio("shared_prefix", "hf_forward_16"),
        "separate_vs_hf": ratio("separate", "hf_forward_1"),
        # The same two ratios in CPU seconds of this process (less noisy on a shared machine).
        "cpu_ratios": {"shared_prefix_vs_hf": cpu_ratio("shared_prefix", "hf_forward_16"),
                       "separate_vs_hf": cpu_ratio("separate", "hf_forward_1")},
        "goal": dict(GOALS),
    })
    result["goal_met"] = {
        "speedup_at_least": result["speedup"] >= GOALS["speedup_at_least"],
        "shared_prefix_vs_hf_at_least": result["shared_prefix_vs_hf"] >= GOALS["shared_prefix_vs_hf_at_least"],
        "separate_vs_hf_at_least": result["separate_vs_hf"] >= GOALS["separate_vs_hf_at_least"],
    }
    png = out_dir / "throughput.png"
    result["files"] = {"json": str(out_dir / "throughput.json"), "png": str(png)}
    _plot(rows, name, max_tokens, png)
    write_result("throughput", result, out_dir)
    return result


def _plot(rows: dict, name: str, max_tokens: int, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    png.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7.5, 3.5))
    labels = list(rows)
    # The bare-loop references are hatched, beside the mode each one is compared with.
    colors = {"separate": "#999", "batched_repeat": "#69c", "shared_prefix": "#2a6"}
    bars = ax.bar(labels, [rows[m]["tokens_per_s"] for m in labels],
                  color=[colors.get(m, "#ddd") for m in labels], edgecolor="#444")
    for bar, m in zip(bars, labels):
        if m.startswith("hf_forward"):
            bar.set_hatch("//")
    ax.set_ylabel("generated tokens / s")
    ax.set_title(f"{N_SAMPLES} x {max_tokens} tokens, {name}")
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)
