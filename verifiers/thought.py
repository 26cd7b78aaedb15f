"""TrimR's thought verifiers: does a thought state an answer, and are two answers the same.

Neither ever checks an answer against the target or a reference (that would be an
oracle): they only read what the thought says.

- :class:`ExactThoughtVerifier`: a thought states an answer when the task verifier's
  ``canonical(problem, thought)`` is not None; two answers are equivalent when their
  canonical forms are equal. No validity check.
- :class:`JudgeThoughtVerifier`: a model (the ``judge`` role) asked two Yes/No questions
  per thought, batched into one ``call_model`` per question kind: P(Yes) from the chosen
  token's log-probability when the backend returns one, else the parsed reply. Its tokens
  are reserved, charged and traced like any other call. Unmeasured here: ttc ships no
  instruction model, so it is tested against scripted and fake endpoints only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ttc.backends.base import Backend
from ttc.backends.types import SamplingParams
from ttc.core.calls import call_model
from ttc.core.trimr import CheckContext

from .judge import read_yes_no

__all__ = ["ExactThoughtVerifier", "JudgeThoughtVerifier", "stated_prompt", "same_prompt"]


class ExactThoughtVerifier:
    """Canonical-form answers from a task verifier (``canonical(problem, text)``)."""

    def __init__(self, verifier):
        self.verifier = verifier

    def answers(self, problem: dict, thoughts: Sequence[str], ctx: CheckContext | None = None) -> list[str | None]:
        out: list[str | None] = []
        for t in thoughts:
            try:
                out.append(self.verifier.canonical(problem, t))
            except Exception:  # an unreadable thought states nothing
                out.append(None)
        return out

    def equivalent(self, problem: dict, pairs: Sequence[tuple[str, str]], ctx: CheckContext | None = None
                   ) -> list[bool]:
        return [a == b for a, b in pairs]


def _problem_text(problem: dict) -> str:
    shown = {k: v for k, v in problem.items() if k not in ("id", "answer", "reference", "solution")}
    return ", ".join(f"{k}: {v}" for k, v in shown.items())


def stated_prompt(problem: dict, thought: str) -> str:
    """The judge's first question: does this thought state a final answer?"""
    return ("You read one step of a model's reasoning about a problem.\n\n"
            f"Problem: {_problem_text(problem)}\n\nStep:\n{thought.strip()}\n\n"
            "Does this step state a complete final answer to the problem (right or wrong)? "
            "Reply with one word, Yes or No.\nAnswer:")


def same_prompt(problem: dict, a: str, b: str) -> str:
    """The judge's second question: do two steps state the same answer?"""
    return ("Two steps of a model's reasoning about one problem each state an answer.\n\n"
            f"Problem: {_problem_text(problem)}\n\nStep A:\n{a.strip()}\n\nStep B:\n{b.strip()}\n\n"
            "Do steps A and B state the same answer (equivalent, even if written differently)? "
            "Reply with one word, Yes or No.\nAnswer:")


class JudgeThoughtVerifier:
    """An instruction model as TrimR's verifier.

    ``answers`` returns the thought itself for a thought judged to state an answer, so
    that ``equivalent`` can show both thoughts to the judge.

    Args:
        backend: The judge model (the ``judge`` role).
        threshold: P(Yes) at or above which the answer is Yes.
        reply_tokens: Tokens of the reply read when the backend gives no log-probability.
    """

    def __init__(self, backend: Backend, *, threshold: float = 0.5, reply_tokens: int = 1):
        self.backend, self.threshold, self.reply_tokens = backend, threshold, reply_tokens

    def answers(self, problem: dict, thoughts: Sequence[str], ctx: CheckContext) -> list[str | None]:
        said = self._ask([stated_prompt(problem, t) for t in thoughts], ctx, "trimr judge: stated")
        return [t if s else None for t, s in zip(thoughts, said)]

    def equivalent(self, problem: dict, pairs: Sequence[tuple[str, str]], ctx: CheckContext) -> list[bool]:
        return self._ask([same_prompt(problem, a, b) for a, b in pairs], ctx, "trimr judge: same")

    def _ask(self, prompts: list[str], ctx: CheckContext, name: str) -> list[bool]:
        if not prompts:
            return []
        params = SamplingParams(max_tokens=self.reply_tokens, temperature=0.0, logprobs=True)
        call = call_model(self.backend, prompts, params, ctx.ledger, ctx.tracer, name=name)
        out: list[bool] = []
        for g in call.generations:
            c = g.completions[0]
            yes = read_yes_no(c.text, first_word=True)
            if yes is not None and c.logprobs:
                p = math.exp(min(0.0, c.logprobs[0]))
                out.append((p if yes else 1.0 - p) >= self.threshold)
            else:
                out.append(bool(yes))  # an unreadable reply (or no budget) says No
        return out + [False] * (len(prompts) - len(out))  # prompts the budget could not hold
