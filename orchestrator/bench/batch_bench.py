"""``ttc bench batch``: what running jobs concurrently through the generation queue buys.

The same CountDown problems run as batch files through ``start_batch`` at concurrency 1
and 16, for two workloads: ``sample`` at 64 tokens (one short call per job, where batching
across jobs is everything) and ``best_of_n`` under a 512-token budget (several pooled
calls per job). ``ttc eval`` runs the ``sample`` workload too, one problem after another,
so that concurrency 1 can be compared with it. Each mode gets a fresh orchestrator with the
model loaded and warmed up before its clock starts; every job's seed derives from the run
seed and its custom_id, so the modes answer the same problems with the same draws
(``same_answers`` checks it). The modes run interleaved in rounds (see ``run_batch_bench``).
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

from ttc.core.metrics import wilson_ci95
from ttc.tasks.countdown import COUNTDOWN

from .common import bench_header, write_result

__all__ = ["run_batch_bench"]

SEED = 0
MODEL = "countdown-direct"
WORKLOADS = {
    "sample": {"strategy": "sample", "params": {"max_tokens": 64}},
    "best_of_n": {"strategy": "best_of_n", "budget": {"tokens": 512}},
}
CONCURRENCY = (1, 16)


def _lines(problems: list[dict], workload: dict[str, Any]) -> list[dict]:
    return [{"custom_id": f"cd-{i}", "body": {"task": "countdown", "model": MODEL,
                                               "problem": {"numbers": p["numbers"], "target": p["target"]},
                                               **workload}}
            for i, p in enumerate(problems)]


def _warm(orc) -> None:
    # Load the model and run one call, so no mode's clock pays for first-call setup.
    orc.evaluate("countdown", COUNTDOWN.make_problems(1, seed=99, split="test"), strategy="sample", model=MODEL)


def _batch_mode(db: str, src: Path, out: Path, concurrency: int) -> dict[str, Any]:
    from ..api import Orchestrator
    from ..batch import start_batch

    with Orchestrator(db=db, device="cpu") as orc:
        orc.batch_generation = concurrency > 1
        _warm(orc)
        t0 = time.perf_counter()
        summary = start_batch(orc, src, out, max_concurrency=concurrency, seed=SEED)
        wall = time.perf_counter() - t0
        stats = getattr(orc.backend(MODEL), "stats", None)
    bodies = {json.loads(x)["custom_id"]: json.loads(x)["response"]["body"] for x in out.read_text().splitlines()}
    generated = sum(b["usage"]["completion_tokens"] for b in bodies.values())
    row = {"concurrency": concurrency, "jobs": summary.jobs, "failed": summary.failed, "wall_s": wall,
           "jobs_per_s": summary.jobs / wall, "generated_tokens": generated, "tokens_per_s": generated / wall,
           "tokens": summary.tokens, "accuracy": summary.correct / summary.jobs,
           "accuracy_ci95": wilson_ci95(summary.correct, summary.jobs),
           "answers": {k: b["answer"] for k, b in bodies.items()}}
    if stats is not None:
        row["queue"] = {"decodes": stats.decodes, "requests": stats.requests, "largest": stats.largest}
    return row


def _eval_mode(db: str, problems: list[dict]) -> dict[str, Any]:
    from ..api import Orchestrator

    with Orchestrator(db=db, device="cpu") as orc:
        _warm(orc)
        t0 = time.perf_counter()
        report = orc.evaluate("countdown", problems, strategy="sample", model=MODEL, max_tokens=64)
        wall = time.perf_counter() - t0
    generated = report.usage.completion_tokens
    return {"concurrency": 1, "jobs": report.n_problems, "wall_s": wall, "jobs_per_s": report.n_problems / wall,
            "generated_tokens": generated, "tokens_per_s": generated / wall, "tokens": report.tokens,
            "accuracy": report.accuracy, "accuracy_ci95": report.ci95}


def _merge(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One mode's rounds as one row: totals over the rounds, rates over their summed wall time."""
    jobs = sum(r["jobs"] for r in rows)
    wall = sum(r["wall_s"] for r in rows)
    generated = sum(r["generated_tokens"] for r in rows)
    correct = round(sum(r["accuracy"] * r["jobs"] for r in rows))
    out = {"concurrency": rows[0]["concurrency"], "jobs": jobs, "failed": sum(r.get("failed", 0) for r in rows),
           "wall_s": wall, "jobs_per_s": jobs / wall, "generated_tokens": generated, "tokens_per_s": generated / wall,
           "tokens": sum(r["tokens"] for r in rows), "accuracy": correct / jobs,
           "accuracy_ci95": wilson_ci95(correct, jobs), "rounds_wall_s": [r["wall_s"] for r in rows]}
    if "answers" in rows[0]:
        out["answers"] = {k: v for r in rows for k, v in r["answers"].items()}
    queues = [r["queue"] for r in rows if "queue" in r]
    if queues:
        out["queue"] = {"decodes": sum(q["decodes"] for q in queues), "requests": sum(q["requests"] for q in queues),
                        "largest": max(q["largest"] for q in queues)}
    return out


