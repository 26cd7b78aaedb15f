"""Batch jobs on Ray actors (``--executor ray``): one actor per policy model, the driver commits.

Lines are grouped by their policy model (a task body's ``model`` or ``models.policy`` or
the task's default model; a chat body's model; graph lines share one actor), and each
group runs on its own Ray actor, which loads its models once and runs up to
``max_concurrency`` jobs at a time in threads, their calls merged by a generation queue.

Actors never write to the store. An actor traces a job into memory (:class:`SpanSink`)
with the batch run's id and the driver's root span as parent, and returns the job's
output with its spans and candidates; the driver buffers those in the store and yields,
and the runner commits them with the job. An actor's orchestrator opens the driver's
database only if a strategy looks up an artifact (a calibration) there: a read.

A dead actor (killed, crashed, its node lost) fails the calls it held; each such call
costs its job one attempt, a fresh actor replaces the dead one, and the job runs again
there until ``max_attempts`` is spent, so the store's attempt counts stay true.

Without ``ray_address`` (and with no Ray already initialised in this process) the
executor starts a local Ray instance that belongs to the run: shut down when the run
ends or stops, and killed by a watchdog process if the driver dies without a word
(SIGKILL), since Ray's own fate-sharing leaves its per-node agents behind for a minute
or more. The watchdog knows the instance's processes by a marker in their environment
and by their log files in its temp folder (Linux: ``/proc``). With ``ray_address``, the driver joins a
cluster it does not own; its actors end with its job. Across hosts, the store must be
one every host can read (PostgreSQL).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from typing import Any, Self

from ttc.backends.errors import BadInputError, RunFailure
from ttc.tasks.registry import get_task

from ..chat import plan_chat
from ..tracing import StoreTracer, _current, one_line
from .executors import Attempted, attempt
from .lines import BatchLine

__all__ = ["NAMESPACE", "JobActor", "LocalRay", "RayExecutor", "SpanSink", "group_of", "require_ray"]

#: The namespace of the executor's named actors (``ttc-batch-<run id>-<group>-<generation>``).
NAMESPACE = "ttc"
_MARK = "TTC_RAY_OWNER"
_GRAPHS = "<graphs>"
_INIT = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}

# The watchdog: blocks on its stdin (a pipe from the driver) until the driver closes it or
# dies, then kills every process of the instance (never the driver), until none is left for a while (a raylet
# may start a worker meanwhile), and removes Ray's temp folder. A process of the instance
# carries the marker in its environment or has a file open in the temp folder (its logs):
# Python processes retitle themselves (setproctitle), which can overwrite the environment
# that /proc shows, but every Ray process keeps its log files open.
_WATCHDOG = r"""
import os, shutil, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
needle, folder = b"\0" + sys.argv[1].encode() + b"\0", sys.argv[2].rstrip("/") + "/"
spare = {os.getpid(), int(sys.argv[3])}
sys.stdin.buffer.read()
def ours(pid):
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            if needle in b"\0" + fh.read():
                return True
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith(folder):
                return True
        except OSError:
            pass
    return False
def marked():
    return [int(n) for n in os.listdir("/proc") if n.isdigit() and int(n) not in spare and ours(n)]
quiet, deadline = 0, time.monotonic() + 120
while quiet < 5 and time.monotonic() < deadline:
    found = marked()
    for pid in found:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    quiet = 0 if found else quiet + 1
    time.sleep(0.2)
shutil.rmtree(sys.argv[2], ignore_errors=True)
"""


class SpanSink:
    """Collects an actor's spans and candidates in memory, in the store's two methods.

    Used as the ``store`` of a :class:`~ttc.orchestrator.tracing.StoreTracer`.
    """

    def __init__(self) -> None:
        self.spans: list[Any] = []
        self.candidates: list[Any] = []
        self._lock = threading.Lock()  # a graph's stages end spans from several threads

    def add_span(self, span) -> None:
        with self._lock:
            self.spans.append(span)

    def add_candidates(self, candidates) -> None:
        with self._lock:
            self.candidates.extend(candidates)


def group_of(line: BatchLine) -> str:
    """The model a line's policy runs on (its actor), or one shared group for graph lines."""
    body = line.body or {}
    if line.kind == "graph":
        return _GRAPHS
    if line.kind == "chat":
        return plan_chat(body).model
    model = body.get("model") or (body.get("models") or {}).get("policy")
    return str(model or get_task(body["task"]).default_model)


