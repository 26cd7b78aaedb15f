"""Batch jobs on Ray actors (``--executor ray``), on a real local instance with 2 CPUs:
the answers of the local executor, a killed actor's job retried to exactly one line, and a
SIGKILLed ``ttc batch run --executor ray`` whose Ray instance goes with it."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
from pathlib import Path

import pytest
from test_batch import PROBLEMS, read_out, task_line, write_lines
from test_durability import CHILD_ENV, CLI, wait_for
from ttc.orchestrator import Orchestrator
from ttc.orchestrator.batch import start_batch

try:
    import ray
except ImportError:  # pragma: no cover - depends on the environment
    if os.environ.get("CI"):
        raise  # CI installs the ray extra: a missing Ray there is a failure, not a skip
    pytest.skip("Ray is not installed (pip install 'ttc[ray]')", allow_module_level=True)

from ttc.orchestrator.batch.ray_executor import NAMESPACE, LocalRay

pytestmark = pytest.mark.slow

N = 4
SEED = 11


@pytest.fixture(scope="module")
def batch_file(tmp_path_factory) -> Path:
    return write_lines(tmp_path_factory.mktemp("ray") / "in.jsonl",
                       [task_line(i, p) for i, p in enumerate(PROBLEMS[:N])])


@pytest.fixture(scope="module")
def local_answers(batch_file, tmp_path_factory) -> dict[str, str | None]:
    """custom_id -> answer of the same batch on the local executor (threads)."""
    d = tmp_path_factory.mktemp("local")
    with Orchestrator(db=f"sqlite:///{d / 't.db'}", device="cpu") as orc:
        start_batch(orc, batch_file, d / "out.jsonl", max_concurrency=2, seed=SEED)
    return {line["custom_id"]: line["response"]["body"]["answer"] for line in read_out(d / "out.jsonl")}


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray instance (2 CPUs) for the module; the executor uses it, not owns it."""
    with LocalRay(num_cpus=2) as instance:
        yield instance


def _batch_actors() -> list[str]:
    return [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
            if a["namespace"] == NAMESPACE and a["name"].startswith("ttc-batch-")]


def _one_line_each(out: Path) -> dict[str, dict]:
    lines = read_out(out)
    assert collections.Counter(line["custom_id"] for line in lines) == {f"job-{i}": 1 for i in range(N)}
    return {line["custom_id"]: line for line in lines}


def test_ray_answers_like_local_and_a_killed_actor_job_is_retried(batch_file, local_answers, local_ray, tmp_path):
    killed: list[str] = []

    def kill_once(tally) -> None:
        # Called after a job is committed; the next line already went out to the actor.
        if not killed:
            killed.extend(_batch_actors())
            for name in killed:
                ray.kill(ray.get_actor(name, namespace=NAMESPACE))

    out = tmp_path / "out.jsonl"
    with Orchestrator(db=f"sqlite:///{tmp_path / 't.db'}", device="cpu") as orc:
        summary = start_batch(orc, batch_file, out, max_concurrency=2, seed=SEED, executor="ray", on_job=kill_once)
        run = orc.get_run(summary.run_id)
        jobs = orc.store.list_jobs(summary.run_id)
    assert len(killed) == 1, killed  # one policy model, one actor
    assert (summary.status, summary.jobs, summary.ok, summary.failed) == ("ok", N, N, 0)
    lines = _one_line_each(out)
    # Each job's seed derives from the run seed and its custom_id: on Ray, retried or not,
    # a job draws what it drew on the local executor.
    assert {cid: line["response"]["body"]["answer"] for cid, line in lines.items()} == local_answers
    # The job(s) in flight on the killed actor cost an attempt each and ran again on its successor.
    assert all(j.status == "ok" for j in jobs) and 1 in {j.attempts for j in jobs} and 2 in {j.attempts for j in jobs}
    assert max(j.attempts for j in jobs) == 2
    # The driver stored the actors' spans in the batch run: one ok job span per line under its root span.
    root = next(s for s in run.spans if s.kind == "run")
    job_spans = [s for s in run.spans if s.kind == "job"]
    assert sorted(s.attributes["custom_id"] for s in job_spans) == sorted(lines)
    assert all(s.parent_id == root.id and s.status == "ok" for s in job_spans)
    assert {s.run_id for s in run.spans} == {summary.run_id}
    ids = {s.id for s in run.spans}
    assert all(s.parent_id in ids for s in run.spans if s is not root)
    assert len(run.candidates) >= N and {c.span_id for c in run.candidates} <= ids
    assert not _batch_actors()  # the executor took its actors down


# -- SIGKILL of the driver ----------------------------------------------------------------


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                stat = Path(f"/proc/{name}/stat").read_text()
            except OSError:
                continue
            kids.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(name))
    return kids


def _descendants(pid: int) -> list[int]:
    kids, out, todo = _children(), [], [pid]
    while todo:
        for child in kids.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _of_instance(mark: bytes, temp: bytes) -> list[int]:
    """Processes of one Ray instance: its marker in their environment or a file open in its folder."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            env = Path(f"/proc/{name}/environ").read_bytes()
            links = [os.readlink(f"/proc/{name}/fd/{fd}").encode() for fd in os.listdir(f"/proc/{name}/fd")]
        except OSError:
            continue
        if b"\0" + mark + b"\0" in b"\0" + env or any(link.startswith(temp + b"/") for link in links):
            found.append(int(name))
    return found


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="the watchdog finds Ray's processes through /proc")
def test_sigkilled_driver_takes_its_ray_instance_along(batch_file, tmp_path):
    child = subprocess.Popen([*CLI, "batch", "run", str(batch_file), "-o", str(tmp_path / "out.jsonl"),
                              "--executor", "ray", "--seed", str(SEED), "--db", f"sqlite:///{tmp_path / 't.db'}",
                              "--json"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=CHILD_ENV)
    try:
        # Killed once its job actor is up: every kind of Ray process is running by then.
        assert wait_for(lambda: child.poll() is not None or any(
            _cmdline(p).startswith(b"ray::JobActor") for p in _descendants(child.pid)), timeout=120)
        assert child.poll() is None, f"the batch ended before it could be killed: {child.communicate()[1][-2000:]}"
        dogs = [p for p in _descendants(child.pid) if b"TTC_RAY_OWNER=" in _cmdline(p)]
        assert len(dogs) == 1, "the run's Ray instance has one watchdog"
        mark, temp = _cmdline(dogs[0]).rstrip(b"\0").split(b"\0")[-3:-1]
        ray_procs = _of_instance(mark, temp)
        procs = _descendants(child.pid)
        assert len(ray_procs) >= 4 and set(ray_procs) <= {child.pid, *procs}  # gcs, raylet, agents, workers
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        # Without the watchdog Ray's agents outlive the driver by a minute or more.
        assert wait_for(lambda: not any(_alive(p) for p in procs) and not _of_instance(mark, temp), timeout=30), \
            [_cmdline(p)[:80] for p in procs if _alive(p)]
        assert not Path(temp.decode()).exists()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
