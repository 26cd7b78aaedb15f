"""The Orchestrator's sleep-time compute: ``precompute`` a context, then ``ask`` it queries.

A mixin of :class:`~orchestrator.api.Orchestrator`. ``precompute`` runs the sleep phase
(``strategies.sleeptime``) on one context under a sleep budget, as a traced run, and
stores the artifacts in the trace store (table ``artifacts``) under their key: the
context's hash, the sleep model's checkpoint digest and the sleep configuration's hash.
``ask`` answers a query under a test budget with the artifacts stored under that key,
if any; it never precomputes by itself, so without artifacts it is ordinary test-time
compute (the fallback strategy on the direct format)::

    orc.precompute("stateful-arith", "a=7;b=a*3;c=b-4")
    out = orc.ask("stateful-arith", "a=7;b=a*3;c=b-4", "c+a")   # out.artifact_hit is True
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from ttc.backends.base import Backend
from ttc.backends.errors import BadInputError
from ttc.core.artifacts import Artifact, artifact_key, config_hash, context_hash, model_digest
from ttc.core.budget import Budget, Ledger
from ttc.core.contracts import ModelPool, SolveContext
from ttc.store.artifacts import ArtifactTable
from ttc.strategies.sleeptime import (
    SleepConfig,
    answer_query,
    check_test_strategy,
    precompute_notes,
    sleep_formats,
)
from ttc.tasks.registry import get_task

__all__ = ["AskResult", "PrecomputeResult", "SleepMixin"]


class PrecomputeResult(BaseModel):
    """What ``precompute`` stored (or found already stored).

    Attributes:
        key: The artifact key.
        artifact: The artifacts (notes, anticipated answers, cost).
        sleep_tokens: Tokens the sleep phase spent on this context (prefill + generated).
        sleep_generated_tokens: Its generated tokens.
        reused: True when the artifacts were already stored and nothing was spent now.
        trace_id: The precompute run (the earlier one when ``reused``).
    """

    key: str
    artifact: Artifact
    sleep_tokens: int
    sleep_generated_tokens: int
    reused: bool = False
    trace_id: str | None = None


class AskResult(BaseModel):
    """A query answered with (or without) a context's stored artifacts.

    Attributes:
        answer, correct: The chosen answer and the verifier's verdict.
        artifact_hit: Artifacts for this context, sleep model and configuration were stored and used.
        exact_hit: An anticipated answer was reused on an exact query match.
        route: ``anticipated``, ``notes``, ``fallback`` or ``none``.
        sleep_tokens: What the artifacts used had cost (0 without them).
        test_tokens: Tokens this query spent (prefill + generated).
        test_generated_tokens: Its generated tokens.
        key: The artifact key looked up.
        trace_id: The ask run.
    """

    answer: str | None
    correct: bool | None
    artifact_hit: bool
    exact_hit: bool
    route: str
    sleep_tokens: int
    test_tokens: int
    test_generated_tokens: int
    key: str
    trace_id: str | None


def _config(config: SleepConfig | dict[str, Any] | None) -> SleepConfig:
    if config is None or isinstance(config, SleepConfig):
        return config or SleepConfig()
    if not isinstance(config, dict):
        raise BadInputError("config must be a SleepConfig or a dict of its fields")
    return SleepConfig(**config)


class SleepMixin:
    """``precompute`` and ``ask`` over ``self.store`` and ``self.models`` (see the module docstring)."""

    def artifact_store(self) -> ArtifactTable:
        """The sleep-time artifacts in this orchestrator's trace store."""
        return ArtifactTable(self.store.engine)

    def _sleep_setup(self, task: str, context: str, model, models, base_url, config):
        task_obj = get_task(task)
        fm = sleep_formats(task_obj)
        if not isinstance(context, str) or not context.strip():
            raise BadInputError("the context is empty; give its text, e.g. --context 'a=7;b=a*3;c=b-4'")
        if fm.validate_context is not None:
            try:
                fm.validate_context(context)
            except ValueError as exc:
                raise BadInputError(f"bad context: {exc}") from None
        cfg = _config(config)
        pool: ModelPool = self.models(task, model, models, base_url=base_url)
        sleeper: Backend = pool.get("sleep", "policy")
        norm = fm.normalize_context(context)
        key = artifact_key(norm, model_digest(sleeper.info), config_hash(cfg.key_fields(task_obj.name)))
        return task_obj, fm, cfg, pool, sleeper, norm, key

    def precompute(self, task: str, context: str, *, model: str | Backend | None = None,
                   models: dict[str, str | Backend] | None = None, budget: Budget | None = None,
                   config: SleepConfig | dict[str, Any] | None = None, base_url: str | None = None,
                   force: bool = False) -> PrecomputeResult:
        """Runs the sleep phase on ``context`` and stores its artifacts, as a traced run.

        Args:
            task: Task name (one with sleep formats, e.g. ``stateful-arith``).
            context: The context's text.
            model, models, base_url: As for ``solve``; the ``sleep`` role (else the policy)
                writes the notes.
            budget: The sleep budget (default: unlimited).
            config: :class:`SleepConfig` or its fields (``{"notes": 5}``).
            force: Recompute even when artifacts under the same key are stored.

        Returns:
            The result; when the sleep budget held fewer notes than ``config.notes``, the
            artifact is stored under the key of the notes actually written (so ``ask``
            with the full configuration does not find it), and ``key`` is that key.

        Raises:
            BadInputError: Unknown task, a task without sleep formats, a malformed
                context, a bad configuration, or a sleep budget that holds no notes call.
        """
        task_obj, _fm, cfg, _pool, sleeper, norm, key = self._sleep_setup(task, context, model, models, base_url,
                                                                           config)
        table = self.artifact_store()
        stored = table.get_artifact(key) if not force else None
        if stored is not None:
            art = Artifact.from_record(stored)
            return PrecomputeResult(key=key, artifact=art, sleep_tokens=art.sleep_tokens,
                                    sleep_generated_tokens=art.usage.completion_tokens, reused=True,
                                    trace_id=art.trace_id)
        with self.run("sleep", f"{task}/precompute", task=task, model=sleeper.name, artifact_key=key,
                      context_hash=context_hash(norm), sleep_config=cfg.model_dump(),
                      budget=(budget or Budget()).model_dump(exclude_none=True)) as tracer:
            art = precompute_notes(task_obj, [norm], sleeper, Ledger(budget), tracer, cfg)[0]
            if art is None:
                raise BadInputError(f"the sleep budget cannot hold one notes call of {cfg.notes} note(s); "
                                    "raise --budget-tokens or lower --notes")
            art = art.model_copy(update={"trace_id": tracer.trace_id})
            # A budget-shrunk artifact carries its own key (the notes actually written).
            table.put_artifact(art.to_record())
            tracer.outcome.update({"sleep_tokens": art.sleep_tokens, "quantities": len(art.notes),
                                   "notes_written": len(art.notes_text), "stored_key": art.key})
        return PrecomputeResult(key=art.key, artifact=art, sleep_tokens=art.sleep_tokens,
                                sleep_generated_tokens=art.usage.completion_tokens, trace_id=tracer.trace_id)

    def ask(self, task: str, context: str, query: str, *, model: str | Backend | None = None,
            models: dict[str, str | Backend] | None = None, budget: Budget | None = None,
            config: SleepConfig | dict[str, Any] | None = None, strategy: str = "majority_vote",
            params: dict[str, Any] | None = None, fallback: str = "majority_vote",
            fallback_params: dict[str, Any] | None = None, counterfactuals: str = "notes",
            base_url: str | None = None) -> AskResult:
        """Answers ``query`` about ``context`` under a test budget, with stored artifacts if any.

        Never precomputes: without artifacts for this context, sleep model and
        configuration, the query gets ordinary test-time compute (``fallback``).

        Args:
            task, context, model, models, config, base_url: As for :meth:`precompute` (the
                same sleep model and configuration find the same artifacts).
            query: The query (``c``, ``c+a``, ``if a=9,c``).
            budget: The test budget (default: unlimited).
            strategy, params: Registered strategy run on context + notes.
            fallback, fallback_params: Registered strategy run on the context alone.
            counterfactuals: ``notes`` or ``fallback`` (see ``strategies.sleeptime.answer_query``).

        Raises:
            BadInputError: As for :meth:`precompute`, a malformed query, an unknown strategy,
                or one that selects by the score of a graded verifier (stateful-arith's).
        """
        if counterfactuals not in ("notes", "fallback"):
            raise BadInputError(f"counterfactuals must be 'notes' or 'fallback', got {counterfactuals!r}")
        task_obj, _fm, _cfg, pool, _sleeper, norm, key = self._sleep_setup(task, context, model, models, base_url,
                                                                            config)
        problem = task_obj.parse_problem({"context": context, "query": query})
        # Refused before the run opens: a graded verifier may not select (an oracle).
        check_test_strategy(task_obj.verifier, strategy, "strategy")
        check_test_strategy(task_obj.verifier, fallback, "fallback")
        record = self.artifact_store().get_artifact(key)
        art = Artifact.from_record(record) if record is not None else None
        with self.run("sleep", f"{task}/ask", task=task, model=pool.policy.name, models=pool.roles(),
                      artifact_key=key, artifact_hit=art is not None, problem=problem, strategy=strategy,
                      fallback=fallback, budget=(budget or Budget()).model_dump(exclude_none=True)) as tracer:
            ctx = SolveContext(task=task_obj, problem=problem, verifier=task_obj.verifier, ledger=Ledger(budget),
                               models=pool, tracer=tracer, artifacts=self.artifacts())
            out = answer_query(ctx, art, strategy=strategy, params=params, fallback=fallback,
                               fallback_params=fallback_params, counterfactuals=counterfactuals)
            tracer.outcome.update({"answer": out.answer, "correct": out.correct, "route": out.route,
                                   "test_tokens": out.usage.total_tokens})
        return AskResult(answer=out.answer, correct=out.correct, artifact_hit=art is not None,
                         exact_hit=out.exact_hit, route=out.route, sleep_tokens=art.sleep_tokens if art else 0,
                         test_tokens=out.usage.total_tokens, test_generated_tokens=out.usage.completion_tokens,
                         key=key, trace_id=tracer.trace_id)
