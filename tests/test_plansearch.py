"""``plansearch``: each stage's parsing and control flow with scripted backends (prose and
step plans), a run through ``ttc eval`` against a fake OpenAI-compatible endpoint, the bench's
measures, and one short run of the built-in CountDown model."""

from __future__ import annotations

import json
import re

import pytest
from fake_openai import FakeOpenAI, completion_reply
from recording import RecTracer, run_cli
from ttc.backends import BadInputError, ScriptedBackend
from ttc.core import Budget, Ledger
from ttc.core.contracts import ModelPool, SolveContext
from ttc.core.types import Verdict
from ttc.strategies import STRATEGIES, get_strategy
from ttc.strategies._plansearch_common import spread
from ttc.strategies._plansearch_prompts import parse_list
from ttc.strategies.plansearch import SKIPPED
from ttc.tasks.countdown import COUNTDOWN

# ---------------------------------------------------------------- tracing double


# ---------------------------------------------------------------- parsing


def test_parse_list_reads_numbered_and_bulleted_items_only():
    text = ("Here are some observations:\n1. The list may be empty.\n2) Sorting helps;\n   it costs n log n.\n"
            "- Duplicates matter\n**4.** Bold numbers too\n3. the list may be EMPTY\nThat is all.")
    assert parse_list(text) == ["The list may be empty.", "Sorting helps; it costs n log n.", "Duplicates matter",
                                "Bold numbers too"]
    assert parse_list(text, 2) == ["The list may be empty.", "Sorting helps; it costs n log n."]
    assert parse_list("No list here, just prose.\n\n") == []


def test_spread_gives_every_plan_its_share():
    assert spread(16, 5, 1) == [4, 3, 3, 3, 3]
    assert spread(3, 5, 1) == [1, 1, 1, 0, 0]
    assert spread(None, 3, 2) == [2, 2, 2]
    assert spread(4, 0, 1) == []


# ---------------------------------------------------------------- prose mode


class TextTask:
    """A task whose problems are questions and whose verifier accepts the text "RIGHT"."""

    name, formats, stop, default_model = "text", ("direct",), (), None

    class verifier:
        @staticmethod
        def verify(problem, text, ctx=None):
            ok = text.strip() == "RIGHT"
            return Verdict(correct=ok, score=float(ok), answer=text.strip())

        @staticmethod
        def canonical(problem, text):
            return text.strip() or None

    def prompt(self, problem, fmt="direct"):
        return f"Q: {problem['q']}\n"

    def max_tokens(self, problem=None, fmt="direct"):
        return 32


PROBLEM = {"id": "q1", "q": "add two numbers"}


def prose_handler(obs_replies=("1. alpha\n2. beta\n3. gamma",)):
    """Replies by the kind of prompt: observations (in turn from ``obs_replies``), derivations
    (one new observation named after the last given one), plans, critiques, fixes, solutions."""
    served = {"obs": 0}

    def handle(prompt, i, params):
        if "distinct observations about the problem" in prompt:
            k = min(served["obs"], len(obs_replies) - 1)
            served["obs"] += 1
            return obs_replies[k]
        if "draw up to" in prompt:
            given = re.findall(r"^\d+\. (.*)$", prompt.split("Observations:\n", 1)[1], re.MULTILINE)
            return f"1. after {given[-1]}"
        if prompt.rstrip().endswith("Plan:"):
            return "PLAN"
        if prompt.rstrip().endswith("Critique:"):
            return "the plan misses the empty case"
        if prompt.rstrip().endswith("Improved plan:"):
            return "FIXED PLAN"
        if prompt.startswith("Here is a plan"):
            return "RIGHT" if "FIXED PLAN" in prompt else "WRONG"
        if prompt.startswith("Q:"):  # the task's prompt alone: a solution without a plan
            return "UNPLANNED"
        raise AssertionError(f"unexpected prompt {prompt[:60]!r}")

    return handle


def run_prose(budget=None, planner=None, handler=None, **params):
    policy = ScriptedBackend(handler or prose_handler())
    roles = {"planner": planner} if planner is not None else {}
    ledger, tracer = Ledger(budget), RecTracer()
    ctx = SolveContext(task=TextTask(), problem=PROBLEM, verifier=TextTask.verifier, ledger=ledger,
                       models=ModelPool({"policy": policy, **roles}), tracer=tracer)
    result = get_strategy("plansearch")(ctx, **params)
    return result, ledger, policy, tracer


