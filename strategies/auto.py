"""``auto``: compute-optimal choice of strategy per problem (Snell et al., arXiv 2408.03314).

1. Probe: a few direct samples (charged to the budget like any others). An exact
   verifier may already confirm one: then the problem is solved for the probe's price.
2. Estimate difficulty without labels from the probe: the model's confidence, the mean
   token log-probability of its samples, placed into the calibrated bins.
3. Look up, for that bin, the accuracy and mean spend of every strategy on the menu,
   measured on a calibration split that never overlaps evaluation problems, and run the
   one with the highest expected accuracy that fits the budget left.

The calibrated curves are a run of kind ``calibration`` in the trace store (``ttc bench
auto`` records one); ``auto``'s prepare hook finds the newest for the task and policy
model through the context's artifact lookup, and loads the search model it names when
the model pool has no ``search`` role.
"""

from __future__ import annotations

import bisect
import statistics
from typing import Any, Literal

from pydantic import BaseModel, Field
from ttc.backends.base import Backend
from ttc.backends.errors import BadInputError
from ttc.core.contracts import SolveContext
from ttc.core.cost import Cost
from ttc.core.tracing import Span
from ttc.core.types import Result

from ._rounds import Rounds, finish, sample_rounds, task_params
from .registry import get_strategy, strategy

__all__ = ["auto", "probe", "inner_params", "load_policy", "MenuItem", "PolicyEntry", "Policy", "CALIBRATION_KIND"]

#: Run kind under which calibrated policies are recorded.
CALIBRATION_KIND = "calibration"


class MenuItem(BaseModel):
    """A strategy with fixed parameters, run on the direct or the search model."""

    strategy: str
    params: dict[str, Any] = Field(default_factory=dict)
    model: Literal["direct", "search"] = "direct"

    @property
    def label(self) -> str:
        args = ",".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        return f"{self.strategy}({args})" + ("@search" if self.model == "search" else "")


class PolicyEntry(BaseModel):
    """Calibrated accuracy and mean spend (tokens, after the probe) of a menu item in a bin."""

    item: MenuItem
    accuracy: float
    mean_tokens: float
    n: int


class Policy(BaseModel):
    """Difficulty bins and, per bin, the calibrated curve of every menu item.

    Attributes:
        edges: Confidence cut points (ascending); bin i holds confidences in
            [edges[i-1], edges[i]). Bin 0 is the least confident (hardest).
        table: Bin index (as a string, for JSON) -> entries.
        probe: Samples in the probe.
        probe_tokens: Mean tokens the probe spent on calibration problems.
    """

    task: str
    model: str
    search_model: str | None = None
    probe: int = 4
    probe_tokens: float = 0.0
    edges: list[float] = Field(default_factory=list)
    table: dict[str, list[PolicyEntry]] = Field(default_factory=dict)
    overall: list[PolicyEntry] = Field(default_factory=list)

    def bin_of(self, confidence: float) -> int:
        return bisect.bisect_right(self.edges, confidence)

    def choose(self, bin_index: int, tokens_left: int | None) -> PolicyEntry | None:
        """The entry with the best expected accuracy whose mean spend fits.

        A bin holds few calibration problems, so its accuracies often tie (all zero on hard
        bins): ties go to the item that did best over all bins, then to the cheaper one.
        """
        pooled = {e.item.label: e.accuracy for e in self.overall}
        entries = self.table.get(str(bin_index), [])
        fits = [e for e in entries if tokens_left is None or e.mean_tokens <= tokens_left]
        return max(fits, key=lambda e: (e.accuracy, pooled.get(e.item.label, 0.0), -e.mean_tokens), default=None)


def probe(ctx: SolveContext, span: Span, *, m: int = 4, temperature: float = 0.7,
          seed: int | None = 0) -> tuple[Rounds, float | None]:
    """Draws ``m`` direct samples with log-probabilities; returns them and the model's confidence."""
    params = task_params(ctx, "direct", temperature=temperature, seed=seed, max_tokens=None, logprobs=True)
    rounds = sample_rounds(ctx, ctx.prompt("direct"), span, params=params, n=m, round_size=m)
    confidence = _confidence(rounds)
    return rounds, confidence


def inner_params(item: MenuItem, seed: int | None) -> dict[str, Any]:
    """The menu item's parameters, with a seed the probe did not use: the same seed would
    redraw the probe's own samples."""
    params = dict(item.params)
    if seed is not None:
        params.setdefault("seed", seed + 1000)
    return params