class JobActor:
    """Runs batch jobs in a Ray worker with its own orchestrator (its models load once).

    Args:
        orc_options: ``Orchestrator`` keyword arguments (the driver's database, device, ...).
        batch_generation: Merge concurrent jobs' calls in a generation queue.
    """

    def __init__(self, orc_options: dict[str, Any], batch_generation: bool):
        from ttc.orchestrator import Orchestrator

        self.orc = Orchestrator(**orc_options)
        self.orc.batch_generation = batch_generation

    def run(self, line: BatchLine, tries: int, run_seed: int, base_url: str | None, run_id: str,
            parent_id: str | None) -> tuple[Attempted, list[Any], list[Any], dict[str, Any]]:
        """Attempts one line; returns the attempts, their spans and candidates, and run outcome keys."""
        sink = SpanSink()
        tracer = StoreTracer(sink, run_id)  # type: ignore[arg-type] - a sink, never the store
        # The job span nests under the driver's root span, as it does in a local worker thread.
        token = _current.set(parent_id)
        try:
            got = attempt(self.orc, tracer, line, tries, run_seed=run_seed, base_url=base_url)
        except Exception as exc:  # noqa: BLE001 - the driver must hear of every line
            got = Attempted(failures=[one_line(exc)])
        finally:
            _current.reset(token)
        return got, sink.spans, sink.candidates, tracer.outcome


def require_ray():
    """The ``ray`` module.

    Raises:
        BadInputError: Ray is not installed (the ``ray`` extra).
    """
    try:
        import ray
    except ImportError:
        raise BadInputError("--executor ray needs Ray: pip install 'ttc[ray]'") from None
    return ray


def _orc_options(orc) -> dict[str, Any]:
    import sqlalchemy as sa

    url = sa.make_url(orc.db_url)
    # A relative SQLite path means the driver's folder, not a worker's.
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        url = url.set(database=os.path.abspath(url.database))
    return {"db": url.render_as_string(hide_password=False), "device": orc.device,
            "trust_remote_code": orc.trust_remote_code, **orc._remote}


class LocalRay:
    """A local Ray instance that belongs to this process (a context manager).

    Shut down on exit; if the process dies without exiting (SIGKILL), a watchdog process
    kills what is left of the instance and removes its temp folder. Ray's processes find
    their own way out once the driver is gone, except its per-node agents, which linger
    for a minute or more while they try to report the raylet's death to a dead GCS.

    Args:
        num_cpus: CPUs the instance offers (default: what Ray finds this machine, or its
            container, has).
    """

    def __init__(self, num_cpus: int | None = None):
        self.num_cpus = num_cpus
        self.temp_dir: str | None = None
        self._watchdog: subprocess.Popen | None = None

    def __enter__(self) -> Self:
        ray = require_ray()
        self.temp_dir = tempfile.mkdtemp(prefix="ttc-ray-")  # short: Ray's socket paths must fit 107 bytes
        name, value = _MARK, secrets.token_hex(8)
        if sys.platform.startswith("linux"):
            self._watchdog = subprocess.Popen([sys.executable, "-c", _WATCHDOG, f"{name}={value}", self.temp_dir,
                                               str(os.getpid())],
                                              stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                              stderr=subprocess.DEVNULL, start_new_session=True)
        os.environ[name] = value  # inherited by every process Ray starts, and only by those
        try:
            with _keep_sigterm():
                ray.init(num_cpus=self.num_cpus, _temp_dir=self.temp_dir, namespace=NAMESPACE, **_INIT)
        except BaseException:
            self._stop_watchdog()
            raise
        finally:
            os.environ.pop(name, None)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            require_ray().shutdown()
        finally:
            self._stop_watchdog()

    def _stop_watchdog(self) -> None:
        dog, self._watchdog = self._watchdog, None
        if dog is None:
            if self.temp_dir is not None:
                shutil.rmtree(self.temp_dir, ignore_errors=True)
            return
        dog.stdin.close()  # its signal to sweep what Ray left and remove the temp folder
        try:
            dog.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass  # it finishes on its own; the run need not wait


@contextlib.contextmanager
def _keep_sigterm() -> Iterator[None]:
    # ray.init sets a SIGTERM handler that exits at once; the run's own handler must stay,
    # so that SIGTERM marks the run interrupted (exit 143).
    main = threading.current_thread() is threading.main_thread()
    keep = signal.getsignal(signal.SIGTERM) if main else None
    try:
        yield
    finally:
        if keep is not None:  # None: a handler not set from Python, which ray.init leaves alone too
            signal.signal(signal.SIGTERM, keep)


