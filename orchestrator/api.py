"""The Python API: ``Orchestrator`` opens the trace store and runs work against models.

Example:
    >>> from orchestrator import Orchestrator
    >>> orc = Orchestrator(db="sqlite:///ttc.db")
    >>> out = orc.generate("countdown-direct", "...", n=4, max_tokens=64)
    >>> orc.get_run(out.trace_id).spans
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from pydantic import BaseModel

from ttc.backends.base import Backend
from ttc.backends.errors import BadInputError
from ttc.backends.types import Generation, SamplingParams, Usage
from ttc.store import RunDetail, RunRecord, StatsRecord, TraceStore
from ttc.store.engine import resolve_db_url
from ttc.core.budget import Budget, Ledger
from ttc.core.calls import call_model
from ttc.strategies.registry import get_strategy
from ttc.core.types import Result
from ttc.tasks.registry import get_task

from .models import load_backend
from .tracing import StoreTracer, one_line

__all__ = ["Orchestrator", "GenerateResult", "EvalReport"]


class GenerateResult(BaseModel):
    """What ``Orchestrator.generate`` returns.

    Attributes:
        trace_id: The run recorded in the store.
        model: Backend model name.
        generations: One per prompt sent, each with its completions.
        usage: Tokens charged (shared prefixes counted once).
        flops, paper_flops, eflops: Compute charged (None where the model's shape is unknown).
        skipped: Prompts not sent because the budget could not hold them.
    """

    trace_id: str
    model: str
    generations: list[Generation]
    usage: Usage
    flops: float | None
    paper_flops: float | None
    eflops: float | None
    skipped: int = 0


def _check_params(name: str, fn: Any, params: dict[str, Any]) -> None:
    accepted = [p for p, v in inspect.signature(fn).parameters.items() if v.kind is v.KEYWORD_ONLY]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise BadInputError(f"strategy {name!r} takes no parameter {', '.join(unknown)}; "
                            f"it takes: {', '.join(accepted) or 'none'}")


def _parse_problem(task_obj, problem: dict | str) -> dict:
    if isinstance(problem, str):
        try:
            problem = json.loads(problem)
        except json.JSONDecodeError as exc:
            raise BadInputError(f"problem is not valid JSON: {exc.msg} (line {exc.lineno} column {exc.colno})") from None
    return task_obj.parse_problem(problem)


def _jsonable_params(params: dict[str, Any]) -> dict[str, Any]:
    # Objects handed to a strategy (a policy, a backend) are not part of its parameters' record.
    return {k: v for k, v in params.items() if k not in ("policy", "search_backend")}


def _outcome(result: Result) -> dict[str, Any]:
    return {"answer": result.answer, "correct": result.correct, "tokens": result.tokens, "flops": result.flops,
            "paper_flops": result.paper_flops, "eflops": result.eflops, "stop_reason": result.stop_reason,
            "candidates": len(result.candidates)}


class EvalReport(BaseModel):
    """Accuracy of a strategy over problems, with what it cost.

    Attributes:
        accuracy: Share of problems whose chosen answer the verifier judged correct.
        ci95: Wilson 95% interval of ``accuracy``.
        usage: Token totals over all problems; ``tokens`` is their sum.
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
    problems: list[dict[str, Any]]

    @classmethod
    def from_results(cls, task, strategy, model, problems, results, trace_id) -> "EvalReport":
        from .bench.common import wilson_ci95

        def total(field):
            values = [getattr(r, field) for r in results]
            return None if any(v is None for v in values) else float(sum(values))

        usage = sum((r.usage for r in results), Usage())
        n_correct = sum(r.correct is True for r in results)
        rows = [{"id": p["id"], "answer": r.answer, "correct": r.correct, "tokens": r.tokens,
                 "stop_reason": r.stop_reason} for p, r in zip(problems, results)]
        return cls(task=task, strategy=strategy, model=model, n_problems=len(results), n_correct=n_correct,
                   accuracy=n_correct / len(results), ci95=wilson_ci95(n_correct, len(results)), usage=usage,
                   tokens=usage.total_tokens, mean_tokens=usage.total_tokens / len(results), flops=total("flops"),
                   paper_flops=total("paper_flops"), eflops=total("eflops"), trace_id=trace_id, problems=rows)


class Orchestrator:
    """Entry point of the Python API.

    Args:
        db: SQLAlchemy URL of the trace store (default: ``TTC_DB``, then ``sqlite:///ttc.db``).
            Validated now; the database is opened (and migrated) on first use.
        device: Where in-process models run: ``"auto"``, ``"cpu"``, ``"cuda"``.
    """

    def __init__(self, db: str | None = None, *, device: str = "auto"):
        self.db_url = resolve_db_url(db)
        self.device = device
        self._store: TraceStore | None = None
        self._backends: dict[tuple[str, str | None], Backend] = {}

    @property
    def store(self) -> TraceStore:
        if self._store is None:
            self._store = TraceStore.open(self.db_url)
        return self._store

    def backend(self, model: str, *, base_url: str | None = None) -> Backend:
        """The backend for a built-in name, checkpoint path or (with ``base_url``) served model.

        Loaded once per orchestrator and reused.
        """
        key = (model, base_url)
        if key not in self._backends:
            self._backends[key] = load_backend(model, base_url=base_url, device=self.device)
        return self._backends[key]

    @contextmanager
    def run(self, kind: str, name: str, **attributes: Any) -> Iterator[StoreTracer]:
        """Opens a run in the store and its root span; ends both, recording any error."""
        run_id = self.store.start_run(kind, name, attributes=attributes)
        tracer = StoreTracer(self.store, run_id)
        try:
            with tracer.span("run", name, **attributes):
                yield tracer
        except BaseException as exc:
            self.store.end_run(run_id, status="error", error=one_line(exc), attributes_update=tracer.outcome)
            raise
        self.store.end_run(run_id, status="ok", attributes_update=tracer.outcome)

    def solve(
        self,
        task: str,
        problem: dict | str,
        *,
        strategy: str = "sample",
        model: str | Backend | None = None,
        budget: Budget | None = None,
        base_url: str | None = None,
        **params: Any,
    ) -> Result:
        """Solves one problem with a strategy under a budget, recorded as a run.

        Args:
            task: Task name (``"countdown"``).
            problem: The problem as a dict or a JSON string; an ``id`` is optional.
            strategy: Registry name of the strategy (``"sample"``).
            model: Backend, built-in name or checkpoint path (default: the task's model).
            budget: Limits (default: unlimited).
            base_url: An OpenAI-compatible endpoint serving ``model``.
            **params: The strategy's own parameters (``temperature``, ``seed`` ...).

        Returns:
            The strategy's Result, with ``trace_id`` set.

        Raises:
            BadInputError: Unknown task, strategy or parameter; a malformed problem.
        """
        task_obj, run_strategy = self._prepare(task, strategy, params)
        problem = _parse_problem(task_obj, problem)
        backend = self._backend_for(task_obj, model, base_url)
        params = self._auto_params(strategy, task, backend, params)
        with self.run("solve", f"{task}/{strategy}", task=task, strategy=strategy, model=backend.name,
                      problem=problem, budget=(budget or Budget()).model_dump(exclude_none=True)) as tracer:
            result = self._run_strategy(tracer, task_obj, run_strategy, backend, problem, budget, params)
            tracer.outcome.update(_outcome(result))
        return result

    def evaluate(
        self,
        task: str,
        problems: Sequence[dict],
        *,
        strategy: str = "sample",
        model: str | Backend | None = None,
        budget: Budget | None = None,
        base_url: str | None = None,
        on_problem: Callable[[int, Result], None] | None = None,
        **params: Any,
    ) -> "EvalReport":
        """Runs a strategy over problems (each with its own ``budget``) as one traced run.

        Args:
            task, strategy, model, budget, base_url, **params: As for :meth:`solve`.
            problems: Problem dicts (validated by the task).
            on_problem: Called after each problem with its index and Result (progress bars).

        Returns:
            Accuracy with its Wilson 95% interval, usage and compute totals, per-problem rows.
        """
        task_obj, run_strategy = self._prepare(task, strategy, params)
        parsed = [_parse_problem(task_obj, p) for p in problems]
        if not parsed:
            raise BadInputError("no problems to evaluate")
        backend = self._backend_for(task_obj, model, base_url)
        params = self._auto_params(strategy, task, backend, params)
        results: list[Result] = []
        with self.run("eval", f"{task}/{strategy}", task=task, strategy=strategy, model=backend.name,
                      n_problems=len(parsed), params=_jsonable_params(params),
                      budget=(budget or Budget()).model_dump(exclude_none=True)) as tracer:
            for i, problem in enumerate(parsed):
                with tracer.span("problem", str(problem["id"]), problem=problem) as span:
                    result = self._run_strategy(tracer, task_obj, run_strategy, backend, problem, budget, params)
                    span.set(**_outcome(result))
                results.append(result)
                if on_problem is not None:
                    on_problem(i, result)
            report = EvalReport.from_results(task, strategy, backend.name, parsed, results, tracer.trace_id)
            tracer.outcome.update(accuracy=report.accuracy, ci95=report.ci95, n_problems=report.n_problems,
                                  tokens=report.tokens, flops=report.flops)
        return report

    @staticmethod
    def _prepare(task: str, strategy: str, params: dict[str, Any]):
        # Names and parameters are checked before any model is loaded: bad input fails fast.
        task_obj = get_task(task)
        run_strategy = get_strategy(strategy)
        _check_params(strategy, run_strategy, params)
        return task_obj, run_strategy

    def _backend_for(self, task_obj, model: str | Backend | None, base_url: str | None) -> Backend:
        model = task_obj.default_model if model is None else model
        return model if not isinstance(model, str) else self.backend(model, base_url=base_url)

    def _auto_params(self, strategy: str, task: str, backend: Backend, params: dict[str, Any]) -> dict[str, Any]:
        """For ``auto``: the calibrated policy recorded in the store, and its search model."""
        if strategy != "auto" or "policy" in params:
            return params
        from .calibration import load_policy

        policy = load_policy(self, task, backend.name)
        params = {**params, "policy": policy}
        if policy is not None and policy.search_model and "search_backend" not in params:
            params["search_backend"] = self.backend(policy.search_model)
        return params

    @staticmethod
    def _run_strategy(tracer, task_obj, run_strategy, backend, problem, budget, params) -> Result:
        ledger = Ledger(budget)
        result = run_strategy(task_obj, problem, backend, task_obj.verifier, ledger, tracer, **params)
        # The ledger refuses calls that could overshoot; a backend that ignored its
        # max_tokens is the only way past it, and the trace must say so.
        if ledger.overdrawn:
            tracer.outcome["overdrawn"] = True
        result.trace_id = tracer.trace_id
        return result

    def generate(
        self,
        model: str | Backend,
        prompts: str | Sequence[str],
        *,
        params: SamplingParams | None = None,
        budget: Budget | None = None,
        base_url: str | None = None,
        **sampling: Any,
    ) -> GenerateResult:
        """Samples completions, charging a budget and recording the call as a run.

        Args:
            model: A backend, a built-in model name, a checkpoint path, or a served model
                name together with ``base_url``.
            prompts: One prompt or several (batched together).
            params: Sampling parameters; or give them as keywords (``n=4, max_tokens=64``).
            budget: Limits; the call is shrunk to fit (default: unlimited).
            base_url: An OpenAI-compatible endpoint serving ``model``.
        """
        backend = model if not isinstance(model, str) else self.backend(model, base_url=base_url)
        params = params or SamplingParams(**sampling)
        prompt_list = [prompts] if isinstance(prompts, str) else list(prompts)
        ledger = Ledger(budget)
        with self.run("generate", backend.name, model=backend.name, n=params.n,
                      max_tokens=params.max_tokens, prompts=len(prompt_list)) as tracer:
            result = call_model(backend, prompt_list, params, ledger, tracer)
        return GenerateResult(
            trace_id=tracer.trace_id, model=backend.name, generations=result.generations, usage=result.usage,
            flops=result.cost.flops, paper_flops=result.cost.paper_flops, eflops=result.cost.eflops,
            skipped=result.skipped,
        )

    # ------------------------------------------------------------------ traces

    def list_runs(self, limit: int = 20, kind: str | None = None, status: str | None = None) -> list[RunRecord]:
        return self.store.list_runs(limit=limit, kind=kind, status=status)

    def get_run(self, run_id: str) -> RunDetail:
        return self.store.get_run(run_id)

    def stats(self, kind: str | None = None) -> StatsRecord:
        return self.store.stats(kind=kind)

    def close(self) -> None:
        for b in self._backends.values():
            b.close()
        self._backends.clear()
        if self._store is not None:
            self._store.close()
            self._store = None

    def __enter__(self) -> "Orchestrator":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
