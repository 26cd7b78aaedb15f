"""``tree_search``: control flow with a scripted backend keyed on the prompt, CountDown's step
structure, and real-model runs on a tiny random-weight checkpoint under a token budget."""

from __future__ import annotations

import ast
import random
from pathlib import Path

import pytest
from recording import RecTracer

from ttc.backends import BadInputError, ScriptedBackend
from ttc.backends.types import Usage
from ttc.orchestrator import Orchestrator
from ttc.core import Budget, Ledger
from ttc.core.contracts import ModelPool, SolveContext
from ttc.strategies import STRATEGIES, get_strategy
from ttc.strategies.tree_search import StepStructure, tree_search
from ttc.tasks.countdown import COUNTDOWN
from ttc.tasks.countdown.steps import CountdownSteps
from ttc.core.types import Verdict

ROOT = Path(__file__).resolve().parents[1]
PROBLEM = {"id": "p", "numbers": [3, 5, 7], "target": 22}
P0 = "3 5 7>22:"  # the direct prompt of PROBLEM


class StepBackend(ScriptedBackend):
    """Next steps scripted per prompt (``table[prompt][i]``), each token with a log-probability.

    ``logprob`` maps a step's text to its per-token log-probability (default -1.0).
    """

    def __init__(self, table, logprob=None, default=None):
        self.table, self.lp, self.default = table, logprob or {}, default
        super().__init__(self._next)

    def _next(self, prompt, i, params):
        steps = self.table[prompt] if self.default is None else self.table.get(prompt, self.default)
        return steps[i % len(steps)]

    def _complete(self, prompt, i, params):
        c = super()._complete(prompt, i, params)
        if not params.logprobs:
            return c
        return c.model_copy(update={"logprobs": [self.lp.get(c.text, -1.0)] * c.completion_tokens})

    @property
    def prompts(self):
        return [p for ps, _ in self.calls for p in ps]


def search(task, problem, backend, budget=None, tracer=None, **params):
    ledger = Ledger(budget)
    result = tree_search(SolveContext.of(task, problem, backend, ledger=ledger, tracer=tracer), **params)
    return result, ledger


# ---------------------------------------------------------------- a toy task: spell a word letter by letter
# Its step check is weaker than its verifier (any lowercase letter is a legal step), so
# complete-but-wrong answers reach the verifier; the verifier spends tokens of its own.


class LetterSteps:
    delimiter, end, formats, step_tokens = ",", ".", ("direct",), 4

    def parse(self, partial_text):
        t = partial_text.rstrip(".").rstrip(",")
        return t.split(",") if t else []

    def dead_end(self, problem, partial_text):
        return any(len(s) != 1 or not s.islower() for s in self.parse(partial_text))

    def complete(self, text, problem=None):
        return text.endswith(".") or (problem is not None and len(self.parse(text)) == len(problem["word"]))

    def max_steps(self, problem):
        return len(problem["word"])


class SpellVerifier:
    def verify(self, problem, text, ctx=None):
        # Plays a judge that spends a token of prompt and one of output: like any judge it
        # reserves through the context's ledger before it "calls", and its usage is then
        # for the record only.
        usage = Usage(prompt_tokens=1, completion_tokens=1, calls=1)
        if ctx is not None:
            held = ctx.ledger.reserve(1, 1, 1)
            if held is None:
                return Verdict(correct=None, score=0.0, reason="no budget for the judge")
            ctx.ledger.settle(held, usage, samples=0)
        word = "".join(LetterSteps().parse(text))
        ok = word == problem["word"]
        return Verdict(correct=ok, score=float(ok), reason="", answer=word, usage=usage)

    def canonical(self, problem, text):
        return "".join(LetterSteps().parse(text))


class SpellTask:
    name = "spell"
    steps = LetterSteps()
    verifier = SpellVerifier()

    def prompt(self, problem, fmt="direct"):
        return f"spell {problem['word']}:"


