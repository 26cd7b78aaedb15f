"""CountDown prompts and the three completion formats.

Every completion ends with the answer as comma-separated steps and a "." (the stop
string), so the verifier can check it against the problem alone. A direct completion
writes, after each step but the last, the numbers still available (the same
``op:remaining`` syntax as search-trace lines): ``81-48=33:27 5 33,33-27=6:5 6,6*5=30.``
The states cost a few tokens and teach a tiny model to copy only what is left (without
them, reused and invented numbers were its main error).

Prompt (one line, no spaces around ">"), numbers in given order then the target::

    direct:          "48 27 5 81>30:"         -> "81-48=33:27 5 33,33-27=6:5 6,6*5=30."
    plan-conditioned "48 27 5 81>30|81-48=33:"   (hint: first operation)
                     "48 27 5 81>30|33:"         (hint: an intermediate value)
    search:          "48 27 5 81>30?\\n"
    reflective:      "48 27 5 81>30!\\n"  (thought-marked traces, see :mod:`.reflective`)

Search trace (depth-first, children sorted by a heuristic and pruned to the best few,
one compact line per node: ``op:remaining numbers>target``; a leading space per depth). A
two-number node lists what its last step can give (``+65 -55 *300 /12``); when none is the
target the search moves on to the next sibling at the indentation shown, else the next
line is the solving operation and an ``A:`` line gives the whole path::

    81-48=33:27 5 33>30
     33+27=60:5 60>30 +65 -55 *300 /12
     33-27=6:5 6>30 +11 -1 *30
      6*5=30
    A:81-48=33,33-27=6,6*5=30.
"""

from __future__ import annotations

import random

from .reflective import PROMPT_SUFFIX, reflective_trace
from .solver import Step, format_step, format_steps, moves, solve

__all__ = [
    "END",
    "prompt",
    "direct_completion",
    "hint_for",
    "follows_hint",
    "search_trace",
    "heuristic",
    "training_example",
]

END = "."


def _nums(numbers) -> str:
    return " ".join(str(int(n)) for n in numbers)


def prompt(problem: dict, fmt: str = "direct", hint: str | int | None = None) -> str:
    """The prompt text for a problem in a format ("direct" or "search").

    Args:
        problem: ``{"numbers": [...], "target": N}``.
        fmt: "direct" (also used with a hint, the plan-conditioned format) or "search".
        hint: A first operation like ``"81-48=33"`` or an intermediate value like ``33``.
    """
    head = f"{_nums(problem['numbers'])}>{int(problem['target'])}"
    if fmt == "search":
        if hint is not None:
            raise ValueError("the search format takes no hint")
        return head + "?\n"
    if fmt == "reflective":
        if hint is not None:
            raise ValueError("the reflective format takes no hint")
        return head + PROMPT_SUFFIX
    if fmt != "direct":
        raise ValueError(f"unknown format {fmt!r}; expected 'direct', 'search' or 'reflective'")
    if hint is not None:
        head += f"|{str(hint).strip()}"
    return head + ":"


def direct_completion(steps: list[Step], numbers=None) -> str:
    """Only the successful path; with ``numbers``, each step is followed by what is left:
    ``"81-48=33:27 5 33,33-27=6:5 6,6*5=30."`` (else ``"81-48=33,33-27=6,6*5=30."``)."""
    if numbers is None:
        return format_steps(steps) + END
    left = [int(n) for n in numbers]
    parts = []
    for i, step in enumerate(steps):
        a, _, b, r = step
        left.remove(a)
        left.remove(b)
        left.append(r)
        parts.append(format_step(step) + ("" if i == len(steps) - 1 else ":" + _nums(left)))
    return ",".join(parts) + END


def hint_for(steps: list[Step], rng: random.Random, kind: str | None = None) -> str:
    """A hint taken from a solution: its first operation or one intermediate value."""
    kind = kind or rng.choice(["op", "value"])
    if kind == "op" or len(steps) < 2:
        return format_step(steps[0])
    return str(rng.choice(steps[:-1])[3])


