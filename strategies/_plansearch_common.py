"""What both PlanSearch paths share: one budgeted call that keeps the books, and how a
number of solutions is spread over plans."""

from __future__ import annotations

from collections.abc import Sequence

from ttc.backends.base import Backend
from ttc.backends.types import Completion, Generation, SamplingParams
from ttc.core.budget import Budget
from ttc.core.contracts import SolveContext
from ttc.core.tracing import Span

from ._rounds import Rounds, verify_candidates

__all__ = ["Books", "spread"]


class Books:
    """Every call of one PlanSearch run goes through here: charged to the context's ledger
    (``ctx.call``: reserved first, never past the budget) and summed into ``out``.

    Under a token budget, planning calls (observations, derivations, plans, critiques)
    go through a child ledger holding ``plan_share`` of the tokens left when the run
    starts, so that planning can never leave nothing for the solutions; every charge
    still lands in the context's ledger.

    Attributes:
        out: Candidates, usage and cost so far (``rounds`` counts calls made).
        cut: True once the budget refused a prompt (a stage ran short).
    """

    def __init__(self, ctx: SolveContext, span: Span, plan_share: float = 0.5):
        self.ctx, self.span = ctx, span
        left = ctx.ledger.remaining_tokens()
        self.plan_ctx = ctx if left is None else ctx.child(Budget(tokens=max(1, int(left * plan_share))))
        self.out = Rounds()
        self.cut = False

    def call(self, backend: Backend, prompts: Sequence[str], params: SamplingParams, name: str, *,
             planning: bool = False) -> list[Generation]:
        """Samples ``params.n`` completions of each prompt; generations of the prompts the
        budget admitted, in order (fewer than ``prompts`` when it ran out)."""
        if not prompts:
            return []
        call = (self.plan_ctx if planning else self.ctx).call(backend, list(prompts), params, name=name)
        if call.skipped:
            self.cut = True
        if call.generations:
            self.out.rounds += 1
            self.out.usage, self.out.cost = self.out.usage + call.usage, self.out.cost + call.cost
        return call.generations

    def verify(self, completions: list[Completion]) -> None:
        """Judges completions and keeps them as candidates (a judge charges the ledger itself)."""
        if not completions:
            return
        cands, spent = verify_candidates(self.ctx, completions, self.span)
        self.out.usage = self.out.usage + spent
        self.out.candidates.extend(cands)

    def stop_reason(self) -> None:
        """Sets ``out.stop_reason``: "budget" when a stage ran short, "no_budget" when no
        candidate could be sampled at all, else "done"."""
        if self.cut:
            self.out.stop_reason = "budget" if self.out.candidates else "no_budget"


def spread(total: int | None, n_plans: int, per_plan: int) -> list[int]:
    """Solutions per plan: ``per_plan`` each when ``total`` is None, else ``total`` spread
    as evenly as possible, earlier plans first (plans past ``total`` get none)."""
    if total is None:
        return [per_plan] * n_plans
    if n_plans == 0:
        return []
    base, extra = divmod(total, n_plans)
    return [base + (1 if i < extra else 0) for i in range(n_plans)]
