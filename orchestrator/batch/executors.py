"""Where batch jobs run: threads of this process (local), or Ray actors (``ray_executor``).

An executor runs lines and yields ``(line, Attempted)`` as each finishes, in any order;
the driver (``runner``) commits every result itself. A job is attempted up to the run's
``max_attempts`` less the attempts earlier runs made; bad input is never retried.

Local workers are daemon threads sharing the orchestrator's models (and, above one
worker, its generation queue). They run with a copy of the driver's context, so their
``job`` spans nest under the batch run's root span. A stop (SIGINT/SIGTERM, delivered to
the driver's thread) stops handing out lines; the jobs in flight finish (uncommitted)
before the run is marked interrupted. SIGKILL ends them with the process.
"""

from __future__ import annotations

import contextvars
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ttc.backends.errors import BadInputError

from ..tracing import one_line
from .jobs import JobOutput, run_job
from .lines import BatchLine

__all__ = ["Attempted", "LocalExecutor", "attempt"]


@dataclass
class Attempted:
    """A line's attempts in this run: its output, or why it is bad input, or each failure."""

    out: JobOutput | None = None
    bad_input: str | None = None
    failures: list[str] = field(default_factory=list)


def attempt(orc, tracer, line: BatchLine, tries: int, *, run_seed: int, base_url: str | None) -> Attempted:
    """Runs a line up to ``tries`` times, until it answers or proves to be bad input."""
    failures: list[str] = []
    for _ in range(max(1, tries)):
        try:
            return Attempted(out=run_job(orc, tracer, line, run_seed=run_seed, base_url=base_url), failures=failures)
        except BadInputError as exc:
            return Attempted(bad_input=one_line(exc), failures=failures)
        except Exception as exc:  # noqa: BLE001 - a failed attempt; retried, then an error line
            failures.append(one_line(exc))
    return Attempted(failures=failures)


class LocalExecutor:
    """Runs lines on ``max_concurrency`` daemon threads of this process."""

    def __init__(self, orc, tracer, settings: Any):
        self.orc, self.tracer, self.settings = orc, tracer, settings
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def run(self, lines: list[BatchLine], before: dict[str, int]) -> Iterator[tuple[BatchLine, Attempted]]:
        work: queue.SimpleQueue[BatchLine] = queue.SimpleQueue()
        for line in lines:
            work.put(line)
        results: queue.SimpleQueue[tuple[BatchLine, Attempted]] = queue.SimpleQueue()
        s = self.settings

        def worker() -> None:
            while not self._stop.is_set():
                try:
                    line = work.get_nowait()
                except queue.Empty:
                    return
                tries = s.max_attempts - before.get(line.key, 0)
                try:
                    got = attempt(self.orc, self.tracer, line, tries, run_seed=s.seed, base_url=s.base_url)
                except BaseException as exc:  # noqa: BLE001 - the driver must hear of every line
                    got = Attempted(failures=[one_line(exc)])
                results.put((line, got))

        threads = [threading.Thread(target=contextvars.copy_context().run, args=(worker,), daemon=True,
                                    name=f"ttc-batch-{i}")
                   for i in range(min(s.max_concurrency, len(lines)))]
        self._threads = threads
        for t in threads:
            t.start()
        for _ in range(len(lines)):
            while True:
                try:
                    # A short wait, so that the driver's thread sees a signal promptly.
                    item = results.get(timeout=0.2)
                    break
                except queue.Empty:
                    if not any(t.is_alive() for t in threads) and results.empty():
                        raise RuntimeError("batch workers stopped with lines left") from None
            yield item

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        # Workers take no new line and finish the one in hand (its result is not committed:
        # a resume runs it again). A process must not exit with a thread inside torch.
        self._stop.set()
        for t in self._threads:
            t.join()

