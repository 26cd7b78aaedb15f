"""Sudoku task: generator (uniqueness), solver, formats (trace round-trips), verifier."""

from __future__ import annotations

import json
import random
import string

import pytest

from ttc.backends.errors import BadInputError
from ttc.tasks.registry import get_task, task_names
from ttc.tasks.sudoku import (
    SUDOKU,
    count_solutions,
    direct_completion,
    make_problems,
    make_puzzle,
    prompt,
    reference_solution,
    replay_trace,
    search_trace,
    solve,
    split_of,
    training_example,
    transform,
)
from ttc.tasks.sudoku.solver import candidates_mask
from ttc.verifiers.sudoku import SudokuVerifier, format_grid, grid_errors, parse_grid

V = SudokuVerifier()
P6 = {"grid": ".3..../6.2.../.1.25./...1.3/25..6./......", "size": 6}
S6 = "135624/642315/314256/526143/253461/461532"


# --- generator and solver ---------------------------------------------------------------

@pytest.mark.parametrize("size,givens,n", [(4, 5, 40), (4, 4, 20), (6, 12, 40), (6, 9, 15), (9, 30, 3)])
def test_generated_puzzles_are_uniquely_solvable_with_exact_givens(size, givens, n):
    rng = random.Random(size * 100 + givens)
    for _ in range(n):
        cells, sol = make_puzzle(size, givens, rng)
        assert sum(1 for v in cells if v) == givens
        assert count_solutions(cells, size, limit=3) == 1
        assert not grid_errors(sol, size)
        assert all(v == 0 or v == s for v, s in zip(cells, sol))
        assert solve(cells, size) == sol


def test_make_problems_is_seeded_split_and_unique():
    a = make_problems(30, seed=5, split="test", size=6, givens=11)
    assert a == make_problems(30, seed=5, split="test", size=6, givens=11)
    assert a != make_problems(30, seed=6, split="test", size=6, givens=11)
    b = make_problems(30, seed=5, split="train", size=6, givens=11)
    for p in a:
        cells, size = parse_grid(p["grid"], p["size"])
        assert split_of(cells, size) == "test" and p["givens"] == 11 == sum(1 for v in cells if v)
        assert count_solutions(cells, size) == 1
        assert V.verify(p, format_grid(reference_solution(p), size)).correct
    assert all(split_of(parse_grid(p["grid"])[0], 6) == "train" for p in b)
    assert not {p["grid"] for p in a} & {p["grid"] for p in b}
    assert len({p["id"] for p in a}) == 30
    with pytest.raises(ValueError):
        make_problems(1, split="dev")


def test_training_stream_holds_only_train_puzzles():
    from ttc.tasks.sudoku.generate import train_puzzles

    it = train_puzzles(0, 6, (9, 14))
    for _ in range(100):
        cells, sol = next(it)
        assert split_of(cells, 6) == "train"
        assert 9 <= sum(1 for v in cells if v) <= 14


def test_transform_keeps_validity_and_uniqueness():
    rng = random.Random(1)
    for size, givens in [(6, 10), (9, 28), (4, 5)]:
        cells, sol = make_puzzle(size, givens, rng)
        for _ in range(5):
            c2, s2 = transform(cells, size, rng, sol)
            assert not grid_errors(s2, size) and count_solutions(c2, size) == 1
            assert all(v == 0 or v == s for v, s in zip(c2, s2))
            assert sum(1 for v in c2 if v) == givens


def test_givens_out_of_range():
    with pytest.raises(ValueError):
        make_puzzle(6, 3, random.Random(0))
    with pytest.raises(ValueError):
        make_puzzle(5, 10, random.Random(0))


def test_solver_counts_multiple_and_no_solutions():
    assert count_solutions([0] * 16, 4, limit=5) == 5
    bad = [1, 1] + [0] * 14
    assert count_solutions(bad, 4) == 0 and solve(bad, 4) is None


# --- formats --------------------------------------------------------------------------------

