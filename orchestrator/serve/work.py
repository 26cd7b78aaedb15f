"""The server's moving parts: admission (429 beyond capacity), the runs it has open, and one
request's work on its own thread.

Each request runs on a daemon thread of its own, so a long generation never blocks the
event loop, concurrent requests reach the model together (the ``GenerationQueue`` batches
their decodes), and a process told to stop is never held up by a thread it gave up on.
At most ``max_concurrency`` requests run at once and ``max_queued`` more wait; beyond that
a request is answered 429 at once. Every request is a ``serve`` run in the trace store;
the runs still open when the server stops are marked ``interrupted``.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ttc.core.budget import Budget
from ttc.store import StoreError

from ..chat import ChatPlan
from ..tracing import StoreTracer, one_line
from .errors import ApiError
from .running import ChatOutcome, prepare_chat
from .upstream import ProxyResult, proxy

__all__ = ["Admission", "Done", "Job", "OpenRuns"]


class Admission:
    """Bounds the requests in flight: ``max_concurrency`` running, ``max_queued`` waiting."""

    def __init__(self, max_concurrency: int, max_queued: int):
        self.max_concurrency, self.max_queued = max_concurrency, max_queued
        self._slots = threading.BoundedSemaphore(max_concurrency)
        self._lock = threading.Lock()
        self.in_flight = 0
        self.running = 0

    def enter(self) -> None:
        """Counts a new request in, or raises the 429 that says the server is full."""
        with self._lock:
            if self.in_flight >= self.max_concurrency + self.max_queued:
                raise ApiError(429, f"the server is at capacity ({self.max_concurrency} running, {self.max_queued} "
                               "queued); retry shortly", code="rate_limit_exceeded", headers={"Retry-After": "1"})
            self.in_flight += 1

    def leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Waits for one of the ``max_concurrency`` running places."""
        with self._slots:
            with self._lock:
                self.running += 1
            try:
                yield
            finally:
                with self._lock:
                    self.running -= 1

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"running": self.running, "queued": self.in_flight - self.running,
                    "max_concurrency": self.max_concurrency, "max_queued": self.max_queued}


class OpenRuns:
    """The ``serve`` runs in progress; what is still open when the server stops is marked interrupted."""

    def __init__(self, store: Any):
        self.store = store
        self._open: set[str] = set()
        self._lock = threading.Lock()

    @contextmanager
    def run(self, name: str, attributes: dict[str, Any]) -> Iterator[StoreTracer]:
        run_id = self.store.start_run("serve", name, attributes=attributes)
        with self._lock:
            self._open.add(run_id)
        tracer = StoreTracer(self.store, run_id)
        try:
            with tracer.span("run", name, **attributes):
                yield tracer
        except BaseException as exc:
            self._end(run_id, "error", one_line(exc), tracer.outcome)
            raise
        self._end(run_id, "ok", None, tracer.outcome)

    def _end(self, run_id: str, status: str, error: str | None, outcome: dict[str, Any]) -> None:
        with self._lock:
            if run_id not in self._open:
                return  # the server stopped first and marked it interrupted: that stands
            self._open.discard(run_id)
            self.store.end_run(run_id, status=status, error=error, attributes_update=outcome)

    def interrupt_all(self, reason: str) -> int:
        """Marks every open run interrupted; returns how many there were."""
        with self._lock:
            runs, self._open = sorted(self._open), set()
            for run_id in runs:
                try:
                    self.store.end_run(run_id, status="interrupted", error=reason)
                except StoreError:
                    pass  # once this process is gone the run reads as interrupted anyway
        return len(runs)

    def __len__(self) -> int:
        with self._lock:
            return len(self._open)


@dataclass
class Done:
    """A request's result: ``outcome`` (ttc ran it) or ``proxied`` (an upstream did)."""

    ttc: dict[str, Any]
    outcome: ChatOutcome | None = None
    proxied: ProxyResult | None = None


