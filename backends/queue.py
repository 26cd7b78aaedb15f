"""A queue that gathers the generate calls of concurrent jobs into batched decodes.

Eval, batch and serve run many problems at once against the same in-process model. Each
job's strategy calls ``generate`` from its own thread; alone, each call would decode its
few rows on a mostly idle model. :class:`GenerationQueue` wraps the backend: callers
enqueue their request and wait; one worker thread drains everything queued into one
decode (``_decode._Decoder`` with several requests), hands each request its generations
as soon as its own rows finish, and lets requests that arrive meanwhile join the running
decode between two steps (continuous batching), so no request waits for the longest one
of a batch.

Each request keeps its seed and samples from its own random stream, so a job draws the
same candidates alone and batched (see ``_decode``). Calls the queue cannot merge (a
pooled token cap that binds, more rows than one decode holds) run as the backend's own
``generate`` in the caller's thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

from ._decode import MAX_BATCH_ROWS, _Decoder
from ._pooled import _pool_binds
from .errors import BadInputError
from .types import Generation, ModelInfo, SamplingParams

__all__ = ["GenerationQueue", "QueueStats"]


class QueueStats:
    """What the queue did: decodes run and requests served (for benches and tests)."""

    def __init__(self) -> None:
        self.decodes = 0
        self.requests = 0
        self.largest = 0  # most rows decoding together
        self.admitted = 0  # requests that joined a decode already running
        self.direct = 0  # calls run unmerged


class _Pending:
    def __init__(self, encoded: list[list[int]], params: SamplingParams):
        self.encoded, self.params = encoded, params
        self.rows = len(encoded) * params.n
        self.t0 = time.perf_counter()
        self.done = threading.Event()
        self.result: list[Generation] | None = None
        self.error: BaseException | None = None


class GenerationQueue:
    """A ``Backend`` over an in-process TransformersBackend that batches concurrent calls.

    Args:
        backend: The TransformersBackend to drive.
        max_rows: Rows (prompts x samples) one decode holds at most.

    Attributes:
        inner: The wrapped backend; ``stats`` counts what the queue merged.
    """

    def __init__(self, backend: Any, *, max_rows: int = MAX_BATCH_ROWS):
        self.inner = backend
        self.name = backend.name
        self.pools_tokens = getattr(backend, "pools_tokens", False)
        self.max_rows = max_rows
        self.stats = QueueStats()
        self._queue: list[_Pending] = []
        self._cv = threading.Condition()
        self._worker: threading.Thread | None = None
        self._closed = False

    @property
    def info(self) -> ModelInfo:
        return self.inner.info

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[Generation]:
        """Samples ``params.n`` completions per prompt, batched with other threads' calls."""
        if isinstance(prompts, str):
            raise BadInputError("generate() takes a list of prompts, not one string")
        encoded = [self.inner._encode(p) for p in prompts]
        if not encoded:
            return []
        rows = len(encoded) * params.n
        if rows > self.max_rows or (params.max_total_tokens is not None
                                    and any(_pool_binds(self.inner, len(e), params) for e in encoded)):
            with self._cv:
                self.stats.direct += 1
            return self.inner.generate(list(prompts), params)
        pending = _Pending(encoded, params)
        with self._cv:
            if self._closed:
                raise RuntimeError("generation queue is closed")
            self._queue.append(pending)
            if self._worker is None:
                self._worker = threading.Thread(target=self._drain, name=f"ttc-queue-{self.name}", daemon=True)
                self._worker.start()
            self._cv.notify()
        pending.done.wait()
        if pending.error is not None:
            raise pending.error
        assert pending.result is not None
        return pending.result

    def stream(self, prompt: str, params: SamplingParams):
        """Streams run unbatched: each token must reach its reader as soon as it exists."""
        return self.inner.stream(prompt, params)

    def close(self) -> None:
        """Stops the worker once the queue is empty, and closes the wrapped backend."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self.inner.close()

    def __enter__(self) -> GenerationQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ worker

    def _take(self) -> list[_Pending] | None:
        with self._cv:
            while not self._queue and not self._closed:
                self._cv.wait()
            if not self._queue:
                return None
            batch, rows = [], 0
            while self._queue and (not batch or rows + self._queue[0].rows <= self.max_rows):
                item = self._queue.pop(0)
                batch.append(item)
                rows += item.rows
            return batch

    def _drain(self) -> None:
        while (batch := self._take()) is not None:
            try:
                self._decode(batch)
            except BaseException as exc:  # noqa: BLE001 - handed to every waiting caller
                for item in batch:
                    if not item.done.is_set():
                        item.error = exc
                        item.done.set()

    def _decode(self, batch: list[_Pending]) -> None:
        first, *more = batch
        decoder = _Decoder(self.inner, first.encoded, first.params, [(p.encoded, p.params) for p in more])
        with self._cv:
            self.stats.decodes += 1
            self.stats.requests += len(batch)
            self.stats.largest = max(self.stats.largest, int(decoder.active.numel()))

        def hand_out() -> None:
            for g in decoder.completed:
                item = batch[g]
                item.result = decoder.request_generations(g, time.perf_counter() - item.t0)
                item.done.set()
            decoder.completed.clear()

        while decoder.step():
            hand_out()
            joining = self._joining(decoder)
            if joining:
                decoder.admit([(p.encoded, p.params) for p in joining])
                batch.extend(joining)
                with self._cv:
                    self.stats.requests += len(joining)
                    self.stats.admitted += len(joining)
                    self.stats.largest = max(self.stats.largest, int(decoder.active.numel()))
        hand_out()

    def _joining(self, decoder: _Decoder) -> list[_Pending]:
        # Requests that arrived while this decode runs join it between two steps, as long as
        # the rows fit: a short request no longer waits for the longest one of the batch.
        with self._cv:
            if not self._queue or not decoder.can_admit():
                return []
            room = self.max_rows - int(decoder.active.numel())
            taken: list[_Pending] = []
            while self._queue and self._queue[0].rows <= room:
                item = self._queue.pop(0)
                taken.append(item)
                room -= item.rows
            return taken
