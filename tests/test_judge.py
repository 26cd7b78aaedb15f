"""The LLM judge: Yes/No probabilities when the backend returns log-probabilities, a parsed
reply otherwise; its model comes from the ``judge`` role and its calls are reserved against
the ledger before they are made. Scripted backends only (control flow)."""

from __future__ import annotations

import math

import pytest
from ttc.backends import BadInputError, ScriptedBackend
from ttc.backends.types import Completion
from ttc.core import Budget, Ledger
from ttc.core.contracts import ModelPool, SolveContext
from ttc.strategies import get_strategy
from ttc.verifiers import JudgeVerifier
from ttc.verifiers.judge import judge_prompt, read_yes_no


class QATask:
    name, formats, stop, default_model = "qa", ("direct",), ("\n",), None

    def prompt(self, problem, fmt="direct"):
        return f"Q: {problem['q']}\nA:"

    def max_tokens(self, problem=None, fmt="direct"):
        return 16


PROBLEM = {"id": "fr", "q": "What is the capital of France?"}
RUBRIC = "The answer names Paris."


class WordJudge(ScriptedBackend):
    """A judge whose generated tokens are words (prompt tokens stay characters):
    ``verdicts[candidate]`` is its reply (first word Yes/No),
    ``probs[candidate]`` that word's probability (log-probabilities only when given)."""

    def __init__(self, verdicts, probs=None, reply=None):
        self.verdicts, self.probs, self.reply = verdicts, probs, reply
        self.held_during_call: list[int | None] = []
        self.ledger: Ledger | None = None
        super().__init__(lambda prompt, i, params: "")

    def _candidate(self, prompt):
        return prompt.split("Candidate answer:\n", 1)[1].split("\n\nRubric:", 1)[0]

    def _complete(self, prompt, i, params):
        if self.ledger is not None:  # what the ledger holds while the call runs
            self.held_during_call.append(self.ledger.remaining_tokens())
        cand = self._candidate(prompt)
        words = ((self.reply or {}).get(cand) or self.verdicts[cand]).split()[: params.max_tokens]
        lps = None
        if params.logprobs and self.probs is not None:
            lps = [math.log(self.probs[cand])] + [0.0] * (len(words) - 1)
        return Completion(text=" ".join(words), completion_tokens=len(words), finish_reason="stop", logprobs=lps)


def ctx_with(judge, policy=None, budget=None, verifier=None):
    ledger = Ledger(budget)
    judge.ledger = ledger
    roles = {"policy": policy or ScriptedBackend(["Paris"]), "judge": judge}
    return SolveContext(task=QATask(), problem=PROBLEM, verifier=verifier or JudgeVerifier(RUBRIC), ledger=ledger,
                        models=ModelPool(roles))


def test_read_yes_no():
    assert read_yes_no("Yes") is True and read_yes_no(" no.") is False
    assert read_yes_no("Now then", first_word=True) is None and read_yes_no("The answer: No, it is not") is False
    assert read_yes_no("maybe") is None


def test_prompt_holds_the_problem_the_candidate_and_the_rubric():
    text = judge_prompt(RUBRIC, "Q: capital?", "Lyon")
    assert "Q: capital?" in text and "Candidate answer:\nLyon" in text and RUBRIC in text
    assert text.rstrip().endswith("Answer:")
    judge = JudgeVerifier(RUBRIC, describe=lambda p: "PROBLEM " + p["q"], max_candidate_chars=4)
    assert "PROBLEM What" in judge.prompt(PROBLEM, "It is Paris") and "Candidate answer:\naris\n" in judge.prompt(
        PROBLEM, "It is Paris")


def test_logprob_path_scores_p_yes_and_charges_one_reserved_token():
    judge = WordJudge({"Paris": "Yes", "Lyon": "No"}, probs={"Paris": 0.9, "Lyon": 0.8})
    ctx = ctx_with(judge, budget=Budget(tokens=10_000))
    v = ctx.verify("Paris")
    assert v.score == pytest.approx(0.9) and v.correct is None and "p=0.900" in v.reason
    v2 = ctx.verifier.verify(PROBLEM, "Lyon", ctx)
    assert v2.score == pytest.approx(0.2)  # P(Yes) = 1 - P(No)
    [(prompts, params)] = judge.calls[:1]
    assert params.max_tokens == 1 and params.logprobs and params.temperature == 0.0 and len(judge.calls) == 2
    # The call was reserved before it ran (the ledger held its worst case during it)...
    prompt_tokens = judge.count_tokens(prompts[0])
    assert judge.held_during_call[0] == 10_000 - prompt_tokens - 1
    # ...and charged: the verdict's usage is what the ledger spent.
    assert v.usage.prompt_tokens == prompt_tokens and v.usage.completion_tokens == 1
    assert ctx.ledger.spent.tokens == v.usage.total_tokens + v2.usage.total_tokens


def test_threshold_turns_the_score_into_a_decision():
    judge = WordJudge({"Paris": "Yes", "Lyon": "Yes"}, probs={"Paris": 0.9, "Lyon": 0.55})
    ctx = ctx_with(judge, verifier=JudgeVerifier(RUBRIC, threshold=0.6))
    assert ctx.verify("Paris").correct is True and ctx.verify("Lyon").correct is False


