"""The thought-marked ("reflective") CountDown format: traces that re-check an answer.

Real reasoning models keep going after they have an answer: they re-derive it, try other
approaches, and sometimes a re-check catches a wrong first answer. ``countdown-reflective``
is trained on synthetic traces that do the same, so that TrimR (issue 14) has redundant
thinking to cut. One thought per line; every line ends with ``"\\n"``::

    48 27 5 81>30!                                   <- prompt (PROMPT_SUFFIX = "!\\n")
    81-48=33:27 5 33,33-27=6:5 6,6*5=30              <- first thought: an attempt
    Wait,check A:81-48=33:27 5 33,33-27=6:5 6,6*5=30 <- re-check, same answer
    Alternatively,48+27=75:5 81 75,81-75=6:5 6,6*5=30 no   <- (a failed try states none)
    #                                                <- CONCLUDE
    A:81-48=33:27 5 33,33-27=6:5 6,6*5=30.           <- final answer, "." stops

Thought syntax, chosen so that ``CountdownVerifier().canonical(problem, line)`` reads the
answer of a thought line and only that: a line that states an answer is either the first
attempt (bare steps, the direct format) or carries it after ``"A:"``; a line that states
none (a caught error ``"Wait,6*4=24 not 30"``, a failed try ending in ``" no"``) always
contains letters outside any ``"A:"`` part, so the verifier reads nothing. The final answer
is the last ``"A:"`` of the text, so ``verify`` of a whole completion checks the answer
after the last conclusion marker. No thought contains ".", the stop string.

TrimR injects ``MILD_PROMPT`` or ``FIRM_PROMPT`` at a thought boundary, i.e. right after a
``"\\n"`` that ends a thought line; the model then writes ``"A:"``, its current answer and
".". Both texts occur in training: every full trace ends with ``MILD_PROMPT`` and a share
of traces is cut at a random thought boundary (:data:`CUT_SHARE`).

The exact solver makes training data only (DESIGN.md).
"""

from __future__ import annotations

import math
import random

from .solver import Step, format_step, moves, solve

__all__ = [
    "PROMPT_SUFFIX",
    "MARKERS",
    "CONCLUDE",
    "MILD_PROMPT",
    "FIRM_PROMPT",
    "ANSWER_TAG",
    "REFLECTIVE_MAX_TOKENS",
    "ROUNDS_MEAN",
    "ROUNDS_MAX",
    "WRONG_FIRST_SHARE",
    "FAILED_FIRST_SHARE",
    "ALTERNATIVE_SHARE",
    "CUT_SHARE",
    "reflective_prompt",
    "reflective_trace",
    "sample_rounds",
    "split_thoughts",
    "thought_answers",
    "redundancy_points",
]

PROMPT_SUFFIX = "!\n"
#: Words that start every thought after the first (at the start of a line, then ",").
MARKERS = ("Wait", "But", "Alternatively", "Hmm")
CONCLUDE = "#"
ANSWER_TAG = "A:"
#: What TrimR injects at a thought boundary (after a "\n"): a bare conclusion marker ...
MILD_PROMPT = CONCLUDE + "\n"
#: ... or a firmer one for underthinking: a marker thought, then the conclusion marker.
FIRM_PROMPT = "Hmm,no time\n" + CONCLUDE + "\n"

# Rounds of stated answers per trace (first answer included). Source: Chen et al. 2024,
# "Do NOT Think That Much for 2+3=? On the Overthinking of o1-Like LLMs" (arXiv
# 2412.21187, Sec. 2), which segments QwQ-32B-Preview and DeepSeek-R1 responses into
# solution rounds: on average two to four rounds per response (more on easy sets such as
# ASDIV, fewer on MATH500), and the first round already holds the correct answer in over
# 92% of the correct responses. We use a mean of 3.2 rounds, QwQ-32B-Preview's MATH500
# figure as we read it in the paper (the text we could retrieve here, the abstract and a
# review of the paper, confirms the 2-4 range and that most correct answers come in the
# first round, not the decimals 3.2 and 92%): rounds =
# 1 + Poisson(2.2), capped at 7 by the 512-token context (mean 3.18 after the cap). The
# Poisson shape is our choice; the paper reports means and histograms, not a law. The
# distribution was fixed before any model was trained and not tuned to any result.
ROUNDS_MEAN = 3.2
ROUNDS_MAX = 7
#: Issue 14 asks for >= 20% of traces with a wrong first answer that a later thought fixes;
#: drawn for 30% since some problems admit no plausible wrong answer and some traces are
#: cut before the fix (measured: ~27% of traces end up wrong-then-fixed).
WRONG_FIRST_SHARE = 0.30
#: A first attempt that visibly fails (no answer stated) before a working one.
FAILED_FIRST_SHARE = 0.10
#: Share of later rounds that try another approach instead of re-checking.
ALTERNATIVE_SHARE = 0.25
#: Issue 14 asks for >= 10% of traces cut at a random thought boundary and concluded.
CUT_SHARE = 0.15
#: Generation cap: the 512-token context less the longest prompt (4 two-digit numbers).
REFLECTIVE_MAX_TOKENS = 496
FIRM_SHARE = 0.4  # of the cut traces, concluded by FIRM_PROMPT instead of MILD_PROMPT


