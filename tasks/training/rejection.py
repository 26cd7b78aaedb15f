"""Rejection-sampling fine-tuning data: a model's own answers that the exact verifier accepts.

The expert-iteration step of STaR (Zelikman et al. 2022) and RFT (Yuan et al. 2023): sample
several answers per training problem, keep the distinct ones the verifier accepts, and
fine-tune on them. The kept answers are paths the model itself can compute, so training on
them moves sampling mass toward them; the solver's reference answers (mixed in by the
training loop) keep the model from narrowing to the problems it already solves.

Only "train" split problems are sampled, and every kept answer was written by the model and
checked by ``ttc.verifiers.countdown`` (no solver output enters this pool).
"""

from __future__ import annotations

import random
import time

from ttc.backends.types import SamplingParams
from ttc.verifiers.countdown import parse_answer

from ..countdown import COUNTDOWN
from ..countdown.formats import END, direct_completion
from ..countdown.generate import make_problems
from .measure import load_backend

__all__ = ["sample_verified"]


def sample_verified(
    model,
    *,
    n_problems: int,
    samples: int,
    temperature: float,
    n_numbers: dict[int, float],
    seed: int,
    max_per_problem: int = 4,
    chunk: int = 64,
) -> tuple[list[tuple[str, str]], dict]:
    """Samples ``samples`` direct answers for each of ``n_problems`` training problems.

    Args:
        model: A CountDown direct checkpoint directory, or a backend.
        n_problems: Training-split problems to sample (sizes drawn from ``n_numbers``).
        samples: Answers sampled per problem.
        temperature: Sampling temperature.
        n_numbers: Share of problem sizes, as in ``TrainConfig.n_numbers``.
        seed: Seeds the problems and the sampling.
        max_per_problem: At most this many distinct accepted answers kept per problem.
        chunk: Problems per generate call.

    Returns:
        ``(pairs, stats)``: (prompt, completion) pairs ready for training (completions end
        with the stop string) and counts for the model card.
    """
    rng = random.Random(seed)
    sizes, weights = zip(*n_numbers.items())
    problems: list[dict] = []
    batch = 0
    while len(problems) < n_problems:
        size = int(rng.choices(sizes, weights)[0])
        problems += make_problems(64, seed=seed * 7_919 + 1_000_003 + batch, split="train", n_numbers=size)
        batch += 1
    problems = problems[:n_problems]
    be = load_backend(model)
    start = time.time()
    pairs: list[tuple[str, str]] = []
    solved = sampled = 0
    for i in range(0, len(problems), chunk):
        part = problems[i : i + chunk]
        prompts = [COUNTDOWN.prompt(p) for p in part]
        gens = be.generate(prompts, SamplingParams(n=samples, max_tokens=96, temperature=temperature,
                                                   seed=seed + i, stop=COUNTDOWN.stop))
        for prob, prompt, gen in zip(part, prompts, gens):
            kept: list[str] = []
            for comp in gen.completions:
                sampled += 1
                text = comp.text.strip()
                if text in kept or not COUNTDOWN.verifier.verify(prob, comp.text).correct:
                    continue
                # The verifier reads only the steps; an answer whose "numbers left" notes
                # are wrong would teach bad copying, so only self-consistent ones are kept.
                parsed = parse_answer(text)
                if parsed and parsed.steps and direct_completion(parsed.steps, prob["numbers"]) == text + END:
                    kept.append(text)
            solved += bool(kept)
            pairs += [(prompt, text + END) for text in kept[:max_per_problem]]
    stats = {
        "problems": len(problems), "samples": sampled, "solved_problems": solved, "kept": len(pairs),
        "temperature": temperature, "minutes": round((time.time() - start) / 60, 2),
    }
    return pairs, stats
