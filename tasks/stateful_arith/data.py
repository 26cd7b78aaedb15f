"""Training data of the ``stateful-arith`` model (used by ``tasks.training`` when
``TrainConfig.task == "stateful-arith"``): fresh "train"-split contexts, never a fixed file."""

from __future__ import annotations

import random
from collections.abc import Iterator

from .formats import training_example
from .generate import KINDS, make_context, make_queries, split_of

__all__ = ["DEFAULT_MIX", "data_description", "example_stream"]

#: Formats of the shipped model: (a) derivation, (b) notes, (c) answer from notes.
DEFAULT_MIX = {"derive": 0.4, "notes": 0.2, "with_notes": 0.4}


def example_stream(cfg, seed: int) -> Iterator[tuple[str, str]]:
    """Endless (prompt, completion) pairs: one per fresh "train" context, formats mixed by
    ``cfg.mix`` ("derive", "notes", "with_notes"), query kinds a third each."""
    rng = random.Random(f"arith-mix/{seed}")
    mix = cfg.mix if set(cfg.mix) <= set(DEFAULT_MIX) else DEFAULT_MIX
    fmts, fw = zip(*mix.items())
    i = 0
    while True:
        ctx = make_context(rng)
        i += 1
        if split_of(ctx) != "train":
            continue
        fmt = rng.choices(fmts, fw)[0]
        queries = make_queries(ctx, 3, f"train/{seed}/{i}")
        if not queries:
            continue
        want = rng.choice(KINDS)
        query = next((q for k, q in queries if k == want), queries[0][1])
        yield training_example(ctx, query, fmt)


def data_description(cfg) -> str:
    """One line for the model card."""
    mix = cfg.mix if set(cfg.mix) <= set(DEFAULT_MIX) else DEFAULT_MIX
    names = {"derive": "(a) derivation", "notes": "(b) notes", "with_notes": "(c) answer from notes"}
    fm = ", ".join(f"{names[k]} {v:.0%}" for k, v in mix.items())
    return ("freshly generated stateful-arith 'train' split (contexts of 5-15 quantities over + - *, values "
            f"0..99, CRC-32 of the context not 0 mod 10); one query per context, kinds defined / combination / "
            f"counterfactual a third each; formats: {fm}")
