"""Open registries and the one ``ttc`` import name, as a user meets them: a plug-in package
installed beside ttc adds a task and a strategy through entry points, and a directory
holding its own ``tasks.py`` and ``store/`` does not shadow ttc's layers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

PLUGIN = '''
"""A throwaway ttc plug-in: CountDown with a stricter verifier, and a greedy strategy."""
from ttc.core.contracts import SolveContext
from ttc.core.types import Result, Candidate
from ttc.backends.types import SamplingParams
from ttc.tasks.countdown import CountdownTask
from ttc.verifiers.countdown import CountdownVerifier


class ShortCountdown(CountdownTask):
    """CountDown whose answers must also be short."""
    name = "short-countdown"

    def __init__(self):
        super().__init__()
        self.verifier = ShortVerifier()


class ShortVerifier(CountdownVerifier):
    def verify(self, problem, text, ctx=None):
        v = super().verify(problem, text, ctx)
        if v.correct and len(text) > 40:
            return v.model_copy(update={"correct": False, "score": 0.0, "reason": "too long"})
        return v


def greedy_then_sample(ctx: SolveContext, *, tries: int = 4) -> Result:
    """One greedy answer, then samples until one verifies."""
    cands, usage = [], None
    for i in range(tries):
        params = SamplingParams(max_tokens=ctx.max_tokens(), stop=ctx.task.stop,
                                temperature=0.0 if i == 0 else 0.8, seed=i)
        call = ctx.call("policy", [ctx.prompt()], params)
        if not call.generations:
            break
        usage = call.usage if usage is None else usage + call.usage
        c = call.generations[0].completions[0]
        v = ctx.verify(c.text)
        cands.append(Candidate(text=c.text, answer=v.answer, tokens=c.completion_tokens, verdict=v))
        if v.correct:
            break
    best = next((c for c in cands if c.verdict.correct), cands[0] if cands else None)
    return Result(strategy="greedy_then_sample", answer=best.answer if best else None,
                  correct=best.verdict.correct if best else None, candidates=cands,
                  usage=usage or ctx.ledger.spent.model_copy(), tokens=ctx.ledger.spent.tokens)
'''


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    """A directory laid out as pip installs a distribution: the module and its dist-info."""
    site = tmp_path_factory.mktemp("site")
    (site / "ttc_toy_plugin.py").write_text(PLUGIN)
    info = site / "ttc_toy_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ttc-toy-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent("""\
        [ttc.tasks]
        short-countdown = ttc_toy_plugin:ShortCountdown

        [ttc.strategies]
        greedy_then_sample = ttc_toy_plugin:greedy_then_sample
        """))
    (info / "RECORD").write_text("")
    return site


def _ttc(args, cwd, env_extra=None):
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "ttc", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_plugin_task_and_strategy_solve_through_ttc_solve(plugin_site, tmp_path):
    env = {"PYTHONPATH": str(plugin_site)}
    listed = _ttc(["tasks", "list", "--json"], tmp_path, env)
    assert listed.returncode == 0, listed.stderr
    tasks = {t["name"]: t for t in json.loads(listed.stdout)["tasks"]}
    assert tasks["short-countdown"]["origin"] == "ttc-toy-plugin" and tasks["countdown"]["origin"] == "builtin"
    strategies = {s["name"]: s for s in json.loads(_ttc(["strategies", "list", "--json"], tmp_path, env).stdout)
                  ["strategies"]}
    assert strategies["greedy_then_sample"]["parameters"] == {"tries": 4}
    assert strategies["greedy_then_sample"]["roles"] == {"policy": "required"}
    assert strategies["best_of_n"]["roles"] == {"policy": "required"}

    problem = json.dumps({"numbers": [3, 5, 7], "target": 22})
    out = _ttc(["solve", "--task", "short-countdown", "--strategy", "greedy_then_sample", "--problem", problem,
                "--db", f"sqlite:///{tmp_path / 't.db'}", "--json"], tmp_path, env)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["strategy"] == "greedy_then_sample" and len(result["candidates"]) >= 1
    assert result["tokens"] > 0  # a real model answered and was charged


def test_a_missing_required_role_exits_2(plugin_site, tmp_path):
    # sequential falls back to the policy; a role nobody provides for a strategy that
    # requires it is bad input before any model is loaded.
    out = _ttc(["solve", "--task", "countdown", "--problem", '{"numbers": [3, 5, 7], "target": 22}',
                "--role", "judge=", "--json"], tmp_path)
    assert out.returncode == 2 and "error" in json.loads(out.stdout)


def test_user_modules_named_like_our_layers_do_not_shadow_ttc(tmp_path):
    (tmp_path / "tasks.py").write_text("raise SystemExit('the user tasks.py was imported')\n")
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "__init__.py").write_text("raise SystemExit('the user store was imported')\n")
    for name in ("orchestrator", "strategies", "verifiers", "backends", "core"):
        (tmp_path / f"{name}.py").write_text(f"raise SystemExit('the user {name}.py was imported')\n")
    code = ("from ttc import Orchestrator, Budget; "
            f"orc = Orchestrator(db='sqlite:///{tmp_path / 'u.db'}'); "
            "r = orc.solve('countdown', {'numbers': [3, 5, 7], 'target': 22}, strategy='best_of_n', "
            "budget=Budget(tokens=300)); print(r.strategy, r.tokens > 0)")
    py = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert py.returncode == 0, py.stderr + py.stdout
    assert py.stdout.strip() == "best_of_n True"
    listed = _ttc(["models", "list", "--json"], tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "countdown-direct" in listed.stdout


def test_nine_by_nine_solve_asks_for_the_whole_grid_and_verify_accepts_it(tmp_path):
    from ttc.tasks.sudoku import SUDOKU, reference_solution
    from ttc.verifiers.sudoku import format_grid

    p = SUDOKU.make_problems(1, seed=3, split="test", size=9)[0]
    problem = json.dumps({"grid": p["grid"], "size": 9})
    db = f"sqlite:///{tmp_path / 's.db'}"
    out = _ttc(["solve", "--task", "sudoku", "--problem", problem, "--db", db, "--json"], tmp_path)
    assert out.returncode == 0, out.stderr
    shown = _ttc(["traces", "show", json.loads(out.stdout)["trace_id"], "--db", db, "--json"], tmp_path)
    llm = [s for s in json.loads(shown.stdout)["spans"] if s["kind"] == "llm"]
    assert llm and all(s["attributes"]["gen_ai.request.max_tokens"] >= 90 for s in llm)

    solution = format_grid(reference_solution(p), 9)
    ok = _ttc(["verify", "answer", "--task", "sudoku", "--problem", problem, "--answer", solution, "--json"],
              tmp_path)
    assert ok.returncode == 0
    verdict = json.loads(ok.stdout)
    assert verdict["correct"] is True and verdict["canonical"] == solution
    wrong = _ttc(["verify", "answer", "--task", "sudoku", "--problem", problem, "--answer", "123", "--json"],
                 tmp_path)
    assert wrong.returncode == 0 and json.loads(wrong.stdout)["correct"] is False
