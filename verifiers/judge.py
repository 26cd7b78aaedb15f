"""An LLM judge: scores a candidate against a rubric with a model, for tasks without an exact verifier.

The judge model is the solve context's ``judge`` role (``--role judge=MODEL``; Python:
``SolveContext.of(..., judge=backend)`` or ``ModelPool({"policy": ..., "judge": ...})``).
Every judge call goes through the context (``ctx.call``), so it is reserved against the
ledger before it is made, charged and traced like any other call; ``Verdict.usage`` then
records what the judge spent, and callers never charge it again. A call the budget cannot
hold is not made: the verdict says so (``correct=None``, score 0).

How a verdict is read (``method``):

- ``"logprobs"``: one greedy token with its log-probability. When it is Yes or No, the
  score is P(Yes): ``p`` when Yes was chosen, ``1 - p`` when No was (``p`` the chosen
  token's probability; ttc's backends return the chosen token's log-probability only, so
  the mass on neither answer is counted for the other one, the usual binary reading).
- ``"parse"``: a short greedy reply (``reply_tokens``), read for its first Yes or No;
  score 1.0 or 0.0.
- ``"auto"`` (default): the one-token call first; a backend that returns no
  log-probabilities still answers Yes or No in that token, which is read as a parsed
  reply; only a first token that is neither (a space, "The") costs a second, parsed call.

The judge scores, it does not decide: ``correct`` is None unless ``threshold`` is given
(then ``score >= threshold``). best_of_n then keeps the highest-scored candidate (its
early stop never fires on an undecided verdict) and weighted_vote sums the scores per
answer. Voting keys come from ``base`` (a cheap parser-verifier such as
:class:`~ttc.verifiers.math.MathVerifier`), else the whitespace-normalised text.

Example::

    judge = JudgeVerifier("The answer names the capital of the country asked about.")
    ctx = SolveContext.of(task, problem, policy_backend, verifier=judge, judge=judge_backend,
                          ledger=Ledger(Budget(tokens=4000)))
    result = get_strategy("best_of_n")(ctx, n=8, early_stop=False)
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable

from ttc.backends.errors import BadInputError
from ttc.backends.types import SamplingParams, Usage
from ttc.core.types import Verdict

__all__ = ["JudgeVerifier", "judge_prompt", "read_yes_no"]

_YES_NO = re.compile(r"\b(yes|no)\b", re.IGNORECASE)
_METHODS = ("auto", "logprobs", "parse")


def judge_prompt(rubric: str, problem: str, candidate: str) -> str:
    """The judge's prompt: the problem, the candidate, the rubric, and a Yes/No question."""
    return (
        "You are grading a candidate answer to a problem against a rubric.\n\n"
        f"Problem:\n{problem.strip()}\n\n"
        f"Candidate answer:\n{candidate.strip()}\n\n"
        f"Rubric:\n{rubric.strip()}\n\n"
        "Does the candidate answer satisfy the rubric? Reply with one word, Yes or No.\n"
        "Answer:"
    )


def read_yes_no(text: str, *, first_word: bool = False) -> bool | None:
    """True for Yes, False for No, None when neither is found.

    Args:
        text: The judge's reply.
        first_word: Read only the first word (a one-token reply); else the first Yes or
            No anywhere in the reply.
    """
    m = _YES_NO.match(text.lstrip()) if first_word else _YES_NO.search(text)
    return None if m is None else m.group(1).lower() == "yes"