def follows_hint(steps: list[Step], hint: str) -> bool:
    """True when a parsed solution follows a hint (same first op, or value produced)."""
    hint = hint.strip()
    if not steps:
        return False
    if "=" in hint:
        return format_step(steps[0]) == hint
    return any(str(s[3]) == hint for s in steps[:-1])


def heuristic(state: tuple[int, ...], target: int) -> float:
    """Lower is more promising: distance of the closest number to the target, where a
    number that divides the target (or is a multiple of it) counts as close too."""
    best = float("inf")
    for n in state:
        d = abs(target - n)
        if n > 1 and target % n == 0:
            d = min(d, 1 + abs(target // n - min(state, key=lambda m: abs(m - target // n))))
        if n > target and n % target == 0:
            d = min(d, 1 + n // target)
        best = min(best, d)
    return best + 0.01 * sum(state) / len(state)  # ties: prefer smaller numbers


def search_trace(
    numbers, target: int, width: tuple[int, ...] = (6, 5), max_chars: int = 2000
) -> str | None:
    """A depth-first search trace that ends in a solution, or None.

    None when the pruned search finds no solution or the trace would exceed
    ``max_chars`` (such problems are left out of training data).

    Args:
        numbers: The given numbers (3 or 4).
        target: The target.
        width: How many children (best by :func:`heuristic`) are tried per depth.
        max_chars: Cap on the trace length in characters (= tokens, character tokenizer).
    """
    lines: list[str] = []
    path: list[Step] = []
    size = 0

    def add(line: str) -> bool:
        nonlocal size
        lines.append(line)
        size += len(line) + 1
        return size <= max_chars

    def add_len(n: int) -> bool:
        nonlocal size
        size += n
        return size <= max_chars

    def dfs(state: tuple[int, ...], depth: int) -> bool | None:
        options = sorted(moves(state), key=lambda m: heuristic(m[1], target))
        k = width[min(depth, len(width) - 1)]
        for step, child in options[:k]:
            if not add(f"{' ' * depth}{format_step(step)}:{_nums(child)}>{target}"):
                return None
            path.append(step)
            if len(child) == 2:
                # The leaf writes every result its two numbers give, whatever the target:
                # arithmetic written apart from the target is honest, while a bare "dead
                # end" verdict taught the model to invent a last step that hits the target.
                finals = moves(child)
                results = " " + " ".join(f"{s[1]}{c[0]}" for s, c in finals)
                lines[-1] += results
                if not add_len(len(results)):
                    return None
                done = next((s for s, c in finals if c[0] == target), None)
                if done is not None:
                    path.append(done)
                    return add(f"{' ' * (depth + 1)}{format_step(done)}") or None
            else:
                found = dfs(child, depth + 1)
                if found is None:
                    return None
                if found:
                    return True
            path.pop()
        return False

    state = tuple(int(n) for n in numbers)
    if len(state) == 2:
        return None
    found = dfs(state, 0)
    if not found:
        return None
    text = "\n".join(lines) + "\nA:" + format_steps(path) + END
    return text if len(text) <= max_chars else None


def training_example(
    problem: dict, fmt: str, rng: random.Random, **trace_kw
) -> tuple[str, str] | None:
    """(prompt, completion) for one problem in "direct", "plan", "search" or "reflective"
    format ("reflective" takes ``max_chars`` from ``trace_kw`` as its length cap)."""
    if fmt == "reflective":
        trace = reflective_trace(problem, rng, max_chars=trace_kw.get("max_chars", 490))
        return None if trace is None else (prompt(problem, "reflective"), trace)
    if fmt == "search":
        trace = search_trace(problem["numbers"], problem["target"], **trace_kw)
        return None if trace is None else (prompt(problem, "search"), trace)
    steps = solve(problem["numbers"], problem["target"], rng)
    if steps is None:
        return None
    completion = direct_completion(steps, problem["numbers"])
    if fmt == "plan":
        return prompt(problem, "direct", hint_for(steps, rng)), completion
    return prompt(problem, "direct"), completion
