"""Clean stops on SIGINT and SIGTERM while a run is in progress.

While a run is in progress in the main thread, :func:`stop_on_signals` turns
SIGINT and SIGTERM into :class:`RunInterrupted` (a ``KeyboardInterrupt``, so no
``except Exception`` on the way, such as a retry loop, swallows it); the orchestrator
flushes, marks the run ``interrupted`` and re-raises. Inside :func:`deferred_signals`
(a job's commit, a run's end) a signal waits until the section is done, so a commit is
never cut in half. The first signal puts the previous handlers back: a second one
forces its way out as it would without ttc.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from ttc.backends.errors import RunFailure

__all__ = ["RunInterrupted", "RunStopped", "consume_interruption", "deferred_signals", "stop_on_signals"]

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class RunStopped(RunFailure):
    """A run stopped by a signal, as a plain error the CLI reports (exit 130 or 143)."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class RunInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped a run; the run is marked ``interrupted`` in the store.

    Attributes:
        signum: The signal.
        run_id: The (outermost) run it stopped, once the orchestrator has marked it.
        resumable: Whether ``ttc eval --resume run_id`` can finish that run.
        exit_code: 128 + signal number (130 for SIGINT, 143 for SIGTERM).
    """

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum
        self.run_id: str | None = None
        self.resumable = False
        #: The command that finishes the run (default: ``ttc eval --resume RUN_ID``).
        self.resume_command: str | None = None

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    @property
    def signal_name(self) -> str:
        try:
            return signal.Signals(self.signum).name
        except ValueError:
            return f"signal {self.signum}"

    def __str__(self) -> str:
        text = f"stopped by {self.signal_name}"
        if self.run_id:
            text = f"run {self.run_id} {text}"
            if self.resumable:
                text += f"; finish it with: {self.resume_command or f'ttc eval --resume {self.run_id}'}"
        return text

    def as_error(self) -> RunStopped:
        """This interruption as a :class:`RunStopped` error carrying its exit code."""
        return RunStopped(str(self), self.exit_code)


class _Guard:
    """One level of installed handlers (runs nest: an eval may record inner runs)."""

    def __init__(self) -> None:
        self.previous: dict[int, Any] = {}


_guards: list[_Guard] = []
_defer_depth = 0
_pending: RunInterrupted | None = None
_last: RunInterrupted | None = None


def _restore(guard: _Guard) -> None:
    for signum, handler in guard.previous.items():
        if signal.getsignal(signum) is _handler:
            signal.signal(signum, handler)


def _handler(signum: int, _frame: FrameType | None) -> None:
    global _pending, _last
    if _guards:
        _restore(_guards[0])  # a second signal acts as it would without ttc
    stop = _last = RunInterrupted(signum)
    if _defer_depth:
        _pending = stop
        return
    raise stop


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """While in the block, SIGINT and SIGTERM raise :class:`RunInterrupted`.

    Only in the main thread (the only one Python delivers signals to); elsewhere the
    block runs unguarded. The previous handlers are restored on exit.
    """
    global _pending
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    guard = _Guard()
    for signum in _SIGNALS:
        guard.previous[signum] = signal.signal(signum, _handler)
    _guards.append(guard)
    try:
        yield
    finally:
        _guards.remove(guard)
        _restore(guard)
        if not _guards:
            _pending = None


@contextmanager
def deferred_signals() -> Iterator[None]:
    """A section a signal must not cut: a stop asked for inside it is raised at its end.

    Signals only ever interrupt the main thread, so elsewhere this does nothing (and a
    stop is never raised in a thread that did not ask for it).
    """
    global _defer_depth, _pending
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _defer_depth += 1
    failed = False
    try:
        yield
    except BaseException:
        failed = True
        raise
    finally:
        _defer_depth -= 1
        stop = _pending
        if not _defer_depth and stop is not None and not failed:
            _pending = None
            raise stop


def consume_interruption() -> RunInterrupted | None:
    """The last :class:`RunInterrupted` a signal raised in this process, cleared.

    For the CLI, whose framework turns every ``KeyboardInterrupt`` into exit 130 and
    drops it: this tells 143 (SIGTERM) from 130 and names the run.
    """
    global _last
    stop, _last = _last, None
    return stop
