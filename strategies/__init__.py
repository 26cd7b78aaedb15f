"""Strategies: one module per way to spend test-time compute, and their registry."""

from .registry import STRATEGIES, Strategy, get_strategy
from .sample import sample

__all__ = ["STRATEGIES", "Strategy", "get_strategy", "sample"]
