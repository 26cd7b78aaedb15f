"""Cost model: FLOPs (Kaplan), the backtracking paper's FLOPs and Kinetics eFLOPs, by hand."""

from __future__ import annotations

import pytest

from ttc.backends.types import ModelInfo
from ttc.core.cost import Cost, CostModel, agentts_pass_flops, call_cost, paper_generation_flops

# A shape small enough to compute by hand.
#   N (matmul params) = 800; layers = 2; h = 8; mlp = 16; heads 2 x head_dim 4 -> d_attn = 8;
#   kv_heads 1 x head_dim 4 -> kv = 4.
SMALL = ModelInfo(
    name="small", parameters=1000, non_embedding_parameters=800, layers=2, hidden_size=8,
    intermediate_size=16, attention_heads=2, kv_heads=1, head_dim=4,
)
HW = CostModel(flops_per_byte=10.0, bytes_per_value=2)


def test_flops_by_hand():
    # Kaplan: a token at context position t costs 2N + 2 n_layer t d_attn; 2 n_layer d_attn = 32.
    # Prefill P=3 once: 2*800*3 + 32*(1+2+3) = 4800 + 192 = 4992
    # Sample of 2 tokens at positions 4, 5: 3200 + 32*9 = 3488
    # Sample of 1 token at position 4: 1600 + 32*4 = 1728
    c = call_cost(SMALL, 3, [2, 1], HW)
    assert c.flops == pytest.approx(4992 + 3488 + 1728)


def test_prompt_is_prefilled_once_however_many_samples():
    one = call_cost(SMALL, 10, [5]).flops
    four = call_cost(SMALL, 10, [5, 5, 5, 5]).flops
    prefill = call_cost(SMALL, 10, []).flops
    assert prefill == pytest.approx(2 * 800 * 10 + 32 * 55)
    assert four - prefill == pytest.approx(4 * (one - prefill))


def test_paper_flops_by_hand():
    # layers x [(2h^2 + 2h kv + 3h mlp) L + h L(L+1)/2]; per-token coefficient 128 + 64 + 384 = 576
    assert paper_generation_flops(SMALL, 5) == pytest.approx(2 * (576 * 5 + 8 * 5 * 6 / 2))  # 6000
    assert paper_generation_flops(SMALL, 4) == pytest.approx(2 * (576 * 4 + 8 * 4 * 5 / 2))  # 4768
    # Every generation pays for its whole sequence, prompt included.
    assert call_cost(SMALL, 3, [2, 1], HW).paper_flops == pytest.approx(6000 + 4768)


def test_eflops_by_hand():
    # Weights: 1000 params x 2 bytes, read at prefill and at each of max(2, 1) = 2 decode steps.
    # KV per token: 2 (k, v) x 2 layers x kv 4 x 2 bytes = 32; sample 2 reads contexts 4 + 5,
    # sample 1 reads context 4: 32 * 9 + 32 * 4 = 416. Traffic = 6000 + 416 = 6416 bytes.
    c = call_cost(SMALL, 3, [2, 1], HW)
    assert c.eflops == pytest.approx(c.flops + 10.0 * 6416)
    assert c.eflops == pytest.approx(74368)


def test_eflops_at_least_flops_and_kv_reads_grow_with_length():
    prev_extra = -1.0
    for g in (1, 8, 64, 512):
        c = call_cost(SMALL, 16, [g])
        assert c.eflops >= c.flops
        extra = c.eflops - c.flops
        assert extra > prev_extra
        prev_extra = extra
    # Wider KV cache: flops unchanged, eFLOPs up by exactly the extra KV bytes read.
    wide = SMALL.model_copy(update={"kv_heads": 2})
    a, b = call_cost(SMALL, 3, [2, 1], HW), call_cost(wide, 3, [2, 1], HW)
    assert b.flops == a.flops
    assert b.eflops - a.eflops == pytest.approx(10.0 * 32 * 13)


def test_many_short_samples_cost_less_memory_than_one_long_trace():
    """Kinetics: equal generated tokens, but the long trace pays for long KV reads."""
    info = ModelInfo(
        name="m", parameters=500_000_000, non_embedding_parameters=360_000_000, layers=24, hidden_size=896,
        intermediate_size=4864, attention_heads=14, kv_heads=2, head_dim=64,
    )
    short = call_cost(info, 128, [512] * 8)
    long = call_cost(info, 128, [4096])
    assert long.eflops > short.eflops
    assert long.flops > short.flops  # the attention term already grows with context
    # Memory traffic makes the gap wider than compute alone says.
    assert long.eflops / short.eflops > long.flops / short.flops


def test_flops_use_all_parameters_when_non_embedding_unknown():
    info = SMALL.model_copy(update={"non_embedding_parameters": None})
    assert call_cost(info, 3, [2, 1], HW).flops == pytest.approx(
        2 * 1000 * 3 + 192 + 2 * 1000 * 2 + 288 + 2 * 1000 * 1 + 128
    )


def test_unknown_shape_gives_none_fields():
    c = call_cost(ModelInfo(name="remote"), 10, [5, 5])
    assert c == Cost(None, None, None)
    assert agentts_pass_flops(ModelInfo(name="remote")) is None
    assert paper_generation_flops(ModelInfo(name="remote", hidden_size=8), 10) is None


def test_partial_shape_falls_back_to_what_it_can():
    params_only = call_cost(ModelInfo(name="p", parameters=100), 3, [2])
    assert params_only.flops == pytest.approx(2 * 100 * 5)
    assert params_only.paper_flops is None
    assert params_only.eflops == pytest.approx(params_only.flops + 562.5 * 100 * 2 * 3)
    shape_only = call_cost(SMALL.model_copy(update={"parameters": None, "non_embedding_parameters": None}), 3, [2, 1])
    assert shape_only.flops is None and shape_only.eflops is None
    assert shape_only.paper_flops == pytest.approx(6000 + 4768)


def test_agentts_pass():
    # 128 prompt + 64 generated tokens; positions 1..192.
    assert agentts_pass_flops(SMALL) == pytest.approx(2 * 800 * 192 + 32 * 192 * 193 / 2)
    big = SMALL.model_copy(update={"non_embedding_parameters": 8000, "parameters": 10000})
    assert agentts_pass_flops(big) > agentts_pass_flops(SMALL) > 0


def test_cost_addition():
    assert Cost(1.0, 2.0, 3.0) + Cost(10.0, 20.0, 30.0) == Cost(11.0, 22.0, 33.0)
    assert Cost(1.0, 2.0, 3.0) + Cost(None, 1.0, 1.0) == Cost(None, 3.0, 4.0)
    assert Cost(None, None, None) + Cost() == Cost(None, None, None)
    assert Cost() + Cost() == Cost(0.0, 0.0, 0.0)
    total = Cost()
    for _ in range(3):
        total = total + call_cost(SMALL, 3, [2, 1], HW)
    assert total.flops == pytest.approx(3 * 10208)