SPELL = SpellTask()
LETTER_LP = {"a": -0.1, "b": -0.2, "c": -0.3}


# ---------------------------------------------------------------- control flow


def test_registered_and_step_structures_satisfy_the_protocol():
    assert STRATEGIES.get("tree_search").fn is tree_search and get_strategy("tree_search").fn is tree_search
    assert isinstance(COUNTDOWN.steps, StepStructure) and isinstance(SPELL.steps, StepStructure)


def test_dfs_backtracks_from_dead_ends_to_a_verified_answer():
    backend = StepBackend({
        P0: ["3+5=8,", "3*5=15,", "9+9=18,"],  # the third uses numbers that are not given
        P0 + "3+5=8,": ["8+7=15.", "8*7=56."],  # both leave one number that is not 22: dead
        P0 + "3*5=15,": ["15+7=22.", "15-7=8."],
    }, logprob={"3+5=8": -0.1, "3*5=15": -0.5, "15+7=22": -0.2, "15-7=8": -0.1})
    tracer = RecTracer()
    result, ledger = search(COUNTDOWN, PROBLEM, backend, tracer=tracer, k=3)
    # The best-scored child first, then back to its sibling; the dead child is never expanded.
    assert backend.prompts == [P0, P0 + "3+5=8,", P0 + "3*5=15,"]
    assert result.correct is True and result.stop_reason == "verified" and result.answer == "3*5=15,15+7=22"
    assert [c.text for c in result.candidates] == ["3*5=15,15+7=22."]  # only complete answers are verified
    assert result.candidates[0].tokens == len("3*5=15") + len("15+7=22")  # the scripted stop is not a token
    assert result.tokens == ledger.spent.tokens == result.usage.total_tokens
    params = backend.calls[0][1]
    assert params.n == 3 and params.stop == (",", ".") and params.logprobs and params.temperature == 0.7
    assert [p.seed for _, p in backend.calls] == [0, 1, 2]  # expansions differ and repeat
    strategy = tracer.kinds("strategy")
    assert len(strategy) == 1 and strategy[0].name == "tree_search"
    assert len(tracer.kinds("llm")) == 3 and len(tracer.kinds("verifier")) == 1
    attrs = strategy[0].attrs
    assert attrs["ttc.expansions"] == 3 and attrs["ttc.pruned"] == 4 and attrs["ttc.stop_reason"] == "verified"
    assert [c["correct"] for c in strategy[0].candidates] == [True]


def test_dfs_expands_the_best_scored_child_first():
    table = {P0: ["3+5=8,", "3*5=15,"], P0 + "3+5=8,": ["8+7=15."], P0 + "3*5=15,": ["15+7=22."]}
    backend = StepBackend(table, logprob={"3+5=8": -2.0, "3*5=15": -0.3})
    result, _ = search(COUNTDOWN, PROBLEM, backend, k=2)
    assert backend.prompts == [P0, P0 + "3*5=15,"] and result.correct is True


def test_dfs_backtracks_from_complete_but_wrong_answers():
    problem = {"id": "w", "word": "ba"}
    p = "spell ba:"
    backend = StepBackend({p: ["a,", "b,"], p + "a,": ["a.", "c."], p + "b,": ["a."]}, logprob=LETTER_LP)
    tracer = RecTracer()
    result, ledger = search(SPELL, problem, backend, tracer=tracer, k=2)
    assert backend.prompts == [p, p + "a,", p + "b,"]
    verdicts = [(c.text, c.verdict.correct) for c in result.candidates]
    assert verdicts == [("a,a.", False), ("a,c.", False), ("b,a.", True)]
    assert result.stop_reason == "verified" and result.answer == "ba"
    # The verifier's own tokens are charged: 2 per verdict.
    assert result.tokens == ledger.spent.tokens == sum(len(ps[0]) for ps, _ in backend.calls) + 3 * 2 + 3 * 2
    assert len(tracer.kinds("verifier")) == 2


