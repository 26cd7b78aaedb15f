"""The Python API: ``Orchestrator`` opens the trace store and runs work against models.

Example:
    >>> from orchestrator import Orchestrator
    >>> orc = Orchestrator(db="sqlite:///ttc.db")
    >>> out = orc.generate("countdown-direct", "...", n=4, max_tokens=64)
    >>> orc.get_run(out.trace_id).spans
"""

from __future__ import annotations

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
from ttc.core.contracts import ModelPool, SolveContext
from ttc.core.types import Result
from ttc.strategies.registry import StrategySpec, get_strategy
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
        overdrawn: The backend spent more than the budget allowed (charged as reported).
    """

    trace_id: str
    model: str
    generations: list[Generation]
    usage: Usage
    flops: float | None
    paper_flops: float | None
    eflops: float | None
    skipped: int = 0
    overdrawn: bool = False


def _parse_problem(task_obj, problem: dict | str) -> dict:
    if isinstance(problem, str):
        try:
            problem = json.loads(problem)
        except json.JSONDecodeError as exc:
            raise BadInputError(f"problem is not valid JSON: {exc.msg} (line {exc.lineno} column {exc.colno})") from None
    return task_obj.parse_problem(problem)


def _jsonable_params(params: dict[str, Any]) -> dict[str, Any]:
    # Objects handed to a strategy (a policy, a backend) are not part of its parameters' record.
    return {k: v for k, v in params.items() if isinstance(v, (str, int, float, bool, type(None), list, dict))}


def _cut(result: Result) -> int:
    return sum(c.finish_reason == "budget" for c in result.candidates)


def _outcome(result: Result) -> dict[str, Any]:
    return {"answer": result.answer, "correct": result.correct, "tokens": result.tokens, "flops": result.flops,
            "paper_flops": result.paper_flops, "eflops": result.eflops, "stop_reason": result.stop_reason,
            "candidates": len(result.candidates), "samples": len(result.candidates), "cut": _cut(result)}


class _StoreArtifacts:
    """The context's artifact lookup over the trace store: newest ``ok`` run of a kind
    whose attributes match."""

    def __init__(self, orc: "Orchestrator"):
        self._orc = orc

    def latest(self, kind: str, **match: Any) -> dict[str, Any] | None:
        for run in self._orc.list_runs(limit=100, kind=kind, status="ok"):
            attrs = run.attributes or {}
            if all(attrs.get(k) == v for k, v in match.items()):
                return attrs
        return None


class EvalReport(BaseModel):
    """Accuracy of a strategy over problems, with what it cost.

    Attributes:
        accuracy: Share of problems whose chosen answer the verifier judged correct.
        ci95: Wilson 95% interval of ``accuracy``.
        usage: Token totals over all problems; ``tokens`` is their sum.
        overdrawn: Problems on which a backend spent more than the budget allowed.
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
                 "samples": len(r.candidates), "cut": _cut(r), "stop_reason": r.stop_reason,
                 "overdrawn": r.overdrawn}
                for p, r in zip(problems, results)]
        return cls(task=task, strategy=strategy, model=model, n_problems=len(results), n_correct=n_correct,
                   accuracy=n_correct / len(results), ci95=wilson_ci95(n_correct, len(results)), usage=usage,
                   tokens=usage.total_tokens, mean_tokens=usage.total_tokens / len(results), flops=total("flops"),
                   paper_flops=total("paper_flops"), eflops=total("eflops"), trace_id=trace_id,
                   overdrawn=sum(r.overdrawn for r in results), problems=rows)


