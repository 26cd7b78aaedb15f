"""A pooled token cap (SamplingParams.max_total_tokens) buys samples.

Against a shipped checkpoint (countdown-direct, trained: its answers have a natural
length, so a pool buys a predictable number of them) and the scripted test double.
"""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from ttc.backends.errors import BadInputError  # noqa: E402
from ttc.backends.scripted import ScriptedBackend  # noqa: E402
from ttc.backends.transformers_backend import TransformersBackend, _PooledDecoder  # noqa: E402
from ttc.backends.types import Completion, SamplingParams  # noqa: E402

CKPT = Path(__file__).resolve().parents[1] / "tasks" / "checkpoints" / "countdown-direct"
PROMPT = "48 27 5 81>30:"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny matmuls run faster on one thread, and the CPUs here are shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def backend() -> TransformersBackend:
    return TransformersBackend(CKPT, device="cpu")


def pooled(cap: int, n: int = 64, **kw) -> SamplingParams:
    kw = {"temperature": 0.7, "max_tokens": 64, "stop": (".",), "seed": 0} | kw
    return SamplingParams(n=n, max_total_tokens=cap, **kw)


def ids(g):
    return [c.token_ids for c in g.completions]


def test_pool_buys_more_samples_than_max_tokens_would(backend):
    g = backend.generate([PROMPT], pooled(600))[0]
    comps = g.completions
    assert g.usage.completion_tokens == sum(c.completion_tokens for c in comps) <= 600
    assert g.usage.prompt_tokens == g.prompt_tokens == backend.count_tokens(PROMPT)
    assert len(comps) > 600 // 64
    cut = [c for c in comps if c.finish_reason == "budget"]
    assert len(cut) < len(comps) / 2, "most samples should be complete"
    for c in comps:
        assert 1 <= c.completion_tokens == len(c.token_ids) <= 64
        if c.finish_reason != "budget":
            assert c.finish_reason == "stop" and "." not in c.text
    assert len({tuple(t) for t in ids(g)}) > 1


def test_seeded_pooled_call_is_reproducible(backend):
    a = backend.generate([PROMPT], pooled(500, seed=3))[0]
    b = backend.generate([PROMPT], pooled(500, seed=3))[0]
    assert ids(a) == ids(b) and [c.finish_reason for c in a.completions] == [c.finish_reason for c in b.completions]
    assert ids(backend.generate([PROMPT], pooled(500, seed=4))[0]) != ids(a)


def test_refilled_rows_decode_like_fresh_samples_greedy(backend):
    single = backend.generate([PROMPT], SamplingParams(temperature=0, max_tokens=64, stop=(".",)))[0].completions[0]
    assert single.finish_reason == "stop"
    g = backend.generate([PROMPT], pooled(1000, n=40, temperature=0))[0]
    # More than one batch width of samples: some ran in refilled rows.
    assert len(g.completions) > _PooledDecoder.WIDTH
    for c in g.completions:
        assert c.token_ids == single.token_ids and c.text == single.text and c.finish_reason == "stop"
    assert g.usage.completion_tokens <= 1000


def test_refilled_rows_logprobs_match_a_full_forward_pass(backend, monkeypatch):
    """Samples start at different steps, so each refilled row sees a different pattern of
    masked columns; every token's log-probability must still be the fresh-context one,
    also after the cache has been compacted."""
    shrunk = []
    original = _PooledDecoder._compact

    def spy(self):
        width = self.mask.shape[1]
        original(self)
        shrunk.append(self.mask.shape[1] < width)

    monkeypatch.setattr(_PooledDecoder, "_compact", spy)
    g = backend.generate([PROMPT], pooled(2000, n=80, logprobs=True, seed=5))[0]
    assert len(g.completions) > 2 * _PooledDecoder.WIDTH and any(shrunk)
    plen = g.prompt_tokens
    prompt_ids = backend.tokenizer(PROMPT, add_special_tokens=True)["input_ids"]
    for c in g.completions:
        full = torch.tensor([prompt_ids + c.token_ids])
        with torch.inference_mode():
            lp = torch.log_softmax(backend.model(full).logits[0].float(), -1)
        expected = [lp[plen - 1 + i, t].item() for i, t in enumerate(c.token_ids)]
        assert c.logprobs == pytest.approx(expected, abs=1e-4)