def stage_prompts(backend, marker):
    return [p for ps, _ in backend.calls for p in ps if marker in p]


def test_prose_stages_subsets_layers_plans_critiques_and_solutions():
    result, ledger, backend, tracer = run_prose(n_observations=3)
    # 3 observations: subsets of size <= 2 are 1 + 3 + 3 = 7; each non-empty one (6) derives
    # a new subset per layer, for 2 layers: 7 + 6 + 6 = 19 distinct seeds.
    assert len(stage_prompts(backend, "distinct observations")) == 1
    assert len(stage_prompts(backend, "draw up to")) == 12
    plans = [p for p in stage_prompts(backend, "Observations:") if p.rstrip().endswith("Plan:")]
    assert len(plans) == 19
    assert any("(none)" in p for p in plans)  # the empty subset seeds a plan too
    assert any("1. alpha\n2. beta\n3. after beta\n4. after after beta" in p for p in plans)  # layer 2 of {a, b}
    critiques = [p for p in stage_prompts(backend, "Critique:") if p.rstrip().endswith("Critique:")]
    assert len(critiques) == 19 and len(stage_prompts(backend, "Improved plan:")) == 19
    # Both versions of every plan are kept: 38 solutions, one per plan; the fixed ones are right.
    solutions = stage_prompts(backend, "Here is a plan")
    assert len(solutions) == 38 and len(result.candidates) == 38
    assert sum(c.verdict.correct for c in result.candidates) == 19
    assert result.correct is True and result.answer == "RIGHT"
    # Every call was charged: the result's tokens are the ledger's, planner calls included.
    assert result.tokens == ledger.spent.tokens
    assert ledger.spent.prompt_tokens == sum(len(p) for ps, _ in backend.calls for p in ps)  # one char, one token
    span = tracer.strategy().attrs
    assert span["ttc.mode"] == "prose" and span["ttc.seeds"] == 19 and span["ttc.fixed_plans"] == 19
    assert span["ttc.critique"] == "done" and span["ttc.observations"] == ["alpha", "beta", "gamma"]


def test_observations_are_retried_at_rising_temperature_until_the_list_parses():
    handler = prose_handler(obs_replies=("I would rather not.", "1. only one", "1. alpha\n2. beta"))
    result, _, backend, tracer = run_prose(handler=handler, n_observations=2, layers=0, critique=False,
                                           temperature_step=0.25)
    temps = [p.temperature for ps, p in backend.calls if "distinct observations" in ps[0]]
    assert temps == [0.0, 0.25, 0.5]
    assert tracer.strategy().attrs["ttc.observation_calls"] == 3
    # Subsets of 2 observations: {}, {a}, {b}, {a, b}; no critique: one plan each.
    assert len(result.candidates) == 4


def test_no_observations_after_all_retries_leaves_the_empty_plan():
    handler = prose_handler(obs_replies=("nothing to list",))
    result, _, backend, _ = run_prose(handler=handler, retries=2, critique=False)
    assert len(stage_prompts(backend, "distinct observations")) == 3
    assert not stage_prompts(backend, "draw up to")
    assert len(result.candidates) == 1  # the plan from no observations still gives a solution


def test_planner_role_makes_the_plans_and_the_policy_the_solutions():
    planner = ScriptedBackend(prose_handler())
    result, ledger, policy, _ = run_prose(planner=planner, n_observations=2, layers=1, n=5)
    assert all(p.startswith("Here is a plan") for ps, _ in policy.calls for p in ps)
    assert not any(p.startswith("Here is a plan") for ps, _ in planner.calls for p in ps)
    assert len(result.candidates) == 5  # n spreads 5 solutions over the plans
    assert result.tokens == ledger.spent.tokens


def test_prose_mode_never_exceeds_its_budget_and_says_why_it_stopped():
    result, ledger, backend, tracer = run_prose(budget=Budget(tokens=3000), n_observations=3)
    assert ledger.spent.tokens <= 3000 and not ledger.overdrawn
    assert result.stop_reason == "budget" and result.tokens == ledger.spent.tokens
    # Planning may spend half of the budget; here derivations used it up before any plan was
    # written, so the solutions were sampled without a plan rather than not at all.
    planned = sum(len(p) for ps, _ in backend.calls for p in ps if not p.startswith("Q:"))
    assert planned < 1500 and [c.text for c in result.candidates] == ["UNPLANNED"]
    assert tracer.strategy().attrs["ttc.plans"] == [{"kind": "none", "observations": 0, "samples": 1}]
    full, _, _, _ = run_prose(n_observations=3)
    assert full.tokens > 3000


