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
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from pydantic import BaseModel

from backends.base import Backend
from backends.errors import BadInputError
from backends.types import Generation, SamplingParams, Usage
from store import RunDetail, RunRecord, StatsRecord, TraceStore
from store.engine import resolve_db_url
from strategies.budget import Budget, Ledger
from strategies.calls import call_model
from strategies.registry import get_strategy
from strategies.result import Result
from tasks.registry import get_task

from .models import load_backend
from .tracing import StoreTracer, one_line

__all__ = ["Orchestrator", "GenerateResult"]


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
        task_obj = get_task(task)
        if isinstance(problem, str):
            try:
                problem = json.loads(problem)
            except json.JSONDecodeError as exc:
                raise BadInputError(f"problem is not valid JSON: {exc.msg} (line {exc.lineno} column {exc.colno})") from None
        problem = task_obj.parse_problem(problem)
        run_strategy = get_strategy(strategy)
        _check_params(strategy, run_strategy, params)
        if model is None:
            model = task_obj.default_model
        backend = model if not isinstance(model, str) else self.backend(model, base_url=base_url)
        ledger = Ledger(budget)
        with self.run("solve", f"{task}/{strategy}", task=task, strategy=strategy, model=backend.name,
                      problem=problem, budget=(budget or Budget()).model_dump(exclude_none=True)) as tracer:
            result = run_strategy(task_obj, problem, backend, task_obj.verifier, ledger, tracer, **params)
            result.trace_id = tracer.trace_id
            tracer.outcome.update(answer=result.answer, correct=result.correct, tokens=result.tokens,
                                  flops=result.flops, paper_flops=result.paper_flops, eflops=result.eflops,
                                  stop_reason=result.stop_reason, candidates=len(result.candidates))
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
