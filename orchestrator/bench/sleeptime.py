"""``ttc bench sleeptime``: test-time compute with and without sleep-time compute.

On ``stateful-arith`` (200 contexts x 10 queries; ``--quick`` keeps 200 contexts with
fewer budget points), side by side in one run with the same model and seeds:

- baseline: each query derived from the context, majority vote over 1/2/4/8 samples
  (quick: 1/3);
- sleep time: ``k`` notes per context written by the model before the queries (the sleep
  phase of ``strategies.sleeptime``, k = 1, 2, 5, combined by a vote per quantity), then
  each query answered from context + notes, majority vote over 1/2/4 samples (quick: 1).

Every generation is batched (one ``call_model`` per arm over all prompts; smaller budget
points are the first samples of the largest), so a budget point's figures are those of
its first ``m`` samples. Accounting: DESIGN's tokens (prefill + generated) and generated
test tokens (the paper's axis); in both arms a context's shared prompt prefix is counted
once across its queries. Cost per query at N queries per context = sleep tokens / N +
w x test tokens per query (w = 1 and 10). Predictability of a query = its log-probability
given the context under the model (a prefill-only scoring pass, charged to neither arm,
reported as analysis cost). References grade answers only; the sleep phase never sees a
query or a solver.
"""

from __future__ import annotations

import os
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from ttc.backends.types import SamplingParams
from ttc.core.budget import Ledger
from ttc.core.calls import call_model
from ttc.core.metrics import wilson_ci95
from ttc.strategies.sleeptime import (
    SleepConfig, combine_notes, is_counterfactual, precompute_notes, sleep_formats, vote,
)

from .common import bench_header, write_result

__all__ = ["PAPER", "run_sleeptime_bench"]

NAME = "sleeptime"
TASK = "stateful-arith"
PAPER = {"source": "Lin et al. 2025, Sleep-time Compute: Beyond Inference Scaling at Test-time (arXiv 2504.13171)",
         "test_token_reduction": 5.0, "cost_per_query_reduction_at_10": 2.5, "test_token_weight": 10,
         "queries_per_context": 10, "accuracy_gain_from_more_sleep": "up to 13% (Stateful GSM-Symbolic), "
         "18% (Stateful AIME)", "benchmarks": "Stateful GSM-Symbolic, Stateful AIME, Multi-Query GSM-Symbolic"}
GOALS = {"test_token_reduction_at_least": 5.0, "cost_per_query_reduction_at_10_at_least": 2.5}
WEIGHTS = (1, 10)
QUERIES_PER_CONTEXT = (1, 2, 5, 10)
SLEEP_KS = (1, 2, 5)
HEADLINE_K = 5  # declared before any run: the largest sleep budget
TEMPERATURE = 0.7


def _points(quick: bool) -> tuple[tuple[int, ...], tuple[int, ...]]:
    # Baseline samples, sleep-time samples. Quick keeps every context and query, with the
    # fewest points that still make both curves (a vote over 3 breaks no ties by order).
    return ((1, 3), (1,)) if quick else ((1, 2, 4, 8), (1, 2, 4))


def _lcp(strings: list[str]) -> str:
    return os.path.commonprefix(strings) if strings else ""


def _graded(task, problem: dict, texts: list[str]) -> list[tuple[str | None, bool]]:
    v = task.verifier
    return [(v.canonical(problem, t), bool(v.verify(problem, t).correct)) for t in texts]


def _arm(task, backend, problems: list[dict], prompts: list[str], n: int, ms: tuple[int, ...], seed: int,
         fmt: str, gens: dict[str, Any] | None = None) -> dict[int, list[dict]]:
    """One batched call: per budget point m, per problem, the vote of its first m samples.

    ``gens`` caches generations by prompt: identical prompts (the same combined notes for
    several k) are decoded once, as one call would decode them."""
    gens = {} if gens is None else gens
    # Counterfactuals (long derivations) batch together, so short answers do not wait for them.
    uniq = sorted((p for p in dict.fromkeys(prompts) if p not in gens),
                  key=lambda p: (is_counterfactual(p.rpartition("?")[2]), len(p)))
    params = SamplingParams(n=n, temperature=TEMPERATURE, seed=seed, max_tokens=task.max_tokens(None, fmt),
                            stop=tuple(task.stop))
    if uniq:
        gens.update(zip(uniq, call_model(backend, uniq, params, Ledger(), name=f"bench {fmt}").generations))
    out: dict[int, list[dict]] = {m: [] for m in ms}
    for p, prompt in zip(problems, prompts):
        g = gens[prompt]
        graded = _graded(task, p, [c.text for c in g.completions])
        for m in ms:
            keys = [k for k, _ in graded[:m]]
            chosen = vote(keys)
            correct = chosen is not None and next(ok for k, ok in graded[:m] if k == chosen)
            out[m].append({"correct": correct, "prompt": g.prompt_tokens,
                           "gen": sum(c.completion_tokens for c in g.completions[:m])})
    return out