class RayExecutor:
    """Runs lines on Ray actors, one per policy model; yields results as they finish.

    Uses the Ray session this process already has, else joins ``ray_address``, else
    starts a :class:`LocalRay` for the run.

    Args:
        orc: The driver's orchestrator (its store gets the jobs' spans).
        tracer: The batch run's tracer.
        settings: The run's ``BatchSettings`` (max_concurrency, max_attempts, seed,
            base_url, ray_address).
    """

    def __init__(self, orc, tracer, settings: Any):
        self.orc, self.tracer, self.settings = orc, tracer, settings
        self.ray = require_ray()
        self._local: LocalRay | None = None
        self._joined = False
        self._actors: dict[str, tuple[int, Any]] = {}  # group -> (generation, handle)
        self._names: dict[str, int] = {}
        self._cls = self.ray.remote(JobActor)

    def __enter__(self) -> Self:
        ray = self.ray
        if ray.is_initialized():
            return self  # the caller's Ray session (a library user, a test): used, not owned
        where = self.settings.ray_address or "a local instance"
        try:
            if self.settings.ray_address:
                with _keep_sigterm():
                    ray.init(address=self.settings.ray_address, **_INIT)
                self._joined = True
            else:
                self._local = LocalRay().__enter__()
        except Exception as exc:
            raise RunFailure(f"could not start Ray ({where}): {one_line(exc)}") from exc
        return self

    def __exit__(self, *exc: object) -> None:
        # Jobs in flight die with their actors; none was committed, so a resume runs them again.
        try:
            for _, handle in self._actors.values():
                self._kill(handle)
            self._actors.clear()
        finally:
            if self._local is not None:
                self._local.__exit__(None, None, None)
                self._local = None
            elif self._joined:
                self.ray.shutdown()  # leaves the cluster; it is not ours to stop
                self._joined = False

    # -- actors -----------------------------------------------------------------------------

    def _resources(self, groups: int) -> dict[str, float]:
        # Each actor gets a fair share of the cluster (its torch threads follow num_cpus), at
        # most one node's worth, and a GPU share where the cluster has GPUs and may use them.
        ray = self.ray
        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        total = sum(n.get("CPU", 0.0) for n in nodes) or 1.0
        biggest = max((n.get("CPU", 0.0) for n in nodes), default=1.0) or 1.0
        share = total / groups
        cpus = min(biggest, float(int(share))) if share >= 1 else share
        out = {"num_cpus": cpus}
        gpus = sum(n.get("GPU", 0.0) for n in nodes)
        if gpus and self.orc.device != "cpu":
            out["num_gpus"] = min(1.0, gpus / groups)
        return out

    def _actor(self, group: str, index: int, resources: dict[str, float]) -> tuple[int, Any]:
        if group not in self._actors:
            generation = self._names.get(group, -1) + 1
            self._names[group] = generation
            # No restarts nor task retries by Ray: the driver replaces a dead actor and counts
            # each call it lost as an attempt of that call's job (--max-attempts holds).
            options = {"name": f"ttc-batch-{self.tracer.trace_id[:12]}-{index}-{generation}",
                       "namespace": NAMESPACE, "max_concurrency": self.settings.max_concurrency,
                       "max_restarts": 0, "max_task_retries": 0, **resources}
            handle = self._cls.options(**options).remote(_orc_options(self.orc), self.settings.max_concurrency > 1)
            self._actors[group] = (generation, handle)
        return self._actors[group]

    def _replace(self, group: str, generation: int) -> None:
        # Only the first failed call of a dead actor replaces it; the others find the new one.
        current = self._actors.get(group)
        if current is not None and current[0] == generation:
            del self._actors[group]
            self._kill(current[1])

    def _kill(self, handle: Any) -> None:
        with contextlib.suppress(Exception):  # already dead, or Ray already gone
            self.ray.kill(handle)

    # -- running ----------------------------------------------------------------------------

    def run(self, lines: list[BatchLine], before: dict[str, int]) -> Iterator[tuple[BatchLine, Attempted]]:
        ray, s = self.ray, self.settings
        if not lines:
            return
        queues: dict[str, collections.deque[tuple[BatchLine, list[str]]]] = {}
        for line in lines:
            queues.setdefault(group_of(line), collections.deque()).append((line, []))
        index = {g: i for i, g in enumerate(queues)}
        resources = self._resources(len(queues))
        parent = _current.get()  # the batch run's root span
        pending: dict[Any, tuple[BatchLine, list[str], str, int]] = {}
        busy = collections.Counter[str]()

        def tries(line: BatchLine) -> int:
            return max(1, s.max_attempts - before.get(line.key, 0))

        def fill() -> None:
            for group, todo in queues.items():
                while todo and busy[group] < s.max_concurrency:
                    line, failed = todo.popleft()
                    generation, handle = self._actor(group, index[group], resources)
                    ref = handle.run.remote(line, tries(line) - len(failed), s.seed, s.base_url,
                                            self.tracer.trace_id, parent)
                    pending[ref] = (line, failed, group, generation)
                    busy[group] += 1

        fill()
        while pending:
            # A short wait, so that the driver's thread sees a signal promptly.
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.2)
            for ref in ready:
                line, failed, group, generation = pending.pop(ref)
                busy[group] -= 1
                try:
                    got, spans, candidates, outcome = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - a dead actor, a lost object: a failed attempt
                    if isinstance(exc, ray.exceptions.RayActorError):
                        self._replace(group, generation)
                    failed = [*failed, f"{type(exc).__name__}: {one_line(exc)}"]
                    if len(failed) < tries(line):
                        queues[group].appendleft((line, failed))
                        fill()
                        continue
                    got, spans, candidates, outcome = Attempted(failures=failed), [], [], {}
                else:
                    got.failures = [*failed, *got.failures]
                # Next lines go out before this one is committed: the actor never waits on the driver.
                fill()
                if candidates:  # candidates first, as the tracer writes them
                    self.tracer.store.add_candidates(candidates)
                for span in spans:
                    self.tracer.store.add_span(span)
                self.tracer.outcome.update(outcome)
                yield line, got