def run_batch_bench(*, quick: bool, out_dir: Path, n_problems: int | None = None, progress=None) -> dict[str, Any]:
    """Runs the bench and writes ``batch.json``; returns the result.

    The problems are split into rounds; each round runs every mode on its share, in an
    order rotated round by round, so that a noisy machine slows all modes alike.
    """
    started = time.time()
    n = n_problems or (48 if quick else 256)
    rounds = 2 if quick else 4
    problems = COUNTDOWN.make_problems(n, seed=SEED, split="test")
    shares = [problems[i::rounds] for i in range(rounds)]
    names = [f"{w}_c{c}" for w in WORKLOADS for c in CONCURRENCY] + ["eval_sample"]
    parts: dict[str, list[dict[str, Any]]] = {m: [] for m in names}
    with tempfile.TemporaryDirectory(prefix="ttc-bench-batch-") as tmp:
        d = Path(tmp)
        db = f"sqlite:///{d / 'bench.db'}"
        for r, share in enumerate(shares):
            order = names[r % len(names):] + names[: r % len(names)]
            for mode in order:
                if mode == "eval_sample":
                    parts[mode].append(_eval_mode(db, share))
                    continue
                workload, c = mode.rsplit("_c", 1)
                src = d / f"{mode}-{r}.jsonl"
                lines = _lines(share, WORKLOADS[workload])
                for line, i in zip(lines, range(r, n, rounds)):  # custom_ids keep the problem's index
                    line["custom_id"] = f"cd-{i}"
                src.write_text("".join(json.dumps(x) + "\n" for x in lines))
                parts[mode].append(_batch_mode(db, src, d / f"{mode}-{r}.out", int(c)))
            if progress is not None:
                progress.print(f"round {r + 1}/{rounds}: " + ", ".join(
                    f"{m} {parts[m][-1]['jobs_per_s']:.2f} jobs/s" for m in names))
    modes = {m: _merge(rows) for m, rows in parts.items()}
    same = {name: modes[f"{name}_c1"].pop("answers") == modes[f"{name}_c16"].pop("answers") for name in WORKLOADS}
    from ttc.backends.transformers_backend import checkpoint_digest

    from ..models import resolve_checkpoint

    _, path = resolve_checkpoint(MODEL)
    result = bench_header("batch", seed=SEED, quick=quick, n_problems=n,
                          models=[{"name": MODEL, "digest": checkpoint_digest(path)}], started=started)
    result.update({
        "rounds": rounds,
        "modes": modes,
        "speedup": modes["sample_c16"]["jobs_per_s"] / modes["sample_c1"]["jobs_per_s"],
        "speedup_tokens": modes["sample_c16"]["tokens_per_s"] / modes["sample_c1"]["tokens_per_s"],
        "speedup_best_of_n": modes["best_of_n_c16"]["jobs_per_s"] / modes["best_of_n_c1"]["jobs_per_s"],
        "c1_vs_eval": modes["sample_c1"]["jobs_per_s"] / modes["eval_sample"]["jobs_per_s"],
        "same_answers": same,
        "goal": {"speedup_at_least": 4.0, "c1_vs_eval_at_least": 1.0},
    })
    write_result("batch", result, out_dir)
    return result
