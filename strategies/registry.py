"""Registry from strategy name to strategy; every strategy has the same signature:

``strategy(task, problem, backend, verifier, ledger, tracer, **params) -> Result``
"""

from __future__ import annotations

from collections.abc import Callable

from ttc.backends.errors import BadInputError

from .auto import auto
from .best_of_n import best_of_n
from .majority_vote import majority_vote
from ttc.core.types import Result
from .sample import sample
from .sequential import sequential
from .tree_search import tree_search
from .weighted_vote import weighted_vote

__all__ = ["STRATEGIES", "get_strategy", "Strategy"]

Strategy = Callable[..., Result]

STRATEGIES: dict[str, Strategy] = {
    "sample": sample,
    "best_of_n": best_of_n,
    "majority_vote": majority_vote,
    "weighted_vote": weighted_vote,
    "sequential": sequential,
    "auto": auto,
    "tree_search": tree_search,
}


def get_strategy(name: str) -> Strategy:
    """The strategy registered as ``name``.

    Raises:
        BadInputError: Unknown name; the message lists the valid ones.
    """
    if name not in STRATEGIES:
        raise BadInputError(f"unknown strategy {name!r}; valid strategies: {', '.join(sorted(STRATEGIES))}")
    return STRATEGIES[name]