def test_beam_keeps_the_best_states_per_depth_in_one_call():
    backend = StepBackend({
        P0: ["3+7=10,", "3*5=15,", "5+7=12,"],
        P0 + "3*5=15,": ["15-7=8."],
        P0 + "5+7=12,": ["12+3=15.", "3+12=15."],
        P0 + "3+7=10,": ["10+5=15."],
    }, logprob={"3+7=10": -2.0, "3*5=15": -0.5, "5+7=12": -0.4})
    result, _ = search(COUNTDOWN, PROBLEM, backend, k=3, method="beam", beam_width=2, restarts=0)
    # Depth 1 keeps the two best of three; both are expanded together, the best first.
    assert [ps for ps, _ in backend.calls] == [[P0], [P0 + "5+7=12,", P0 + "3*5=15,"]]
    assert result.stop_reason == "done" and result.answer is None and result.candidates == []


def test_beam_ranks_the_children_of_all_parents_together():
    problem = {"id": "w", "word": "cab"}
    p = "spell cab:"
    table = {
        p: ["c,", "b,", "a,"],  # path scores: a -0.1, c -0.2, b -1.0: keep a, c
        p + "a,": ["b,"],  # a,b -0.55
        p + "c,": ["a,", "c,"],  # c,a -0.15, c,c -0.2: both beat a,b
        p + "c,a,": ["b."],
        p + "c,c,": ["c."],
    }
    backend = StepBackend(table, logprob={"a": -0.1, "b": -1.0, "c": -0.2})
    result, _ = search(SPELL, problem, backend, k=3, method="beam", beam_width=2)
    assert [ps for ps, _ in backend.calls] == [[p], [p + "a,", p + "c,"], [p + "c,a,", p + "c,c,"]]
    # Complete answers of one depth are verified together, best path first.
    assert [(c.text, c.verdict.correct) for c in result.candidates] == [("c,c,c.", False), ("c,a,b.", True)]
    assert result.correct is True and result.answer == "cab" and result.stop_reason == "verified"


def test_budget_runs_out_and_returns_the_best_complete_answer_so_far():
    problem = {"id": "z", "word": "zz"}  # the model only writes a, b, c: nothing verifies
    backend = StepBackend({}, logprob=LETTER_LP, default=["a,", "b,", "c,"])
    result, ledger = search(SPELL, problem, backend, budget=Budget(tokens=50), k=3)
    assert result.stop_reason == "budget" and ledger.spent.tokens <= 50 and not ledger.overdrawn
    assert result.tokens == ledger.spent.tokens
    assert len(result.candidates) >= 3 and all(c.verdict.correct is False for c in result.candidates)
    assert result.answer == "aa" and result.correct is False  # highest path score among complete answers


@pytest.mark.parametrize("method", ["dfs", "beam"])
def test_budget_bounds_both_methods(method):
    backend = StepBackend({}, logprob=LETTER_LP, default=["a,", "b,", "c,"])
    for tokens in (30, 45, 60, 90, 200):
        result, ledger = search(SPELL, {"id": "z", "word": "zzz"}, backend, budget=Budget(tokens=tokens), k=3,
                                method=method)
        assert ledger.spent.tokens <= tokens and not ledger.overdrawn and result.tokens == ledger.spent.tokens
        assert result.stop_reason in ("budget", "done")


def test_no_budget_for_one_expansion_spends_nothing():
    backend = StepBackend({P0: ["3*5=15,"]})
    result, ledger = search(COUNTDOWN, PROBLEM, backend, budget=Budget(tokens=5))
    assert result.stop_reason == "no_budget" and result.answer is None and result.candidates == []
    assert ledger.spent.tokens == 0 and backend.calls == []