def test_prompt_formats_and_direct_completion():
    assert prompt(P6) == P6["grid"] + ":"
    assert prompt(P6, "search") == P6["grid"].replace(".", "_") + "?\n"
    assert SUDOKU.prompt(P6) == P6["grid"] + ":"
    with pytest.raises(ValueError):
        prompt(P6, "plan")
    with pytest.raises(BadInputError):
        SUDOKU.prompt(P6, hint="x")
    sol = parse_grid(S6)[0]
    assert direct_completion(sol, 6) == S6 + "."
    assert V.verify(P6, S6).correct


@pytest.mark.parametrize("size,givens", [(6, 9), (6, 12), (4, 4), (9, 26)])
def test_every_search_trace_round_trips(size, givens):
    rng = random.Random(givens)
    branched = 0
    for _ in range(25 if size != 9 else 6):
        cells, sol = make_puzzle(size, givens, rng)
        problem = {"grid": format_grid(cells, size), "size": size}
        trace = search_trace(cells, size, max_chars=100_000)
        assert trace is not None and trace.endswith(".")
        assert "." not in trace[:-1]  # "." is the stop string: a blank must not end the trace
        branched += "?" in trace
        rep = replay_trace(problem, trace)
        assert rep["well_formed"] and rep["legal"], trace
        assert rep["answer"] == format_grid(sol, size)
        assert V.verify(problem, trace).correct
        lines = trace.splitlines()
        assert lines[-2] == format_grid(sol, size)  # the last grid line is the solution
        for k, line in enumerate(lines):
            if line.startswith("<"):
                # An undo follows a dead end, names a branch announced earlier, and the
                # grid after it holds the value it names.
                assert lines[k - 1] == "x"
                assert any(prev.startswith(line[1:3] + "?") for prev in lines[:k])
                r, c, v = int(line[1]) - 1, int(line[2]) - 1, line[4]
                assert lines[k + 1].split("/")[r][c] == v
            if "?" in line:
                r, c = int(line[0]) - 1, int(line[1]) - 1
                assert lines[k + 1].split("/")[r][c] == line[3]
    if size == 6 and givens == 9:
        assert branched > 0


def test_grid_lines_fill_exactly_the_single_candidates():
    rng = random.Random(11)
    cells, sol = make_puzzle(6, 12, rng)
    lines = search_trace(cells, 6, max_chars=100_000).splitlines()
    prev = list(cells)
    for line in lines:
        if not _is_grid(line):
            break
        now = parse_grid(line, 6)[0]
        masks = candidates_mask(prev, 6)
        filled = {i for i, (a, b) in enumerate(zip(prev, now)) if a != b}
        assert filled == {i for i, m in enumerate(masks) if not prev[i] and m.bit_count() == 1}
        assert all(now[i] == masks[i].bit_length() - 1 for i in filled)
        prev = now


def _is_grid(line: str) -> bool:
    return "/" in line and not line.startswith("A:")


def test_search_trace_with_backtracking_round_trips():
    # Find a puzzle whose trace has a dead end and an undo, and check it replays.
    rng = random.Random(7)
    for _ in range(300):
        cells, sol = make_puzzle(6, 9, rng)
        trace = search_trace(cells, 6, max_chars=100_000)
        if "x\n<" in trace:
            break
    else:
        pytest.fail("no backtracking trace found")
    rep = replay_trace({"grid": format_grid(cells, 6), "size": 6}, trace)
    assert rep["answer"] == format_grid(sol, 6) and rep["well_formed"] and rep["legal"]


def test_search_trace_length_cap():
    rng = random.Random(3)
    cells, sol = make_puzzle(6, 10, rng)
    full = search_trace(cells, 6, max_chars=100_000)
    assert search_trace(cells, 6, max_chars=len(full)) == full
    assert search_trace(cells, 6, max_chars=len(full) - 1) is None
    assert training_example(cells, sol, 6, "search", max_chars=10) is None
    p, c = training_example(cells, sol, 6, "direct")
    assert p.endswith(":") and V.verify({"grid": p[:-1], "size": 6}, c).correct


