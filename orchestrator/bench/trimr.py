"""``ttc bench trimr``: TrimR's thinking compression on the reflective CountDown model.

Every configuration decodes the same problems with the same seeds (problem k samples
with seed ``SEED + k`` everywhere, so runs are paired draw for draw until TrimR acts),
live: the rules act on real decoding, through ``TransformersBackend.stream_batch`` (all
problems one batch; an injection is prefilled into the row's KV cache while the other
rows go on) and the asynchronous checker (the exact thought verifier on its worker
thread). Configurations:

- ``baseline``: no TrimR; ``both``: all rules (overthinking, underthinking, repetition);
  ``over`` / ``under``: one rule alone (the ablation);
- ``first_answer``: stop at the first thought that states an answer, and answer it;
- ``truncate``: cut every chain at ``both``'s mean generated tokens, then the conclusion
  prompt (no verifier);
- ``extra.reflective_both_agree1``: ``both`` with M = 1 (two agreeing answers end
  thinking), beside the issue's shape, to show what a looser rule buys;
- ``search.both``: TrimR on the search-trace model, which states one answer at its end,
  so only underthinking (by its token ratio) and repetition can act.

Tokens follow DESIGN.md's budget rule: the prompt, the injected prompts (prefilled), every
generated token and the verifier's tokens (none: the exact verifier calls no model).
Wall time is the batch's, measured beside its baseline in the same process.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from ttc.backends.types import SamplingParams
from ttc.core.budget import Ledger
from ttc.core.cost import call_cost
from ttc.core.metrics import bootstrap_ci95, wilson_ci95
from ttc.core.trimr import CheckContext, Checker, Monitor, TrimR
from ttc.tasks.countdown import COUNTDOWN
from ttc.verifiers.thought import ExactThoughtVerifier

from .._trimr_setup import SEARCH, reflective_format
from .common import bench_header, write_result

__all__ = ["run_trimr_bench", "SEED", "QUICK_N", "FULL_N", "PAPER"]

SEED = 0
QUICK_N = 300
FULL_N = 1000
REFLECTIVE, SEARCH_MODEL = "countdown-reflective", "countdown-search"
#: The paper's reported figures (arXiv 2505.17155), for the README table.
PAPER = {"R1-Distill-Qwen-32B MATH500": {"token_reduction": 0.40, "runtime_reduction": 0.67, "accuracy_delta": 2.0},
         "R1-Distill-Qwen-32B GPQA": {"token_reduction": 0.46, "runtime_reduction": 0.70},
         "QwQ-32B AIME24": {"token_reduction": 0.23, "runtime_reduction": 0.39, "accuracy_delta": 0.0}}


def drive(backend, problems: list[dict], prompts: list[str], max_tokens: int, stop: tuple[str, ...],
          cfg: TrimR | None, temperature: float = 0.7) -> tuple[list[dict[str, Any]], float]:
    """Decodes one stream per problem as one batch, under TrimR monitors when ``cfg``.

    Returns per-problem rows (text, graded answer text, tokens, flops, decision) and the
    batch's wall seconds.
    """
    params = [SamplingParams(temperature=temperature, seed=SEED + k, max_tokens=max_tokens, stop=stop)
              for k in range(len(problems))]
    t0 = time.perf_counter()
    checker = Checker(ExactThoughtVerifier(COUNTDOWN.verifier), CheckContext(Ledger()), cfg.batch,
                      cfg.asynchronous) if cfg is not None else None
    group = backend.stream_batch(prompts, params)
    mons = [Monitor(cfg, checker, max_tokens, p) for p in problems] if cfg is not None else None
    seen = [0] * len(problems)
    try:
        while group.live:
            for r, delta in group.step().items():
                if mons is None:
                    continue
                ids = group.token_ids(r)
                new, seen[r] = ids[seen[r]:], len(ids)
                d = mons[r].feed(delta, new)
                if d is None:
                    continue
                if d.action == "stop" or not d.text:
                    group.close(r)
                else:
                    group.inject(r, d.text)
    finally:
        if checker is not None:
            for m in mons or []:
                m.finish()
            checker.close()
    wall = time.perf_counter() - t0
    rows = []
    for k, p in enumerate(problems):
        gen = group.generation(k)
        c = gen.completions[0]
        mon = mons[k] if mons is not None else None
        graded = c.text
        if mon is not None and mon.decision is not None and mon.decision.rule == "first_answer":
            graded = mon.seg.thoughts[mon.rules.first_thought]
        cost = call_cost(backend.info, gen.prompt_tokens, [c.completion_tokens])
        rows.append({"text": c.text, "graded": graded, "tokens": gen.usage.prompt_tokens + gen.usage.completion_tokens,
                     "generated": c.completion_tokens, "injected": gen.prompt_tokens - len(backend._encode(prompts[k])),
                     "flops": cost.flops, "correct": bool(COUNTDOWN.verifier.verify(p, graded).correct),
                     "rule": mon.decision.rule if mon is not None and mon.decision is not None else None,
                     "lag": statistics.fmean(mon.lags) if mon is not None and mon.lags else None})
    return rows, wall


def summarize(rows: list[dict], wall: float, base: list[dict] | None = None, base_wall: float | None = None
              ) -> dict[str, Any]:
    """Accuracy (Wilson CI), tokens, flops and wall; against ``base``: the paired deltas."""
    n = len(rows)
    ok = sum(r["correct"] for r in rows)
    out: dict[str, Any] = {
        "accuracy": ok / n, "accuracy_ci95": wilson_ci95(ok, n),
        "tokens": statistics.fmean(r["tokens"] for r in rows),
        "generated_tokens": statistics.fmean(r["generated"] for r in rows),
        "flops": statistics.fmean(r["flops"] for r in rows), "wall_s": round(wall, 2),
    }
    rules: dict[str, int] = {}
    for r in rows:
        if r["rule"]:
            rules[r["rule"]] = rules.get(r["rule"], 0) + 1
    if rules:
        out["decisions"] = rules
        lags = [r["lag"] for r in rows if r["lag"] is not None]
        out["check_lag_tokens"] = round(statistics.fmean(lags), 2) if lags else None
    if base is not None:
        diff = [100.0 * (int(a["correct"]) - int(b["correct"])) for a, b in zip(rows, base)]
        out["token_reduction"] = 1 - out["tokens"] / statistics.fmean(r["tokens"] for r in base)
        out["accuracy_delta"] = statistics.fmean(diff)
        out["accuracy_delta_ci95"] = bootstrap_ci95(diff, seed=SEED)
        out["wall_reduction"] = 1 - wall / base_wall if base_wall else None
    return out


def corrected_share(problems: list[dict], rows: list[dict]) -> float:
    """Share of problems whose first stated answer differs from a correct final one."""
    from ttc.tasks.countdown.reflective import thought_answers

    hits = 0
    for p, r in zip(problems, rows):
        if not r["correct"]:
            continue
        answers = [a for _, a in thought_answers(p, r["text"], COUNTDOWN.verifier.canonical) if a is not None]
        final = COUNTDOWN.verifier.canonical(p, r["text"])
        hits += bool(answers) and answers[0] != final
    return hits / len(problems)


def run_trimr_bench(*, quick: bool, out_dir: Path, problems: list[dict] | None = None, device: str = "cpu",
                    progress=None) -> dict[str, Any]:
    """Runs the bench and writes ``trimr.json`` under ``out_dir``; returns the result.

    Raises:
        BadInputError: The reflective model (or its format) is not installed.
    """
    import torch

    from ttc.backends.errors import BadInputError

    from ..models import load_backend

    from ttc.tasks.countdown.reflective import REFLECTIVE_MAX_TOKENS, reflective_prompt

    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    started = time.time()
    problems = problems if problems is not None else COUNTDOWN.make_problems(
        QUICK_N if quick else FULL_N, seed=SEED, split="test")
    if quick:
        problems = problems[:QUICK_N]
    say = progress or (lambda msg: None)
    fmt = reflective_format()
    if fmt is None:
        raise BadInputError("the reflective CountDown format (tasks/countdown/reflective.py) is missing")
    refl, search = load_backend(REFLECTIVE, device=device), load_backend(SEARCH_MODEL, device=device)
    stop = tuple(COUNTDOWN.stop)
    prompts = [reflective_prompt(p) for p in problems]
    run = {}

    def go(name: str, cfg: TrimR | None) -> None:
        say(f"reflective {name} ...")
        run[name] = drive(refl, problems, prompts, REFLECTIVE_MAX_TOKENS, stop, cfg)

    full = TrimR(**fmt)
    drive(refl, problems[:8], prompts[:8], 32, stop, None)  # warm-up: first-call setup off the clocks
    go("baseline", None)
    go("both", full)
    go("over", TrimR(**fmt, rules=("over",)))
    go("under", TrimR(**fmt, rules=("under",)))
    go("first_answer", TrimR(**fmt, rules=("first_answer",)))
    cut = max(1, round(statistics.fmean(r["generated"] for r in run["both"][0])))
    go("truncate", TrimR(**fmt, rules=(), truncate_tokens=cut, at_boundary=False))
    go("both_agree1", TrimR(**fmt, agree=1))  # beside the shape: M = 1 (two agreeing answers)
    base, base_wall = run["baseline"]
    reflective = {k: summarize(*run[k], base, base_wall) for k in ("both", "over", "under", "first_answer",
                                                                     "truncate")}
    reflective["truncate"]["cut_tokens"] = cut

    say("search baseline ...")
    s_prompts = [COUNTDOWN.prompt(p, "search") for p in problems]
    s_max = COUNTDOWN.max_tokens(None, "search")
    s_base = drive(search, problems, s_prompts, s_max, stop, None)
    say("search both ...")
    s_both = drive(search, problems, s_prompts, s_max, stop, TrimR(**SEARCH))
    models = [{"name": REFLECTIVE, "digest": refl.info.checkpoint_digest},
              {"name": SEARCH_MODEL, "digest": search.info.checkpoint_digest}]
    result = {
        **bench_header("trimr", seed=SEED, quick=quick, models=models, n_problems=len(problems), started=started),
        "baseline": summarize(*run["baseline"]),
        "corrected_share": corrected_share(problems, base),
        "reflective": reflective,
        "search": {"baseline": summarize(*s_base), "both": summarize(*s_both, *s_base)},
        "extra": {"reflective_both_agree1": summarize(*run["both_agree1"], base, base_wall)},
        "settings": {"trimr": full.describe(), "verifier": "exact", "temperature": 0.7,
                     "max_tokens": {"reflective": REFLECTIVE_MAX_TOKENS, "search": s_max},
                     "ablation": "over / under: that rule alone; both: over + under + repetition"},
        "goal": {"token_reduction_min": 0.30, "accuracy_loss_max_points": 1.0},
        "paper": PAPER,
    }
    b = reflective["both"]
    result["goal"]["met"] = bool(b["token_reduction"] >= 0.30 and b["accuracy_delta"] >= -1.0 and (
        result["corrected_share"] < 0.05 or b["accuracy"] > reflective["first_answer"]["accuracy"]))
    result["elapsed_s"] = round(time.time() - started, 1)
    write_result("trimr", result, out_dir)
    return result
