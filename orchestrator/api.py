"""The Python API: ``Orchestrator`` opens the trace store and runs work against models.

Example:
    >>> from orchestrator import Orchestrator
    >>> orc = Orchestrator(db="sqlite:///ttc.db")
    >>> out = orc.generate("countdown-direct", "...", n=4, max_tokens=64)
    >>> orc.get_run(out.trace_id).spans

Evaluations are durable: each problem's result is committed to the store before
``on_problem`` sees it, SIGINT/SIGTERM mark the run ``interrupted`` (raising
``durability.RunInterrupted``), and ``resume(run_id)`` finishes such a run from the store.
"""

from __future__ import annotations

import json
import threading
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel
from ttc.backends.base import Backend
from ttc.backends.errors import BadInputError
from ttc.backends.types import Generation, SamplingParams, Usage
from ttc.core.budget import Budget, Ledger
from ttc.core.calls import call_model
from ttc.core.contracts import ModelPool, SolveContext
from ttc.core.types import Result
from ttc.store import StoreError, TraceStore
from ttc.store.engine import resolve_db_url
from ttc.strategies.registry import StrategySpec, check_test_strategy, get_strategy
from ttc.tasks.registry import find_builtin, get_task

if TYPE_CHECKING:
    from ttc.core.trimr import TrimR

    from .graph import GraphResult, GraphSpec

from ._run_guard import RunInterrupted, deferred_signals, stop_on_signals
from .durability import (
    EvalPlan,
    EvalReport,
    digests,
    outcome,
    report_from_jobs,
    run_eval,
)
from ._trimr_setup import TRIMR_PARAM, add_verifier_spend, check_trimr, trimr_session
from .models import load_backend
from ._sleep_api import SleepMixin
from ._trace_queries import TraceQueries
from .tracing import StoreTracer, one_line

__all__ = ["Orchestrator", "GenerateResult", "EvalReport"]

log = logging.getLogger("ttc")


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


def _model_format(spec: StrategySpec, pool: ModelPool, params: dict[str, Any]) -> dict[str, Any]:
    """A built-in reflective model writes only its own format: a strategy that takes ``fmt``
    gets ``"reflective"`` unless the caller chose a format."""
    if "fmt" in params or "fmt" not in spec.parameters():
        return params
    shipped = find_builtin(pool.policy.name.rsplit("/", 1)[-1])
    if shipped is not None and shipped.kind == "reflective":
        return {**params, "fmt": "reflective"}
    return params


def _jsonable_params(params: dict[str, Any]) -> dict[str, Any]:
    # Objects handed to a strategy (a policy, a backend) are not part of its parameters' record.
    return {k: v for k, v in params.items() if isinstance(v, (str, int, float, bool, type(None), list, dict))}


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


