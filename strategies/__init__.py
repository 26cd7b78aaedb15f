"""Strategies: ways to spend test-time compute, plus Budget, Ledger, cost model and the tracer interface."""

from .budget import Budget, Ledger, Reservation, Spend
from .calls import CallResult, call_model
from .cost import Cost, CostModel, agentts_pass_flops, call_cost, paper_generation_flops
from .tracing import NullSpan, NullTracer, Span, Tracer

__all__ = [
    "Budget",
    "CallResult",
    "Cost",
    "CostModel",
    "Ledger",
    "NullSpan",
    "NullTracer",
    "Reservation",
    "Span",
    "Spend",
    "Tracer",
    "agentts_pass_flops",
    "call_cost",
    "call_model",
    "paper_generation_flops",
]
