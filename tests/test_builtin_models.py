"""The shipped checkpoints: they load like any Hugging Face checkpoint and solve real problems.

These run the real trained models (a few problems each, one thread), so they also guard
against a checkpoint, tokenizer or format drifting apart from the code that serves it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ttc.tasks.registry import builtin_models, find_builtin, get_task

EXPECTED = {"countdown-direct", "countdown-direct-small", "countdown-reflective", "countdown-search", "stateful-arith",
            "sudoku-direct", "sudoku-search"}


@pytest.fixture(autouse=True)
def _one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def shipped() -> list[str]:
    return sorted(m.name for m in builtin_models())


def test_expected_models_are_shipped():
    assert EXPECTED <= set(shipped())


@pytest.mark.parametrize("name", shipped())
def test_checkpoint_loads_with_auto_classes_and_has_a_card(name):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    m = find_builtin(name)
    card = json.loads((Path(m.path) / "card.json").read_text())
    assert {"name", "task", "kind", "params", "config", "data", "train_minutes", "results"} <= set(card)
    # At most 60 minutes of training here (the limit); the wall-clock schedule
    # ends on the first optimizer step past its time, a second or so late.
    assert card["train_minutes"] <= 60.05
    model = AutoModelForCausalLM.from_pretrained(m.path)
    tok = AutoTokenizer.from_pretrained(m.path)
    assert sum(p.numel() for p in model.parameters()) == card["params"]
    # The saved character tokenizer survives AutoTokenizer: spaces and newlines are tokens.
    text = "12 34\n5"
    assert tok.decode(tok(text).input_ids, skip_special_tokens=True) == text
    assert len(tok(text).input_ids) == len(text) + 1


@pytest.mark.parametrize("task_name", ["countdown", "sudoku"])
def test_direct_model_best_of_n_solves_held_out_problems(task_name):
    """Best-of-16 with the exact verifier on easy held-out problems: a trained model solves some."""
    from ttc.backends import TransformersBackend
    from ttc.core import Budget, Ledger
    from ttc.core.contracts import SolveContext
    from ttc.strategies import get_strategy

    task = get_task(task_name)
    kwargs = {"n_numbers": 3} if task_name == "countdown" else {}
    problems = task.make_problems(6, seed=0, split="test", **kwargs)
    backend = TransformersBackend(find_builtin(task.default_model).path, device="cpu")
    solved = 0
    for p in problems:
        ledger = Ledger(Budget(tokens=4000))
        r = get_strategy("best_of_n")(SolveContext.of(task, p, backend, ledger=ledger), n=16)
        assert ledger.spent.tokens <= 4000 and r.tokens == ledger.spent.tokens
        solved += bool(r.correct)
    assert solved >= 1


@pytest.mark.parametrize("task_name", ["countdown", "sudoku"])
def test_search_model_writes_traces_that_end_in_an_answer(task_name):
    """The search models write traces in their format: within the budget, ending in an
    ``A:`` answer unless cut short; the Sudoku one solves held-out puzzles (see its card)."""
    from ttc.backends import TransformersBackend
    from ttc.core import Budget, Ledger
    from ttc.core.contracts import SolveContext
    from ttc.strategies import get_strategy

    task = get_task(task_name)
    kwargs = {"n_numbers": 3} if task_name == "countdown" else {}
    problems = task.make_problems(4, seed=0, split="test", **kwargs)
    backend = TransformersBackend(find_builtin(f"{task_name}-search").path, device="cpu")
    solved = 0
    for p in problems:
        r = get_strategy("sequential")(SolveContext.of(task, p, backend, ledger=Ledger(Budget(tokens=1100))))
        assert r.tokens <= 1100 and len(r.candidates) == 1
        c = r.candidates[0]
        assert "A:" in c.text or c.finish_reason == "length"
        assert c.verdict is not None and c.verdict.correct is not None
        solved += bool(r.correct)
    if task_name == "sudoku":
        assert solved >= 1


def test_every_recipe_fits_the_sixty_minute_limit_across_its_stages():
    from ttc.tasks.training import RECIPES

    for name, cfg in RECIPES.items():
        minutes = [stage.minutes for stage in cfg.stages()]
        assert None not in minutes, name
        assert sum(minutes) <= 60.0, (name, minutes)