def test_replay_flags_illegal_and_malformed_traces():
    changed_given = ".5" + P6["grid"][2:]  # overwrites the given 3 of r1c2
    rep = replay_trace(P6, changed_given + "\nhello\nA:" + S6 + ".")
    assert not rep["legal"] and not rep["well_formed"]
    # A grid line may not overwrite a digit of the grid it continues (except after an undo).
    g1 = "13..../6.2.../.1.25./...1.3/25..6./......"
    g2 = "15..../6.2.../.1.25./...1.3/25..6./......"
    assert not replay_trace(P6, f"{g1}\n{g2}\nA:{S6}.")["legal"]
    assert replay_trace(P6, f"11?14\n{g1}\nx\n<11=4\n{'4' + g1[1:]}\nA:{S6}.")["legal"]


# --- verifier -------------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    S6, S6 + ".", "A:" + S6 + ".", "some\nthinking\nA:" + S6,
    S6.replace("/", ""), S6.replace("/", "\n"), "\n".join(" ".join(r) for r in S6.split("/")),
    " | ".join(S6.split("/")), "garbage 12 A:" + S6 + " trailing words",
])
def test_verifier_accepts(text):
    v = V.verify(P6, text)
    assert v.correct is True and v.score == 1.0 and v.answer == S6


def _swap_cells(s, a, b):
    t = list(s)
    t[a], t[b] = t[b], t[a]
    return "".join(t)


@pytest.mark.parametrize("text,why", [
    ("", "no 6x6 grid"),
    ("A:", "no 6x6 grid"),
    (S6[:-1], "no 6x6 grid"),                       # 35 digits
    (S6 + "1", "no 6x6 grid"),                       # 37 digits in the run
    (S6.replace("5", "."), "no 6x6 grid"),           # blanks left
    (S6.replace("1", "0"), "not a digit"),
    (S6.replace("6", "7"), "not a digit"),
    ("111111/222222/333333/444444/555555/666666", "row 1 repeats"),
    ("123456/123456/123456/123456/123456/123456", "column 1 repeats"),
    ("123456/234561/345612/456123/561234/612345", "box"),
    (_swap_cells(S6, 0, 1), "repeats"),               # row ok, columns broken
    # A valid grid that changes a given: relabel digits of the solution.
    (S6.translate(str.maketrans("123456", "234561")), "changes the given"),
    ("A:" + S6.replace("/", "=") , "no 6x6 grid"),
])
def test_verifier_rejects_with_reason(text, why):
    v = V.verify(P6, text)
    assert v.correct is False and v.score == 0.0 and why in v.reason


@pytest.mark.parametrize("text", [
    None, 123, b"bytes", ["list"], {"a": 1}, "\x00" * 100, "١٢٣٤٥٦" * 6, "9" * 10_000,
    "A:" * 1000, "/" * 5000, "𝟏𝟐𝟑" * 20, "A:\n" + "\n".join(["1 2 3 4 5 6"] * 6), "1" * 36,
])
def test_verifier_never_raises_on_garbage(text):
    v = V.verify(P6, text)
    assert v.correct is False


def test_verifier_fuzz():
    rng = random.Random(0)
    alphabet = string.printable + "١٢𝟏A:/"
    for _ in range(500):
        t = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 200)))
        assert V.verify(P6, t).correct in (False, True)
    for _ in range(200):  # near-misses: the solution with one cell changed
        i = rng.choice([k for k, ch in enumerate(S6) if ch != "/"])
        t = S6[:i] + str(rng.randint(0, 9)) + S6[i + 1:]
        v = V.verify(P6, t)
        assert v.correct is (t == S6)


def test_verifier_bad_problem_is_undecided_and_checks_givens_only():
    assert V.verify({"grid": "11..", "size": 4}, "1234").correct is None
    assert V.verify({"size": 6}, S6).correct is None
    assert V.verify("nonsense", S6).correct is None  # not a dict: never raises
    # A puzzle with several solutions: any valid completion keeping the givens is correct.
    assert V.verify({"grid": "." * 16, "size": 4}, "1234/3412/2143/4321").correct
    assert V.verify({"grid": "." * 16, "size": 4}, "1234/3412/2143/4312").correct is False


