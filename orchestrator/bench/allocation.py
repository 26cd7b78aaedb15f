"""``ttc bench allocation``: how many trials each search method needs to find the best
allocation of a task graph (AgentTTS), on recorded replay tables.

1. **Tables.** For each of two built-in pipelines (``plan-solve`` and ``sudoku-countdown``,
   one the rule-based planner was written against and one it was not), every feasible
   allocation under the pipeline's budget is run on the same train problems (real models,
   seeded; stage runs shared through the stage cache) and recorded as a replay table,
   written to ``<out>/allocation-tables/<graph>.jsonl`` (``--table FILE`` reads one back).
2. **Searches.** ``planner``, ``random``, ``grid`` and ``tpe`` search each table for
   ``SEEDS`` seeds, each capped at ``CAP`` trials (a trial = a distinct allocation
   evaluated). The optimum set is every allocation within one paired standard error of
   the best (``optimum_set``); trials-to-optimum is the first trial whose best-so-far is in
   it (the cap when never). Reported: its median per method, the share of seeds that
   reached it.
3. **Test split.** Each method's final pick (per seed) and the default allocation (one
   pass, i.e. one sample, of the pool's largest model per stage) run on held-out test
   problems; a method's test score is its picks' mean over seeds, with a bootstrap 95%
   interval over test problems.
4. **Reallocation** (``plan-solve``): the planner's most frequent pick runs on the test
   problems under ``static``, ``carry`` and ``carry_weighted`` (weights: each stage's
   marginal gain per token in the table, from its option to the next budget up), at the
   same total budget: accuracy and mean spend, with 95% intervals.
5. **Regularities** in ``plan-solve``'s table (AgentTTS insights 1-3), as numbers.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from ttc.backends.errors import BadInputError
from ttc.core.metrics import bootstrap_ci95, normal_ci95

from .common import bench_header, write_result

__all__ = ["PIPELINES", "regularities", "run_allocation_bench"]

SEED = 0
SEEDS = 10
CAP = 50
MIN_ALLOCATIONS = 100
#: Built-in pipeline -> its per-problem budget in AgentTTS cost units (passes of the largest model).
PIPELINES = {"plan-solve": 8.0, "sudoku-countdown": 11.0}


def _default_allocation(graph, space):
    """One pass of the largest model per stage: its own strategy with one sample (a search
    model's one trace), at the largest budget the stage offers that model."""
    from ttc.orchestrator.graph import Allocation

    stages = {}
    for s in space.order:
        opts = space.options[s]
        # Costs are FLOPs per token over a pass of the largest model: the costliest per token is the largest.
        largest = max(opts, key=lambda o: space.cost(Allocation(stages={s: o})) / o.budget_tokens)
        mine = [o for o in opts if o.model == largest.model and o.strategy == largest.strategy]
        top = max(mine, key=lambda o: o.budget_tokens)
        one = {"n": 1} if top.strategy in ("best_of_n", "majority_vote", "weighted_vote") else {}
        stages[s] = top.model_copy(update={"params": {**top.params, **one}})
    return Allocation(stages=stages)


def _marginal_weights(table, pick) -> dict[str, float]:
    """Each stage's gain in score per token from its option to the next budget up (>= 0)."""
    weights = {}
    here = table.get(pick)
    for s, o in pick.stages.items():
        ups = sorted((x for x in table.space.options[s]
                      if (x.model, x.strategy, x.params) == (o.model, o.strategy, o.params)
                      and x.budget_tokens > o.budget_tokens), key=lambda x: x.budget_tokens)
        up = table.get(pick.with_stage(s, ups[0])) if ups else None
        weights[s] = max(0.0, (up.score - here.score) / (ups[0].budget_tokens - o.budget_tokens)) if up and here else 0.0
    return weights


def regularities(table) -> dict[str, Any]:
    """AgentTTS's three regularities, read off a recorded table of ``plan-solve``.

    - ``models``: per stage and model, the best stage score any of its options reached.
    - ``budget_curves``: per stage and model/strategy, stage score by budget (mean over the
      allocations holding that option; downstream stages averaged over upstream choices).
    - ``interdependence``: the ``solve`` stage's score per (solve option, plan option).
    """
    by_option: dict[str, dict[str, list[float]]] = {}
    inter: dict[str, dict[str, list[float]]] = {}
    for a, r in table.trials():
        for s, score in r.stage_scores.items():
            by_option.setdefault(s, {}).setdefault(a.stages[s].label, []).append(score)
        if "solve" in r.stage_scores and "plan" in a.stages:
            inter.setdefault(a.stages["solve"].label, {}).setdefault(a.stages["plan"].label, []).append(
                r.stage_scores["solve"])
    curves: dict[str, dict[str, dict[int, float]]] = {}
    models: dict[str, dict[str, float]] = {}
    for s, rows in by_option.items():
        for label, scores in rows.items():
            head, budget = label.rsplit("@", 1)
            mean = round(statistics.fmean(scores), 4)
            curves.setdefault(s, {}).setdefault(head, {})[int(budget)] = mean
            model = head.split("/", 1)[0]
            models.setdefault(s, {})[model] = max(models.get(s, {}).get(model, 0.0), mean)
    return {"models": models,
            "budget_curves": {s: {h: dict(sorted(c.items())) for h, c in cs.items()} for s, cs in curves.items()},
            "interdependence": {so: {po: round(statistics.fmean(v), 4) for po, v in rows.items()}
                                for so, rows in inter.items()}}


def _normal_any(values: list[float]) -> list[float]:
    m = statistics.fmean(values)
    se = statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else 0.0
    return [m - 1.96 * se, m + 1.96 * se]


def _build_tables(orc, names: list[str], train: list[dict], workers: int, scratch: str, out_dir: Path, say):
    from ttc.orchestrator.graph.builtin import BUILTIN_GRAPHS
    from ttc.orchestrator.graph.objective import _digests, graph_space
    from ttc.orchestrator.graph.replay import ReplayTable
    from ttc.orchestrator.bench.graph_tables import Job, evaluate_jobs

    spaces = {n: graph_space(orc, BUILTIN_GRAPHS[n], PIPELINES[n]) for n in names}
    jobs = [Job(graph=n, allocations=list(spaces[n])) for n in names]
    for j in jobs:
        if len(j.allocations) < MIN_ALLOCATIONS:
            raise BadInputError(f"{j.graph}: only {len(j.allocations)} feasible allocations at budget "
                                f"{PIPELINES[j.graph]} (at least {MIN_ALLOCATIONS} needed)")
    say(f"recording {sum(len(j.allocations) for j in jobs)} allocations x {len(train)} train problems "
        f"in {workers} worker(s)")
    done = evaluate_jobs(jobs, train, workers=workers, db_dir=scratch, progress=say)
    tables = {}
    (out_dir / "allocation-tables").mkdir(parents=True, exist_ok=True)
    for j, evs in zip(jobs, done):
        g = BUILTIN_GRAPHS[j.graph]
        table = ReplayTable(j.graph, j.graph, _digests(orc, g), spaces[j.graph])
        for ev in evs:
            table.add_trial(ev.allocation, ev.result(spaces[j.graph].cost(ev.allocation)))
        table.write(out_dir / "allocation-tables" / f"{j.graph}.jsonl")
        tables[j.graph] = table
    return tables


def _read_tables(orc, paths: list[Path]):
    from ttc.orchestrator.graph.builtin import BUILTIN_GRAPHS
    from ttc.orchestrator.graph.objective import _digests
    from ttc.orchestrator.graph.replay import ReplayTable

    tables = {}
    for path in paths:
        table = ReplayTable.read(path)
        if table.graph not in BUILTIN_GRAPHS:
            raise BadInputError(f"replay table {path} is for graph {table.graph!r}, not a built-in one")
        table.check(table.graph, _digests(orc, BUILTIN_GRAPHS[table.graph]))
        if table.space is None:
            raise BadInputError(f"replay table {path} has no search space")
        tables[table.graph] = table
    return tables


def _searches(table, seeds: int, cap: int) -> dict[str, Any]:
    from ttc.orchestrator.graph import METHODS, ReplayObjective, optimum_set, search
    from ttc.orchestrator.graph.search import trials_to_optimum

    optimum = optimum_set(table)
    per: dict[str, Any] = {}
    for method in METHODS:
        t2o, reached, picks = [], [], []
        for seed in range(seeds):
            found = search(table.space, ReplayObjective(table), method=method, max_trials=cap, seed=seed)
            t2o.append(trials_to_optimum(found.best_keys, optimum, cap))
            reached.append(any(k in optimum for k in found.best_keys))
            picks.append(found.best)
        per[method] = {"trials": t2o, "reached": reached, "picks": picks}
    return {"optimum": optimum, "methods": per}


def _test_scores(names, tables, searched, test, workers, scratch, say) -> dict[str, dict]:
    from ttc.orchestrator.graph.builtin import BUILTIN_GRAPHS
    from ttc.orchestrator.bench.graph_tables import Job, evaluate_jobs

    jobs, wanted = [], {}
    for n in names:
        picks = [p for m in searched[n]["methods"].values() for p in m["picks"]]
        default = _default_allocation(BUILTIN_GRAPHS[n], tables[n].space)
        distinct = list({a.key: a for a in picks + [default]}.values())
        jobs.append(Job(graph=n, allocations=distinct))
        wanted[n] = default
    say(f"test split: {sum(len(j.allocations) for j in jobs)} picked allocations x {len(test)} problems")
    done = evaluate_jobs(jobs, test, workers=workers, db_dir=scratch, progress=say)
    return {n: {"scores": {ev.allocation.key: ev.scores for ev in evs}, "default": wanted[n]}
            for n, evs in zip(names, done)}


def _mean_over_seeds_ci(per_seed_scores: list[list[float]]) -> tuple[float, list[float]]:
    # Per test problem, the mean over seeds' picks; the interval resamples problems.
    per_problem = [statistics.fmean(col) for col in zip(*per_seed_scores)]
    return statistics.fmean(per_problem), bootstrap_ci95(per_problem, seed=SEED)


def _reallocation(table, pick, test, workers, scratch, say) -> dict[str, Any]:
    from ttc.orchestrator.bench.graph_tables import Job, evaluate_jobs

    weights = _marginal_weights(table, pick)
    jobs = [Job(graph=table.graph, allocations=[pick], policy=p, weights=weights if p == "carry_weighted" else None)
            for p in ("static", "carry", "carry_weighted")]
    say(f"reallocation: {pick.digest} under static, carry, carry_weighted on {len(test)} problems")
    done = evaluate_jobs(jobs, test, workers=workers, db_dir=scratch, progress=say)
    out = {}
    for j, (ev,) in zip(jobs, done):
        out[j.policy] = {"accuracy": statistics.fmean(ev.scores), "ci95": normal_ci95(ev.scores),
                         "spend": statistics.fmean(ev.tokens), "spend_ci95": _normal_any([float(t) for t in ev.tokens])}
    out["allocation"] = {s: o.label for s, o in pick.stages.items()}
    out["budget_tokens"] = pick.budget_tokens
    out["weights"] = weights
    return out


def run_allocation_bench(*, quick: bool = False, tables: list[Path] | None = None, n_train: int | None = None,
                         n_test: int | None = None, seeds: int = SEEDS, cap: int = CAP, workers: int = 2,
                         db: str | None = None, out_dir: Path = Path("bench/results"), progress=None) -> dict[str, Any]:
    """Runs the benchmark (see the module docstring) and writes ``<out_dir>/allocation.json``."""
    started = time.time()
    from ttc.orchestrator.api import Orchestrator
    from ttc.orchestrator.graph.builtin import make_problems

    def say(line: str) -> None:
        if progress is not None:
            progress.print(line)

    n_train = n_train or (12 if quick else 200)
    n_test = n_test or (12 if quick else 100)
    if seeds < 1 or cap < 1:
        raise BadInputError("--seeds and the trial cap must be at least 1")
    train = make_problems(n_train, seed=SEED, split="train")
    test = make_problems(n_test, seed=SEED, split="test")
    with tempfile.TemporaryDirectory(prefix="ttc-alloc-") as scratch, \
            Orchestrator(db=db or f"sqlite:///{scratch}/main.db", device="cpu") as orc:
        if tables:
            recorded = _read_tables(orc, list(tables))
        else:
            recorded = _build_tables(orc, list(PIPELINES), train, workers, scratch, out_dir, say)
        names = [n for n in PIPELINES if n in recorded] + [n for n in recorded if n not in PIPELINES]
        # Replayed tables hold their own train split: count it, not the default.
        table_train = {n: len(next(iter(recorded[n].trials()))[1].scores) for n in names}
        n_train = max(table_train.values())
        say("searching: " + ", ".join(f"{n} ({len(recorded[n])} allocations)" for n in names))
        searched = {n: _searches(recorded[n], seeds, cap) for n in names}
        tested = _test_scores(names, recorded, searched, test, workers, scratch, say)
        rows = []
        for n in names:
            t, s, ts = recorded[n], searched[n], tested[n]
            best = max((r.score for _, r in t.trials()), default=0.0)
            row: dict[str, Any] = {
                "name": n, "budget": t.space.budget, "n_allocations": len(t), "n_optimal": len(s["optimum"]),
                "n_train": table_train[n], "best_train_score": best,
                "trials_to_optimum": {}, "reached_fraction": {}, "test_score": {}, "test_score_ci95": {},
                "trials_to_optimum_per_seed": {}, "picks": {},
            }
            for m, d in s["methods"].items():
                row["trials_to_optimum"][m] = statistics.median(d["trials"])
                row["reached_fraction"][m] = sum(d["reached"]) / len(d["reached"])
                row["trials_to_optimum_per_seed"][m] = d["trials"]
                mean, ci = _mean_over_seeds_ci([ts["scores"][p.key] for p in d["picks"]])
                row["test_score"][m], row["test_score_ci95"][m] = mean, ci
                row["picks"][m] = dict(Counter(p.digest for p in d["picks"]))
            row["default_test_score"] = statistics.fmean(ts["scores"][ts["default"].key])
            row["default_test_score_ci95"] = bootstrap_ci95(ts["scores"][ts["default"].key], seed=SEED)
            row["default_allocation"] = {st: o.label for st, o in ts["default"].stages.items()}
            rt, rp = row["trials_to_optimum"], row["reached_fraction"]
            row["goal_met"] = rt["planner"] <= 10 and rp["planner"] > 0 and all(
                rt["planner"] * 2 <= rt[o] for o in ("tpe", "random"))
            rows.append(row)
        realloc = {}
        if "plan-solve" in recorded:
            picks = searched["plan-solve"]["methods"]["planner"]["picks"]
            modal = Counter(p.key for p in picks).most_common(1)[0][0]
            pick = next(p for p in picks if p.key == modal)
            realloc = _reallocation(recorded["plan-solve"], pick, test, workers, scratch, say)
        regs = regularities(recorded["plan-solve"]) if "plan-solve" in recorded else {}
        infos = {m: orc.backend(m).info for m in sorted({o.model for t in recorded.values()
                                                        for opts in t.space.options.values() for o in opts})}
    result = {
        **bench_header("allocation", seed=SEED, quick=quick, n_problems=n_train, started=started,
                       models=[{"name": m, "digest": i.checkpoint_digest} for m, i in infos.items()]),
        "n_train": n_train, "n_test": n_test, "seeds": seeds, "trial_cap": cap,
        "tables_from": [str(p) for p in tables] if tables else "recorded live",
        "tables": rows, "reallocation": realloc, "regularities": regs,
    }
    path = write_result("allocation", result, out_dir)
    result["files"] = {"json": str(path)}
    return result