def _nums(numbers) -> str:
    return " ".join(str(int(n)) for n in numbers)


def reflective_prompt(problem: dict) -> str:
    """``"48 27 5 81>30!\\n"``."""
    return f"{_nums(problem['numbers'])}>{int(problem['target'])}{PROMPT_SUFFIX}"


def _with_states(steps: list[Step], numbers) -> str:
    """``"81-48=33:27 5 33,33-27=6:5 6,6*5=30"`` (what is left after each step but the last).

    Numbers a step uses that are not left (a misread or reused number) are simply not
    removed, so a wrong answer's states stay those of the misreading."""
    left = [int(n) for n in numbers]
    parts = []
    for i, (a, op, b, r) in enumerate(steps):
        for x in (a, b):
            if x in left:
                left.remove(x)
        left.append(r)
        parts.append(format_step((a, op, b, r)) + ("" if i == len(steps) - 1 else ":" + _nums(left)))
    return ",".join(parts)


def sample_rounds(rng: random.Random) -> int:
    """Rounds of stated answers: 1 + Poisson(ROUNDS_MEAN - 1), capped at ROUNDS_MAX."""
    lam, k, p = ROUNDS_MEAN - 1, 0, 1.0
    limit = math.exp(-lam)
    while True:  # Knuth's method: fine for a small mean
        p *= rng.random()
        if p <= limit:
            break
        k += 1
    return min(1 + k, ROUNDS_MAX)


def _random_path(numbers, rng: random.Random) -> tuple[list[Step], int]:
    """A random full path of legal steps and its end value."""
    state = tuple(int(n) for n in numbers)
    path: list[Step] = []
    while len(state) > 1:
        step, state = rng.choice(moves(state))
        path.append(step)
    return path, state[0]


def _failed_path(numbers, target: int, rng: random.Random) -> list[Step] | None:
    """A legal path that ends away from the target (a visibly failed try)."""
    for _ in range(20):
        path, end = _random_path(numbers, rng)
        if end != target:
            return path
    return None


def _wrong_answer(numbers, target: int, rng: random.Random) -> tuple[str, str] | None:
    """A wrong answer that claims the target, and the thought that catches it.

    Three kinds, as small models and real ones make them: an arithmetic slip in the last
    step (a path that ends near the target, written as if it hit it), a number used twice,
    a number misread (not given)."""
    kind = rng.choice(["slip", "reuse", "misread"])
    nums = [int(n) for n in numbers]
    if kind in ("reuse", "misread"):
        for _ in range(8):
            i = rng.randrange(len(nums))
            if kind == "reuse":
                others = [n for j, n in enumerate(nums) if j != i and n != nums[i]]
                if not others:
                    continue
                x = rng.choice(others)
            else:
                x = nums[i] + rng.choice([-3, -2, -1, 1, 2, 3])
                if x < 1 or x in nums:
                    continue
            changed = nums[:i] + [x] + nums[i + 1:]
            steps = solve(changed, target, rng)
            if steps is None:
                continue
            used = [v for s in steps for v in (s[0], s[2])]
            if x not in used:
                continue  # the wrong number must appear in the answer to be caught
            catch = f"Wait,{x} used twice" if kind == "reuse" else f"Wait,{x} not given"
            return _with_states(steps, changed), catch
    # An arithmetic slip: a path whose last step misses the target by a little.
    for _ in range(200):
        path, end = _random_path(nums, rng)
        if end != target and abs(end - target) <= 20:
            a, op, b, _ = path[-1]
            shown = path[:-1] + [(a, op, b, target)]
            return _with_states(shown, nums), f"Wait,{a}{op}{b}={end} not {target}"
    return None


def _other_solution(numbers, target: int, known: str, rng: random.Random) -> str | None:
    """A solution written differently from ``known`` (another approach), or None."""
    for _ in range(4):
        steps = solve(numbers, target, rng)
        if steps is None:
            return None
        text = _with_states(steps, numbers)
        if _canon(text) != _canon(known):
            return text
    return None


def _canon(text: str) -> str:
    """Order-free key of an answer's steps (same solution written in another order)."""
    return ",".join(sorted(p.split(":")[0] for p in text.split(",")))


