"""The strategy registry: every strategy has one signature, ``strategy(ctx, **params) -> Result``.

A strategy registers itself with the :func:`strategy` decorator, declaring the model
roles it uses::

    @strategy("best_of_n")                                  # needs the policy model
    def best_of_n(ctx: SolveContext, *, n: int | None = None, ...) -> Result: ...

    @strategy("sequential", roles={"search": "policy"})     # search, else the policy

Role requirements: ``"required"`` (a missing model is bad input, exit 2), ``"policy"``
(falls back to the policy model) or ``"optional"``. What a strategy needs besides models
(``auto``'s calibrated policy) it fetches in its ``prepare(ctx, params)`` hook, which the
orchestrator calls before the run: no strategy name appears in the orchestrator.

Installed packages add strategies through the entry-point group ``ttc.strategies``; the
entry point names a :class:`StrategySpec` or a plain callable of the same signature.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ttc.backends.errors import BadInputError
from ttc.core.contracts import ModelPool, SolveContext
from ttc.core.registry import Registry
from ttc.core.types import Result

__all__ = ["SCORE_FREE_STRATEGIES", "STRATEGIES", "Strategy", "StrategySpec", "RoleNeed", "check_test_strategy",
           "get_strategy", "strategy"]

RoleNeed = Literal["required", "policy", "optional"]
Strategy = Callable[..., Result]
Prepare = Callable[[SolveContext, dict[str, Any]], dict[str, Any]]

# Modules whose import registers the built-in strategies (one strategy per file).
_BUILTINS = tuple(f"ttc.strategies.{m}" for m in
                  ("sample", "best_of_n", "majority_vote", "weighted_vote", "sequential", "tree_search", "auto",
                   "plansearch"))


@dataclass(frozen=True)
class StrategySpec:
    """A registered strategy: the function, the roles it uses, and its prepare hook.

    Attributes:
        name: Registry name.
        fn: ``fn(ctx, **params) -> Result``.
        roles: Role -> need; ``policy`` is always required.
        prepare: Called by the orchestrator before the run with the context and the
            user's parameters; returns extra keyword parameters (objects, not recorded).
        description: First line of the function's docstring.
    """

    name: str
    fn: Strategy
    roles: Mapping[str, RoleNeed] = field(default_factory=lambda: {"policy": "required"})
    prepare: Prepare | None = None
    description: str = ""

    def __call__(self, ctx: SolveContext, **params: Any) -> Result:
        return self.fn(ctx, **params)

    def parameters(self) -> dict[str, Any]:
        """Keyword parameter -> default (None where there is none), as the signature says."""
        out = {}
        for p, v in inspect.signature(self.fn).parameters.items():
            if v.kind is v.KEYWORD_ONLY:
                out[p] = None if v.default is inspect.Parameter.empty else v.default
        return out

    def check_params(self, params: Mapping[str, Any]) -> None:
        """Raises BadInputError for a parameter the strategy does not take."""
        accepted = list(self.parameters())
        unknown = sorted(set(params) - set(accepted))
        if unknown:
            raise BadInputError(f"strategy {self.name!r} takes no parameter {', '.join(unknown)}; "
                                f"it takes: {', '.join(accepted) or 'none'}")

    def check_models(self, pool: ModelPool) -> None:
        """Raises BadInputError when a required role has no model."""
        for role, need in self.roles.items():
            if need == "required" and role not in pool:
                raise BadInputError(f"strategy {self.name!r} needs a model for role {role!r}: "
                                    f"give one with --role {role}=MODEL")

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary for ``ttc strategies list``."""
        return {"name": self.name, "roles": dict(self.roles), "parameters": _jsonable(self.parameters()),
                "description": self.description, "origin": STRATEGIES.origin(self.name)}


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v if isinstance(v, (int, float, str, bool, type(None))) else repr(v) for k, v in params.items()}


def _adapt(name: str, obj: Any) -> StrategySpec:
    if isinstance(obj, StrategySpec):
        return obj
    if callable(obj):
        return _spec(name, obj, None, None)
    raise TypeError(f"entry point {name!r} is neither a StrategySpec nor a callable")


def _spec(name: str, fn: Strategy, roles: Mapping[str, RoleNeed] | None, prepare: Prepare | None) -> StrategySpec:
    roles = {"policy": "required", **(roles or {})}
    doc = inspect.getdoc(fn) or ""
    return StrategySpec(name=name, fn=fn, roles=roles, prepare=prepare, description=doc.split("\n", 1)[0])


STRATEGIES: Registry[StrategySpec] = Registry("strategy", "ttc.strategies", _BUILTINS, _adapt, plural="strategies")


def strategy(name: str, *, roles: Mapping[str, RoleNeed] | None = None,
             prepare: Prepare | None = None) -> Callable[[Strategy], Strategy]:
    """Registers the decorated function as strategy ``name``; returns the function unchanged."""

    def deco(fn: Strategy) -> Strategy:
        STRATEGIES.register(name, _spec(name, fn, roles, prepare))
        return fn

    return deco


def get_strategy(name: str) -> StrategySpec:
    """The strategy registered as ``name`` (BadInputError listing the valid ones otherwise)."""
    return STRATEGIES.get(name)


#: The strategies that choose an answer without the verifier's score (its verdict only
#: grades their result): the only ones a solve, an eval or sleep time's test phase runs
#: under a ``graded`` verifier.
SCORE_FREE_STRATEGIES = frozenset({"sample", "majority_vote"})


def check_test_strategy(verifier: Any, name: str, role: str = "strategy") -> None:
    """Refuses a strategy that selects by the verifier's score when the verifier is ``graded``.

    A graded verifier (``graded = True``, e.g. stateful-arith's) checks an answer by
    solving the problem exactly, so selecting candidates by its score is an oracle, not
    test-time compute; it may only grade a result.

    Raises:
        BadInputError: ``verifier.graded`` and ``name`` not in :data:`SCORE_FREE_STRATEGIES`.
    """
    if getattr(verifier, "graded", False) and name not in SCORE_FREE_STRATEGIES:
        raise BadInputError(f"{role} {name!r} selects by the verifier's score, but this task's verifier "
                            f"({type(verifier).__name__}) solves the query exactly, so it may only grade: "
                            f"use {' or '.join(sorted(SCORE_FREE_STRATEGIES))}")
