"""Durable evaluation runs: the plan a resume needs, the stored results, the report.

An eval run keeps its :class:`EvalPlan` (problems, settings, model names and checkpoint
digests, run seed) in its ``eval`` attribute, and each problem's result in the store's
``jobs`` table, committed (with the problem's spans) before progress counts it. So the
store alone says what is done and how to do the rest: :func:`run_eval` skips the stored
problems, and the report is rebuilt from the stored results. Each problem samples with
a seed derived from the run seed and its key, so which problems ran before an
interruption changes no answer.
"""

from __future__ import annotations

import contextvars
import hashlib
import os
import queue
import secrets
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from pydantic import BaseModel, ValidationError

from ttc.backends.errors import BadInputError, RunFailure
from ttc.backends.types import Usage
from ttc.core.budget import Budget
from ttc.core.contracts import ModelPool
from ttc.core.types import Result
from ttc.store import JobRecord, RunRecord, StoreError, TraceStore
from ttc.strategies.registry import StrategySpec

from ._run_guard import RunInterrupted, RunStopped, consume_interruption, deferred_signals
from .tracing import StoreTracer, one_line

__all__ = [
    "EvalPlan",
    "EvalReport",
    "RunInterrupted",
    "RunStopped",
    "consume_interruption",
    "cut",
    "digests",
    "model_specs",
    "outcome",
    "problem_keys",
    "problem_seed",
    "run_eval",
]

OnProblem = Callable[[int, Result], None]
OnStart = Callable[[int, list[Result]], None]


class Runner(Protocol):
    """What :func:`run_eval` uses of the orchestrator (which imports this module)."""

    @property
    def store(self) -> TraceStore: ...

    def _traced(self, run_id: str, name: str, span_attributes: dict[str, Any],
                resumable: bool = False) -> AbstractContextManager[StoreTracer]: ...

    def _run_strategy(self, tracer: StoreTracer, task_obj: Any, spec: StrategySpec, pool: ModelPool,
                      problem: dict, budget: Budget | None, params: dict[str, Any]) -> Result: ...


