"""Verifiers judge candidates; ``Verdict`` is their shared result type."""

from .countdown import CountdownVerifier
from .verdict import Verdict

__all__ = ["Verdict", "CountdownVerifier"]