def reflective_trace(problem: dict, rng: random.Random, max_chars: int = 490, info: dict | None = None) -> str | None:
    """One training completion in the reflective format (prompt not included), or None.

    Args:
        problem: ``{"numbers": [...], "target": N}`` (must be solvable).
        rng: Seeded randomness: rounds, error kinds, cuts.
        max_chars: Length cap (= tokens, character tokenizer); later rounds are dropped
            until the trace fits, so long traces are shortened, not left out.
        info: If given, filled with what was drawn: ``rounds``, ``wrong_first`` (a wrong
            first answer that a later thought catches and fixes), ``failed_first``, ``cut``.
    """
    numbers, target = [int(n) for n in problem["numbers"]], int(problem["target"])
    steps = solve(numbers, target, rng)
    if steps is None:
        return None
    correct = _with_states(steps, numbers)
    rounds = sample_rounds(rng)
    # (thought text, the answer it states or None)
    thoughts: list[tuple[str, str | None]] = []
    u = rng.random()
    wrong = _wrong_answer(numbers, target, rng) if u < WRONG_FIRST_SHARE else None
    if wrong is not None:
        thoughts += [(wrong[0], wrong[0]), (wrong[1], None), (f"Hmm,so {ANSWER_TAG}{correct}", correct)]
        used = 2
    elif u < WRONG_FIRST_SHARE + FAILED_FIRST_SHARE and (fail := _failed_path(numbers, target, rng)):
        thoughts += [(_with_states(fail, numbers) + " no", None), (f"Alternatively {ANSWER_TAG}{correct}", correct)]
        used = 1
    else:
        thoughts.append((correct, correct))
        used = 1
    current = correct
    for _ in range(max(0, rounds - used)):
        if rng.random() < ALTERNATIVE_SHARE:
            other = _other_solution(numbers, target, current, rng)
            if other is not None:
                thoughts.append((f"Alternatively {ANSWER_TAG}{other}", other))
                current = other
                continue
            fail = _failed_path(numbers, target, rng)
            if fail is not None:
                thoughts.append((f"Alternatively,{_with_states(fail, numbers)} no", None))
                continue
        marker = rng.choice(("Wait", "Hmm", "But"))
        thoughts.append((f"{marker},check {ANSWER_TAG}{current}", current))

    cut = rng.random() < CUT_SHARE
    if cut:
        keep = rng.randint(1, len(thoughts))
        thoughts = thoughts[:keep]
    for _ in range(len(thoughts)):
        text = _assemble(thoughts, cut, rng, correct)
        if len(text) <= max_chars:
            if info is not None:
                info.update(rounds=rounds, cut=cut, failed_first=wrong is None and thoughts[0][1] is None,
                            wrong_first=wrong is not None and len(thoughts) >= 3)
            return text
        thoughts = thoughts[:-1] if len(thoughts) > 1 else thoughts
    return None


def _assemble(thoughts, cut: bool, rng: random.Random, correct: str) -> str:
    """Thought lines, a conclusion and the final answer (the current one when cut)."""
    # The current answer: the last one stated and not refuted by a later thought.
    current = None
    for text, ans in thoughts:
        if ans is not None:
            current = ans
        elif text.startswith("Wait,"):
            current = None  # a caught error: the model has no answer until it fixes it
    conclude = FIRM_PROMPT if cut and rng.random() < FIRM_SHARE else MILD_PROMPT
    final = current if current is not None else correct  # no answer yet: a fresh attempt
    body = "".join(t + "\n" for t, _ in thoughts)
    return f"{body}{conclude}{ANSWER_TAG}{final}."


def split_thoughts(completion: str) -> list[str]:
    """The thought lines of a completion, up to (not including) the first conclusion line.

    A thought starts at a line that begins with a marker word (the first thought: at the
    start); continuation lines, if a model writes any, stay with their thought."""
    out: list[str] = []
    for line in completion.split("\n"):
        if line.strip() == CONCLUDE:
            break
        if not out or any(line.startswith(m) for m in MARKERS):
            out.append(line)
        else:
            out[-1] += "\n" + line
    return [t for t in out if t.strip()]


def thought_answers(problem: dict, completion: str, canonical) -> list[tuple[int, str | None]]:
    """Per thought before the conclusion: (offset of the thought's end in ``completion``,
    canonical answer it states or None), with ``canonical(problem, text)`` a verifier's.

    The offset counts the thought's closing ``"\\n"``; with the character tokenizer it is
    also the number of completion tokens up to the end of that thought."""
    out: list[tuple[int, str | None]] = []
    pos = 0
    for thought in split_thoughts(completion):
        start = completion.find(thought, pos)
        pos = start + len(thought) + 1
        out.append((min(pos, len(completion)), canonical(problem, thought)))
    return out


def redundancy_points(answers: list[tuple[int, str | None]], agree: int = 3) -> tuple[int | None, int | None]:
    """Offsets of the end of the first answer-stating thought and of the thought that makes
    ``agree`` consecutive equivalent answers (answer-less thoughts are skipped; a different
    answer restarts the count), each None when it never happens."""
    first = third = None
    run, last = 0, None
    for end, ans in answers:
        if ans is None:
            continue
        if first is None:
            first = end
        run = run + 1 if ans == last else 1
        last = ans
        if run >= agree and third is None:
            third = end
    return first, third