def problem_seed(run_seed: int, key: str) -> int:
    """The sampling seed of one problem: sha256 of ``"{run_seed}:{key}"`` mod 2**31."""
    digest = hashlib.sha256(f"{run_seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 2**31


def problem_keys(problems: Sequence[Mapping[str, Any]]) -> list[str]:
    """A key per problem, unique within the run: its id, then ``id#2``, ``id#3`` ... for repeats."""
    ids = [str(problem["id"]) for problem in problems]
    taken = set(ids)  # a repeat's key must not take another problem's id
    keys: list[str] = []
    used: set[str] = set()
    for pid in ids:
        key, k = pid, 1
        while key in used or (k > 1 and key in taken):
            k += 1
            key = f"{pid}#{k}"
        used.add(key)
        keys.append(key)
    return keys


def model_specs(models: Mapping[str, Any], base_url: str | None) -> dict[str, str | None]:
    """Role -> the name a resume loads the model by; None for a model given as an object.

    A checkpoint directory is made absolute, so a resume from another directory finds it.
    """
    out: dict[str, str | None] = {}
    for role, m in models.items():
        if not isinstance(m, str):
            out[role] = None
        elif not base_url and os.path.isdir(m):
            out[role] = os.path.abspath(m)
        else:
            out[role] = m
    return out


def _run_seed(strategy_params: Mapping[str, Any], params: Mapping[str, Any]) -> int | None:
    # The seed given, else the strategy's default, else a fresh one (recorded, so that a
    # resume repeats it); None if the strategy takes no seed.
    if "seed" not in strategy_params:
        return None
    seed = params.get("seed", strategy_params["seed"])
    return int(seed) if seed is not None else secrets.randbelow(2**31)


class EvalPlan(BaseModel):
    """An eval's problems and settings, stored in its run's ``eval`` attribute.

    Attributes:
        task, strategy: Registry names.
        problems: The validated problems, in order; ``keys`` their job keys.
        params: The strategy's JSON parameters (``seed`` is replaced per problem).
        resumable: False when some parameters were objects, which a store cannot hold.
        budget: The per-problem budget's fields.
        models: Role -> model name or path (None: given as an object, see ``resume``).
        base_url: The OpenAI-compatible endpoint the models were served from.
        digests: Role -> checkpoint digest at the start; a resume must load the same.
        seed: The run seed problems' seeds derive from; None if the strategy takes none.
    """

    version: int = 1
    task: str
    strategy: str
    problems: list[dict[str, Any]]
    keys: list[str]
    params: dict[str, Any]
    resumable: bool = True
    budget: dict[str, Any]
    models: dict[str, str | None]
    base_url: str | None = None
    digests: dict[str, str | None]
    seed: int | None

    @classmethod
    def create(cls, task: str, strategy: str, spec: StrategySpec, problems: list[dict], params: Mapping[str, Any],
               jsonable: dict[str, Any], budget: Budget | None, models: Mapping[str, Any], pool: ModelPool,
               base_url: str | None) -> EvalPlan:
        """The plan of a new eval.

        Args:
            task, strategy, spec: Names and the strategy.
            problems: The validated problems.
            params: The strategy parameters as given; ``jsonable`` those the store can hold.
            budget: The per-problem budget.
            models: Role -> model as given (name, path or backend); ``pool`` the loaded ones.
            base_url: The endpoint serving the models, if any.
        """
        return cls(task=task, strategy=strategy, problems=problems, keys=problem_keys(problems), params=jsonable,
                   resumable=len(jsonable) == len(params), budget=(budget or Budget()).model_dump(exclude_none=True),
                   models=model_specs({r: models.get(r, pool[r]) for r in pool.roles()}, base_url),
                   base_url=base_url, digests=digests(pool), seed=_run_seed(spec.parameters(), params))

    def run_attributes(self, pool: ModelPool) -> dict[str, Any]:
        """The run's (and its root span's) summary attributes."""
        return dict(task=self.task, strategy=self.strategy, model=pool.policy.name, models=pool.roles(),
                    n_problems=len(self.problems), params=self.params, budget=self.budget, seed=self.seed)

    def models_to_load(self, run_id: str, given: Mapping[str, Any]) -> dict[str, Any]:
        """Role -> model (name, path or given backend) for resuming run ``run_id``.

        Raises:
            BadInputError: The run cannot be resumed: some parameters were objects, or a
                model given as an object is not given again.
        """
        if not self.resumable:
            raise BadInputError(f"cannot resume run {run_id}: it was started with parameters that are objects, "
                                "which the store cannot hold")
        missing = sorted(r for r, name in self.models.items() if name is None and r not in given)
        if missing:
            raise BadInputError(f"cannot resume run {run_id}: give the {', '.join(missing)} model(s) again "
                                "(they were passed as objects): resume(run_id, models={...})")
        return {r: given.get(r, name) for r, name in self.models.items()}

    def params_for(self, key: str) -> dict[str, Any]:
        """The strategy parameters of the problem with this key."""
        if self.seed is None:
            return dict(self.params)
        return {**self.params, "seed": problem_seed(self.seed, key)}

    @classmethod
    def of_run(cls, run: RunRecord) -> EvalPlan:
        """The plan stored with an eval run.

        Raises:
            BadInputError: The run is not an eval, or predates resumable evals.
        """
        if run.kind != "eval":
            raise BadInputError(f"run {run.id} is a {run.kind!r} run; only eval runs can be resumed")
        raw = (run.attributes or {}).get("eval")
        if raw is None:
            raise BadInputError(f"run {run.id} holds no eval plan (recorded by an older ttc); run it again")
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            raise BadInputError(f"run {run.id} holds an unreadable eval plan: {exc.errors()[0]['msg']}") from None

    def check_models(self, run_id: str, loaded: Mapping[str, str | None]) -> None:
        """Raises BadInputError when a loaded model's checkpoint digest (``loaded``, by role)
        differs from the one the run started with."""
        for role, before in self.digests.items():
            now = loaded.get(role)
            if before != now:
                raise BadInputError(f"cannot resume run {run_id}: the {role} model's checkpoint changed "
                                    f"(digest {before or 'none'} at the start, {now or 'none'} now)")


def cut(result: Result) -> int:
    """Candidates the budget cut short."""
    return sum(c.finish_reason == "budget" for c in result.candidates)


def outcome(result: Result) -> dict[str, Any]:
    """A result's summary, as recorded on a run or a problem span."""
    return {"answer": result.answer, "correct": result.correct, "tokens": result.tokens, "flops": result.flops,
            "paper_flops": result.paper_flops, "eflops": result.eflops, "stop_reason": result.stop_reason,
            "candidates": len(result.candidates), "samples": len(result.candidates), "cut": cut(result)}


def digests(pool: ModelPool) -> dict[str, str | None]:
    """Role -> checkpoint digest of the pool's models (None where a backend has none)."""
    return {role: pool[role].info.checkpoint_digest for role in pool.roles()}


def _job_result(problem: dict, result: Result) -> dict[str, Any]:
    # The report's row up front (readable in SQL), the whole Result to rebuild the report.
    return {"id": problem["id"], **outcome(result), "overdrawn": result.overdrawn,
            "result": result.model_dump(mode="json")}


def _stored_result(job: JobRecord) -> Result:
    return Result.model_validate((job.result or {})["result"])


class EvalReport(BaseModel):
    """Accuracy of a strategy over problems, with what it cost.

    Attributes:
        accuracy: Share of problems whose chosen answer the verifier judged correct.
        ci95: Wilson 95% interval of ``accuracy``.
        usage: Token totals over all problems; ``tokens`` is their sum.
        overdrawn: Problems on which a backend spent more than the budget allowed.
        resumed: Problems whose results came from the store (a resumed run), not run now.
        problems: One row per problem: id, answer, correct, tokens, stop reason.
    """

    task: str
    strategy: str
    model: str
    n_problems: int
    n_correct: int
    accuracy: float
    ci95: list[float]
    usage: Usage
    tokens: int
    mean_tokens: float
    flops: float | None
    paper_flops: float | None
    eflops: float | None
    trace_id: str
    overdrawn: int = 0
    resumed: int = 0
    problems: list[dict[str, Any]]

    @classmethod
    def from_results(cls, task, strategy, model, problems, results, trace_id, resumed: int = 0) -> "EvalReport":
        from ttc.core.metrics import wilson_ci95

        def total(field):
            values = [getattr(r, field) for r in results]
            return None if any(v is None for v in values) else float(sum(values))

        usage = sum((r.usage for r in results), Usage())
        n_correct = sum(r.correct is True for r in results)
        rows = [{"id": p["id"], "answer": r.answer, "correct": r.correct, "tokens": r.tokens,
                 "samples": len(r.candidates), "cut": cut(r), "stop_reason": r.stop_reason,
                 "overdrawn": r.overdrawn}
                for p, r in zip(problems, results)]
        return cls(task=task, strategy=strategy, model=model, n_problems=len(results), n_correct=n_correct,
                   accuracy=n_correct / len(results), ci95=wilson_ci95(n_correct, len(results)), usage=usage,
                   tokens=usage.total_tokens, mean_tokens=usage.total_tokens / len(results), flops=total("flops"),
                   paper_flops=total("paper_flops"), eflops=total("eflops"), trace_id=trace_id,
                   overdrawn=sum(r.overdrawn for r in results), resumed=resumed, problems=rows)


def report_from_jobs(run_id: str, plan: EvalPlan, model: str, jobs: Mapping[str, JobRecord],
                     resumed: int) -> EvalReport:
    """The report of every problem of the plan, from the stored results.

    Raises:
        RunFailure: A problem has no stored ``ok`` result.
    """
    missing = [k for k in plan.keys if k not in jobs]
    if missing:
        raise RunFailure(f"run {run_id}: {len(missing)} problem(s) have no stored result (first: {missing[0]})")
    results = [_stored_result(jobs[k]) for k in plan.keys]
    return EvalReport.from_results(plan.task, plan.strategy, model, plan.problems, results, run_id, resumed)


def _in_threads(fn: Callable[[int], Result], items: list[int], workers: int) -> Iterator[tuple[int, Result]]:
    """``(i, fn(i))`` for each item, in order with one worker, else as they finish on daemon
    threads (with the caller's context, so their spans nest under its span). The first
    failure is raised here; the other workers take no new item and are waited for."""
    if workers <= 1:
        for i in items:
            yield i, fn(i)
        return
    todo: queue.SimpleQueue[int] = queue.SimpleQueue()
    for i in items:
        todo.put(i)
    done: queue.SimpleQueue[tuple[int, Result | None, BaseException | None]] = queue.SimpleQueue()
    stop = threading.Event()

    def work() -> None:
        while not stop.is_set():
            try:
                i = todo.get_nowait()
            except queue.Empty:
                return
            try:
                done.put((i, fn(i), None))
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                done.put((i, None, exc))

    threads = [threading.Thread(target=contextvars.copy_context().run, args=(work,), daemon=True)
               for _ in range(min(workers, len(items)))]
    for t in threads:
        t.start()
    try:
        for _ in items:
            while True:
                try:
                    i, result, exc = done.get(timeout=0.2)  # short waits: signals reach this thread
                    break
                except queue.Empty:
                    continue
            if exc is not None:
                raise exc
            assert result is not None
            yield i, result
    finally:
        stop.set()
        for t in threads:  # a process must not exit with a thread inside torch
            t.join()


def run_eval(orc: Runner, run_id: str, plan: EvalPlan, task_obj: Any, spec: StrategySpec, pool: ModelPool,
             attributes: dict[str, Any], stored: Mapping[str, JobRecord], on_problem: OnProblem | None,
             on_start: OnStart | None, objects: Mapping[str, Any], max_concurrency: int = 1) -> EvalReport:
    """Runs the plan's problems that have no stored result, as run ``run_id`` (started or claimed).

    Args:
        orc: The orchestrator (store, strategies, signal-guarded run body).
        run_id, plan: The run and its plan.
        task_obj, spec, pool: The task, strategy and models.
        attributes: The run's root span attributes.
        stored: Key -> stored ``ok`` job; these problems are not run again.
        on_problem: Called after each problem is committed, with its index and Result.
        on_start: Called once, with the number of problems and the stored results.
        objects: Strategy parameters that are objects (not in the plan; a fresh run only).
        max_concurrency: Problems solved at once (their calls to one in-process model are
            batched when the orchestrator's ``batch_generation`` is on); results are the
            same as one at a time, since each problem's seed derives from its key.
    """
    store = orc.store
    budget = Budget(**plan.budget)
    with orc._traced(run_id, f"{plan.task}/{plan.strategy}", attributes, resumable=plan.resumable) as tracer:
        if on_start is not None:
            on_start(len(plan.problems), [_stored_result(stored[k]) for k in plan.keys if k in stored])

        def solve(idx: int) -> Result:
            key, problem = plan.keys[idx], plan.problems[idx]
            try:
                with tracer.span("problem", str(problem["id"]), problem=problem) as span:
                    result = orc._run_strategy(tracer, task_obj, spec, pool, problem, budget,
                                               {**plan.params_for(key), **objects})
                    span.set(**outcome(result))
            except Exception as exc:
                _record_failure(orc, run_id, key, idx, exc)
                raise
            return result

        todo = [i for i, key in enumerate(plan.keys) if key not in stored]
        for idx, result in _in_threads(solve, todo, max_concurrency):
            # Committed with the problem's spans before anything counts it; a stop waits for it.
            with deferred_signals():
                store.record_job(JobRecord(run_id=run_id, key=plan.keys[idx], idx=idx,
                                           result=_job_result(plan.problems[idx], result)))
            if on_problem is not None:
                on_problem(idx, result)
        jobs = {j.key: j for j in store.list_jobs(run_id, status="ok")}
        report = report_from_jobs(run_id, plan, pool.policy.name, jobs, len(stored))
        tracer.outcome.update(accuracy=report.accuracy, ci95=report.ci95, n_problems=report.n_problems,
                              tokens=report.tokens, flops=report.flops, resumed=report.resumed)
    return report


def _record_failure(orc: Runner, run_id: str, key: str, idx: int, exc: Exception) -> None:
    # Best effort: the error row says which problem failed; the run's own error is what matters.
    try:
        orc.store.record_job(JobRecord(run_id=run_id, key=key, idx=idx, status="error", error=one_line(exc)))
    except StoreError:
        pass
