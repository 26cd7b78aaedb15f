"""Evaluating many allocations of built-in graphs on many problems, in worker processes.

Recording a replay table means running every feasible allocation on every train problem.
Stage results are cached by (task, option, input, carry) (see ``run.py``), so the work is
the distinct stage runs, not allocations x problems; what remains is split by problem
across worker processes (one model copy each, one torch thread each), since one process
drives two CPU cores poorly with these small models. Each worker runs the same seeded
stages it would run alone, so the results do not depend on the number of workers.

Graphs travel to workers by name (``BUILTIN_GRAPHS``): their input functions are code.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from typing import Any

from ttc.orchestrator.graph.allocation import Allocation, TrialResult

__all__ = ["Evaluated", "Job", "evaluate_jobs"]


@dataclass
class Job:
    """Allocations of one built-in graph to run on every problem, under one policy."""

    graph: str
    allocations: list[Allocation]
    policy: str = "static"
    weights: dict[str, float] | None = None


@dataclass
class Evaluated:
    """One allocation's per-problem results, in problem order."""

    allocation: Allocation
    scores: list[float] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    stage_correct: dict[str, list[float]] = field(default_factory=dict)
    stage_tokens: dict[str, list[int]] = field(default_factory=dict)

    def result(self, cost: float = 0.0) -> TrialResult:
        return TrialResult(score=statistics.fmean(self.scores), scores=list(self.scores),
                           stage_scores={k: statistics.fmean(v) for k, v in self.stage_correct.items()},
                           stage_spend={k: statistics.fmean(v) for k, v in self.stage_tokens.items()}, cost=cost)


def _run_shard(jobs: list[dict[str, Any]], problems: list[dict], device: str, db: str, shard: int) -> list[list[dict]]:
    """Worker: every job's allocations on this shard's problems, one stage cache for all."""
    import torch
    from ttc.core.tracing import NullTracer
    from ttc.orchestrator.api import Orchestrator

    from ttc.orchestrator.graph.builtin import BUILTIN_GRAPHS
    from ttc.orchestrator.graph.run import run_graph

    torch.set_num_threads(1)
    cache: dict[tuple, Any] = {}
    out: list[list[dict]] = []
    with Orchestrator(db=db, device=device) as orc:
        for job in jobs:
            graph = BUILTIN_GRAPHS[job["graph"]]
            rows = []
            for raw in job["allocations"]:
                allocation = Allocation.model_validate(raw)
                row: dict[str, Any] = {"scores": [], "tokens": [], "stage_correct": {}, "stage_tokens": {}}
                for p in problems:
                    r = run_graph(orc, graph, p, allocation, policy=job["policy"], weights=job["weights"],
                                  tracer=NullTracer(), cache=cache)
                    row["scores"].append(r.score)
                    row["tokens"].append(r.tokens)
                    for name, o in r.outputs.items():
                        if o.correct is not None:
                            row["stage_correct"].setdefault(name, []).append(float(o.correct))
                        row["stage_tokens"].setdefault(name, []).append(o.tokens)
                rows.append(row)
            out.append(rows)
    return out


def evaluate_jobs(jobs: Sequence[Job], problems: list[dict], *, workers: int = 2, device: str = "cpu",
                  db_dir: str, progress: Callable[[str], None] | None = None) -> list[list[Evaluated]]:
    """Runs every job's allocations on every problem; per job, per allocation, the results.

    Args:
        jobs: What to run (graphs by built-in name).
        problems: The problems, each run by every allocation.
        workers: Worker processes; problems are dealt to them in contiguous shards.
        device: Where the models run.
        db_dir: A directory for the workers' scratch stores (nothing is traced there).
        progress: Called with a line as each shard finishes.
    """
    workers = max(1, min(workers, len(problems)))
    bounds = [round(i * len(problems) / workers) for i in range(workers + 1)]
    shards = [problems[bounds[i]:bounds[i + 1]] for i in range(workers)]
    payload = [{"graph": j.graph, "allocations": [a.model_dump(mode="json") for a in j.allocations],
                "policy": j.policy, "weights": j.weights} for j in jobs]
    merged = [[Evaluated(allocation=a) for a in j.allocations] for j in jobs]
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(_run_shard, payload, shard, device, f"sqlite:///{db_dir}/shard-{i}.db", i)
                   for i, shard in enumerate(shards)]
        for i, fut in enumerate(futures):  # in shard order, so problems stay in order
            for j_rows, j_merged in zip(fut.result(), merged):
                for row, ev in zip(j_rows, j_merged):
                    ev.scores += row["scores"]
                    ev.tokens += row["tokens"]
                    for k, v in row["stage_correct"].items():
                        ev.stage_correct.setdefault(k, []).extend(v)
                    for k, v in row["stage_tokens"].items():
                        ev.stage_tokens.setdefault(k, []).extend(v)
            if progress is not None:
                progress(f"shard {i + 1}/{len(shards)} done ({len(shards[i])} problems)")
    return merged
