"""The batch runner: lines checked without a crash, jobs traced and committed before their
output line, retries, resume after SIGKILL/SIGTERM without loss or repeats (SQLite and
PostgreSQL), and the same candidates alone and batched, on the built-in countdown model."""

from __future__ import annotations

import collections
import json
import signal
import subprocess
import threading
from pathlib import Path

import pytest

from recording import run_cli
from test_durability import CHILD_ENV, CLI, one_json, wait_for
from ttc.core.types import Result
from ttc.orchestrator import Orchestrator
from ttc.orchestrator.batch import read_batch_file, resume_batch, start_batch
from ttc.orchestrator.batch.lines import in_shard, parse_line
from ttc.store import list_jobs, list_runs, make_engine, migrate
from ttc.strategies.registry import STRATEGIES, get_strategy, strategy
from ttc.tasks.countdown import COUNTDOWN

PROBLEMS = COUNTDOWN.make_problems(24, seed=7, split="test")


def task_line(i: int, p: dict, **body) -> dict:
    return {"custom_id": f"job-{i}", "body": {"task": "countdown", "strategy": "sample",
                                              "problem": {"numbers": p["numbers"], "target": p["target"]}, **body}}


def write_lines(path: Path, lines: list) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def read_out(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def batch_file(tmp_path_factory) -> Path:
    return write_lines(tmp_path_factory.mktemp("batch") / "in.jsonl", [task_line(i, p) for i, p in enumerate(PROBLEMS)])


@pytest.fixture(scope="module")
def alone(batch_file, tmp_path_factory) -> dict[str, str | None]:
    """custom_id -> answer of the batch run one job at a time, uninterrupted."""
    d = tmp_path_factory.mktemp("alone")
    with Orchestrator(db=f"sqlite:///{d / 't.db'}", device="cpu") as orc:
        summary = start_batch(orc, batch_file, d / "out.jsonl", max_concurrency=1, seed=11)
        assert not orc.batch_generation
    assert (summary.jobs, summary.ok, summary.failed) == (len(PROBLEMS), len(PROBLEMS), 0)
    return {line["custom_id"]: line["response"]["body"]["answer"] for line in read_out(d / "out.jsonl")}


# -- reading lines ----------------------------------------------------------------------


def test_bad_lines_become_error_lines_with_their_reason(tmp_path):
    p = PROBLEMS[0]
    path = write_lines(tmp_path / "in.jsonl", [
        task_line(0, p), "", "not json", "[1, 2]", {"body": {}}, {"custom_id": "x", "body": "text"},
        {"custom_id": "m", "method": "GET", "body": {"task": "countdown", "problem": {}}},
        {"custom_id": "t", "body": {"task": "nope", "problem": {}}},
        {"custom_id": "k", "body": {"task": "countdown", "problem": p, "extra": 1}},
        {"custom_id": "s", "body": {"task": "countdown", "problem": p, "strategy": "nope"}},
        {"custom_id": "b", "body": {"task": "countdown", "problem": p, "budget": {"tokens": -1}}},
        {"custom_id": "c", "body": {"model": "countdown-direct", "messages": [], "ttc": {"bogus": 1}}},
        {"custom_id": "g", "body": {"task": "plan-solve", "problem": {}, "allocation": {}, "strategy": "sample"}},
        task_line(0, p),
    ])
    lines = read_batch_file(path)
    assert len(lines) == 13  # the blank line is no request
    assert lines[0].kind == "task" and lines[0].error is None and lines[0].request_hash
    reasons = [line.error for line in lines[1:]]
    assert all(reasons), reasons
    assert "not JSON" in reasons[0] and "not a JSON object" in reasons[1] and "custom_id" in reasons[2]
    assert "duplicate custom_id 'job-0' (first on line 1)" in reasons[-1]
    assert len({line.key for line in lines}) == len(lines)  # every line has its own job key


def test_shards_split_by_sha256_of_custom_id():
    keys = [f"job-{i}" for i in range(200)]
    shards = [[k for k in keys if in_shard(k, (i, 3))] for i in range(3)]
    assert sorted(sum(shards, [])) == sorted(keys) and all(len(s) > 40 for s in shards)
    assert shards[0] == [k for k in keys if in_shard(k, (0, 3))]  # stable across calls and processes


def test_parse_line_never_raises_on_odd_values():
    for text in ['{"custom_id": 5, "body": {}}', '{"custom_id": "a", "body": {"task": 3, "problem": 1}}',
                 '{"custom_id": "a", "body": {"task": "countdown", "problem": "x"}}', '"str"', "1e999",
                 '{"custom_id": "a", "body": {"task": "countdown", "problem": {}, "seed": -4}}']:
        assert parse_line(1, text).error


# -- running ----------------------------------------------------------------------------


def test_batch_run_traces_each_job_and_answers_like_one_at_a_time(batch_file, alone, tmp_path, sqlite_url):
    out = tmp_path / "out.jsonl"
    with Orchestrator(db=sqlite_url, device="cpu") as orc:
        summary = start_batch(orc, batch_file, out, max_concurrency=8, seed=11)
        queue = orc.backend("countdown-direct")
        run = orc.get_run(summary.run_id)
    # Concurrent jobs shared the model and its queue merged their calls into fewer decodes.
    assert type(queue).__name__ == "GenerationQueue" and queue.stats.largest > 1
    assert queue.stats.decodes < queue.stats.requests
    lines = read_out(out)
    assert collections.Counter(line["custom_id"] for line in lines) == {f"job-{i}": 1 for i in range(len(PROBLEMS))}
    # Each job's seed derives from the run seed and its custom_id: batched, it draws what it drew alone.
    assert {line["custom_id"]: line["response"]["body"]["answer"] for line in lines} == alone
    assert run.run.kind == "batch" and run.run.status == "ok"
    jobs = [s for s in run.spans if s.kind == "job"]
    root = next(s for s in run.spans if s.kind == "run")
    assert len(jobs) == len(PROBLEMS) and all(s.parent_id == root.id for s in jobs)
    assert {s.attributes["custom_id"] for s in jobs} == set(alone)
    assert summary.tokens == sum(line["response"]["body"]["tokens"] for line in lines) > 0


@pytest.fixture
def flaky():
    """A strategy that fails its first ``fail`` calls per problem, then samples."""
    calls: collections.Counter = collections.Counter()
    fail = {"n": 1}

    @strategy("flaky_test")
    def flaky_test(ctx, *, seed: int = 0) -> Result:
        key = json.dumps(ctx.problem, sort_keys=True)
        calls[key] += 1
        if calls[key] <= fail["n"]:
            raise RuntimeError(f"flaky failure {calls[key]}")
        return get_strategy("sample")(ctx, seed=seed)

    yield calls, fail
    STRATEGIES._items.pop("flaky_test", None)


def test_failed_attempts_are_retried_then_written_as_error_lines(flaky, tmp_path, sqlite_url):
    calls, fail = flaky
    lines = [task_line(i, p, strategy="flaky_test") for i, p in enumerate(PROBLEMS[:3])]
    with Orchestrator(db=sqlite_url, device="cpu") as orc:
        ok = start_batch(orc, write_lines(tmp_path / "a.jsonl", lines), tmp_path / "a.out", max_attempts=2, seed=1)
        fail["n"] = 10
        calls.clear()
        bad = start_batch(orc, write_lines(tmp_path / "b.jsonl", lines), tmp_path / "b.out", max_attempts=3, seed=1)
        jobs_ok, jobs_bad = orc.store.list_jobs(ok.run_id), orc.store.list_jobs(bad.run_id)
    assert (ok.ok, ok.failed) == (3, 0) and [j.attempts for j in jobs_ok] == [2, 2, 2]
    assert (bad.ok, bad.failed, bad.status) == (0, 3, "ok")
    assert [j.attempts for j in jobs_bad] == [3, 3, 3] and all(j.status == "error" for j in jobs_bad)
    for line in read_out(tmp_path / "b.out"):
        assert line["response"]["status_code"] == 500
        assert line["error"] == {"code": "job_failed", "message": "flaky failure 3"}


def test_resume_refuses_a_changed_input_or_checkpoint(batch_file, tmp_path, sqlite_url):
    src = write_lines(tmp_path / "in.jsonl", [task_line(i, p) for i, p in enumerate(PROBLEMS[:2])])
    with Orchestrator(db=sqlite_url, device="cpu") as orc:
        done = start_batch(orc, src, tmp_path / "out.jsonl", seed=1)
        # A finished run's output is not overwritten unasked, and resuming it runs nothing.
        code, _, err = run_cli(["batch", "run", str(src), "-o", str(tmp_path / "out.jsonl"), "--db", sqlite_url])
        assert code == 2 and "finished batch run" in err
        assert resume_batch(orc, done.run_id).resumed == 2
        # An interrupted run whose stored digests differ from the checkpoint now.
        with orc.store.engine.begin() as conn:
            conn.exec_driver_sql("UPDATE runs SET status = 'interrupted' WHERE id = ?", (done.run_id,))
            conn.exec_driver_sql("UPDATE jobs SET status = 'error', attempts = 1")
            conn.exec_driver_sql("UPDATE jobs SET result = json_set(result, '$.models.\"countdown-direct\"', 'x')")
    code, _, err = run_cli(["batch", "resume", done.run_id, "--db", sqlite_url])
    assert code == 2 and "checkpoint changed" in err
    src.write_text(src.read_text() + "\n")
    code, _, err = run_cli(["batch", "resume", done.run_id, "--db", sqlite_url])
    assert code == 2 and "changed since the run started" in err


def test_cli_rejects_bad_flags_with_exit_2(tmp_path, sqlite_url):
    src = write_lines(tmp_path / "in.jsonl", [task_line(0, PROBLEMS[0])])
    for args, says in [(["--shard", "3/3"], "--shard"), (["--shard", "a/b"], "--shard"),
                       (["--executor", "dask"], "--executor"), (["-o", str(src)], "must not be the input")]:
        argv = ["batch", "run", str(src), *(["-o", str(tmp_path / "o.jsonl")] if "-o" not in args else []), *args,
                "--db", sqlite_url]
        code, _, err = run_cli(argv)
        assert code == 2 and says in err, (args, err)
    code, _, err = run_cli(["batch", "run", str(tmp_path / "missing.jsonl"), "-o", str(tmp_path / "o"), "--db",
                            sqlite_url])
    assert code == 2 and "does not exist" in err


# -- killed and resumed -----------------------------------------------------------------


def batch_run_id(engine) -> str | None:
    runs = list_runs(engine, kind="batch")
    return runs[0].id if runs else None


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
def test_killed_batch_resumes_with_every_line_once(stop, db_url, batch_file, alone, tmp_path):
    if stop == signal.SIGTERM and db_url.startswith("postgresql"):
        pytest.skip("SIGTERM's clean stop is store-independent; SIGKILL covers PostgreSQL")
    engine = make_engine(db_url)
    migrate(engine)
    out = tmp_path / "out.jsonl"
    args = ["batch", "run", str(batch_file), "-o", str(out), "--max-concurrency", "4", "--seed", "11", "--json",
            "--db", db_url, "--device", "cpu"]
    child = subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                             env=CHILD_ENV)
    try:
        assert wait_for(lambda: child.poll() is not None or batch_run_id(engine) is not None)
        run_id = batch_run_id(engine)
        assert run_id is not None, child.communicate()[1]
        assert wait_for(lambda: child.poll() is not None or len(list_jobs(engine, run_id)) >= 4)
        assert child.poll() is None, "the batch finished before it could be stopped"
        child.send_signal(stop)
        stdout, err = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    if stop == signal.SIGTERM:
        assert child.returncode == 143, err
        assert "SIGTERM" in one_json(stdout)["error"]["message"]
    else:
        assert child.returncode == -signal.SIGKILL
    stored = len(list_jobs(engine, run_id))
    assert 4 <= stored < len(PROBLEMS)
    # A torn last line, as a kill in the middle of a write would leave it.
    with out.open("a") as fh:
        fh.write('{"id": "batch_req_torn", "custom_id": "job-')
    # The same command again resumes the unfinished run that owns the output file.
    again = subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=tmp_path, env=CHILD_ENV, timeout=600)
    assert again.returncode == 0, again.stderr
    summary = one_json(again.stdout)
    assert (summary["run_id"], summary["jobs"], summary["resumed"], summary["failed"]) == (
        run_id, len(PROBLEMS), stored, 0)
    lines = read_out(out)
    assert collections.Counter(line["custom_id"] for line in lines) == {f"job-{i}": 1 for i in range(len(PROBLEMS))}
    assert {line["custom_id"]: line["response"]["body"]["answer"] for line in lines} == alone
    assert all(j.status == "ok" and j.attempts == 1 for j in list_jobs(engine, run_id))
    status = subprocess.run([*CLI, "batch", "status", run_id, "--json", "--db", db_url], capture_output=True,
                            text=True, env=CHILD_ENV, timeout=120)
    st = one_json(status.stdout)
    assert (st["status"], st["done"], st["left"]) == ("ok", len(PROBLEMS), 0)
    engine.dispose()