def test_bad_parameters_are_bad_input():
    with pytest.raises(BadInputError, match="unknown plansearch mode"):
        run_prose(mode="think")
    with pytest.raises(BadInputError, match="n_observations"):
        run_prose(n_observations=0)
    with pytest.raises(BadInputError, match="needs a task whose answers are steps"):
        run_prose(mode="steps")
    with pytest.raises(BadInputError, match="unknown format"):
        run_prose(fmt="instruct")


# ---------------------------------------------------------------- steps mode (CountDown)

CD = {"id": "cd", "numbers": [1, 3, 5, 7], "target": 22}
P0 = "1 3 5 7>22:"


def steps_handler(first, second, rest):
    """First steps (by sample index), second steps per first step, and the rest of an answer
    per forced prefix; everything keyed on the prompt."""

    def handle(prompt, i, params):
        if prompt == P0 and params.stop == (",", "."):
            steps = first[min(params.seed, len(first) - 1)] if isinstance(first[0], list) else first
            return steps[i % len(steps)]
        if params.stop == (",", "."):
            return second[prompt[len(P0):]][i % len(second[prompt[len(P0):]])]
        return rest.get(prompt[len(P0):], "9*9=81,81-1=80,80+5=85.")

    return handle


FIRST = ["3*5=15:1 7 15", "3*5=15:1 7 15", "3*3=9:1 5 7 9", "7-1=6:3 5 6", "banana"]
SECOND = {"3*5=15:1 7 15,": ["15+7=22:1 22", "7*1=7:15 7"], "7-1=6:3 5 6,": ["6*5=30:3 30"]}
REST = {"3*5=15:1 7 15,15+7=22:1 22,": "22*1=22."}


def run_steps(handler, problem=CD, budget=None, **params):
    backend = ScriptedBackend(handler)
    ledger, tracer = Ledger(budget), RecTracer()
    ctx = SolveContext(task=COUNTDOWN, problem=problem, verifier=COUNTDOWN.verifier, ledger=ledger,
                       models=ModelPool({"policy": backend}), tracer=tracer)
    return get_strategy("plansearch")(ctx, **params), ledger, backend, tracer


def test_step_plans_observations_derived_steps_and_forced_starts():
    result, ledger, backend, tracer = run_steps(steps_handler(FIRST, SECOND, REST), n_observations=5)
    obs_call, derived_call, *solution_calls = backend.calls
    assert obs_call[0] == [P0] and obs_call[1].n == 5 and obs_call[1].temperature == 1.0
    # Observations: distinct first steps that break no rule ("3*3" uses 3 twice, "banana" is no step).
    span = tracer.strategy().attrs
    assert span["ttc.observations"] == ["3*5=15:1 7 15", "7-1=6:3 5 6"]
    assert derived_call[0] == [P0 + "3*5=15:1 7 15,", P0 + "7-1=6:3 5 6,"] and derived_call[1].n == 2
    # "6*5=30" leaves 3 30 and ... still open; "7*1=7" too: three derived plans, round-robin.
    assert span["ttc.derived"] == ["3*5=15:1 7 15,15+7=22:1 22", "7-1=6:3 5 6,6*5=30:3 30",
                                   "3*5=15:1 7 15,7*1=7:15 7"]
    # 16 solutions over 5 plans (4, 3, 3, 3, 3), every plan forced as the start of its prompt.
    assert [p["samples"] for p in span["ttc.plans"]] == [4, 3, 3, 3, 3]
    assert [c[1].n for c in solution_calls] == [4, 3]
    assert all(p.startswith(P0) and p.endswith(",") for c in solution_calls for p in c[0])
    assert len(result.candidates) == 16 and result.correct is True
    assert result.answer is not None and "15+7=22" in next(c.text for c in result.candidates if c.verdict.correct)
    # Critique and fix need prose: skipped, and the trace says so.
    assert span["ttc.critique"] == SKIPPED and "stratification of the first steps" in SKIPPED
    assert result.tokens == ledger.spent.tokens


