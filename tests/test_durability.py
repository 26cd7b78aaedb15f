"""Durable evaluation runs: liveness rules, clean stops on signals, resume without loss or repeats.

The end-to-end tests drive the real CLI (``python -m ttc eval``) in a subprocess with the
built-in countdown-direct model, kill it (SIGKILL, SIGTERM) once a few problems are
committed, and finish the run with ``ttc eval --resume RUN_ID``, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from ttc.backends.errors import BadInputError
from ttc.backends.scripted import ScriptedBackend
from ttc.orchestrator import Orchestrator
from ttc.orchestrator._run_guard import deferred_signals, stop_on_signals
from ttc.orchestrator.durability import RunInterrupted, problem_keys, problem_seed
from ttc.store import (
    JobRecord,
    ProcessIdentity,
    RunTakenOver,
    TraceStore,
    list_jobs,
    list_runs,
    make_engine,
    migrate,
    utcnow,
)
from ttc.store.liveness import STALE_AFTER, is_gone, process_start
from ttc.tasks.countdown import COUNTDOWN

CLI = [sys.executable, "-m", "ttc"]
N_PROBLEMS = 30
PROBLEMS = COUNTDOWN.make_problems(N_PROBLEMS, seed=0, split="test")


def wait_for(predicate, timeout: float = 180.0, interval: float = 0.02) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


# One torch thread per process, here and in the CLI children: on a 2-core machine several
# multi-threaded processes spin against each other, and every process computes alike.
CHILD_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, str | None]:
    """Problem id -> answer of one uninterrupted eval (default seed), in-process."""
    import torch

    db = f"sqlite:///{tmp_path_factory.mktemp('ref') / 'ref.db'}"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with Orchestrator(db=db, device="cpu") as orc:
            report = orc.evaluate("countdown", PROBLEMS, strategy="sample")
    finally:
        torch.set_num_threads(before)
    assert report.resumed == 0 and report.n_problems == N_PROBLEMS
    return {row["id"]: row["answer"] for row in report.problems}


@pytest.fixture
def reader(db_url):
    """An engine on the test database, migrated so it can be polled before a child opens it."""
    engine = make_engine(db_url)
    migrate(engine)
    yield engine
    engine.dispose()


# -- liveness rules ---------------------------------------------------------------------


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_liveness_rules_with_an_injected_clock():
    here = ProcessIdentity.current()
    t0 = utcnow()
    other = dict(host="elsewhere", pid=here.pid, start=here.start, last_seen=t0, here=here)
    assert not is_gone("running", **other, now=t0 + STALE_AFTER)
    assert is_gone("running", **other, now=t0 + STALE_AFTER + timedelta(seconds=1))
    assert not is_gone("ok", **other, now=t0 + timedelta(days=1))
    # On this machine the pid decides at once, whatever the heartbeat says.
    mine = dict(host=here.host, last_seen=t0, here=here)
    boot = here.start.partition("/")[0] if here.start else None
    earlier = f"{boot}/1" if boot else "1"  # a start stamp of this boot, not ours
    assert not is_gone("running", pid=here.pid, start=here.start, now=t0 + timedelta(days=1), **mine)
    assert is_gone("running", pid=dead_pid(), start=earlier, now=t0, **mine)
    assert is_gone("running", pid=here.pid, start=earlier, now=t0, **mine)  # our pid, reused
    # Same host name, another boot (a reboot, or a twin host name): only the heartbeat can tell.
    twin = dict(host=here.host, pid=here.pid, start="another-boot/5", last_seen=t0, here=here)
    assert not is_gone("running", **twin, now=t0 + timedelta(seconds=30), alive=lambda pid, start: False)
    assert is_gone("running", **twin, now=t0 + timedelta(seconds=61))


def test_process_start_tells_a_zombie_and_a_dead_pid():
    assert process_start(os.getpid()) == ProcessIdentity.current().start
    assert process_start(dead_pid()) is None


def test_reads_mark_runs_of_gone_processes_interrupted(db_url):
    t0 = utcnow()
    clock = [t0]
    here = ProcessIdentity.current()
    remote = TraceStore.open(db_url, identity=ProcessIdentity("elsewhere", 4242, None), clock=lambda: clock[0])
    local_dead = TraceStore.open(db_url, identity=ProcessIdentity(here.host, dead_pid(), here.start))
    with remote, local_dead, TraceStore.open(db_url, clock=lambda: clock[0]) as reader:
        far = remote.start_run("eval", "remote")
        gone = local_dead.start_run("eval", "killed here")
        alive = reader.start_run("eval", "this process")
        assert {r.id: r.status for r in reader.list_runs()} == {far: "running", gone: "interrupted",
                                                                alive: "running"}
        clock[0] = t0 + timedelta(seconds=50)
        remote.beat()  # the remote owner is alive: its heartbeat moves on
        clock[0] = t0 + timedelta(seconds=100)
        assert reader.get_run_record(far).status == "running"
        clock[0] = t0 + timedelta(seconds=111)
        assert reader.get_run_record(far).status == "interrupted"
        assert reader.get_run_record(alive).status == "running"  # our own pid, however old its heartbeat
        # Persisted: filters and counts agree with what is shown.
        assert {r.id for r in reader.list_runs(status="interrupted")} == {far, gone}
        assert reader.stats(kind="eval").runs_by_status == {"interrupted": 2, "running": 1}
        assert "no heartbeat" in reader.get_run_record(far).error
        assert "process gone" in reader.get_run_record(gone).error


def test_claim_is_compare_and_set_and_ends_only_by_the_owner(db_url):
    with TraceStore.open(db_url, identity=ProcessIdentity("elsewhere", 1, None)) as old, \
            TraceStore.open(db_url) as store:
        run_id = old.start_run("eval", "x")
        old.end_run(run_id, status="interrupted", error="stopped by SIGTERM")
        assert store.claim_run(run_id, "interrupted")
        assert not store.claim_run(run_id, "interrupted")  # a second resumer loses
        run = store.get_run_record(run_id)
        assert (run.status, run.host, run.pid, run.ended_at) == ("running", store.identity.host, os.getpid(), None)
        with pytest.raises(RunTakenOver):
            old.end_run(run_id, status="ok")
        store.end_run(run_id, status="ok")
        assert store.get_run_record(run_id).status == "ok"


def test_jobs_are_kept_once_and_errors_are_retried(db_url):
    with TraceStore.open(db_url) as store:
        run_id = store.start_run("batch", "jobs")
        assert store.record_job(JobRecord(run_id=run_id, key="a", idx=0, result={"x": 1}))
        assert not store.record_job(JobRecord(run_id=run_id, key="a", idx=0, result={"x": 2}))
        assert store.record_job(JobRecord(run_id=run_id, key="b", idx=1, status="error", error="boom"))
        assert store.record_job(JobRecord(run_id=run_id, key="b", idx=1, result={"x": 3}))
        jobs = store.list_jobs(run_id)
        assert [(j.key, j.status, j.result, j.attempts) for j in jobs] == [
            ("a", "ok", {"x": 1}, 1), ("b", "ok", {"x": 3}, 2)]


# -- signals ----------------------------------------------------------------------------


def test_signals_raise_only_inside_the_guard_and_wait_for_deferred_sections():
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    events = []
    with pytest.raises(RunInterrupted) as stopped:
        with stop_on_signals():
            assert signal.getsignal(signal.SIGTERM) is not before[signal.SIGTERM]
            with deferred_signals():
                os.kill(os.getpid(), signal.SIGTERM)
                events.append("commit finished")
            events.append("not reached")
    assert events == ["commit finished"]
    assert stopped.value.exit_code == 143 and stopped.value.as_error().exit_code == 143
    assert {s: signal.getsignal(s) for s in before} == before

    seen = []
    worker = threading.Thread(target=lambda: seen.append(_guard_in_thread()))
    worker.start()
    worker.join()
    assert seen == [before[signal.SIGTERM]]  # no handler from a worker thread


def _guard_in_thread():
    with stop_on_signals():
        return signal.getsignal(signal.SIGTERM)


def test_problem_seeds_derive_from_the_run_seed_and_the_key():
    assert problem_seed(0, "a") == problem_seed(0, "a") != problem_seed(0, "b")
    assert problem_seed(0, "a") != problem_seed(1, "a")
    assert 0 <= problem_seed(7, "x") < 2**31
    assert problem_keys([{"id": "p"}, {"id": "q"}, {"id": "p"}]) == ["p", "q", "p#2"]
    assert problem_keys([{"id": "p"}, {"id": "p"}, {"id": "p#2"}]) == ["p", "p#3", "p#2"]


# -- the Python API ---------------------------------------------------------------------


def test_sigterm_in_evaluate_then_resume_in_process(sqlite_url, reference, one_thread):
    before = signal.getsignal(signal.SIGTERM)
    with Orchestrator(db=sqlite_url, device="cpu") as orc:
        refused = []

        def stop_after_three(i, result):
            run_id = result.trace_id
            assert orc.store.list_jobs(run_id)[-1].key == PROBLEMS[i]["id"]  # committed before counted
            if i == 1:
                with pytest.raises(BadInputError, match="still running"):
                    orc.resume(run_id)
                refused.append(run_id)
            if i == 2:
                assert signal.getsignal(signal.SIGTERM) is not before  # else the kill ends pytest
                os.kill(os.getpid(), signal.SIGTERM)

        with pytest.raises(RunInterrupted) as stopped:
            orc.evaluate("countdown", PROBLEMS[:8], on_problem=stop_after_three)
        run_id = stopped.value.run_id
        assert refused == [run_id] and stopped.value.resumable and stopped.value.exit_code == 143
        assert signal.getsignal(signal.SIGTERM) is before
        run = orc.store.get_run_record(run_id)
        assert (run.status, run.error) == ("interrupted", "stopped by SIGTERM")
        assert [j.key for j in orc.store.list_jobs(run_id)] == [p["id"] for p in PROBLEMS[:3]]

        with pytest.raises(BadInputError, match="checkpoint changed"):
            orc.resume(run_id, models={"policy": ScriptedBackend(["1+1=2"])})
        with pytest.raises(BadInputError, match="only eval runs"):
            orc.resume(orc.store.start_run("solve", "x"))

        seen = []
        report = orc.resume(run_id[:8], on_problem=lambda i, r: seen.append(i),
                            on_start=lambda n, done: seen.append((n, len(done))))
        assert seen == [(8, 3), 3, 4, 5, 6, 7]
        assert (report.resumed, report.n_problems, report.trace_id) == (3, 8, run_id)
        assert {r["id"]: r["answer"] for r in report.problems} == {p["id"]: reference[p["id"]] for p in PROBLEMS[:8]}
        assert orc.store.get_run_record(run_id).status == "ok"
        assert all(j.attempts == 1 for j in orc.store.list_jobs(run_id))
        seeds = {s.attributes["ttc.seed"] for s in orc.get_run(run_id).spans if s.kind == "strategy"}
        assert seeds == {problem_seed(0, p["id"]) for p in PROBLEMS[:8]}
        # Resuming a finished run runs nothing and gives the same report.
        again = orc.resume(run_id)
        assert again.resumed == 8 and again.problems == report.problems


# -- the CLI, killed and resumed --------------------------------------------------------


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=cwd, env=CHILD_ENV, timeout=600)


def one_json(out: str) -> dict:
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert len(lines) == 1, f"stdout must be exactly one JSON object, got {out!r}"
    return json.loads(lines[0])


def eval_run_id(engine: sa.Engine) -> str | None:
    runs = list_runs(engine, kind="eval")
    return runs[0].id if runs else None


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
def test_killed_cli_eval_resumes_without_loss_or_repeats(stop, db_url, reader, tmp_path, reference):
    problems = tmp_path / "problems.jsonl"
    problems.write_text("".join(json.dumps(p) + "\n" for p in PROBLEMS))
    child = subprocess.Popen([*CLI, "eval", "--task", "countdown", "--problems", str(problems), "--strategy",
                              "sample", "--json", "--db", db_url, "--device", "cpu"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=CHILD_ENV)
    try:
        assert wait_for(lambda: child.poll() is not None or eval_run_id(reader) is not None)
        run_id = eval_run_id(reader)
        assert run_id is not None, child.communicate()[1]
        assert wait_for(lambda: child.poll() is not None or len(list_jobs(reader, run_id)) >= 3)
        assert child.poll() is None, "the eval finished before it could be stopped"
        stored_at_poll = len(list_jobs(reader, run_id))
        child.send_signal(stop)
        out, err = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    if stop == signal.SIGTERM:
        assert child.returncode == 143, err
        assert "SIGTERM" in one_json(out)["error"]["message"]
    else:
        assert child.returncode == -signal.SIGKILL
    stored = len(list_jobs(reader, run_id))
    assert stored_at_poll <= stored < N_PROBLEMS

    listed = cli("traces", "list", "--json", "--db", db_url, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert {r["id"]: r["status"] for r in one_json(listed.stdout)["runs"]} == {run_id: "interrupted"}

    resumed = cli("eval", "--resume", run_id, "--json", "--db", db_url, "--device", "cpu", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    report = one_json(resumed.stdout)
    assert (report["trace_id"], report["n_problems"], report["resumed"]) == (run_id, N_PROBLEMS, stored)
    assert len({row["id"] for row in report["problems"]}) == N_PROBLEMS
    assert {row["id"]: row["answer"] for row in report["problems"]} == reference
    jobs = list_jobs(reader, run_id)
    assert sorted(j.key for j in jobs) == sorted(p["id"] for p in PROBLEMS)
    assert all(j.status == "ok" and j.attempts == 1 for j in jobs)
    assert list_runs(reader, kind="eval")[0].status == "ok"