class Orchestrator(TraceQueries, SleepMixin):
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
        #: Wrap in-process models loaded from now on in a GenerationQueue, so that the calls
        #: of concurrent jobs (batch, eval with max_concurrency, serve) decode together.
        self.batch_generation = False
        self._load_lock = threading.RLock()

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
        with self._load_lock:  # graph stages run in threads; a model loads once
            return self._backend(key, model, base_url)

    def _backend(self, key: tuple[str, str | None], model: str, base_url: str | None) -> Backend:
        if key not in self._backends:
            options = dict(self._remote) if base_url else {}
            if self.trust_remote_code:
                options["trust_remote_code"] = True
            backend = load_backend(model, base_url=base_url, device=self.device, **options)
            if self.batch_generation and base_url is None:
                from ttc.backends.queue import GenerationQueue

                backend = GenerationQueue(backend)
            self._backends[key] = backend
        return self._backends[key]

    @contextmanager
    def run(self, kind: str, name: str, **attributes: Any) -> Iterator[StoreTracer]:
        """Opens a run in the store and its root span; ends both, recording any error.

        While the run is in progress in the main thread, SIGINT and SIGTERM raise
        :class:`~durability.RunInterrupted` and the run ends ``interrupted``.
        """
        run_id = self.store.start_run(kind, name, attributes=attributes)
        with self._traced(run_id, name, attributes) as tracer:
            yield tracer

    @contextmanager
    def _traced(self, run_id: str, name: str, span_attributes: dict[str, Any],
                resumable: bool = False) -> Iterator[StoreTracer]:
        # The body of a run already started (or claimed for a resume): root span, signals, end status.
        tracer = StoreTracer(self.store, run_id)
        with stop_on_signals():
            try:
                with tracer.span("run", name, **span_attributes):
                    yield tracer
            except KeyboardInterrupt as exc:
                stopped = f"stopped by {exc.signal_name}" if isinstance(exc, RunInterrupted) else "interrupted"
                try:
                    self.store.end_run(run_id, status="interrupted", error=stopped,
                                       attributes_update=tracer.outcome)
                except StoreError as store_exc:
                    # The stop still wins: once this process is gone the run reads as interrupted anyway.
                    log.warning("could not mark run %s interrupted: %s", run_id, store_exc)
                if isinstance(exc, RunInterrupted) and exc.run_id is None:
                    exc.run_id, exc.resumable = run_id, resumable
                raise
            except BaseException as exc:
                self.store.end_run(run_id, status="error", error=one_line(exc), attributes_update=tracer.outcome)
                raise
            with deferred_signals():
                self.store.end_run(run_id, status="ok", attributes_update=tracer.outcome)

    def artifacts(self) -> "_StoreArtifacts":
        """The artifact lookup strategies see through their context (newest matching run)."""
        return _StoreArtifacts(self)

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
        task: "str | GraphSpec",
        problem: dict | str,
        *,
        strategy: str = "sample",
        model: str | Backend | None = None,
        models: dict[str, str | Backend] | None = None,
        budget: Budget | None = None,
        base_url: str | None = None,
        trimr: "TrimR | None" = None,
        **params: Any,
    ) -> "Result | GraphResult":
        """Solves one problem with a strategy under a budget, recorded as a run.

        Given a task graph instead of a task name, runs the graph (``solve_graph``) under
        ``params["allocation"]`` (an ``Allocation`` or an allocation file from ``allocate``;
        default: the graph's default allocation) and reallocation ``params["policy"]``
        (``static``, ``carry`` or ``carry_weighted``), within ``budget.tokens`` when given,
        and returns its ``GraphResult``.

        Args:
            task: Task name (``"countdown"``), or a ``GraphSpec``.
            problem: The problem as a dict or a JSON string; an ``id`` is optional.
            strategy: Registry name of the strategy (``"sample"``).
            model: The policy model: backend, built-in name or checkpoint path (default:
                the task's model).
            models: Models by role (``{"search": "countdown-search"}``), for strategies
                that use more than the policy model.
            budget: Limits (default: unlimited).
            base_url: An OpenAI-compatible endpoint serving the models named.
            trimr: TrimR thinking compression for the policy model's calls (``TrimR()``:
                exact thought verifier, all rules, the model's thought format).
            **params: The strategy's own parameters (``temperature``, ``seed`` ...).

        Returns:
            The strategy's Result, with ``trace_id`` set.

        Raises:
            BadInputError: Unknown task, strategy, parameter or role; a missing required
                role; a malformed problem.
        """
        if not isinstance(task, str):
            extra = sorted(k for k in params if k not in ("allocation", "policy"))
            if extra or model is not None or models or base_url is not None or strategy != "sample" or trimr:
                raise BadInputError("a graph takes its models and strategies from its allocation; "
                                    f"unexpected: {', '.join(extra) or 'model/models/base_url/strategy'}")
            return self._solve_graph(task, problem, params.get("allocation"), params.get("policy", "static"),
                                     budget.tokens if budget is not None else None)
        task_obj, spec = self._prepare(task, strategy, params)
        problem = _parse_problem(task_obj, problem)
        pool = self.models(task, model, models, base_url=base_url)
        spec.check_models(pool)
        check_trimr(trimr, pool)
        with self.run("solve", f"{task}/{strategy}", task=task, strategy=strategy, model=pool.policy.name,
                      models=pool.roles(), problem=problem, params=_jsonable_params(params),
                      budget=(budget or Budget()).model_dump(exclude_none=True),
                      **({"trimr": trimr.describe()} if trimr else {})) as tracer:
            result = self._run_strategy(tracer, task_obj, spec, pool, problem, budget, params, trimr=trimr)
            tracer.outcome.update(outcome(result))
        return result

    def _solve_graph(self, graph, problem, allocation, policy: str, budget_tokens: int | None):
        from ttc.orchestrator.graph import Allocation, solve_graph
        from ttc.orchestrator.graph.objective import read_allocation

        if isinstance(problem, str):
            try:
                problem = json.loads(problem)
            except json.JSONDecodeError as exc:
                raise BadInputError(f"problem is not valid JSON: {exc.msg}") from None
        if allocation is None:
            allocation = graph.default_allocation()
        elif not isinstance(allocation, Allocation):
            allocation = read_allocation(self, Path(allocation), graph)
        return solve_graph(self, graph, problem, allocation, policy=policy, budget_tokens=budget_tokens)

    def allocate(self, graph: "GraphSpec", problems: Sequence[dict], *, method: str = "planner", trials: int = 20,
                 budget: float | None = None, seed: int = 0, out: "str | Path | None" = None) -> dict[str, Any]:
        """Searches a task graph's allocation on train problems (AgentTTS), as a traced run.

        Args:
            graph: The graph.
            problems: The train split.
            method: ``planner`` (rule-based), ``random``, ``grid`` or ``tpe``.
            trials: Distinct allocations evaluated, at most.
            budget: Cost cap per problem in AgentTTS units (passes of the largest model).
            seed: Seeds the method.
            out: Allocation file to write, which ``solve(graph, ..., allocation=out)`` reads.

        Returns:
            ``allocation`` (an ``Allocation``), ``score``, ``score_ci95``, ``trials``,
            ``cost``, ``method``, ``space`` and ``trace_id``.
        """
        from ttc.orchestrator.graph.solving import allocate_graph

        return allocate_graph(self, graph, list(problems), method=method, trials=trials, budget=budget, seed=seed,
                              out=Path(out) if out is not None else None)

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
        on_start: Callable[[int, list[Result]], None] | None = None,
        max_concurrency: int = 1,
        trimr: "TrimR | None" = None,
        **params: Any,
    ) -> "EvalReport":
        """Runs a strategy over problems (each with its own ``budget``) as one traced, resumable run.

        Each problem's result is committed to the store (table ``jobs``) before
        ``on_problem`` sees it. Problem ``k`` samples with a seed derived from the run
        seed (``seed``, else the strategy's default) and its id, so a resumed run gives
        the answers an uninterrupted one would.

        Args:
            task, strategy, model, models, budget, base_url, **params: As for :meth:`solve`.
            problems: Problem dicts (validated by the task).
            on_problem: Called after each problem is committed, with its index and Result.
            on_start: Called once before any problem, with the number of problems and the
                results already stored (none here; see :meth:`resume`).
            max_concurrency: Problems solved at once; above 1, in-process models loaded from
                now on batch the problems' calls together (``GenerationQueue``). The answers
                are those of one problem at a time.
            trimr: TrimR for every problem's policy calls (as for :meth:`solve`; a resumed
                run does not restore it).

        Returns:
            Accuracy with its Wilson 95% interval, usage and compute totals, per-problem rows.

        Raises:
            BadInputError: As for :meth:`solve`, or no problems.
            durability.RunInterrupted: SIGINT or SIGTERM stopped the run (marked
                ``interrupted``; :meth:`resume` finishes it).
        """
        task_obj, spec = self._prepare(task, strategy, params)
        parsed = [_parse_problem(task_obj, p) for p in problems]
        if not parsed:
            raise BadInputError("no problems to evaluate")
        self.batch_generation = self.batch_generation or max_concurrency > 1
        pool = self.models(task, model, models, base_url=base_url)
        spec.check_models(pool)
        check_trimr(trimr, pool)
        wanted = {**(models or {}), **({"policy": model} if model is not None else {})}
        wanted.setdefault("policy", task_obj.default_model)
        plan = EvalPlan.create(task, strategy, spec, parsed, params, _jsonable_params(params), budget, wanted, pool,
                               base_url)
        attributes = plan.run_attributes(pool)
        run_id = self.store.start_run("eval", f"{task}/{strategy}",
                                      attributes={**attributes, "eval": plan.model_dump(mode="json")})
        # Objects among the parameters reach this run's strategy, though a resume cannot restore them.
        objects = {k: v for k, v in params.items() if k not in plan.params}
        if trimr is not None:  # rides with the objects to _run_strategy, never on self (a concurrent solve)
            objects[TRIMR_PARAM] = trimr
        return run_eval(self, run_id, plan, task_obj, spec, pool, attributes, {}, on_problem, on_start, objects,
                        max_concurrency)

    def resume(
        self,
        run_id: str,
        *,
        models: dict[str, Backend] | None = None,
        base_url: str | None = None,
        on_problem: Callable[[int, Result], None] | None = None,
        on_start: Callable[[int, list[Result]], None] | None = None,
        max_concurrency: int = 1,
    ) -> "EvalReport":
        """Finishes an interrupted (or failed) eval run from the store: same run id, same settings.

        Only problems with no stored result run, with the seeds they would have had; the
        report covers every problem and says how many came from the store (``resumed``).
        The run is marked running again under this process. Resuming a finished
        (``ok``) run runs nothing and returns its report.

        Args:
            run_id: The eval run (full id or a unique prefix).
            models: Backends by role, for roles the run was given as objects rather than
                names (their checkpoint digests must still match).
            base_url: Where the served models are now, if not where the run found them.
            on_problem, on_start, max_concurrency: As for :meth:`evaluate`.

        Raises:
            BadInputError: No such run, not an eval, still running, its model checkpoints
                changed, or it was started with parameters the store could not hold.
            durability.RunInterrupted: Stopped again by a signal.
        """
        run = self.store.get_run_record(run_id)
        plan = EvalPlan.of_run(run)
        if run.status == "running":
            raise BadInputError(f"run {run.id} is still running (pid {run.pid} on {run.host}); "
                                "stop it first, or wait for it to finish")
        task_obj, spec = self._prepare(plan.task, plan.strategy, plan.params)
        stored = {j.key: j for j in self.store.list_jobs(run.id, status="ok")}
        if run.status == "ok":
            return report_from_jobs(run.id, plan, run.attributes.get("model", ""), stored, len(stored))
        wanted = plan.models_to_load(run.id, models or {})
        self.batch_generation = self.batch_generation or max_concurrency > 1
        pool = self.models(plan.task, None, wanted, base_url=base_url or plan.base_url)
        spec.check_models(pool)
        plan.check_models(run.id, digests(pool))
        if not self.store.claim_run(run.id, run.status):
            raise BadInputError(f"run {run.id} changed while resuming it (another process resumed it?)")
        attributes = {**plan.run_attributes(pool), "resumed": len(stored)}
        return run_eval(self, run.id, plan, task_obj, spec, pool, attributes, stored, on_problem, on_start, {},
                        max_concurrency)

    @staticmethod
    def _prepare(task: str, strategy: str, params: dict[str, Any]) -> tuple[Any, StrategySpec]:
        # Names and parameters are checked before any model is loaded: bad input fails fast.
        task_obj = get_task(task)
        spec = get_strategy(strategy)
        spec.check_params(params)
        # A verifier that checks by solving (stateful-arith's) may grade, never pick.
        check_test_strategy(task_obj.verifier, strategy)
        return task_obj, spec

    def _run_strategy(self, tracer, task_obj, spec: StrategySpec, pool: ModelPool, problem, budget,
                      params, trimr: "TrimR | None" = None) -> Result:
        ledger = Ledger(budget)
        if TRIMR_PARAM in params:  # an eval's TrimR, passed among its object parameters
            params = dict(params)
            trimr = params.pop(TRIMR_PARAM)
        ctx = SolveContext(task=task_obj, problem=problem, verifier=task_obj.verifier, ledger=ledger,
                           models=pool, tracer=tracer, artifacts=self.artifacts())
        if spec.prepare is not None:
            params = {**params, **spec.prepare(ctx, params)}
        params = _model_format(spec, pool, params)
        if trimr is None:
            result = spec(ctx, **params)
        else:
            ctx.trimr = trimr_session(trimr, task_obj, problem, pool, ledger, tracer)
            with ctx.trimr.active():
                result = spec(ctx, **params)
            tracer.outcome["trimr"] = ctx.trimr.summary()
            add_verifier_spend(result, ctx.trimr)
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