def _tokens(backend, by_ctx: dict[str, list[int]], prompts: list[str], rows: list[dict]) -> dict[str, float]:
    """Per-query figures with each context's shared prompt prefix counted once."""
    prefix_total, suffix_total, gen_total, n = 0, 0, 0, 0
    for idx in by_ctx.values():
        shared = min(backend.count_tokens(_lcp([prompts[i] for i in idx])), min(rows[i]["prompt"] for i in idx))
        prefix_total += shared
        suffix_total += sum(rows[i]["prompt"] - shared for i in idx)
        gen_total += sum(rows[i]["gen"] for i in idx)
        n += len(idx)
    return {"prefix_per_context": prefix_total / len(by_ctx), "suffix_per_query": suffix_total / n,
            "generated_per_query": gen_total / n, "queries_per_context": n / len(by_ctx)}


def _point(rows: list[dict], tok: dict[str, float], label: dict[str, Any]) -> dict[str, Any]:
    ok = sum(r["correct"] for r in rows)
    per_query = tok["prefix_per_context"] / tok["queries_per_context"] + tok["suffix_per_query"] \
        + tok["generated_per_query"]
    return {**label, "accuracy": ok / len(rows), "ci95": wilson_ci95(ok, len(rows)),
            "test_generated_tokens_per_query": tok["generated_per_query"], "test_tokens_per_query": per_query,
            "prefix_tokens_per_context": tok["prefix_per_context"], "suffix_tokens_per_query": tok["suffix_per_query"]}


def _needed(points: list[dict], acc: float, key: str) -> float | None:
    """Tokens (``key``) a curve needs to reach accuracy ``acc``, linearly interpolated
    between its points in token order (its best-so-far accuracy); None if it never does."""
    pts = sorted(points, key=lambda p: p[key])
    best_prev, prev_t = None, None
    for p in pts:
        a = p["accuracy"] if best_prev is None else max(p["accuracy"], best_prev)
        if a >= acc:
            if best_prev is None or a == best_prev:
                return p[key]
            return prev_t + (p[key] - prev_t) * (acc - best_prev) / (a - best_prev)
        best_prev, prev_t = a, p[key]
    return None


def _cost(sleep: float, prefix: float, per_query: float, n: int, w: int) -> float:
    return sleep / n + w * (prefix / n + per_query)


def _economics(base: list[dict], sleep_pts: list[dict], sleep_tokens: dict[str, float]) -> dict[str, Any]:
    """Reductions at the highest accuracy both curves reach, cost per query, break-even."""
    target = min(max(p["accuracy"] for p in base), max(p["accuracy"] for p in sleep_pts))
    out: dict[str, Any] = {"matched_accuracy": target}
    for unit, key, skey in (("generated", "test_generated_tokens_per_query", "generated_per_context"),
                            ("tokens", "suffix_plus_generated", "tokens_per_context")):
        for pts in (base, sleep_pts):
            for p in pts:
                p["suffix_plus_generated"] = p["suffix_tokens_per_query"] + p["test_generated_tokens_per_query"]
        tb, ts = _needed(base, target, key), _needed(sleep_pts, target, key)
        # The prefix a context's queries share, in DESIGN tokens only (generated tokens have none).
        pb = statistics.fmean(p["prefix_tokens_per_context"] for p in base) if unit == "tokens" else 0.0
        ps = statistics.fmean(p["prefix_tokens_per_context"] for p in sleep_pts) if unit == "tokens" else 0.0
        s = sleep_tokens[skey]
        costs = {str(w): {str(n): {"baseline": _cost(0, pb, tb, n, w), "sleeptime": _cost(s, ps, ts, n, w)}
                          for n in QUERIES_PER_CONTEXT} for w in WEIGHTS}
        for w in costs.values():
            for c in w.values():
                c["reduction"] = c["baseline"] / c["sleeptime"]
        even = {str(w): ((s + w * (ps - pb)) / (w * (tb - ts)) if tb > ts else None) for w in WEIGHTS}
        out[unit] = {"baseline_test_tokens_per_query": tb, "sleeptime_test_tokens_per_query": ts,
                     "test_token_reduction": tb / ts, "sleep_tokens_per_context": s, "cost_per_query": costs,
                     "break_even_queries_per_context": even}
    return out