class Orchestrator:
    """Entry point of the Python API.

    Args:
        db: SQLAlchemy URL of the trace store (default: ``TTC_DB``, then ``sqlite:///ttc.db``).
            Validated now; the database is opened (and migrated) on first use.
        device: Where in-process models run: ``"auto"``, ``"cpu"``, ``"cuda"``.
        trust_remote_code: Let a checkpoint run its own Python code (off by default).
        connect_timeout, timeout, max_retries, tokenizer: For models behind an
            OpenAI-compatible server (None: ``TTC_*`` variables, then the defaults).
    """

    def __init__(self, db: str | None = None, *, device: str = "auto", trust_remote_code: bool = False,
                 connect_timeout: float | None = None, timeout: float | None = None,
                 max_retries: int | None = None, tokenizer: str | None = None):
        self.db_url = resolve_db_url(db)
        self.device = device
        self.trust_remote_code = trust_remote_code
        self._remote = {k: v for k, v in {"connect_timeout": connect_timeout, "timeout": timeout,
                                          "max_retries": max_retries, "tokenizer": tokenizer}.items()
                        if v is not None}
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
            options = dict(self._remote) if base_url else {}
            if self.trust_remote_code:
                options["trust_remote_code"] = True
            self._backends[key] = load_backend(model, base_url=base_url, device=self.device, **options)
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

    def models(self, task: str, model: str | Backend | None = None,
               models: dict[str, str | Backend] | None = None, *, base_url: str | None = None) -> ModelPool:
        """The model pool for a task: ``model`` (or ``models["policy"]``, or the task's
        default) as the policy, the other roles from ``models``. Models given by name
        are loaded once per orchestrator; ``base_url`` applies to every name given."""
        task_obj = get_task(task)
        wanted = dict(models or {})
        if model is not None:
            if "policy" in wanted and wanted["policy"] is not model:
                raise BadInputError("give the policy model once: either model= (--model) or models['policy']")
            wanted["policy"] = model
        wanted.setdefault("policy", task_obj.default_model)
        for role, m in wanted.items():
            if not isinstance(role, str) or not role.isidentifier():
                raise BadInputError(f"bad model role {role!r}: a role is a name like policy, search, judge")
            if m is None:
                raise BadInputError(f"no model for role {role!r} (task {task!r} names no default)")
        return ModelPool({r: m if not isinstance(m, str) else self.backend(m, base_url=base_url)
                          for r, m in wanted.items()}, loader=self.backend)

    def solve(
        self,
        task: str,
        problem: dict | str,
        *,
        strategy: str = "sample",
        model: str | Backend | None = None,
        models: dict[str, str | Backend] | None = None,
        budget: Budget | None = None,
        base_url: str | None = None,
        **params: Any,
    ) -> Result:
        """Solves one problem with a strategy under a budget, recorded as a run.

        Args:
            task: Task name (``"countdown"``).
            problem: The problem as a dict or a JSON string; an ``id`` is optional.
            strategy: Registry name of the strategy (``"sample"``).
            model: The policy model: backend, built-in name or checkpoint path (default:
                the task's model).
            models: Models by role (``{"search": "countdown-search"}``), for strategies
                that use more than the policy model.
            budget: Limits (default: unlimited).
            base_url: An OpenAI-compatible endpoint serving the models named.
            **params: The strategy's own parameters (``temperature``, ``seed`` ...).

        Returns:
            The strategy's Result, with ``trace_id`` set.

        Raises:
            BadInputError: Unknown task, strategy, parameter or role; a missing required
                role; a malformed problem.
        """
        task_obj, spec = self._prepare(task, strategy, params)
        problem = _parse_problem(task_obj, problem)
        pool = self.models(task, model, models, base_url=base_url)
        spec.check_models(pool)
        with self.run("solve", f"{task}/{strategy}", task=task, strategy=strategy, model=pool.policy.name,
                      models=pool.roles(), problem=problem, params=_jsonable_params(params),
                      budget=(budget or Budget()).model_dump(exclude_none=True)) as tracer:
            result = self._run_strategy(tracer, task_obj, spec, pool, problem, budget, params)
            tracer.outcome.update(_outcome(result))
        return result

    def evaluate(
        self,
        task: str,
        problems: Sequence[dict],
        *,
        strategy: str = "sample",
        model: str | Backend | None = None,
        models: dict[str, str | Backend] | None = None,
        budget: Budget | None = None,
        base_url: str | None = None,
        on_problem: Callable[[int, Result], None] | None = None,
        **params: Any,
    ) -> "EvalReport":
        """Runs a strategy over problems (each with its own ``budget``) as one traced run.

        Args:
            task, strategy, model, models, budget, base_url, **params: As for :meth:`solve`.
            problems: Problem dicts (validated by the task).
            on_problem: Called after each problem with its index and Result (progress bars).

        Returns:
            Accuracy with its Wilson 95% interval, usage and compute totals, per-problem rows.
        """
        task_obj, spec = self._prepare(task, strategy, params)
        parsed = [_parse_problem(task_obj, p) for p in problems]
        if not parsed:
            raise BadInputError("no problems to evaluate")
        pool = self.models(task, model, models, base_url=base_url)
        spec.check_models(pool)
        results: list[Result] = []
        with self.run("eval", f"{task}/{strategy}", task=task, strategy=strategy, model=pool.policy.name,
                      models=pool.roles(), n_problems=len(parsed), params=_jsonable_params(params),
                      budget=(budget or Budget()).model_dump(exclude_none=True)) as tracer:
            for i, problem in enumerate(parsed):
                with tracer.span("problem", str(problem["id"]), problem=problem) as span:
                    result = self._run_strategy(tracer, task_obj, spec, pool, problem, budget, params)
                    span.set(**_outcome(result))
                results.append(result)
                if on_problem is not None:
                    on_problem(i, result)
            report = EvalReport.from_results(task, strategy, pool.policy.name, parsed, results, tracer.trace_id)
            tracer.outcome.update(accuracy=report.accuracy, ci95=report.ci95, n_problems=report.n_problems,
                                  tokens=report.tokens, flops=report.flops)
        return report

    @staticmethod
    def _prepare(task: str, strategy: str, params: dict[str, Any]) -> tuple[Any, StrategySpec]:
        # Names and parameters are checked before any model is loaded: bad input fails fast.
        task_obj = get_task(task)
        spec = get_strategy(strategy)
        spec.check_params(params)
        return task_obj, spec

    def _run_strategy(self, tracer, task_obj, spec: StrategySpec, pool: ModelPool, problem, budget,
                      params) -> Result:
        ledger = Ledger(budget)
        ctx = SolveContext(task=task_obj, problem=problem, verifier=task_obj.verifier, ledger=ledger,
                           models=pool, tracer=tracer, artifacts=_StoreArtifacts(self))
        if spec.prepare is not None:
            params = {**params, **spec.prepare(ctx, params)}
        result = spec(ctx, **params)
        # The ledger refuses calls that could overshoot; a backend that ignored its
        # max_tokens is the only way past it, and the result and trace must say so.
        if ledger.overdrawn:
            result.overdrawn = True
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
            if ledger.overdrawn:
                tracer.outcome["overdrawn"] = True
        return GenerateResult(
            trace_id=tracer.trace_id, model=backend.name, generations=result.generations, usage=result.usage,
            flops=result.cost.flops, paper_flops=result.cost.paper_flops, eflops=result.cost.eflops,
            skipped=result.skipped, overdrawn=ledger.overdrawn,
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