def _confidence(rounds: Rounds) -> float | None:
    """Mean over probe samples of their mean token log-probability: the model's own,
    label-free sense of how sure it is (higher: easier)."""
    values = [c.logprob for c in rounds.candidates if c.logprob is not None]
    return statistics.fmean(values) if values else None


def load_policy(ctx: SolveContext, model_name: str | None = None) -> Policy | None:
    """The newest calibrated policy recorded for this task and policy model, or None."""
    if ctx.artifacts is None:
        return None
    attrs = ctx.artifacts.latest(CALIBRATION_KIND, task=ctx.task.name, model=model_name or ctx.policy.name)
    if not attrs or "policy" not in attrs:
        return None
    return Policy.model_validate(attrs["policy"])


def _prepare(ctx: SolveContext, params: dict[str, Any]) -> dict[str, Any]:
    """Finds the calibrated policy and the search model it names (objects, not recorded)."""
    extra: dict[str, Any] = {}
    policy = params.get("policy")
    if policy is None:
        policy = load_policy(ctx)
        extra["policy"] = policy
    if isinstance(policy, dict):
        policy = Policy.model_validate(policy)
    if policy is not None and policy.search_model and "search" not in ctx.models \
            and params.get("search_backend") is None:
        extra["search_backend"] = ctx.models.load(policy.search_model)
    return extra


@strategy("auto", roles={"search": "optional"}, prepare=_prepare)
def auto(
    ctx: SolveContext,
    *,
    policy: Policy | dict | None = None,
    search_backend: Backend | None = None,
    probe_samples: int | None = None,
    temperature: float = 0.7,
    seed: int | None = 0,
) -> Result:
    """Probes, bins the problem by difficulty, and runs the calibrated best strategy.

    Args:
        policy: Calibrated curves (default: the newest recorded for the task and model).
        search_backend: The search-trace model, for menu items that use it (default: the
            ``search`` role, else the model the policy names).
        probe_samples: Probe size (default: the policy's).
        temperature, seed: Of the probe.
    """
    task = ctx.task
    if policy is None:
        raise BadInputError(f"strategy 'auto' needs calibrated curves for task {getattr(task, 'name', task)!r}: "
                            "run `ttc bench auto` (or Orchestrator.calibrate) first")
    policy = Policy.model_validate(policy) if isinstance(policy, dict) else policy
    m = probe_samples or policy.probe
    with ctx.tracer.span("strategy", "auto", **{"ttc.probe": m}) as span:
        rounds, confidence = probe(ctx, span, m=m, temperature=temperature, seed=seed)
        if not rounds.candidates or any(c.verdict.correct is True for c in rounds.candidates):
            chosen = max(rounds.candidates, key=lambda c: c.verdict.score, default=None)
            if rounds.candidates:
                rounds.stop_reason = "verified"
            return finish("auto", rounds, chosen, span)
        bin_index = policy.bin_of(confidence if confidence is not None else float("-inf"))
        entry = policy.choose(bin_index, ctx.ledger.remaining_tokens())
        span.set(**{"ttc.confidence": confidence, "ttc.bin": bin_index,
                    "ttc.choice": entry.item.label if entry else None,
                    "ttc.expected_accuracy": entry.accuracy if entry else None})
        if entry is None:
            rounds.stop_reason = "budget"
            return finish("auto", rounds, max(rounds.candidates, key=lambda c: c.verdict.score), span)
        item = entry.item
        if item.model == "search":
            search = search_backend or ctx.models.get("search")
            if search is None:
                raise BadInputError(f"policy chose {item.label}, which needs a search model (--role search=MODEL)")
            inner_ctx = ctx.with_models(policy=search, search=search)
        else:
            inner_ctx = ctx
        inner = get_strategy(item.strategy)(inner_ctx, **inner_params(item, seed))
        # The probe's candidates stay in the pool: a verified answer among them all wins,
        # otherwise the inner strategy's own choice stands.
        pool = rounds.candidates + inner.candidates
        best = max(pool, key=lambda c: c.verdict.score)
        if best.verdict.score <= 0:
            best = next((c for c in inner.candidates if inner.answer is not None and c.answer == inner.answer), None)
        merged = Rounds(candidates=pool, usage=rounds.usage + inner.usage,
                        cost=rounds.cost + Cost(inner.flops, inner.paper_flops, inner.eflops),
                        stop_reason="budget" if inner.stop_reason == "no_budget" else inner.stop_reason,
                        rounds=rounds.rounds)
        return finish("auto", merged, best, span)
