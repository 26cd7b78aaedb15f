"""The reflective CountDown format (tasks/countdown/reflective.py) and its built-in model.

The format contract TrimR builds on: one thought per line, markers at line starts, the
verifier's ``canonical`` reads an answer from a thought exactly when the thought states
one, the final answer after the conclusion marker is what ``verify`` reads.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from ttc.tasks.countdown import COUNTDOWN
from ttc.tasks.countdown.formats import prompt, training_example
from ttc.tasks.countdown.generate import make_problems
from ttc.tasks.countdown.reflective import (
    ANSWER_TAG,
    CONCLUDE,
    FIRM_PROMPT,
    MARKERS,
    MILD_PROMPT,
    PROMPT_SUFFIX,
    ROUNDS_MAX,
    ROUNDS_MEAN,
    redundancy_points,
    reflective_trace,
    sample_rounds,
    split_thoughts,
    thought_answers,
)
from ttc.verifiers.countdown import CountdownVerifier

VER = CountdownVerifier()
CKPT = Path(__file__).resolve().parents[1] / "tasks" / "checkpoints" / "countdown-reflective"


@pytest.fixture(scope="module")
def traces():
    rng = random.Random(3)
    probs = make_problems(400, seed=11, split="train") + make_problems(100, seed=12, split="train", n_numbers=3)
    out = []
    for p in probs:
        info: dict = {}
        text = reflective_trace(p, rng, info=info)
        assert text is not None
        out.append((p, text, info))
    return out


def test_prompt_and_dispatch():
    p = {"numbers": [48, 27, 5, 81], "target": 30}
    assert prompt(p, "reflective") == "48 27 5 81>30" + PROMPT_SUFFIX
    assert COUNTDOWN.prompt(p, "reflective") == "48 27 5 81>30!\n"
    assert "reflective" in COUNTDOWN.formats
    assert COUNTDOWN.max_tokens(p, "reflective") + len(COUNTDOWN.prompt(p, "reflective")) <= 512
    pr, comp = training_example(p, "reflective", random.Random(0))
    assert pr == COUNTDOWN.prompt(p, "reflective")
    assert comp.endswith(".") and f"\n{CONCLUDE}\n{ANSWER_TAG}" in comp
    with pytest.raises(ValueError):
        prompt(p, "reflective", hint="81-48=33")


def test_thought_lines_follow_the_syntax(traces):
    for p, text, _ in traces:
        body, _, final = text.rpartition(f"{CONCLUDE}\n")
        assert final.startswith(ANSWER_TAG) and final.endswith(".") and final.count(".") == 1
        lines = body.rstrip("\n").split("\n")
        assert "." not in body  # "." is the stop string: only the final answer ends with it
        for i, line in enumerate(lines):
            if i > 0:
                assert line.split(",")[0].split(" ")[0] in MARKERS, line
            else:
                assert not any(line.startswith(m) for m in MARKERS), line
        assert split_thoughts(text) == lines


def test_canonical_reads_exactly_the_stated_answers(traces):
    stated = none = 0
    for p, text, _ in traces:
        for line in split_thoughts(text):
            got = VER.canonical(p, line)
            if ANSWER_TAG in line:
                # The answer part after "A:" is the answer the thought states.
                assert got is not None and got == VER.canonical(p, line.split(ANSWER_TAG, 1)[1]), line
                stated += 1
            elif re.fullmatch(r"[0-9+\-*/=: ,]+", line):
                assert got is not None, line  # a bare first attempt (direct format)
                stated += 1
            else:
                assert got is None, line  # a caught error, a failed try, "Hmm,no time"
                none += 1
    assert stated > 500 and none > 100


def test_final_answer_is_the_one_after_the_conclusion(traces):
    right = 0
    for p, text, info in traces:
        final = text.rpartition(f"{CONCLUDE}\n")[2]
        assert VER.canonical(p, text) == VER.canonical(p, final)
        ok = VER.verify(p, text).correct
        right += ok
        if not info["cut"]:
            assert ok, text  # an uncut trace always ends with a right answer
    assert right / len(traces) > 0.95


def test_shares_of_corrected_and_cut_traces(traces):
    n = len(traces)
    wrong_fixed = [t for t in traces if t[2]["wrong_first"]]
    assert len(wrong_fixed) / n >= 0.20
    for p, text, _ in wrong_fixed:
        answers = [a for _, a in thought_answers(p, text, VER.canonical) if a is not None]
        first = next(t for t in split_thoughts(text) if VER.canonical(p, t) is not None)
        assert not VER.verify(p, first).correct and VER.verify(p, text).correct
        assert len(set(answers)) >= 2
    cut = [t for t in traces if t[2]["cut"]]
    assert len(cut) / n >= 0.10
    assert any(FIRM_PROMPT in text for _, text, _ in cut)
    assert all(MILD_PROMPT in text for _, text, _ in traces)
    assert all(FIRM_PROMPT not in text for _, text, info in traces if not info["cut"])


def test_rounds_follow_the_stated_source():
    rng = random.Random(0)
    draws = [sample_rounds(rng) for _ in range(20000)]
    assert min(draws) == 1 and max(draws) == ROUNDS_MAX
    assert abs(sum(draws) / len(draws) - ROUNDS_MEAN) < 0.1


def test_redundancy_points():
    text = "1+2=3\nWait,check A:1+2=3\nAlternatively,1*2=2 no\nHmm,check A:1+2=3\nBut,check A:1+2=3\n#\nA:1+2=3."
    p = {"numbers": [1, 2], "target": 3}
    answers = thought_answers(p, text, VER.canonical)
    assert [a is not None for _, a in answers] == [True, True, False, True, True]
    first, third = redundancy_points(answers)
    assert text[:first] == "1+2=3\n"
    assert text[:third].endswith("Hmm,check A:1+2=3\n")
    # A different answer restarts the count.
    text2 = "1+2=3\nAlternatively A:2+1=3\nWait,check A:1*3=3\n#\nA:1*3=3."
    assert redundancy_points(thought_answers(p, text2, VER.canonical))[1] is None


@pytest.mark.skipif(not CKPT.is_dir(), reason="countdown-reflective not shipped yet")
def test_builtin_model_reflects_and_concludes_when_told():
    """The real model re-checks after its first answer, and writes its answer after MILD_PROMPT."""
    import torch

    from ttc.backends.transformers_backend import TransformersBackend
    from ttc.backends.types import SamplingParams

    torch.set_num_threads(1)
    be = TransformersBackend(str(CKPT), device="cpu")
    probs = COUNTDOWN.make_problems(12, seed=0, split="test", n_numbers=3)
    prompts = [COUNTDOWN.prompt(p, "reflective") for p in probs]
    gens = be.generate(prompts, SamplingParams(n=1, max_tokens=COUNTDOWN.max_tokens(None, "reflective"),
                                               temperature=0.0, stop=COUNTDOWN.stop))
    texts = [g.completions[0].text for g in gens]
    assert sum(len(split_thoughts(t)) >= 2 for t in texts) >= 6  # it re-checks
    assert sum(f"\n{CONCLUDE}\n{ANSWER_TAG}" in t for t in texts) >= 10  # it concludes by itself
    # Cut after the first thought and told to conclude: the answer follows at once.
    cut = [pr + split_thoughts(t)[0] + "\n" + MILD_PROMPT for pr, t in zip(prompts, texts) if split_thoughts(t)]
    outs = be.generate(cut, SamplingParams(n=1, max_tokens=64, temperature=0.0, stop=COUNTDOWN.stop))
    concluded = [o.completions[0].text for o in outs]
    assert sum(c.startswith(ANSWER_TAG) and VER.canonical({}, c) is not None for c in concluded) >= len(cut) - 1
