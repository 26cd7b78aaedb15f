"""Batch jobs: a JSONL file of OpenAI Batch lines run as one durable, resumable run.

Example:
    >>> from ttc import Orchestrator
    >>> from ttc.orchestrator.batch import start_batch
    >>> with Orchestrator() as orc:
    ...     summary = start_batch(orc, "jobs.jsonl", "out.jsonl", max_concurrency=8)
"""

from .lines import BatchLine, read_batch_file
from .runner import BatchSettings, BatchSummary, Tally, batch_status, find_owner, resume_batch, start_batch

__all__ = [
    "BatchLine",
    "BatchSettings",
    "BatchSummary",
    "Tally",
    "batch_status",
    "find_owner",
    "read_batch_file",
    "resume_batch",
    "start_batch",
]