def test_step_observations_are_retried_at_rising_temperature():
    first = [["3*3=9:1 5 7 9"], ["3*5=15:1 7 15", "7-1=6:3 5 6"]]  # by seed: all illegal, then legal
    result, _, backend, tracer = run_steps(steps_handler(first, SECOND, REST), n_observations=2)
    temps = [p.temperature for ps, p in backend.calls if ps == [P0] and p.stop == (",", ".")]
    assert temps == [1.0, 1.3]
    assert tracer.strategy().attrs["ttc.observation_calls"] == 2 and len(result.candidates) == 16


def test_without_a_legal_first_step_it_samples_without_a_plan():
    result, _, backend, tracer = run_steps(steps_handler(["banana"], {}, {}), retries=1, n=6)
    assert len(result.candidates) == 6 and backend.calls[-1][0] == [P0]
    assert tracer.strategy().attrs["ttc.plans"] == [{"plan": "", "samples": 6}]


def test_hint_puts_the_first_operation_in_the_plan_conditioned_prompt():
    seen = []

    def handler(prompt, i, params):
        seen.append(prompt)
        if params.stop == (",", "."):
            return "3*5=15:1 7 15" if prompt == P0 else "15+7=22:1 22"
        return "22*1=22."

    result, *_ = run_steps(handler, use_hint=True, n_derived=1, n=2)
    assert "1 3 5 7>22|3*5=15:3*5=15:1 7 15,15+7=22:1 22," in seen
    assert result.correct is True


def test_a_plan_that_is_already_an_answer_is_verified_as_it_stands():
    problem = {"id": "p3", "numbers": [3, 5, 7], "target": 22}

    def handler(prompt, i, params):
        if params.stop == (",", "."):
            return "3*5=15:7 15" if prompt == "3 5 7>22:" else "15+7=22"
        return "7-5=2,15*2=30."

    result, *_ = run_steps(handler, problem=problem, n_derived=1, n=2)
    assert result.correct is True and result.answer is not None
    assert any(c.text == "3*5=15:7 15,15+7=22" and c.tokens == 0 for c in result.candidates)


def test_step_plans_under_a_small_budget_stop_within_it():
    result, ledger, _, _ = run_steps(steps_handler(FIRST, SECOND, REST), budget=Budget(tokens=200))
    assert ledger.spent.tokens <= 200 and result.tokens == ledger.spent.tokens
    assert result.stop_reason == "budget" and result.candidates  # planning left room for solutions


def test_registered_with_a_planner_role_falling_back_to_the_policy():
    spec = STRATEGIES.get("plansearch")
    assert spec.roles == {"policy": "required", "planner": "policy"}
    assert {"n", "n_observations", "max_subset", "layers", "critique", "mode"} <= set(spec.parameters())


# ---------------------------------------------------------------- the bench's measures


def test_diversity_counts_pairs_with_equal_canonical_forms():
    from ttc.orchestrator.bench.plansearch import diversity

    assert diversity(["a", "a", "b", None]) == pytest.approx(1 - 1 / 6)
    assert diversity([None, None, "a"]) == pytest.approx(1 - 1 / 3)  # two unparseable ones are alike
    assert diversity([None, None, "a"], parseable_only=True) is None
    assert diversity(["a", "b", "c"], parseable_only=True) == 1.0


def test_bench_cli_writes_the_issue_json_on_a_problems_file(tmp_path):
    problems = tmp_path / "p.jsonl"
    problems.write_text('{"numbers": [48, 27, 5, 81], "target": 30}\n{"numbers": [18, 49, 35, 17], "target": 25}\n')
    code, out, err = run_cli(["bench", "plansearch", "--problems-file", str(problems), "--workers", "1",
                            "--out", str(tmp_path / "out"), "--json"])
    assert code == 0, err
    r = json.loads(out)
    assert r["n_problems"] == 2 and r["seed"] == 0 and r["checkpoint_digests"]["countdown-direct"]
    assert set(r["equal_tokens"]) == {"plansearch", "repeated", "tree_search", "best_of_n_t1"}
    for row in r["equal_tokens"].values():
        assert set(row) == {"accuracy", "accuracy_ci95", "tokens"} and 0 <= row["accuracy"] <= 1
    # Every baseline ran within the tokens PlanSearch spent on the same problems.
    spent = r["equal_tokens"]["plansearch"]["tokens"]
    assert all(r["equal_tokens"][m]["tokens"] <= spent for m in ("repeated", "tree_search", "best_of_n_t1"))
    for m in ("plansearch", "repeated"):
        view = r[m]
        assert list(view["pass_at_k"]) == ["1", "2", "4", "8", "16"] and set(view["pass_at_k_ci95"]) == set(
            view["pass_at_k"])
        assert 0 <= view["diversity"] <= 1 and view["tokens"] > 0 and view["candidates"] >= 16
    assert r["settings"]["critique_fix"] == SKIPPED
    assert (tmp_path / "out" / "plansearch.json").is_file() and (tmp_path / "out" / "plansearch.png").is_file()
    code, out, _ = run_cli(["bench", "plansearch", "--problems-file", str(problems), "--problems", "3", "--json"])
    assert code == 2 and "not both" in json.loads(out)["error"]["message"]
    problems.write_text('{"numbers": [1], "target": "x"}\n')
    code, out, _ = run_cli(["bench", "plansearch", "--problems-file", str(problems), "--json"])
    assert code == 2 and "p.jsonl:1" in json.loads(out)["error"]["message"]