def test_identical_steps_are_expanded_once():
    backend = StepBackend({P0: ["3*5=15,", "3*5=15,", "3+5=8,"], P0 + "3*5=15,": ["15+7=22."],
                           P0 + "3+5=8,": ["8+7=15."]})
    tracer = RecTracer()
    result, _ = search(COUNTDOWN, PROBLEM, backend, tracer=tracer, k=3)
    assert backend.prompts == [P0, P0 + "3*5=15,"]  # the repeated step is one child
    # 1 duplicate at the root, 2 among the three identical samples of the second expansion
    assert result.correct is True and tracer.kinds("strategy")[0].attrs["ttc.duplicates"] == 3


def test_unlimited_budget_stops_when_the_tree_is_exhausted_or_capped():
    backend = StepBackend({}, logprob=LETTER_LP, default=["a,", "b,"])
    result, _ = search(SPELL, {"id": "z", "word": "zzz"}, backend, k=2, restarts=0)
    assert result.stop_reason == "done" and len(backend.calls) == 1 + 2 + 4 and len(result.candidates) == 8
    result, _ = search(SPELL, {"id": "z", "word": "zzz"}, backend, k=2, max_expansions=3)
    assert result.stop_reason == "done" and [c.answer for c in result.candidates] == ["aaa", "aab"]


def test_steps_cut_at_the_token_limit_are_dropped():
    backend = StepBackend({P0: ["3*5=15,", "3*5=1555555555555555"], P0 + "3*5=15,": ["15+7=22."]})
    tracer = RecTracer()
    search(COUNTDOWN, PROBLEM, backend, tracer=tracer, k=2, max_tokens_per_step=10)
    assert tracer.kinds("strategy")[0].attrs["ttc.truncated"] == 1
    assert backend.calls[0][1].max_tokens == 10


def test_bad_input():
    class NoSteps:
        name = "plain"

    with pytest.raises(BadInputError, match="task plain does not support tree_search"):
        tree_search(SolveContext(task=NoSteps(), problem={}, verifier=None, ledger=Ledger(), models=ModelPool({"policy": ScriptedBackend(["x"])})))
    for params, msg in (({"method": "bfs"}, "valid methods"), ({"k": 0}, "k must be"),
                        ({"fmt": "search"}, "needs a step format")):
        with pytest.raises(BadInputError, match=msg):
            search(COUNTDOWN, PROBLEM, ScriptedBackend(["x"]), **params)


def test_solve_through_the_orchestrator_records_spans(sqlite_url):
    backend = StepBackend({P0: ["3+5=8,", "3*5=15,"], P0 + "3+5=8,": ["8+7=15."], P0 + "3*5=15,": ["15+7=22."]})
    with Orchestrator(db=sqlite_url) as orc:
        result = orc.solve("countdown", PROBLEM, strategy="tree_search", model=backend, k=2, method="dfs")
        detail = orc.get_run(result.trace_id)
    assert result.correct is True
    kinds = [s.kind for s in detail.spans]
    assert kinds.count("strategy") == 1 and kinds.count("llm") == 3 and kinds.count("verifier") == 1
    assert [c.correct for c in detail.candidates] == [True]


# ---------------------------------------------------------------- honesty: no solver


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            names |= {f"{node.module or ''}:{a.name}" for a in node.names}
    return names


def test_the_solver_is_never_imported_nor_called(monkeypatch):
    for path in (ROOT / "strategies/tree_search.py", ROOT / "tasks/countdown/steps.py"):
        assert not any("solver" in name or "solve" in name.split(":")[-1] for name in _imports(path)), path
    import ttc.tasks.countdown as cd
    import ttc.tasks.countdown.solver as solver

    def forbidden(*a, **k):
        raise AssertionError("a strategy called the exact solver")

    for mod in (solver, cd):
        for fn in ("solve", "solvable", "moves"):
            if hasattr(mod, fn):
                monkeypatch.setattr(mod, fn, forbidden)
    backend = StepBackend({P0: ["3+5=8,", "3*5=15,"], P0 + "3+5=8,": ["8+7=15."], P0 + "3*5=15,": ["15+7=22."]})
    assert search(COUNTDOWN, PROBLEM, backend, k=2)[0].correct is True


