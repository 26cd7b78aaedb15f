"""Converting token usage into compute: FLOPs, the backtracking paper's FLOPs, eFLOPs.

Three measures, because the papers ttc follows count compute differently and benchmarks
must compare with each of them:

``flops``
    Forward-pass FLOPs after Kaplan et al. 2020 ("Scaling Laws for Neural Language
    Models", Table 1): a token at context position t costs ``2 N + 2 n_layer t d_attn``,
    N being the parameters that take part in the per-token matmuls (everything but the
    input embedding lookup; a tied output projection counts). A prompt of P tokens is
    prefilled once per call, however many samples share it; sample i then pays for its
    G_i generated tokens at positions P+1 ... P+G_i.

``paper_flops``
    "To Backtrack or Not to Backtrack" (arXiv 2504.07052), per generation of length L:
    ``layers x [(2h^2 + 2h kv + 3h mlp) L + h L (L+1) / 2]``, h the hidden size, kv the
    key/value width and mlp the MLP width. Every generation pays for its whole sequence
    (prompt included), as in the paper, so that curves compare with its figures.

``eflops``
    Kinetics (arXiv 2506.05333): compute FLOPs plus ``I x`` bytes of memory traffic, I
    being the accelerator's FLOPs per byte (562.5 for a B200). Traffic per decode step is
    one read of the weights (shared by the batch) plus, per sample, a read of its whole KV
    cache; for long generations the KV reads dominate, which is why many short samples can
    cost less than one long trace of equal tokens. Precision is the accelerator's (bf16,
    2 bytes), not whatever the model was loaded in here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ttc.backends.types import ModelInfo

__all__ = ["Cost", "CostModel", "call_cost", "paper_generation_flops", "agentts_pass_flops"]


@dataclass(frozen=True)
class Cost:
    """Compute of some calls. A field is None when the model's shape is unknown."""

    flops: float | None = 0.0
    paper_flops: float | None = 0.0
    eflops: float | None = 0.0

    def __add__(self, other: "Cost") -> "Cost":
        def add(a, b):
            return None if a is None or b is None else a + b

        return Cost(add(self.flops, other.flops), add(self.paper_flops, other.paper_flops),
                    add(self.eflops, other.eflops))


@dataclass(frozen=True)
class CostModel:
    """Hardware assumptions of the eFLOPs measure.

    Attributes:
        flops_per_byte: Arithmetic intensity I of the accelerator (B200: 562.5).
        bytes_per_value: Bytes of one weight or cached key/value (bf16: 2).
    """

    flops_per_byte: float = 562.5
    bytes_per_value: int = 2


def _matmul_params(info: ModelInfo) -> int | None:
    if info.non_embedding_parameters is not None:
        return info.non_embedding_parameters
    return info.parameters


def _context_sum(start: int, end: int) -> int:
    """Sum of positions start+1 ... end (the context lengths those tokens attend to)."""
    return (end * (end + 1) - start * (start + 1)) // 2


def paper_generation_flops(info: ModelInfo, length: int) -> float | None:
    """The backtracking paper's FLOPs for one generation of ``length`` tokens."""
    h, layers, kv, mlp = info.hidden_size, info.layers, info.kv_dim, info.intermediate_size
    if None in (h, layers, kv, mlp):
        return None
    return float(layers * ((2 * h * h + 2 * h * kv + 3 * h * mlp) * length + h * length * (length + 1) / 2))


def call_cost(
    info: ModelInfo,
    prompt_tokens: int,
    completion_tokens: Sequence[int],
    model: CostModel = CostModel(),
) -> Cost:
    """Compute of one call: one prompt prefilled once, then one sample per entry.

    Args:
        info: The model's shape.
        prompt_tokens: Prompt length, prefilled once for all samples.
        completion_tokens: Generated tokens of each sample.
        model: Hardware assumptions for eFLOPs.
    """
    n_params = _matmul_params(info)
    layers, d = info.layers, info.hidden_size
    attn_width = (info.attention_heads or 0) * (info.head_dim or 0) or d
    P = prompt_tokens

    # The paper's measure needs the shape only, not the parameter count.
    paper = 0.0
    for g in completion_tokens or [0]:
        one = paper_generation_flops(info, P + g)
        paper = None if one is None or paper is None else paper + one

    if n_params is None:
        return Cost(None, paper, None)
    attn = 2 * layers * attn_width if layers and attn_width else 0
    flops = 2.0 * n_params * P + attn * _context_sum(0, P)
    for g in completion_tokens:
        flops += 2.0 * n_params * g + attn * _context_sum(P, P + g)

    eflops = None
    if info.parameters is not None:
        weights = info.parameters * model.bytes_per_value
        kv_per_token = 2 * layers * info.kv_dim * model.bytes_per_value if layers and info.kv_dim else 0
        steps = max(completion_tokens, default=0)
        # Prefill reads the weights once; each decode step reads them once for the batch.
        traffic = weights * (1 + steps)
        for g in completion_tokens:
            traffic += kv_per_token * _context_sum(P, P + g)
        eflops = flops + model.flops_per_byte * traffic
    return Cost(flops=flops, paper_flops=paper, eflops=eflops)


def agentts_pass_flops(info: ModelInfo) -> float | None:
    """FLOPs of one AgentTTS unit pass of this model: 128 prompt and 64 generated tokens."""
    return call_cost(info, 128, [64]).flops