# ---------------------------------------------------------------- fake endpoint, through the CLI

ADD = {"id": "add", "prompt": "def add(a, b):\n    \"\"\"Return a + b.\"\"\"\n", "entry_point": "add",
       "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n"}


def _reply(body):
    prompt = body["prompt"]
    if "distinct observations about the problem" in prompt:
        text = "1. Numbers can be negative.\n2. Addition is commutative."
    elif "draw up to" in prompt:
        text = "1. The sign needs no special case."
    elif prompt.rstrip().endswith(("Plan:", "Improved plan:")):
        text = "Return the sum of the two arguments."
    elif prompt.rstrip().endswith("Critique:"):
        text = "The plan is correct."
    else:
        text = "```python\ndef add(a, b):\n    return a + b\n```"
    return completion_reply([text] * body.get("n", 1), 40, 10)


def test_eval_humaneval_with_plansearch_against_a_fake_endpoint(tmp_path):
    problems = tmp_path / "p.jsonl"
    problems.write_text(json.dumps(ADD) + "\n")
    with FakeOpenAI(_reply) as srv:
        code, out, err = run_cli(["eval", "--task", "humaneval", "--strategy", "plansearch", "--model", "fake",
                                "--base-url", srv.url, "--problems", str(problems), "--max-retries", "0",
                                "-P", "n_observations=2", "-P", "layers=1", "--json",
                                "--db", f"sqlite:///{tmp_path / 'e.db'}"])
        bodies = list(srv.bodies)
    assert code == 0, err
    report = json.loads(out)
    assert report["accuracy"] == 1.0 and report["n_problems"] == 1
    # Subsets of 2 observations: 4 seeds, 3 derived ones; 7 plans, 7 critiques, 7 fixes; 14 solutions.
    kinds = [("obs" if "distinct observations" in b["prompt"] else "derive" if "draw up to" in b["prompt"]
              else "solution" if b["prompt"].startswith("Here is a plan") else "plan") for b in bodies]
    assert kinds.count("obs") == 1 and kinds.count("derive") == 3 and kinds.count("plan") == 21
    assert kinds.count("solution") == 14
    # Every request, planner calls included, is charged as the server reported it (40 + 10 x n).
    assert report["tokens"] == 50 * len(bodies)


# ---------------------------------------------------------------- the built-in CountDown model


def test_builtin_countdown_model_on_three_problems():
    from ttc.orchestrator.models import load_backend

    backend = load_backend("countdown-direct", device="cpu")
    solved = 0
    for i, problem in enumerate(COUNTDOWN.make_problems(3, seed=0, split="test")):
        ledger, tracer = Ledger(), RecTracer()
        ctx = SolveContext(task=COUNTDOWN, problem=problem, verifier=COUNTDOWN.verifier, ledger=ledger,
                           models=ModelPool({"policy": backend}), tracer=tracer)
        result = get_strategy("plansearch")(ctx, seed=i)
        span = tracer.strategy().attrs
        plans = [p["plan"] for p in span["ttc.plans"] if p["samples"]]
        assert len(result.candidates) >= 16 and result.tokens == ledger.spent.tokens
        assert span["ttc.mode"] == "steps" and span["ttc.critique"] == SKIPPED
        # Every sampled candidate starts with the plan it was forced to follow.
        assert all(any(c.text.startswith(p + ",") or not p for p in plans) for c in result.candidates if c.tokens)
        assert all(not COUNTDOWN.steps.dead_end(problem, p) for p in plans)
        solved += result.correct is True
    assert solved >= 1