# --- task object, registry, parsing ---------------------------------------------------------

def test_registry_and_task_object():
    assert "sudoku" in task_names() and get_task("sudoku") is SUDOKU
    assert SUDOKU.default_model == "sudoku-direct" and SUDOKU.stop == (".",)
    assert SUDOKU.max_tokens(None, "direct") >= 42 and SUDOKU.max_tokens(None, "search") >= 512
    probs = SUDOKU.make_problems(3, seed=0)
    assert all(SUDOKU.verify(p, format_grid(reference_solution(p), p["size"])).correct for p in probs)
    with pytest.raises(BadInputError):
        SUDOKU.make_problems(1, size=7)


@pytest.mark.parametrize("obj,expect", [
    ({"grid": P6["grid"], "size": 6}, P6["grid"]),
    ({"grid": P6["grid"]}, P6["grid"]),
    ({"grid": P6["grid"].replace(".", "0").replace("/", ""), "id": "x"}, P6["grid"]),
    ({"grid": P6["grid"].split("/")}, P6["grid"]),
    ({"grid": [[0, 3, 0, 0, 0, 0], [6, 0, 2, 0, 0, 0], [0, 1, 0, 2, 5, 0], [0, 0, 0, 1, 0, 3],
               [2, 5, 0, 0, 6, 0], [0] * 6]}, P6["grid"]),
])
def test_parse_problem_accepts(obj, expect):
    p = SUDOKU.parse_problem(json.loads(json.dumps(obj)))
    assert p["grid"] == expect and p["size"] == 6 and p["givens"] == 11 and p["id"]


@pytest.mark.parametrize("obj", [
    [1, 2], "grid", {}, {"grid": "123"}, {"grid": P6["grid"], "size": 9}, {"grid": P6["grid"], "size": "6"},
    {"grid": P6["grid"], "extra": 1}, {"grid": "11" + "." * 34}, {"grid": "7" + "." * 35},
    {"grid": "a" * 36}, {"grid": 5}, {"grid": P6["grid"], "id": [1]}, {"grid": "." * 25},
])
def test_parse_problem_rejects(obj):
    with pytest.raises(BadInputError):
        SUDOKU.parse_problem(obj)


@pytest.mark.slow
def test_short_sudoku_training_run_saves_reloads_and_evaluates(tmp_path):
    import torch

    from ttc.backends.transformers_backend import TransformersBackend
    from ttc.tasks.training import checkpoint_task
    from ttc.tasks.training.sudoku_eval import evaluate_direct, evaluate_search
    from ttc.tasks.training import RECIPES, TrainConfig, example_stream, train

    torch.set_num_threads(1)
    assert {"sudoku-direct", "sudoku-search"} <= set(RECIPES)
    for kind in ("direct", "search"):
        cfg = TrainConfig(name="tiny", task="sudoku", kind=kind, mix={kind: 1.0}, hidden_size=32, layers=1, heads=2,
                          kv_heads=1, intermediate_size=64, context=1024 if kind == "search" else 96,
                          batch_tokens=1024, minutes=None, steps=2, warmup_steps=1, trace_max_chars=1000)
        p, c = next(example_stream(cfg, 0))
        assert p.endswith(":" if kind == "direct" else "?\n") and c.endswith(".")
        state = train(cfg, tmp_path / kind, progress=False)
        assert state["steps"] == 2 and state["tokens"] > 0
        assert checkpoint_task(tmp_path / kind) == "sudoku"
    be = TransformersBackend(tmp_path / "direct", device="cpu")
    probs = SUDOKU.make_problems(2, seed=0)
    res = evaluate_direct(be, probs, n=4, ks=(1, 4), greedy=False)
    assert res["n_problems"] == 2 and set(res["pass_at_k"]) == {"1", "4"}
    res = evaluate_search(TransformersBackend(tmp_path / "search", device="cpu"), probs, budgets=[16, 32])
    assert set(res["solve_rate_within_tokens"]) == {"16", "32"}
