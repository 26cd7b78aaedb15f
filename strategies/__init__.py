"""Strategies: ways to spend test-time compute, plus Budget, Ledger, cost model and the tracer interface."""

from .budget import Budget, Ledger, Reservation, Spend
from .calls import CallResult, call_model
from .cost import Cost, CostModel, agentts_pass_flops, call_cost, paper_generation_flops
from .registry import STRATEGIES, Strategy, get_strategy
from .result import Candidate, Result, StopReason
from .sample import sample
from .tracing import NullSpan, NullTracer, Span, Tracer

__all__ = [
    "Budget",
    "Candidate",
    "CallResult",
    "Cost",
    "CostModel",
    "Ledger",
    "NullSpan",
    "NullTracer",
    "Reservation",
    "Result",
    "STRATEGIES",
    "StopReason",
    "Strategy",
    "Span",
    "Spend",
    "Tracer",
    "agentts_pass_flops",
    "call_cost",
    "call_model",
    "get_strategy",
    "paper_generation_flops",
    "sample",
]
