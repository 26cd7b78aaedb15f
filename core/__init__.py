"""The core layer: what every layer above shares. It imports only ``ttc.backends``.

The vocabulary (Verdict, Candidate, Result), Budget and Ledger (with child ledgers per
stage), the cost model, the one way to call a model (``call_model``, ``stream_model``:
reserve, call, settle, trace), the tracer protocol, and the typed contracts (Task,
Verifier and Strategy protocols, the solve context, the model pool with roles).
"""

from .budget import Budget, Ledger, Reservation, Spend
from .calls import CallResult, call_model
from .cost import Cost, CostModel, agentts_pass_flops, call_cost, paper_generation_flops
from .tracing import NullSpan, NullTracer, Span, Tracer
from .types import Candidate, Result, StopReason, Verdict

__all__ = [
    "Budget",
    "CallResult",
    "Candidate",
    "Cost",
    "CostModel",
    "Ledger",
    "NullSpan",
    "NullTracer",
    "Reservation",
    "Result",
    "Span",
    "Spend",
    "StopReason",
    "Tracer",
    "Verdict",
    "agentts_pass_flops",
    "call_cost",
    "call_model",
    "paper_generation_flops",
]