def test_cap_applies_per_prompt(backend):
    prompts = [PROMPT, "12 3 44 7>51:"]
    gens = backend.generate(prompts, pooled(300))
    assert len(gens) == 2
    for g in gens:
        assert 0 < g.usage.completion_tokens <= 300
    # The first prompt draws from the call's seed, as if it were alone.
    assert ids(gens[0]) == ids(backend.generate([PROMPT], pooled(300))[0])


def test_tiny_pool_starts_only_what_it_can_pay_for(backend):
    # Less than one sample's max_tokens: one sample starts (not five cut after a token each).
    g = backend.generate([PROMPT], pooled(5))[0]
    assert [(c.completion_tokens, c.finish_reason) for c in g.completions] == [(5, "budget")]
    assert g.usage.completion_tokens == 5


def test_small_pool_does_not_spread_over_samples_that_would_all_be_cut(backend):
    # 305 tokens at max_tokens 64: four samples start, the rest as they finish; most end whole.
    g = backend.generate([PROMPT], pooled(305))[0]
    whole = [c for c in g.completions if c.finish_reason != "budget"]
    assert g.usage.completion_tokens <= 305 and len(whole) >= 5 and len(g.completions) - len(whole) <= 2


def test_max_tokens_still_caps_each_sample(backend):
    g = backend.generate([PROMPT], pooled(100, max_tokens=6, stop=()))[0]
    # Sixteen samples of 6 tokens leave 4: less than the mean length, so none is started.
    assert [(c.completion_tokens, c.finish_reason) for c in g.completions] == [(6, "length")] * 16
    assert g.usage.completion_tokens == 96


def test_slack_cap_changes_nothing(backend):
    plain = SamplingParams(n=6, temperature=0.7, max_tokens=64, stop=(".",), seed=2)
    capped = plain.model_copy(update={"max_total_tokens": 6 * 64})
    assert ids(backend.generate([PROMPT], plain)[0]) == ids(backend.generate([PROMPT], capped)[0])


def test_stream_under_a_cap_ends_with_budget(backend):
    stream = backend.stream(PROMPT, pooled(10, n=1, temperature=0))
    text = "".join(stream)
    c = stream.generation.completions[0]
    assert c.finish_reason == "budget" and c.completion_tokens == 10 == stream.generation.usage.completion_tokens
    assert text == c.text


def test_cap_must_be_positive():
    with pytest.raises(BadInputError, match="max_total_tokens"):
        SamplingParams(max_total_tokens=0)
    assert SamplingParams().max_total_tokens is None
    assert Completion(text="", completion_tokens=0, finish_reason="budget").finish_reason == "budget"


def test_backends_say_they_pool(backend):
    assert backend.pools_tokens is True
    assert ScriptedBackend(["x"]).pools_tokens is True


# ---------------------------------------------------------------- scripted double


def test_scripted_cuts_the_sample_the_pool_runs_out_in():
    b = ScriptedBackend(["aaaa", "bbbbbbbbbbbb"])
    g = b.generate(["p"], SamplingParams(n=10, max_tokens=20, max_total_tokens=10))[0]
    assert [(c.text, c.finish_reason) for c in g.completions] == [("aaaa", "stop"), ("bbbbbb", "budget")]
    assert g.usage.completion_tokens == 10


def test_scripted_does_not_start_a_sample_the_pool_likely_cannot_finish():
    b = ScriptedBackend(lambda prompt, i, params: "x" * 10)
    g = b.generate(["p", "q"], SamplingParams(n=10, max_tokens=20, max_total_tokens=25))
    for gen in g:  # 5 tokens left is less than the mean of 10: the third is never started
        assert [c.completion_tokens for c in gen.completions] == [10, 10]
        assert all(c.finish_reason == "stop" for c in gen.completions)
    plain = b.generate(["p"], SamplingParams(n=3, max_tokens=20))[0]
    assert len(plain.completions) == 3