# ---------------------------------------------------------------- CountDown's step structure


def test_countdown_steps_parse_and_check_constraints():
    s = CountdownSteps()
    assert s.parse("3*5=15,15+7=22.") == ["3*5=15", "15+7=22"] and s.parse("3*5=15,") == ["3*5=15"]
    assert s.parse("") == []
    ok = {"id": "q", "numbers": [18, 49, 35, 17], "target": 25}
    assert not s.dead_end(ok, "18+17=35") and not s.dead_end(ok, "18+17=35,35*35=1225")
    assert not s.dead_end(ok, "18+17=35:49 35 35,35*35=1225:49 1225,1225/49=25")  # remaining numbers ignored
    assert s.complete("18+17=35,35*35=1225,1225/49=25.") and not s.complete("18+17=35")
    assert s.complete("18+17=35,35*35=1225,1225/49=25", ok) and not s.complete("18+17=35", ok)
    for bad in ("18+18=36",  # 18 used twice
                "18+2=20",  # 2 is not given
                "18+17=36",  # wrong arithmetic
                "49/17=2",  # not an exact division
                "17-18=1", "35-35=0",  # not positive (35 is given once: also a reuse)
                "18+17=35,35*35=1225,1225-49=1176",  # one number left, not the target
                "hello", "18+17=35,,", "18+17=35\n49-35=14"):
        assert s.dead_end(ok, bad), bad
    assert s.max_steps(ok) == 3


def test_countdown_steps_never_prune_a_correct_answer():
    """Every prefix of a correct direct answer stays open, and the whole is complete."""
    from ttc.tasks.countdown.formats import direct_completion
    from ttc.tasks.countdown.solver import solve  # the test makes reference data; strategies never do

    s, rng = CountdownSteps(), random.Random(0)
    for problem in COUNTDOWN.make_problems(40, seed=1, split="test"):
        for numbers in (None, problem["numbers"]):
            text = direct_completion(solve(problem["numbers"], problem["target"], rng), numbers)
            steps = s.parse(text)
            assert len(steps) == s.max_steps(problem)
            for i in range(1, len(steps) + 1):
                partial = ",".join(steps[:i])
                assert not s.dead_end(problem, partial), (problem, partial)
                assert s.complete(partial, problem) == (i == len(steps))
            assert COUNTDOWN.verifier.verify(problem, text).correct is True


# ---------------------------------------------------------------- Sudoku's step structure


def test_sudoku_steps_parse_and_check_constraints():
    from ttc.tasks.sudoku import SUDOKU, SudokuSteps

    s = SudokuSteps()
    assert isinstance(SUDOKU.steps, StepStructure)
    p = {"grid": ".3..../6.2.../.1.25./...1.3/25..6./......", "size": 6}
    rows = "135624/642315/314256/526143/253461/461532".split("/")
    assert s.parse("135624/642315/") == rows[:2] and s.parse("") == [] and s.max_steps(p) == 6
    for i in range(1, 7):
        partial = "/".join(rows[:i])
        assert not s.dead_end(p, partial) and s.complete(partial, p) == (i == 6)
    assert s.complete("/".join(rows) + ".") and not s.complete("135624")
    for bad in ("125634",  # changes the given 3 of r1c2
                "135524",  # repeats 5 in the row
                "13562",  # too short
                "135624/132465",  # r2c1 must keep the given 6; and 1 repeats in column 1
                "135624/642315/314265/526143/253416/461532x",
                "135624/652314",  # 5 repeats in box 1 only
                "135624/642315/531246",  # r3c2 must keep the given 1
                "hello", "135624//"):
        assert s.dead_end(p, bad), bad


