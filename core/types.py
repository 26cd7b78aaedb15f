"""The shared vocabulary: Verdict, Candidate, Result."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field
from ttc.backends.types import Usage

__all__ = ["Candidate", "Result", "StopReason", "Verdict"]

StopReason = Literal["verified", "done", "budget", "no_budget"]


class Verdict(BaseModel):
    """A verifier's judgement.

    Attributes:
        correct: True or False when the verifier can decide, None when it cannot.
        score: Higher is better; 1.0/0.0 for exact checkers, a probability for judges.
        reason: One line a person can read ("uses 7 twice", "hits 24").
        answer: The answer the verifier parsed from the candidate text, if any.
        usage: Tokens the verifier itself spent (a judge model's), for the record: a judge charges the ledger itself
            (through the core) before it calls, so callers never charge it again.
    """

    correct: bool | None
    score: float
    reason: str = ""
    answer: str | None = None
    usage: Usage = Usage()


class Candidate(BaseModel):
    """One answer a strategy produced, with the verifier's verdict on it."""

    text: str
    answer: str | None = None
    tokens: int = 0
    finish_reason: str | None = None
    logprob: float | None = None  # mean token log-probability, when the backend returned them
    verdict: Verdict | None = None


class Result(BaseModel):
    """A strategy's chosen answer, every candidate with its verdict, and what it cost.

    Attributes:
        strategy: Registry name of the strategy that produced it.
        answer: The chosen answer (None when there is none, e.g. no budget).
        correct: The verifier's verdict on the chosen answer.
        candidates: All candidates, in the order they were produced.
        usage: Tokens charged, by the accounting rule (verifier and judge calls included).
        tokens: ``usage.total_tokens``, for convenience in tables.
        flops, paper_flops, eflops: Compute charged (see ``strategies.cost``).
        stop_reason: "verified" (an answer was confirmed), "done" (the strategy ran its
            course), "budget" (the budget ran out) or "no_budget" (not even one sample fit).
        overdrawn: A backend spent more than the budget allowed (a remote server that
            ignored max_tokens); its usage was charged as reported.
        trace_id: The run in the trace store, when traced.
    """

    strategy: str
    answer: str | None = None
    correct: bool | None = None
    candidates: list[Candidate] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)
    tokens: int = 0
    flops: float | None = 0.0
    paper_flops: float | None = 0.0
    eflops: float | None = 0.0
    stop_reason: StopReason = "done"
    overdrawn: bool = False
    trace_id: str | None = None
