"""The verifier's judgement of one candidate."""

from __future__ import annotations

from pydantic import BaseModel

from ttc.backends.types import Usage

__all__ = ["Verdict"]


class Verdict(BaseModel):
    """A verifier's judgement.

    Attributes:
        correct: True or False when the verifier can decide, None when it cannot.
        score: Higher is better; 1.0/0.0 for exact checkers, a probability for judges.
        reason: One line a person can read ("uses 7 twice", "hits 24").
        answer: The answer the verifier parsed from the candidate text, if any.
        usage: Tokens the verifier itself spent (a judge model's), charged by the caller.
    """

    correct: bool | None
    score: float
    reason: str = ""
    answer: str | None = None
    usage: Usage = Usage()
