"""The typed contracts every layer above the core is written against.

- ``Task``: a task family (problems, prompts, token limits, its verifier).
- ``Verifier``: judges a candidate text for a problem; ``canonical`` gives the key under
  which votes for the same answer pool. Both see the problem (a 9x9 Sudoku answer cannot
  be read without knowing the board is 9x9).
- ``ModelPool``: models by role (``policy``, ``search``, ``judge``, ``planner`` ...).
- ``SolveContext``: what a strategy receives: task, problem, verifier, ledger, tracer,
  the model pool and an artifact lookup. Every model call goes through it (or through
  ``call_model`` / ``stream_model`` directly), so it is reserved, charged and traced.
- ``Strategy``: ``strategy(ctx, **params) -> Result``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, runtime_checkable

from ttc.backends.base import Backend
from ttc.backends.errors import BadInputError
from ttc.backends.types import SamplingParams

from .budget import Budget, Ledger
from .calls import CallResult, call_model
from .streaming import BudgetedStream, stream_model
from .tracing import NullTracer, Tracer
from .types import Result, Verdict

__all__ = ["Task", "Verifier", "Strategy", "RecordedRuns", "ModelPool", "SolveContext", "ROLES"]

#: Roles the built-in strategies know; a plug-in may use any other name.
ROLES = ("policy", "search", "judge", "planner", "sleep")


@runtime_checkable
class Verifier(Protocol):
    """Judges candidates of one task family."""

    def verify(self, problem: dict, text: str, ctx: "SolveContext | None" = None) -> Verdict:
        """The verdict on ``text`` as an answer to ``problem``.

        ``ctx`` is given when the verifier may call models (a judge): it reserves through
        ``ctx.ledger`` before it calls, so callers never charge ``Verdict.usage`` again.
        """
        ...

    def canonical(self, problem: dict, text: str) -> str | None:
        """A key equal for equivalent answers (for voting), or None when none is parsed."""
        ...


@runtime_checkable
class Task(Protocol):
    """A task family.

    Attributes:
        name: Registry name.
        formats: Prompt formats it knows ("direct", "search", ...).
        stop: Stop strings of its completions.
        default_model: The model used when none is named (a built-in name or path).
        verifier: Its verifier.
    """

    name: str
    formats: tuple[str, ...]
    stop: tuple[str, ...]
    default_model: str | None
    verifier: Verifier

    def parse_problem(self, obj: Any) -> dict:
        """Validates user JSON into a problem dict with an ``id``; BadInputError otherwise."""
        ...

    def prompt(self, problem: dict, fmt: str = "direct") -> str:
        """The prompt for ``problem`` in format ``fmt``."""
        ...

    def max_tokens(self, problem: dict | None, fmt: str = "direct") -> int:
        """Generation limit for ``problem`` in format ``fmt`` (None: the task's default size)."""
        ...

    def make_problems(self, n: int, seed: int = 0, split: str = "test") -> list[dict]:
        """Seeded problems of the task's distribution."""
        ...


@runtime_checkable
class RecordedRuns(Protocol):
    """Where a strategy finds what was recorded earlier (auto's calibrated policy)."""

    def latest(self, kind: str, **match: Any) -> dict[str, Any] | None:
        """The attributes of the newest successful run of ``kind`` whose attributes
        include every ``match`` item, or None."""
        ...


class ModelPool:
    """Models by role. ``policy`` is the model a strategy samples answers from.

    Args:
        models: Role -> backend.
        loader: Loads a model by name (built-in, path, served), for strategies that learn
            which model they need at run time (auto's policy names its search model).
    """

    def __init__(self, models: Mapping[str, Backend], loader: Callable[[str], Backend] | None = None):
        self._models = dict(models)
        self._loader = loader

    def __contains__(self, role: str) -> bool:
        return role in self._models

    def __getitem__(self, role: str) -> Backend:
        if role not in self._models:
            raise BadInputError(f"no model for role {role!r}; give one with --role {role}=MODEL "
                                f"(Python: models={{{role!r}: ...}})")
        return self._models[role]

    def get(self, role: str, fallback: str | None = None) -> Backend | None:
        """The model of ``role``, else of ``fallback``, else None."""
        if role in self._models:
            return self._models[role]
        return self._models.get(fallback) if fallback else None

    @property
    def policy(self) -> Backend:
        return self["policy"]

    def roles(self) -> dict[str, str]:
        """Role -> model name (for traces)."""
        return {r: b.name for r, b in self._models.items()}

    def load(self, name: str) -> Backend:
        """A model by name through the pool's loader."""
        if self._loader is None:
            raise BadInputError(f"cannot load model {name!r}: this model pool has no loader")
        return self._loader(name)

    def with_roles(self, **models: Backend) -> "ModelPool":
        return ModelPool({**self._models, **models}, self._loader)


@dataclass
class SolveContext:
    """Everything a strategy works with on one problem.

    Attributes:
        task: The task family.
        problem: The problem (validated, with an ``id``).
        verifier: Judges candidates (usually ``task.verifier``).
        ledger: The budget ledger; every call reserves here first.
        tracer: Where spans go.
        models: Models by role.
        artifacts: Earlier recorded results (None: none available).
        resources: What a strategy's ``prepare`` hook put here before it runs.
        trimr: The solve's TrimR session (``core.trimr.TrimRSession``) when the TrimR
            option is on: it monitors the policy model's calls, whatever the strategy.
    """

    task: Task
    problem: dict
    verifier: Verifier
    ledger: Ledger
    models: ModelPool
    tracer: Tracer = field(default_factory=NullTracer)
    artifacts: RecordedRuns | None = None
    resources: dict[str, Any] = field(default_factory=dict)
    trimr: Any = None

    @classmethod
    def of(cls, task: Task, problem: dict, policy: Backend, *, ledger: Ledger | None = None,
           tracer: Tracer | None = None, verifier: Verifier | None = None, **roles: Backend) -> "SolveContext":
        """A context from parts, for library use without an orchestrator::

            ctx = SolveContext.of(COUNTDOWN, problem, backend, ledger=Ledger(Budget(tokens=600)))
            result = get_strategy("best_of_n")(ctx, n=8)
        """
        return cls(task=task, problem=problem, verifier=verifier or task.verifier, ledger=ledger or Ledger(),
                   models=ModelPool({"policy": policy, **roles}), tracer=tracer or NullTracer())

    @property
    def policy(self) -> Backend:
        return self.models.policy

    def call(self, role: str | Backend, prompts: Sequence[str], params: SamplingParams, *,
             name: str = "generate", min_tokens: int | None = None) -> CallResult:
        """``call_model`` on the model of ``role`` (or a backend), charged to this context's ledger."""
        backend = self.models[role] if isinstance(role, str) else role
        return call_model(backend, prompts, params, self.ledger, self.tracer, name=name, min_tokens=min_tokens)

    def stream(self, role: str | Backend, prompt: str, params: SamplingParams, *, name: str = "stream",
               min_tokens: int | None = 1) -> BudgetedStream | None:
        """``stream_model`` on the model of ``role`` (or a backend), charged to this ledger."""
        backend = self.models[role] if isinstance(role, str) else role
        return stream_model(backend, prompt, params, self.ledger, self.tracer, name=name, min_tokens=min_tokens)

    def verify(self, text: str) -> Verdict:
        return self.verifier.verify(self.problem, text, self)

    def canonical(self, text: str) -> str | None:
        return self.verifier.canonical(self.problem, text)

    def max_tokens(self, fmt: str = "direct") -> int:
        return self.task.max_tokens(self.problem, fmt)

    def prompt(self, fmt: str = "direct", **kwargs: Any) -> str:
        return self.task.prompt(self.problem, fmt, **kwargs)

    def with_models(self, **models: Backend) -> "SolveContext":
        """The same context with some roles rebound (e.g. ``policy`` to the search model)."""
        return replace(self, models=self.models.with_roles(**models))

    def child(self, budget: Budget | None = None, **changes: Any) -> "SolveContext":
        """A context for a sub-step with its own limits, charged to this ledger too."""
        return replace(self, ledger=self.ledger.child(budget), **changes)


@runtime_checkable
class Strategy(Protocol):
    """``strategy(ctx, **params) -> Result``: parameters are keyword-only."""

    def __call__(self, ctx: SolveContext, **params: Any) -> Result: ...