def _capped(plan: ChatPlan, cap: int | None) -> ChatPlan:
    # The server's own limit on what one request may spend: strategy parameters such as
    # n are the client's to choose, so without it one request could hold the model forever.
    if cap is None or (plan.budget is not None and plan.budget.tokens is not None and plan.budget.tokens <= cap):
        return plan
    budget = (plan.budget or Budget()).model_copy(update={"tokens": cap})
    return plan.model_copy(update={"budget": budget})


def _run_name(plan: ChatPlan) -> str:
    return f"{plan.strategy}/{plan.model}" if plan.strategy else plan.model


def _attributes(plan: ChatPlan, seed: int, upstream: str | None) -> dict[str, Any]:
    return {"endpoint": "/v1/chat/completions" if plan.kind == "chat" else "/v1/completions", "model": plan.model,
            "strategy": plan.strategy, "task": plan.task, "models": plan.models, "n": plan.sampling.n,
            "max_tokens": plan.sampling.max_tokens, "temperature": plan.sampling.temperature,
            "stream": plan.stream, "seed": seed, "upstream": upstream,
            "budget": plan.budget.model_dump(exclude_none=True) if plan.budget else None}


class Job:
    """One request's work on a daemon thread, reporting to the event loop through ``events``.

    Events: ``("ready", trace_id)`` once its run is open, ``("delta", index, text)`` and
    ``("raw", sse_event)`` while it streams, then ``("done", Done)`` or ``("error", exc)``.
    ``cancel`` (set when a streaming client goes away) stops it at the next delta.
    """

    def __init__(self, server: Any, plan: ChatPlan, body: dict[str, Any], loop: asyncio.AbstractEventLoop):
        self.server, self.plan, self.body, self.loop = server, plan, body, loop
        self.events: asyncio.Queue[tuple] = asyncio.Queue()
        self.cancel = threading.Event()
        self.upstream = server.catalog.upstream_url(plan.model) if plan.strategy is None else None

    def start(self) -> None:
        threading.Thread(target=self._work, name="ttc-serve-request", daemon=True).start()

    def _emit(self, *event: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:
            pass  # the event loop is gone: the server stopped and nobody is listening

    def _work(self) -> None:
        server, plan = self.server, self.plan
        try:
            with server.admission.slot():
                prepared = None
                if self.upstream is None:
                    plan = self.plan = _capped(plan, server.max_request_tokens)
                    prepared = prepare_chat(plan, server.catalog.load, artifacts=server.artifacts)
                seed = plan.seed if plan.seed is not None else secrets.randbelow(2**31)
                with server.runs.run(_run_name(plan), _attributes(plan, seed, self.upstream)) as tracer:
                    self._emit("ready", tracer.trace_id)
                    if prepared is None:
                        done = self._proxy(tracer)
                    else:
                        on_delta = (lambda i, text: self._emit("delta", i, text)) if plan.stream else None
                        outcome = prepared.run(tracer, seed, on_delta=on_delta, cancelled=self.cancel.is_set)
                        done = Done(outcome.ttc, outcome=outcome)
                        tracer.outcome.update(tokens=outcome.tokens, correct=outcome.correct or None,
                                              finish_reasons=[c["finish_reason"] for c in outcome.choices])
                    if self.cancel.is_set():
                        tracer.outcome["client_gone"] = True  # a streaming client left before the end
            self._emit("done", done)
        except BaseException as exc:  # noqa: BLE001 - every failure is answered to the client
            self._emit("error", exc)
        finally:
            server.admission.leave()

    def _proxy(self, tracer: StoreTracer) -> Done:
        assert self.upstream is not None
        result = proxy(self.server.http, self.upstream, self.plan, self.body, tracer,
                       on_event=lambda event: self._emit("raw", event), cancelled=self.cancel.is_set)
        spent = result.ledger.spent
        ttc = {"strategy": None, "task": None, "verifier": None, "upstream": self.upstream,
               "budget": self.plan.budget.model_dump(exclude_none=True) if self.plan.budget else None,
               "tokens": spent.tokens, "calls": spent.calls, "samples": spent.samples, "flops": None,
               "prompt_tokens_cut": 0, "overdrawn": result.ledger.overdrawn, "trace_id": tracer.trace_id}
        tracer.outcome.update(tokens=spent.tokens)
        return Done(ttc, proxied=result)