def test_sudoku_steps_never_prune_a_correct_answer():
    from ttc.tasks.sudoku import SUDOKU, SudokuSteps, reference_solution
    from ttc.verifiers.sudoku import format_grid

    s = SudokuSteps()
    for problem in SUDOKU.make_problems(20, seed=1, split="test"):
        rows = format_grid(reference_solution(problem), 6).split("/")
        for i in range(1, 7):
            assert not s.dead_end(problem, "/".join(rows[:i])), (problem, i)
        assert SUDOKU.verifier.verify(problem, "/".join(rows)).correct


# ---------------------------------------------------------------- real model


@pytest.fixture
def tiny_backend(tiny_checkpoint):
    import torch

    from ttc.backends import TransformersBackend

    torch.set_num_threads(1)
    return TransformersBackend(tiny_checkpoint, device="cpu")


class AnyStep(LetterSteps):
    """Accepts any non-empty step: lets a random-weight model's search go deep."""

    step_tokens = 12

    def dead_end(self, problem, partial_text):
        return any(not st.strip() for st in self.parse(partial_text))

    def complete(self, text, problem=None):
        return problem is not None and len(self.parse(text)) == 2

    def max_steps(self, problem):
        return 2


class Permissive:
    name = "countdown-any-step"
    steps = AnyStep()
    verifier = COUNTDOWN.verifier

    def prompt(self, problem, fmt="direct"):
        return COUNTDOWN.prompt(problem, fmt)


@pytest.mark.parametrize("method", ["dfs", "beam"])
def test_real_model_search_under_a_token_budget(tiny_backend, method):
    budget = Budget(tokens=600)
    tracer = RecTracer()
    # CountDown's own check: random text is pruned at once.
    result, ledger = search(COUNTDOWN, PROBLEM, tiny_backend, budget=budget, tracer=tracer, k=3, method=method,
                            max_tokens_per_step=12)
    assert ledger.spent.tokens <= 600 and result.tokens == ledger.spent.tokens > 0 and result.flops > 0
    # A permissive step check (random text ends a step within 48 tokens about half the
    # time): the search goes deep, scores paths by the model's log-probabilities and
    # verifies complete answers.
    tracer = RecTracer()
    result, ledger = search(Permissive(), PROBLEM, tiny_backend, budget=budget, tracer=tracer, k=3, method=method,
                            max_tokens_per_step=48)
    assert ledger.spent.tokens <= 600 and not ledger.overdrawn and result.tokens == ledger.spent.tokens
    assert result.stop_reason in ("budget", "done") and result.flops > 0 and result.eflops > result.flops
    assert result.candidates and all(c.verdict is not None and c.text.endswith(".") for c in result.candidates)
    assert tracer.kinds("strategy")[0].attrs["ttc.path_score"] < 0  # real token log-probabilities
    llm = tracer.kinds("llm")
    assert llm and all(s.attrs["gen_ai.request.choice.count"] <= 3 for s in llm)
    # A budget too small to finish: it stops on the ledger, never over it.
    result, ledger = search(Permissive(), PROBLEM, tiny_backend, budget=Budget(tokens=200), k=3, method=method,
                            max_tokens_per_step=48)
    assert result.stop_reason == "budget" and ledger.spent.tokens <= 200 and not ledger.overdrawn


def test_a_dead_tree_restarts_from_the_root_with_fresh_samples_until_the_budget_is_spent():
    # Every first step is a dead end: the search grows new trees (new seeds) while budget lasts.
    backend = StepBackend({}, logprob={}, default=["1+1=2,", "9*9=81,"])
    budget = Budget(tokens=150)
    result, ledger = search(COUNTDOWN, PROBLEM, backend, budget=budget, k=2)
    seeds = [p.seed for _, p in backend.calls]
    assert len(seeds) > 1 and len(set(seeds)) == len(seeds)
    assert result.stop_reason == "budget" and ledger.spent.tokens <= 150
    result, _ = search(COUNTDOWN, PROBLEM, StepBackend({}, logprob={}, default=["1+1=2,"]), budget=budget, k=2,
                       restarts=2)
    assert result.stop_reason == "done" and result.candidates == []
