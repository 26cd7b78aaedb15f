"""How a solve turns ``TrimR(...)`` into a running session: the thought verifier and the
policy model's thought format (markers, conclusion marker, conclusion prompts).

Formats are known per built-in model family: the reflective CountDown model's come from
``tasks/countdown/reflective.py``; the search-trace model writes one node per line and
concludes with ``A:``; any other model gets the paper's reflection markers and plain
conclusion prompts. Fields set on the ``TrimR`` object always win.
"""

from __future__ import annotations

from typing import Any

from ttc.backends.errors import BadInputError
from ttc.core.budget import Ledger
from ttc.core.cost import Cost
from ttc.core.contracts import ModelPool
from ttc.core.tracing import Tracer
from ttc.core.trimr import DEFAULT_MARKERS, TrimR, TrimRSession

__all__ = ["TRIMR_PARAM", "add_verifier_spend", "check_trimr", "trimr_format", "trimr_session", "thought_verifier"]

#: Key under which an eval passes its TrimR to ``_run_strategy`` among the object parameters
#: (not a strategy parameter: popped before the strategy sees them).
TRIMR_PARAM = "__ttc_trimr__"

#: Conclusion prompts for a model with no format of its own (R1-style wording).
GENERIC = {"markers": DEFAULT_MARKERS, "per_line": False, "conclude": None,
           "mild_prompt": "\nI have checked this enough. Final answer:",
           "firm_prompt": "\nI must stop thinking now and give my best answer. Final answer:"}
SEARCH = {"markers": (), "per_line": True, "conclude": "A:", "mild_prompt": "A:", "firm_prompt": "A:"}


def reflective_format() -> dict[str, Any] | None:
    """The reflective CountDown format (helper A's constants), or None before it exists."""
    try:
        from ttc.tasks.countdown import reflective as r
    except ImportError:
        return None
    return {"markers": tuple(r.MARKERS), "per_line": True, "conclude": r.CONCLUDE,
            "mild_prompt": r.MILD_PROMPT, "firm_prompt": r.FIRM_PROMPT}


def trimr_format(model_name: str) -> dict[str, Any]:
    """Thought-format fields for a model, by its (built-in) name."""
    name = model_name.rsplit("/", 1)[-1]
    if "reflective" in name:
        fmt = reflective_format()
        if fmt is not None:
            return fmt
    if name.endswith("-search") or name.endswith("search"):
        return dict(SEARCH)
    return dict(GENERIC)


def check_trimr(trimr: TrimR | None, pool: ModelPool) -> None:
    """Bad input found before any work: a judge verifier with no judge model."""
    if trimr is None:
        return
    if not isinstance(trimr, TrimR):
        raise BadInputError(f"trimr= takes a TrimR(...), got {type(trimr).__name__}")
    if trimr.verifier == "judge" and "judge" not in pool:
        raise BadInputError("TrimR's judge verifier needs a judge model: --role judge=MODEL "
                            "(Python: models={'judge': ...})")
    if isinstance(trimr.verifier, str) and trimr.verifier not in ("exact", "judge"):
        raise BadInputError(f"unknown TrimR verifier {trimr.verifier!r}: use exact or judge")


def thought_verifier(trimr: TrimR, task_obj: Any, pool: ModelPool | None = None):
    """The thought verifier ``trimr`` names."""
    from ttc.verifiers.thought import ExactThoughtVerifier, JudgeThoughtVerifier

    if trimr.verifier == "exact":
        return ExactThoughtVerifier(task_obj.verifier)
    if trimr.verifier == "judge":
        if pool is None:
            raise BadInputError("TrimR's judge verifier needs a model pool with a judge")
        return JudgeThoughtVerifier(pool["judge"])
    return trimr.verifier


def trimr_session(trimr: TrimR, task_obj: Any, problem: dict, pool: ModelPool, ledger: Ledger,
                  tracer: Tracer) -> TrimRSession:
    """A TrimR session for one solve of ``problem`` with ``pool``'s policy model."""
    cfg = trimr.with_format(**trimr_format(pool.policy.name))
    return TrimRSession(cfg, thought_verifier(trimr, task_obj, pool), problem, ledger, tracer, pool.policy)


def add_verifier_spend(result: Any, session: TrimRSession) -> None:
    """Adds what the thought verifier's checks spent to ``result`` (a strategy sums only its own calls)."""
    usage, cost = session.verifier_usage()
    if not usage.calls and not usage.total_tokens:
        return
    result.usage = result.usage + usage
    result.tokens = result.usage.total_tokens
    total = Cost(result.flops, result.paper_flops, result.eflops) + cost
    result.flops, result.paper_flops, result.eflops = total.flops, total.paper_flops, total.eflops
