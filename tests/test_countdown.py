"""CountDown: generator, solver, formats (round trip), verifier (adversarial), training."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from ttc.backends.errors import BadInputError
from ttc.tasks.countdown import COUNTDOWN, HELD_OUT_TARGETS, make_problems, split_of
from ttc.tasks.countdown.formats import (
    direct_completion,
    follows_hint,
    hint_for,
    prompt,
    search_trace,
    training_example,
)
from ttc.tasks.countdown.solver import format_steps, moves, solvable, solvable_batch, solve
from ttc.verifiers import CountdownVerifier, Verdict

V = CountdownVerifier()
P = {"id": "p", "numbers": [48, 27, 5, 81], "target": 30}


# ---------------------------------------------------------------- generator


def test_generator_is_deterministic_and_seeded():
    a = make_problems(50, seed=3, split="train")
    assert a == make_problems(50, seed=3, split="train")
    assert a != make_problems(50, seed=4, split="train")
    assert len({p["id"] for p in a}) == 50


def test_generator_distribution_and_solvability():
    probs = make_problems(400, seed=0, split="train")
    nums = [n for p in probs for n in p["numbers"]]
    assert all(len(p["numbers"]) == 4 for p in probs)
    assert min(nums) >= 1 and max(nums) <= 99
    assert max(nums) >= 95 and min(nums) <= 3  # spans the range
    targets = Counter(p["target"] for p in probs)
    assert all(10 <= t <= 100 for t in targets)
    assert len(targets) > 60
    assert all(solvable(p["numbers"], p["target"]) for p in probs[:100])


def test_held_out_targets_and_disjoint_splits():
    assert len(HELD_OUT_TARGETS) == 9
    train = make_problems(300, seed=0, split="train")
    test = make_problems(200, seed=0, split="test")
    val = make_problems(100, seed=0, split="val_target")
    assert not any(p["target"] in HELD_OUT_TARGETS for p in train + test)
    assert all(p["target"] in HELD_OUT_TARGETS for p in val)
    key = lambda p: (tuple(sorted(p["numbers"])), p["target"])
    assert not {key(p) for p in train} & {key(p) for p in test}
    assert all(split_of(p["numbers"], p["target"]) == "test" for p in test)
    assert all(split_of(p["numbers"], p["target"]) == "train" for p in train)


def test_three_number_variant():
    probs = make_problems(50, seed=1, split="test", n_numbers=3)
    assert all(len(p["numbers"]) == 3 and solvable(p["numbers"], p["target"]) for p in probs)


def test_bad_split_and_parse_problem():
    with pytest.raises(BadInputError):
        COUNTDOWN.make_problems(3, split="nope")
    assert COUNTDOWN.parse_problem({"numbers": [1, 2, 3], "target": 6})["id"]
    assert COUNTDOWN.parse_problem({"id": "x", "numbers": [1, 2], "target": 3})["id"] == "x"
    for bad in [[], "x", {"numbers": [1, 2]}, {"numbers": [], "target": 3}, {"numbers": [1, -2], "target": 3},
                {"numbers": [1, 2.5], "target": 3}, {"numbers": [1, 2], "target": "3"},
                {"numbers": [1, True], "target": 3}, {"numbers": [1, 2], "target": 3, "extra": 1}]:
        with pytest.raises(BadInputError) as e:
            COUNTDOWN.parse_problem(bad)
        assert "\n" not in str(e.value)


# ---------------------------------------------------------------- solver


def test_solver_finds_valid_solutions_and_agrees_with_batch():
    rng = random.Random(0)
    nums = [[rng.randint(1, 99) for _ in range(4)] for _ in range(300)]
    tgts = [rng.randint(10, 100) for _ in range(300)]
    batch = solvable_batch(nums, tgts)
    for n, t, b in zip(nums, tgts, batch):
        steps = solve(n, t, rng)
        assert (steps is not None) == bool(b) == solvable(n, t)
        if steps:
            assert V.verify({"numbers": n, "target": t}, format_steps(steps)).correct


def test_solver_rules():
    assert solve([2, 2], 0) is None  # 2-2 = 0 is not allowed
    assert solve([7, 2], 3) is None  # 7/2 is not an integer
    assert solve([6, 3], 2) == [(6, "/", 3, 2)]
    assert all(r > 0 for (_, _, _, r), _ in moves((5, 5, 1)))


# ---------------------------------------------------------------- formats


def test_prompt_formats():
    assert prompt(P) == "48 27 5 81>30:"
    steps = [(81, "-", 48, 33), (33, "-", 27, 6), (6, "*", 5, 30)]
    assert direct_completion(steps, P["numbers"]) == "81-48=33:27 5 33,33-27=6:5 6,6*5=30."
    assert prompt(P, hint="81-48=33") == "48 27 5 81>30|81-48=33:"
    assert prompt(P, hint=33) == "48 27 5 81>30|33:"
    assert prompt(P, "search") == "48 27 5 81>30?\n"
    with pytest.raises(BadInputError):
        COUNTDOWN.prompt(P, "bogus")


@pytest.mark.parametrize("n_numbers", [3, 4])
def test_every_generated_example_parses_and_verifies(n_numbers):
    rng = random.Random(n_numbers)
    probs = make_problems(150, seed=9, split="train", n_numbers=n_numbers)
    n_traces = 0
    for p in probs:
        for fmt in ("direct", "plan", "search"):
            ex = training_example(p, fmt, rng, width=(8, 6), max_chars=1000)
            if ex is None:
                assert fmt == "search"
                continue
            pr, completion = ex
            assert completion.endswith(COUNTDOWN.stop[0])
            v = V.verify(p, completion)
            assert v.correct, (pr, completion, v.reason)
            # Stop strings are cut off by backends: the answer must verify without them.
            assert V.verify(p, completion[: -len(COUNTDOWN.stop[0])]).correct
            assert COUNTDOWN.stop[0] not in completion[:-1]
            if fmt == "search":
                n_traces += 1
                assert len(completion) <= 1000
    assert n_traces > 0.6 * len(probs)


def test_search_trace_shape():
    trace = search_trace([48, 27, 5, 81], 30, width=(99, 99), max_chars=5000)
    lines = trace.splitlines()
    assert lines[-1].startswith("A:")
    assert all(">30" in ln for ln in lines[:-2])  # the target is restated in every state
    assert search_trace([48, 27, 5, 81], 30, max_chars=10) is None


def test_plan_conditioned_completion_follows_hint():
    rng = random.Random(0)
    for p in make_problems(50, seed=2, split="train"):
        steps = solve(p["numbers"], p["target"], rng)
        for kind in ("op", "value"):
            h = hint_for(steps, rng, kind)
            assert follows_hint(steps, h)
        assert direct_completion(steps) == format_steps(steps) + "."
        with_states = direct_completion(steps, p["numbers"])
        assert with_states.count(":") == len(steps) - 1 and V.verify(p, with_states).correct


# ---------------------------------------------------------------- verifier


@pytest.mark.parametrize(
    "text",
    [
        "81-48=33,33-27=6,6*5=30.",
        "81-48=33:27 5 33,33-27=6:5 6,6*5=30.",
        "81-48=33,33-27=6,6*5=30",
        "trace\nA:81-48=33,33-27=6,5*6=30.",
        "81 - 48 = 33; 33 - 27 = 6; 6 × 5 = 30",
        "(81-48-27)*5",
        "(81 - 48 - 27) * 5 = 30",
        "5*(81-(48+27))",
    ],
)
def test_verifier_accepts(text):
    v = V.verify(P, text)
    assert isinstance(v, Verdict) and v.correct is True and v.score == 1.0


@pytest.mark.parametrize(
    "text,why",
    [
        ("81-48=33,33-27=6,6*6=36", "not available"),  # reused intermediate
        ("81-48=33,33-27=6,6*5=30,30*5=150", "5"),  # 5 used twice
        ("81-48=33,33-27=6,6*7=42", "7"),  # foreign number
        ("(81-48-27)*5*1", "1"),  # foreign number in an expression
        ("81*5=405,405/27=15,48-15=33", "not 30"),
        ("81/48=1", "not an integer"),  # division with remainder
        ("(48-81+27)*5", "not positive"),  # negative intermediate
        ("(27-27)", "not positive"),
        ("81-48=34,34-27=7", "not 34"),  # wrong arithmetic
        ("81+48=129", "every number"),  # unused numbers
        ("(81-48-27)*5=31", "not 31"),
    ],
)
def test_verifier_rejects_with_reason(text, why):
    v = V.verify(P, text)
    assert v.correct is False and v.score == 0.0
    assert why in v.reason, v.reason


GARBAGE = [
    "", " ", ".", "\n\n\n", "A:", "A:.", "=", "==30", "30", "()", "(((", ")))", "+-*/", "1/0", "81/0=0",
    "(" * 5000 + "1" + ")" * 5000, "(" * 100 + "81-48-27" + ")" * 100 + "*5",
    "9" * 5000, "9" * 30 + "*" + "9" * 30, "99999999*99999999*99999999*99999999",
    "81-48=33," * 2000, "A:" * 3000, "ø∑©ƒ∂ßå 81−48=33 ٣+٣=٦ ²", "\x00\x01\x02", "\ud800",
    "81-48=33,33-27=6,6*5=" + "9" * 100, "6*5=30" + "\n" * 100, "-81+48", "81--48", "8 1 - 4 8",
    "A:81-48=33\nA:", "(81-48-27)*5=30=30", "1e5", "0x1F", "81.0-48.0", None, 12345,
]


@pytest.mark.parametrize("text", GARBAGE, ids=range(len(GARBAGE)))
def test_verifier_never_raises_on_garbage(text):
    v = V.verify(P, text)
    assert isinstance(v, Verdict) and v.correct is False
    assert V.canonical(P, text) is None or isinstance(V.canonical(P, text), str)


def test_verifier_fuzz():
    rng = random.Random(0)
    alphabet = "0123456789+-*/=()., :A\nx×÷"
    for _ in range(3000):
        s = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
        v = V.verify(P, s)
        assert isinstance(v, Verdict)
        assert v.correct in (True, False)


def test_canonical_groups_equivalent_answers():
    a = V.canonical(P, "81-48=33,33-27=6,6*5=30")
    assert a == V.canonical(P, "81-48=33,33-27=6,5*6=30") == V.canonical(P, "5*(81-48-27)")


# ---------------------------------------------------------------- tokenizer and training


def test_tokenizer_round_trip(tmp_path):
    from transformers import AutoTokenizer

    from ttc.tasks.tokenizer import build_tokenizer

    tok = build_tokenizer()
    tok.save_pretrained(tmp_path)
    tok2 = AutoTokenizer.from_pretrained(tmp_path)
    text = prompt(P, "search") + search_trace([48, 27, 5, 81], 30)
    ids = tok2(text)["input_ids"]
    assert ids[0] == tok2.bos_token_id and len(ids) == len(text) + 1
    assert tok2.decode(ids, skip_special_tokens=True) == text
    assert tok2.eos_token_id is not None and tok2.pad_token_id is not None


def tok_ids(text: str) -> list[int]:
    from ttc.tasks.tokenizer import build_tokenizer

    return build_tokenizer()(text, add_special_tokens=False)["input_ids"]


@pytest.mark.slow
def test_short_training_run_saves_and_reloads(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ttc.tasks.training import RECIPES, TrainConfig, train

    torch.set_num_threads(1)
    assert {"countdown-direct", "countdown-direct-small", "countdown-search"} <= set(RECIPES)
    cfg = TrainConfig(name="tiny", hidden_size=32, layers=1, heads=2, kv_heads=1, intermediate_size=64,
                      batch_tokens=512, minutes=None, steps=3, warmup_steps=1)
    state = train(cfg, tmp_path / "ckpt", progress=False)
    qcfg = cfg.model_copy(update={"arch": "qwen2", "name": "tinyq"})
    train(qcfg, tmp_path / "q", progress=False)
    from ttc.tasks.training import qwen2_to_llama

    qwen2_to_llama(tmp_path / "q", tmp_path / "q2l")
    q = AutoModelForCausalLM.from_pretrained(tmp_path / "q")
    l2 = AutoModelForCausalLM.from_pretrained(tmp_path / "q2l")
    x = torch.randint(3, 60, (2, 12))
    with torch.no_grad():
        assert torch.allclose(q(x).logits, l2(x).logits, atol=1e-5)
    assert AutoTokenizer.from_pretrained(tmp_path / "q2l")("1 2")["input_ids"] == [1] + tok_ids("1 2")
    assert state["steps"] == 3 and state["tokens"] > 0
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "ckpt")
    tok = AutoTokenizer.from_pretrained(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "model.safetensors").is_file()
    # The checkpoint's own tokenizer must survive AutoTokenizer (spaces kept, one id per char).
    assert tok.convert_ids_to_tokens(tok("1 2>3:\n x")["input_ids"]) == ["<s>", "1", " ", "2", ">", "3", ":", "\n", " ", "x"]
    ids = tok([prompt(P)], return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=5, do_sample=False)
    assert out.shape[1] <= ids["input_ids"].shape[1] + 5


def test_rejection_sampling_keeps_only_verified_self_consistent_answers():
    from ttc.backends.scripted import ScriptedBackend
    from ttc.tasks.countdown.formats import direct_completion
    from ttc.tasks.countdown.solver import solve
    from ttc.tasks.training.rejection import sample_verified

    def handler(prompt, i, params):
        nums, target = prompt.rstrip(":").split(">")
        numbers = [int(n) for n in nums.split()]
        steps = solve(numbers, int(target))
        good = direct_completion(steps, numbers)
        # Same steps, wrong "numbers left" notes: the verifier accepts it, the filter must not.
        bad_notes = direct_completion(steps).replace(",", ":1 2 3,", 1)
        return [good, good, bad_notes, "1+1=2.", "garbage"][i % 5]

    pairs, stats = sample_verified(ScriptedBackend(handler), n_problems=6, samples=5, temperature=1.0,
                                   n_numbers={4: 1.0}, seed=0)
    assert stats["problems"] == 6 and stats["samples"] == 30
    assert len(pairs) == 6 and stats["solved_problems"] == 6  # one distinct good answer each
    for prompt_text, completion in pairs:
        nums, target = prompt_text.rstrip(":").split(">")
        problem = {"numbers": [int(n) for n in nums.split()], "target": int(target)}
        assert completion.endswith(".") and COUNTDOWN.verifier.verify(problem, completion).correct
        assert ":1 2 3," not in completion


def test_rft_stream_draws_from_the_pool_and_curriculum_switches_mix(monkeypatch, tmp_path):
    import torch

    from ttc.tasks.training import loop as training
    from ttc.tasks.training import TrainConfig, example_stream

    pool = [("1 2>3:", "1+2=3.")]
    cfg = TrainConfig(mix={"rft": 1.0}, rft_problems=1)
    stream = example_stream(cfg, 0, pool)
    assert [next(stream) for _ in range(3)] == pool * 3

    seen = []
    real = training._batches

    def spy(c, tokenizer, seed, pool=None):
        seen.append(dict(c.mix))
        return real(c, tokenizer, seed, pool)

    monkeypatch.setattr(training, "_batches", spy)
    torch.set_num_threads(1)
    cfg = TrainConfig(name="tiny", hidden_size=32, layers=1, heads=2, kv_heads=1, intermediate_size=64,
                      batch_tokens=256, minutes=None, steps=4, warmup_steps=1,
                      first_mix={"direct": 1.0}, first_fraction=0.5, mix={"plan": 1.0})
    assert "first 50% of the run direct 100%, then plan 100%" in cfg.data_description()
    training.train(cfg, tmp_path / "c", progress=False)
    assert seen == [{"direct": 1.0}, {"plan": 1.0}]


def test_follow_on_stage_starts_from_the_first_and_adds_up_its_cost(tmp_path):
    import torch

    from ttc.tasks.training import TrainConfig, train

    torch.set_num_threads(1)
    shape = {"name": "tiny", "hidden_size": 32, "layers": 1, "heads": 2, "kv_heads": 1, "intermediate_size": 64,
             "batch_tokens": 256, "minutes": None, "warmup_steps": 1}
    cfg = TrainConfig(**shape, steps=2, then=TrainConfig(**shape, steps=3, lr=1e-4))
    state = train(cfg, tmp_path / "c", progress=False)
    assert state["steps"] == 5 and state["continued_from"]["steps"] == 2
    assert state["config"]["init_from"] == str((tmp_path / "c").resolve()) + "-stage1"
    assert (tmp_path / "c" / "model.safetensors").is_file()
    from ttc.tasks.training import write_card

    card = write_card(tmp_path / "c", TrainConfig(**state["config"]), state, {"pass_at_1": 0.0})
    assert card["train_steps"] == 5 and card["earlier_stage"]["steps"] == 2
    assert "Earlier stage (included in the totals)" in (tmp_path / "c" / "README.md").read_text()
    # A random model answers nothing right: rejection sampling must refuse, not train on nothing.
    rft = TrainConfig(**shape, steps=1, init_from=str(tmp_path / "c"), mix={"rft": 1.0}, rft_problems=4, rft_samples=2)
    with pytest.raises(ValueError, match="kept no answer"):
        train(rft, tmp_path / "r", progress=False)
    # With solver formats beside it, a shortened run trains on those and says so.
    mixed = rft.model_copy(update={"mix": {"rft": 0.5, "direct": 0.5}})
    state = train(mixed, tmp_path / "m", progress=False)
    assert state["rejection_sampling"]["kept"] == 0 and "fallback" in state["rejection_sampling"]
    assert state["config"]["mix"] == {"direct": 0.5}
    with pytest.raises(ValueError, match="rft_problems"):
        TrainConfig(mix={"rft": 1.0})


def test_budget_overrides_split_across_a_staged_recipe():
    from ttc.tasks.training import RECIPES, with_budget

    small = RECIPES["countdown-direct-small"]
    cfg = with_budget(small, steps=2)
    assert (cfg.steps, cfg.then.steps) == (1, 1) and cfg.then.then is None
    cfg = with_budget(small, minutes=1.9, seed=5)
    assert abs(cfg.minutes + cfg.then.minutes - 1.9) < 1e-9 and cfg.minutes < cfg.then.minutes
    assert (cfg.seed, cfg.then.seed) == (5, 6) and cfg.then.lr == small.then.lr
    direct = with_budget(RECIPES["countdown-direct"], minutes=5.8)
    assert direct.then.rft_problems == 600 and RECIPES["countdown-direct"].then.rft_problems == 6000
    assert with_budget(small) == small
