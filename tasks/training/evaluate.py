"""Measures a built-in (or any ttc-trained) checkpoint the way its model card did.

``python -m ttc.tasks.training.evaluate PATH [LIMIT]`` prints the card's numbers as JSON
(``ttc models eval`` is the user-facing command).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from . import countdown_eval, sudoku_eval
from .measure import checkpoint_task

__all__ = ["evaluate_checkpoint"]


def evaluate_checkpoint(
    path: str | Path, problems: list[dict] | None = None, limit: int = 200, n_numbers: int = 4,
    temperature: float = 0.7, seed: int = 0, quick: bool = False,
) -> dict:
    """Reproduces a card's measurement (held-out "test" split, seed 0) or runs on given problems.

    Args:
        path: Checkpoint directory; its card.json (or train_state.json) names the task and kind.
        problems: Problems to measure on instead of the card's held-out split.
        limit: Problems to use at most.
        n_numbers: CountDown only: numbers per held-out problem.
        temperature: Sampling temperature of the sampled measurements.
        seed: Sampling seed.
        quick: Fewer samples per problem (pass@1 and pass@4 only), no greedy or hint runs.
    """
    if checkpoint_task(path) == "stateful-arith":
        from ..stateful_arith.evaluate import evaluate_checkpoint as evaluate_arith

        return evaluate_arith(path, problems=problems, limit=limit, temperature=temperature, seed=seed, quick=quick)
    if checkpoint_task(path) == "sudoku":
        return sudoku_eval.evaluate_checkpoint(path, problems=problems, limit=limit, temperature=temperature,
                                               seed=seed, quick=quick)
    return countdown_eval.evaluate_checkpoint(path, problems=problems, limit=limit, n_numbers=n_numbers,
                                              temperature=temperature, seed=seed, quick=quick)


if __name__ == "__main__":
    import torch

    torch.set_num_threads(1)
    print(json.dumps(evaluate_checkpoint(sys.argv[1], limit=int(sys.argv[2]) if len(sys.argv) > 2 else 200), indent=2))