class JudgeVerifier:
    """Scores candidates against a rubric with the context's judge model.

    Args:
        rubric: What a good answer does, in words.
        base: A cheap verifier whose parsed answer and voting key are used (never its
            correctness); None: the candidate text itself.
        method: "auto", "logprobs" or "parse" (see the module docstring).
        role: The model role to judge with.
        fallback: A role used when ``role`` has no model (None: the judge role is required).
        threshold: When given, ``correct = score >= threshold``; else ``correct`` is None.
        reply_tokens: Token limit of a parsed reply.
        describe: Renders a problem for the prompt (default: the task's prompt for it,
            else the problem as JSON without its id).
        max_candidate_chars: Longer candidates are cut (from the front) to this length.

    Raises:
        BadInputError: An unknown method, an empty rubric, or a threshold outside [0, 1].
    """

    def __init__(self, rubric: str, *, base=None, method: str = "auto", role: str = "judge",
                 fallback: str | None = None, threshold: float | None = None, reply_tokens: int = 16,
                 describe: Callable[[dict], str] | None = None, max_candidate_chars: int = 8000):
        if not isinstance(rubric, str) or not rubric.strip():
            raise BadInputError("a judge needs a rubric (what a good answer does, in words)")
        if method not in _METHODS:
            raise BadInputError(f"unknown judge method {method!r}; valid methods: {', '.join(_METHODS)}")
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise BadInputError(f"judge threshold must be in [0, 1], got {threshold}")
        if reply_tokens < 1 or max_candidate_chars < 1:
            raise BadInputError("reply_tokens and max_candidate_chars must be at least 1")
        self.rubric, self.base, self.method, self.role, self.fallback = rubric, base, method, role, fallback
        self.threshold, self.reply_tokens, self.describe = threshold, reply_tokens, describe
        self.max_candidate_chars = max_candidate_chars

    # ------------------------------------------------------------------ prompt

    def problem_text(self, problem: dict, ctx=None) -> str:
        """How the problem reads in the judge's prompt."""
        if self.describe is not None:
            return self.describe(problem)
        task = getattr(ctx, "task", None)
        if task is not None:
            try:
                return task.prompt(problem)
            except Exception:  # noqa: BLE001, S110 - a task that cannot render it: fall back to JSON
                pass
        return json.dumps({k: v for k, v in problem.items() if k != "id"}, ensure_ascii=False, default=str)

    def prompt(self, problem: dict, text: str, ctx=None) -> str:
        """The judge's prompt for candidate ``text``."""
        return judge_prompt(self.rubric, self.problem_text(problem, ctx), text[-self.max_candidate_chars:])

    # ------------------------------------------------------------------ verifier protocol

    def verify(self, problem: dict, text: str, ctx=None) -> Verdict:
        """Asks the judge model; see the module docstring for how the score is read.

        Raises:
            BadInputError: No solve context (the judge's model comes from it) or no model
                for the judge role.
        """
        if ctx is None:
            raise BadInputError("the LLM judge needs a solve context: its model is the context's "
                                f"{self.role!r} role and its calls are charged to the context's ledger")
        backend = ctx.models.get(self.role, fallback=self.fallback)
        if backend is None:
            raise BadInputError(f"the LLM judge needs a model for role {self.role!r}: give one with "
                                f"--role {self.role}=MODEL (Python: {self.role}=backend)")
        answer = self._answer(problem, text)
        prompt = self.prompt(problem, text, ctx)
        spent = Usage()
        if self.method in ("auto", "logprobs"):
            call = ctx.call(backend, [prompt], SamplingParams(max_tokens=1, temperature=0.0, logprobs=True),
                            name="judge")
            if not call.generations:
                return self._no_budget(answer)
            spent = spent + call.usage
            comp = call.generations[0].completions[0]
            said = read_yes_no(comp.text, first_word=True)
            if said is not None and comp.logprobs:
                p = math.exp(min(0.0, comp.logprobs[0]))
                score = p if said else 1.0 - p
                return self._verdict(score, f"judge: {'Yes' if said else 'No'} (p={p:.3f})", answer, spent)
            if said is not None:  # the backend returned no log-probabilities: the word itself
                return self._verdict(1.0 if said else 0.0, f"judge: {'Yes' if said else 'No'} (no logprobs)",
                                     answer, spent)
            if self.method == "logprobs":
                return Verdict(correct=None, score=0.0, reason=f"judge: first token {comp.text!r} is not Yes/No",
                               answer=answer, usage=spent)
        call = ctx.call(backend, [prompt], SamplingParams(max_tokens=self.reply_tokens, temperature=0.0),
                        name="judge reply")
        if not call.generations:
            return self._no_budget(answer, spent)
        spent = spent + call.usage
        reply = call.generations[0].completions[0].text
        said = read_yes_no(reply)
        if said is None:
            return Verdict(correct=None, score=0.0, reason=f"judge: no Yes/No in reply {reply.strip()[:60]!r}",
                           answer=answer, usage=spent)
        return self._verdict(1.0 if said else 0.0, f"judge: {'Yes' if said else 'No'} (parsed reply)", answer, spent)

    def canonical(self, problem: dict, text: str) -> str | None:
        """The base verifier's voting key, else the whitespace-normalised text (None when empty)."""
        if self.base is not None:
            return self.base.canonical(problem, text)
        key = " ".join(text.split())
        return key or None

    # ------------------------------------------------------------------ helpers

    def _answer(self, problem: dict, text: str) -> str | None:
        if self.base is not None:
            return self.base.verify(problem, text).answer
        return text.strip() or None

    def _verdict(self, score: float, reason: str, answer: str | None, usage: Usage) -> Verdict:
        correct = None if self.threshold is None else score >= self.threshold
        return Verdict(correct=correct, score=score, reason=reason, answer=answer, usage=usage)

    @staticmethod
    def _no_budget(answer: str | None, usage: Usage | None = None) -> Verdict:
        return Verdict(correct=None, score=0.0, reason="judge: the budget cannot hold the judge's call",
                       answer=answer, usage=usage or Usage())