def _query_logprobs(backend, prefixes: list[str], queries: list[str]) -> tuple[list[float | None], int]:
    """log P(query | prefix) per pair under an in-process model, and the tokens prefilled."""
    import torch

    model, tok = getattr(backend, "model", None), getattr(backend, "tokenizer", None)
    if model is None or tok is None:
        return [None] * len(queries), 0
    device = next(model.parameters()).device
    out, spent = [], 0
    for start in range(0, len(queries), 128):
        batch = list(zip(prefixes[start:start + 128], queries[start:start + 128]))
        pre = [tok(p)["input_ids"] for p, _ in batch]
        full = [tok(p + q)["input_ids"] for p, q in batch]
        width = max(len(f) for f in full)
        ids = torch.full((len(full), width), backend._pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, f in enumerate(full):
            ids[i, :len(f)], mask[i, :len(f)] = torch.tensor(f), 1
        with torch.no_grad():
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
            # log P(token t | tokens before t), for every position t >= 1.
            token_lp = torch.log_softmax(logits[:, :-1], dim=-1).gather(2, ids[:, 1:, None].to(device))[..., 0].cpu()
        for i, (p, f) in enumerate(zip(pre, full)):
            spent += len(f)
            if f[:len(p)] != p or len(f) == len(p):
                out.append(None)
                continue
            out.append(float(token_lp[i, len(p) - 1:len(f) - 1].sum()))
    return out, spent


def _predictability(problems, logprobs, base_rows, sleep_rows) -> dict[str, Any]:
    scored = [i for i, lp in enumerate(logprobs) if lp is not None]
    if not scored:
        return {"available": False, "reason": "the model cannot score text in-process"}
    order = sorted(scored, key=lambda i: logprobs[i])
    bins = []
    for q in range(4):
        idx = order[q * len(order) // 4:(q + 1) * len(order) // 4]
        b_ok, s_ok = sum(base_rows[i]["correct"] for i in idx), sum(sleep_rows[i]["correct"] for i in idx)
        b_gen = statistics.fmean(base_rows[i]["gen"] for i in idx)
        s_gen = statistics.fmean(sleep_rows[i]["gen"] for i in idx)
        kinds = defaultdict(int)
        for i in idx:
            kinds[_kind(problems[i])] += 1
        bins.append({"quartile": q + 1, "n": len(idx), "logprob_range": [logprobs[idx[0]], logprobs[idx[-1]]],
                     "baseline_accuracy": b_ok / len(idx), "baseline_ci95": wilson_ci95(b_ok, len(idx)),
                     "sleeptime_accuracy": s_ok / len(idx), "sleeptime_ci95": wilson_ci95(s_ok, len(idx)),
                     "baseline_generated_per_query": b_gen, "sleeptime_generated_per_query": s_gen,
                     "test_token_savings": b_gen / s_gen if s_gen else None, "kinds": dict(kinds)})
    return {"available": True, "measure": "sum of the query's token log-probabilities given the context",
            "quantiles": [statistics.quantiles([logprobs[i] for i in scored], n=4)], "bins": bins}


def _kind(problem: dict) -> str:
    # Problems read from a file carry no kind: it shows in the query's shape.
    q = problem["query"]
    return problem.get("kind") or ("counterfactual" if is_counterfactual(q) else "defined" if len(q) == 1
                                   else "combination")


def _per_kind(problems, rows: list[dict]) -> dict[str, Any]:
    groups: dict[str, list[int]] = defaultdict(list)
    for i, p in enumerate(problems):
        groups[_kind(p)].append(i)
    out = {}
    for kind, idx in sorted(groups.items()):
        ok = sum(rows[i]["correct"] for i in idx)
        out[kind] = {"n": len(idx), "accuracy": ok / len(idx), "ci95": wilson_ci95(ok, len(idx)),
                     "generated_per_query": statistics.fmean(rows[i]["gen"] for i in idx)}
    return out


def run_sleeptime_bench(*, quick: bool = False, problems: list[dict] | None = None, model: str | None = None,
                        backend=None, n_contexts: int = 200, seed: int = 0, out_dir: Path | None = None,
                        progress=None, plot: bool = True) -> dict[str, Any]:
    """Runs the benchmark and writes ``sleeptime.json`` (and ``.png``) under ``out_dir``.

    Args:
        quick: Fewer budget points (baseline 1/3 samples, sleep time 1), same 200 contexts.
        problems: ``stateful-arith`` problems (grouped by context) instead of generated ones.
        model: Checkpoint (default: the task's model); or give ``backend``.
        n_contexts: Generated contexts (10 queries each).
        seed: Seeds problems and sampling.
        out_dir: Where the JSON and plot go (None: nothing written).
        progress: A Rich console for progress lines.
    """
    import ttc.tasks.stateful_arith  # noqa: F401 - registers the task
    from ttc.tasks.registry import get_task

    from ..models import load_backend

    started = time.time()
    say = (lambda msg: progress.print(msg)) if progress is not None else (lambda msg: None)
    task = get_task(TASK)
    fm = sleep_formats(task)
    problems = problems or task.make_problems(n_contexts, seed=seed, split="test", queries=10)
    backend = backend or load_backend(model or task.default_model)
    by_ctx: dict[str, list[int]] = defaultdict(list)
    for i, p in enumerate(problems):
        by_ctx[p["context"]].append(i)
    contexts = list(by_ctx)
    ms_base, ms_sleep = _points(quick)
    say(f"{len(contexts)} contexts, {len(problems)} queries; sleep phase ({max(SLEEP_KS)} notes each) ...")
    sleep_ledger = Ledger()
    arts = precompute_notes(task, contexts, backend, sleep_ledger, config=SleepConfig(notes=max(SLEEP_KS), seed=seed))
    say("baseline: derivations ...")
    base_prompts = [fm.query_prompt(p["context"], p["query"]) for p in problems]
    base = _arm(task, backend, problems, base_prompts, max(ms_base), ms_base, seed, "direct")
    base_pts = [_point(base[m], _tokens(backend, by_ctx, base_prompts, base[m]), {"samples": m}) for m in ms_base]
    curves: dict[str, list[dict]] = {}
    sleep_rows, sleep_cost, notes_quality, cache = {}, {}, {}, {}
    for k in SLEEP_KS:
        say(f"sleep time: answers from {k} note(s) ...")
        notes = {c: combine_notes([fm.parse_notes(t) for t in a.notes_text[:k]]) for c, a in zip(contexts, arts)}
        prompts = [fm.notes_query_prompt(p["context"], notes[p["context"]], p["query"]) for p in problems]
        rows = _arm(task, backend, problems, prompts, max(ms_sleep), ms_sleep, seed + 1, "with_notes", cache)
        curves[str(k)] = [_point(rows[m], _tokens(backend, by_ctx, prompts, rows[m]), {"notes": k, "samples": m})
                          for m in ms_sleep]
        sleep_rows[k] = rows
        gen = statistics.fmean(sum(a.notes_tokens[:k]) for a in arts)
        sleep_cost[k] = {"generated_per_context": gen,
                         "tokens_per_context": statistics.fmean(a.usage.prompt_tokens for a in arts) + gen}
        notes_quality[str(k)] = _notes_quality(contexts, notes)
    say("predictability: scoring queries ...")
    logprobs, analysis_tokens = _query_logprobs(backend, [fm.query_prompt(p["context"], "") for p in problems],
                                                [p["query"] for p in problems])
    head = curves[str(HEADLINE_K)]
    econ = {str(k): _economics(base_pts, curves[str(k)], sleep_cost[k]) for k in SLEEP_KS}
    best_base = max(base_pts, key=lambda p: p["accuracy"])
    kinds = {"baseline_1_sample": _per_kind(problems, base[1]),
             "baseline_best": {"samples": best_base["samples"], **_per_kind(problems, base[best_base["samples"]])},
             f"sleeptime_{HEADLINE_K}_notes_1_sample": _per_kind(problems, sleep_rows[HEADLINE_K][1])}
    e = econ[str(HEADLINE_K)]
    result = {
        **bench_header(NAME, seed=seed, quick=quick, n_problems=len(problems), started=started,
                       models=[{"name": backend.name, "digest": backend.info.checkpoint_digest}]),
        "task": TASK, "n_contexts": len(contexts), "queries_per_context": len(problems) / len(contexts),
        "settings": {"temperature": TEMPERATURE, "baseline_samples": list(ms_base), "sleeptime_samples": list(ms_sleep),
                     "sleep_notes": list(SLEEP_KS), "headline_notes": HEADLINE_K, "vote": "majority per query",
                     "notes_combined_by": "majority per quantity across the notes",
                     "anticipation": "off: the model has no skill (d)" if fm.anticipate_prompt is None else "on"},
        "baseline": base_pts, "sleeptime": curves,
        "test_token_reduction": e["generated"]["test_token_reduction"],
        "test_token_reduction_design_tokens": e["tokens"]["test_token_reduction"],
        "cost_per_query_reduction_at_10": e["generated"]["cost_per_query"]["10"]["10"]["reduction"],
        "cost_per_query_reduction_at_10_design_tokens": e["tokens"]["cost_per_query"]["10"]["10"]["reduction"],
        "sleeptime_best_accuracy": max(p["accuracy"] for p in head),
        "baseline_best_accuracy": best_base["accuracy"],
        "accuracy_no_lower_than_baseline_best": max(p["accuracy"] for p in head) >= best_base["accuracy"],
        "economics": econ,
        "accuracy_vs_sleep_budget": [{"notes": k, "accuracy": curves[str(k)][0]["accuracy"],
                                      "ci95": curves[str(k)][0]["ci95"], **sleep_cost[k], **notes_quality[str(k)]}
                                     for k in SLEEP_KS],
        "per_kind": kinds, "counterfactuals": _counterfactual_note(kinds, best_base["samples"]),
        "predictability": {**_predictability(problems, logprobs, base[1], sleep_rows[HEADLINE_K][1]),
                           "analysis_tokens": analysis_tokens},
        "sleep_phase_tokens": {"prompt": sleep_ledger.spent.prompt_tokens,
                               "generated": sleep_ledger.spent.completion_tokens},
        "paper": PAPER, "goal": GOALS,
    }
    result["goal_met"] = {"test_token_reduction": result["test_token_reduction"] >= 5,
                          "cost_per_query_reduction_at_10": result["cost_per_query_reduction_at_10"] >= 2.5,
                          "accuracy": result["accuracy_no_lower_than_baseline_best"]}
    result["elapsed_s"] = round(time.time() - started, 1)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        files = {"json": str(out_dir / f"{NAME}.json")}
        if plot:
            files["png"] = str(_plot(result, out_dir / f"{NAME}.png"))
        result["files"] = files
        write_result(NAME, result, out_dir)
    return result


def _notes_quality(contexts: list[str], notes: dict[str, dict[str, int]]) -> dict[str, float]:
    # Grading only (the bench knows the references): how right the combined notes are.
    from ttc.verifiers.arith import evaluate, parse_context

    whole, right, total = 0, 0, 0
    for c in contexts:
        truth = evaluate(parse_context(c))
        got = notes[c]
        hits = sum(got.get(k) == v for k, v in truth.items())
        whole += hits == len(truth)
        right, total = right + hits, total + len(truth)
    return {"notes_all_right": whole / len(contexts), "notes_quantities_right": right / total}


def _counterfactual_note(kinds: dict[str, Any], best: int) -> str:
    s = kinds[f"sleeptime_{HEADLINE_K}_notes_1_sample"].get("counterfactual")
    b = kinds["baseline_best"].get("counterfactual")
    b1 = kinds["baseline_1_sample"].get("counterfactual")
    if not s or not b:
        return "no counterfactual queries in this run"
    return (f"Counterfactuals (notes cannot answer them by lookup; the model re-derives what the change affects, "
            f"reading unchanged quantities from the notes): sleep time {s['accuracy']:.1%} at "
            f"{s['generated_per_query']:.1f} generated tokens/query vs baseline {b1['accuracy']:.1%} (1 sample, "
            f"{b1['generated_per_query']:.1f})" + (f" and {b['accuracy']:.1%} (best: vote over {best}, "
                                                   f"{b['generated_per_query']:.1f})." if best > 1 else "."))


def _plot(r: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    b = r["baseline"]
    ax1.plot([p["test_generated_tokens_per_query"] for p in b], [p["accuracy"] for p in b], "o-k",
             label="baseline (derive, vote over m)")
    for k, pts in r["sleeptime"].items():
        ax1.plot([p["test_generated_tokens_per_query"] for p in pts], [p["accuracy"] for p in pts], "s-",
                 label=f"sleep time, {k} note(s)")
    ax1.set_xscale("log")
    ax1.set_xlabel("generated test tokens per query")
    ax1.set_ylabel("accuracy")
    ax1.set_title(f"test_token_reduction {r['test_token_reduction']:.1f}x (paper ~5x)")
    ax1.legend(fontsize=8)
    cost = r["economics"][str(HEADLINE_K)]["generated"]["cost_per_query"]["10"]
    ns = list(cost)
    ax2.plot([int(n) for n in ns], [cost[n]["baseline"] for n in ns], "o-k", label="baseline")
    ax2.plot([int(n) for n in ns], [cost[n]["sleeptime"] for n in ns], "s-", label=f"sleep time, {HEADLINE_K} notes")
    ax2.set_xlabel("queries per context")
    ax2.set_ylabel("cost per query (sleep + 10 x test, generated tokens)")
    ax2.set_title(f"at 10 queries: {r['cost_per_query_reduction_at_10']:.1f}x lower (paper 2.5x)")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