def test_parsed_path_without_logprobs():
    # One-word answers and no log-probabilities: the word itself, one call each.
    judge = WordJudge({"Paris": "Yes", "Lyon": "No"})
    ctx = ctx_with(judge)
    assert ctx.verify("Paris").score == 1.0 and ctx.verify("Lyon").score == 0.0
    assert len(judge.calls) == 2 and "no logprobs" in ctx.verify("Paris").reason
    # A first token that is neither: a second, longer call is read for its Yes or No.
    judge = WordJudge({"Paris": "Well, yes it does"})
    ctx = ctx_with(judge)
    v = ctx.verify("Paris")
    assert v.score == 1.0 and "parsed reply" in v.reason and [p.max_tokens for _, p in judge.calls] == [1, 16]
    assert ctx.ledger.spent.tokens == v.usage.total_tokens and v.usage.calls == 2
    # method="parse" asks for the reply straight away; one with no Yes/No decides nothing.
    judge = WordJudge({"Paris": "I cannot tell"})
    ctx = ctx_with(judge, verifier=JudgeVerifier(RUBRIC, method="parse"))
    v = ctx.verify("Paris")
    assert v.correct is None and v.score == 0.0 and "no Yes/No" in v.reason and len(judge.calls) == 1


def test_logprobs_method_does_not_fall_back():
    judge = WordJudge({"Paris": "Hmm yes"}, probs={"Paris": 0.5})
    ctx = ctx_with(judge, verifier=JudgeVerifier(RUBRIC, method="logprobs"))
    v = ctx.verify("Paris")
    assert v.correct is None and "not Yes/No" in v.reason and len(judge.calls) == 1


def test_a_call_the_budget_cannot_hold_is_not_made():
    judge = WordJudge({"Paris": "Yes"}, probs={"Paris": 0.9})
    ctx = ctx_with(judge, budget=Budget(tokens=10))
    v = ctx.verify("Paris")
    assert judge.calls == [] and ctx.ledger.spent.tokens == 0
    assert v.correct is None and v.score == 0.0 and "budget" in v.reason


def test_the_judge_role_is_required_and_needs_a_context():
    judge = JudgeVerifier(RUBRIC)
    with pytest.raises(BadInputError, match="solve context"):
        judge.verify(PROBLEM, "Paris")
    ctx = SolveContext(task=QATask(), problem=PROBLEM, verifier=judge, ledger=Ledger(),
                       models=ModelPool({"policy": WordJudge({"Paris": "Yes"})}))
    with pytest.raises(BadInputError, match="role 'judge'"):
        ctx.verify("Paris")
    fallback = JudgeVerifier(RUBRIC, fallback="policy")
    assert fallback.verify(PROBLEM, "Paris", ctx).score == 1.0
    for bad in ({"method": "vibes"}, {"threshold": 2.0}):
        with pytest.raises(BadInputError):
            JudgeVerifier(RUBRIC, **bad)
    with pytest.raises(BadInputError, match="rubric"):
        JudgeVerifier("  ")


def test_best_of_n_keeps_the_highest_judged_candidate_and_charges_the_judge():
    policy = ScriptedBackend(["Lyon", "Paris", "Nice", "Paris, France"])
    judge = WordJudge({"Lyon": "No", "Paris": "Yes", "Nice": "No", "Paris, France": "Yes"},
                      probs={"Lyon": 0.9, "Paris": 0.7, "Nice": 0.6, "Paris, France": 0.95})
    ctx = ctx_with(judge, policy=policy, budget=Budget(tokens=5000))
    result = get_strategy("best_of_n")(ctx, n=4)  # early stop never fires on an undecided verdict
    assert len(result.candidates) == 4 and result.answer == "Paris, France"
    assert len(judge.calls) == 4
    judged = sum(c.verdict.usage.total_tokens for c in result.candidates)
    assert judged > 0 and result.tokens == ctx.ledger.spent.tokens <= 5000


def test_weighted_vote_sums_judge_scores_per_answer():
    from ttc.verifiers import MathVerifier

    policy = ScriptedBackend(["The answer is 4.", "So 2+2 = 4", "It is 5", "5", "5!"])
    judge = WordJudge({"The answer is 4.": "Yes", "So 2+2 = 4": "Yes", "It is 5": "No", "5": "No", "5!": "Yes"},
                      probs={"The answer is 4.": 0.9, "So 2+2 = 4": 0.8, "It is 5": 0.9, "5": 0.9, "5!": 0.3})
    verifier = JudgeVerifier("The answer is the correct sum.", base=MathVerifier())
    ctx = ctx_with(judge, policy=policy, verifier=verifier)
    result = get_strategy("weighted_vote")(ctx, n=5)
    # "4": 0.9 + 0.8 = 1.7 against "5": 0.1 + 0.1 + 0.3 = 0.5 (three votes, less weight).
    assert result.answer == "4" and result.tokens == ctx.ledger.spent.tokens


def test_a_tight_budget_is_never_exceeded_with_a_judge():
    policy = ScriptedBackend(["Paris"])
    judge = WordJudge({"Paris": "Yes"}, probs={"Paris": 0.9})
    ctx = ctx_with(judge, policy=policy, budget=Budget(tokens=150))
    result = get_strategy("best_of_n")(ctx, n=8, early_stop=False)
    assert ctx.ledger.spent.tokens <= 150 and not ctx.ledger.overdrawn
    assert result.tokens == ctx.ledger.spent.tokens
    assert any("budget" in c.verdict.reason for c in result.candidates)  # the judge ran out before the samples