def test_queue_gives_each_request_its_own_draws():
    from ttc.backends.queue import GenerationQueue
    from ttc.backends.types import SamplingParams
    from ttc.orchestrator.models import load_backend

    backend = load_backend("countdown-direct", device="cpu")
    prompts = [COUNTDOWN.prompt(p) for p in PROBLEMS[:6]]

    def params(i):
        return SamplingParams(n=1 + i % 3, max_tokens=48, temperature=1.0, seed=100 + i, stop=("\n",) if i % 2 else ())

    solo = [backend.generate([p], params(i)) for i, p in enumerate(prompts)]
    queue = GenerationQueue(backend)
    got: list = [None] * len(prompts)
    gate = threading.Barrier(len(prompts))

    def job(i):
        gate.wait()
        got[i] = queue.generate([prompts[i]], params(i))

    threads = [threading.Thread(target=job, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert queue.stats.decodes < len(prompts)
    for a, b in zip(solo, got):
        assert [c.token_ids for c in a[0].completions] == [c.token_ids for c in b[0].completions]
        assert [c.finish_reason for c in a[0].completions] == [c.finish_reason for c in b[0].completions]
        assert a[0].usage == b[0].usage


def test_eval_with_concurrency_gives_the_answers_of_one_at_a_time(tmp_path):
    problems = PROBLEMS[:8]
    reports = {}
    for c in (1, 4):
        with Orchestrator(db=f"sqlite:///{tmp_path / f'c{c}.db'}", device="cpu") as orc:
            reports[c] = orc.evaluate("countdown", problems, strategy="sample", max_concurrency=c, seed=5)
            assert orc.batch_generation is (c > 1)
            run = orc.get_run(reports[c].trace_id)
        root = next(s for s in run.spans if s.kind == "run")
        assert sorted(s.parent_id == root.id for s in run.spans if s.kind == "problem") == [True] * len(problems)
    assert [r["answer"] for r in reports[1].problems] == [r["answer"] for r in reports[4].problems]
    assert reports[1].tokens == reports[4].tokens
