"""The batch runner: a JSONL file of requests run as one durable, resumable ``batch`` run.

The store is the source of truth. Each line's result (or error line) is committed in the
``jobs`` table, with the job's spans, before its output line is appended and before
progress counts it. The output file is derived from the store: a resume rewrites it from
the committed rows (which cuts a torn last line, writes lines that were committed but not
yet appended, and drops the error lines of jobs it will retry), then appends as jobs
finish. A line is final once it answered, was bad input, or failed ``max_attempts`` times.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from ttc.backends.errors import BadInputError
from ttc.store import JobRecord

from .._run_guard import deferred_signals
from .executors import Attempted, LocalExecutor
from .jobs import error_line, output_line
from .lines import BatchLine, in_shard, read_batch_file

__all__ = ["BatchSettings", "BatchSummary", "Tally", "batch_status", "find_owner", "resume_batch", "start_batch"]


class BatchSettings(BaseModel):
    """A batch run's input, output and settings, stored in its run's ``batch`` attribute."""

    version: int = 1
    input: str
    input_sha256: str
    output: str
    max_concurrency: int = 1
    max_attempts: int = 3
    shard: tuple[int, int] | None = None
    limit: int | None = None
    seed: int
    executor: Literal["local", "ray"] = "local"
    ray_address: str | None = None
    base_url: str | None = None

    def select(self, lines: list[BatchLine]) -> list[BatchLine]:
        """This run's lines: its shard of the file, then the first ``limit`` of those."""
        mine = [line for line in lines if in_shard(line.key, self.shard)]
        return mine[: self.limit] if self.limit is not None else mine


class Tally(BaseModel):
    """Progress: lines done (ok or failed), answers judged correct, tokens spent."""

    total: int
    done: int = 0
    ok: int = 0
    failed: int = 0
    correct: int = 0
    judged: int = 0
    tokens: int = 0

    def add(self, row: dict[str, Any]) -> None:
        self.done += 1
        if row["line"]["error"] is None:
            self.ok += 1
        else:
            self.failed += 1
        if row.get("correct") is not None:
            self.judged += 1
            self.correct += row["correct"] is True
        self.tokens += int(row.get("tokens") or 0)


class BatchSummary(BaseModel):
    """What ``ttc batch run --json`` prints (plus the output path and totals)."""

    run_id: str
    status: str
    jobs: int
    ok: int
    failed: int
    resumed: int
    output: str
    correct: int = 0
    judged: int = 0
    tokens: int = 0


OnProgress = Callable[[Tally], None]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def make_executor(orc, tracer, settings: BatchSettings):
    """The executor the settings name: threads here, or Ray actors."""
    if settings.executor == "ray":
        from .ray_executor import RayExecutor

        return RayExecutor(orc, tracer, settings)
    return LocalExecutor(orc, tracer, settings)


def find_owner(orc, output: Path):
    """The newest batch run writing ``output`` (a resolved path), or None."""
    for run in orc.store.list_runs(limit=10_000, kind="batch"):
        if ((run.attributes or {}).get("batch") or {}).get("output") == str(output):
            return run
    return None


def _is_final(job: JobRecord, max_attempts: int) -> bool:
    return job.status == "ok" or job.attempts >= max_attempts


def _rewrite(output: Path, rows: list[dict[str, Any]]) -> None:
    # Whole file replaced at once: a reader sees the old or the new file, never a mix.
    tmp = output.with_name(f".{output.name}.{os.getpid()}.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(_dumps(row["line"]) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, output)


def _dumps(obj: Any) -> str:
    import json

    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def start_batch(orc, input_path: Path, output: Path, *, max_concurrency: int | None = None, max_attempts: int = 3,
                shard: tuple[int, int] | None = None, limit: int | None = None, seed: int | None = None,
                executor: str = "local", ray_address: str | None = None, base_url: str | None = None,
                overwrite: bool = False, on_start: OnProgress | None = None,
                on_job: OnProgress | None = None) -> BatchSummary:
    """Runs a batch file, or resumes the unfinished run that owns ``output``.

    ``max_concurrency`` defaults to 1 for a new run and to the stored value for a resume.

    Raises:
        BadInputError: Unreadable input, bad settings, ``output`` holding a finished run's
            results or a file no run owns (without ``overwrite``), or its owner still running.
        durability.RunInterrupted: SIGINT/SIGTERM stopped the run (``resume_batch`` finishes it).
    """
    input_path, output = Path(input_path).resolve(), Path(output).resolve()
    if shard is not None and not 0 <= shard[0] < shard[1]:
        raise BadInputError(f"--shard {shard[0]}/{shard[1]}: give i/N with 0 <= i < N")
    if input_path == output:
        raise BadInputError("the output file must not be the input file")
    owner = find_owner(orc, output)
    if owner is not None and owner.status != "ok":
        stored = BatchSettings.model_validate(owner.attributes["batch"])
        if stored.input != str(input_path):
            raise BadInputError(f"{output} belongs to unfinished batch run {owner.id} over {stored.input}; "
                                f"resume it with `ttc batch resume {owner.id}` or choose another -o")
        return resume_batch(orc, owner.id, max_concurrency=max_concurrency, on_start=on_start, on_job=on_job)
    if owner is not None and not overwrite:
        raise BadInputError(f"{output} holds the results of finished batch run {owner.id}; "
                            "choose another -o, or give --overwrite")
    if owner is None and output.exists() and output.stat().st_size and not overwrite:
        raise BadInputError(f"{output} exists and no batch run owns it; choose another -o, or give --overwrite")
    if executor == "ray":
        from .ray_executor import require_ray

        require_ray()  # before the run starts: a missing extra leaves no run behind
    lines = read_batch_file(input_path)
    settings = BatchSettings(input=str(input_path), input_sha256=_sha256(input_path), output=str(output),
                             max_concurrency=max_concurrency or 1, max_attempts=max_attempts, shard=shard,
                             limit=limit,
                             seed=secrets.randbelow(2**31) if seed is None else seed, executor=executor,
                             ray_address=ray_address, base_url=base_url)
    selected = settings.select(lines)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text("", encoding="utf-8")
    except OSError as exc:
        raise BadInputError(f"cannot write {output}: {exc.strerror}") from None
    run_id = orc.store.start_run("batch", input_path.name,
                                 attributes={"batch": settings.model_dump(mode="json"), "jobs": len(selected)})
    return _execute(orc, run_id, settings, selected, {}, on_start, on_job)


def resume_batch(orc, run_id: str, *, max_concurrency: int | None = None, on_start: OnProgress | None = None,
                 on_job: OnProgress | None = None) -> BatchSummary:
    """Finishes an interrupted (or failed) batch run from the store; needs nothing else.

    Raises:
        BadInputError: No such batch run, its process still alive, its input file changed
            or gone, or a model's checkpoint changed since its jobs ran.
    """
    run = orc.store.get_run_record(run_id)
    if run.kind != "batch":
        raise BadInputError(f"run {run.id} is a {run.kind!r} run, not a batch")
    settings = BatchSettings.model_validate((run.attributes or {})["batch"])
    if run.status == "running":
        raise BadInputError(f"batch run {run.id} is still running (pid {run.pid} on {run.host}); stop it first")
    if max_concurrency is not None:
        settings = settings.model_copy(update={"max_concurrency": max_concurrency})
    path = Path(settings.input)
    if not path.is_file():
        raise BadInputError(f"cannot resume batch run {run.id}: its input {path} is gone")
    if _sha256(path) != settings.input_sha256:
        raise BadInputError(f"cannot resume batch run {run.id}: its input {path} changed since the run started")
    selected = settings.select(read_batch_file(path))
    stored = {j.key: j for j in orc.store.list_jobs(run.id)}
    orc.batch_generation = settings.max_concurrency > 1  # before the digest check loads any model
    if run.status == "ok":
        return _summary(run.id, "ok", settings, selected, stored, len(stored))
    _check_digests(orc, run.id, stored, settings.base_url)
    if not orc.store.claim_run(run.id, run.status):
        raise BadInputError(f"batch run {run.id} changed while resuming it (another process resumed it?)")
    return _execute(orc, run.id, settings, selected, stored, on_start, on_job)


def _check_digests(orc, run_id: str, stored: dict[str, JobRecord], base_url: str | None) -> None:
    seen: dict[str, str | None] = {}
    for job in stored.values():
        seen.update((job.result or {}).get("models") or {})
    for name, before in sorted(seen.items()):
        now = orc.backend(name, base_url=base_url).info.checkpoint_digest
        if now != before:
            raise BadInputError(f"cannot resume batch run {run_id}: model {name}'s checkpoint changed "
                                f"(digest {before or 'none'} when its jobs ran, {now or 'none'} now)")


def _summary(run_id: str, status: str, settings: BatchSettings, selected: list[BatchLine],
             stored: dict[str, JobRecord], resumed: int) -> BatchSummary:
    tally = Tally(total=len(selected))
    for line in selected:
        job = stored.get(line.key)
        if job is not None and _is_final(job, settings.max_attempts):
            tally.add(job.result or {})
    return BatchSummary(run_id=run_id, status=status, jobs=len(selected), ok=tally.ok, failed=tally.failed,
                        resumed=resumed, output=settings.output, correct=tally.correct, judged=tally.judged,
                        tokens=tally.tokens)


def batch_status(orc, run_id: str) -> dict[str, Any]:
    """A batch run's state from the store: status, lines done, failed, retryable, left."""
    run = orc.store.get_run_record(run_id)
    if run.kind != "batch":
        raise BadInputError(f"run {run.id} is a {run.kind!r} run, not a batch")
    settings = BatchSettings.model_validate((run.attributes or {})["batch"])
    jobs = orc.store.list_jobs(run.id)
    final = [j for j in jobs if _is_final(j, settings.max_attempts)]
    tally = Tally(total=int((run.attributes or {}).get("jobs", 0)))
    for j in final:
        tally.add(j.result or {})
    return {"run_id": run.id, "status": run.status, "input": settings.input, "output": settings.output,
            "jobs": tally.total, "done": tally.done, "ok": tally.ok, "failed": tally.failed,
            "retryable": sum(not _is_final(j, settings.max_attempts) for j in jobs),
            "left": tally.total - tally.done, "correct": tally.correct, "judged": tally.judged,
            "tokens": tally.tokens, "error": run.error}


def _row(run_id: str, line: BatchLine, attempted: Attempted) -> tuple[JobRecord, dict[str, Any]]:
    """The store row of an attempted line and the summary it keeps (``line`` is the output line)."""
    if attempted.out is not None:
        out = attempted.out
        result = {"line": output_line(run_id, line, out.body), "correct": out.correct, "tokens": out.tokens,
                  "models": out.models}
        return JobRecord(run_id=run_id, key=line.key, idx=line.line, status="ok", request_hash=line.request_hash,
                         result=result, attempts=len(attempted.failures) + 1), result
    if attempted.bad_input is not None:
        result = {"line": error_line(run_id, line, attempted.bad_input, bad_input=True), "bad_input": True}
        return JobRecord(run_id=run_id, key=line.key, idx=line.line, status="ok", request_hash=line.request_hash,
                         result=result, attempts=len(attempted.failures) + 1), result
    message = attempted.failures[-1]
    result = {"line": error_line(run_id, line, message, bad_input=False), "failures": attempted.failures}
    return JobRecord(run_id=run_id, key=line.key, idx=line.line, status="error", request_hash=line.request_hash,
                     result=result, error=message, attempts=len(attempted.failures)), result


def _execute(orc, run_id: str, settings: BatchSettings, selected: list[BatchLine], stored: dict[str, JobRecord],
             on_start: OnProgress | None, on_job: OnProgress | None) -> BatchSummary:
    output = Path(settings.output)
    final = {k: j for k, j in stored.items() if _is_final(j, settings.max_attempts)}
    done = [line for line in selected if line.key in final]
    _rewrite(output, [final[line.key].result or {} for line in done])
    tally = Tally(total=len(selected))
    for line in done:
        tally.add(final[line.key].result or {})
    resumed = len(done)
    todo = [line for line in selected if line.key not in final]
    before = {k: j.attempts for k, j in stored.items() if j.status == "error"}
    attributes = {"jobs": len(selected), "resumed": resumed, "input": settings.input, "output": settings.output}
    # Concurrent jobs on one in-process model share it through the generation queue.
    orc.batch_generation = settings.max_concurrency > 1
    with orc._traced(run_id, Path(settings.input).name, attributes, resumable=True) as tracer, \
            output.open("a", encoding="utf-8") as fh:
        if on_start is not None:
            on_start(tally)

        def commit(line: BatchLine, attempted: Attempted) -> None:
            record, result = _row(run_id, line, attempted)
            with deferred_signals():  # committed, then written, then counted: a stop waits for all three
                orc.store.record_job(record)
                if _is_final(record.model_copy(update={"attempts": record.attempts + before.get(line.key, 0)}),
                             settings.max_attempts):
                    fh.write(_dumps(result["line"]) + "\n")
                    fh.flush()
                    tally.add(result)
            if on_job is not None:
                on_job(tally)

        for line in (x for x in todo if x.error is not None):
            commit(line, Attempted(bad_input=line.error))
        runnable = [x for x in todo if x.error is None]
        with make_executor(orc, tracer, settings) as ex:
            for line, attempted in ex.run(runnable, before):
                commit(line, attempted)
        if tally.done != tally.total:  # every line is final once the executor is through
            raise RuntimeError(f"batch run {run_id}: {tally.total - tally.done} line(s) have no output line")
        tracer.outcome.update(jobs=tally.total, ok=tally.ok, failed=tally.failed, correct=tally.correct,
                              judged=tally.judged, tokens=tally.tokens, resumed=resumed)
    return BatchSummary(run_id=run_id, status="ok", jobs=tally.total, ok=tally.ok, failed=tally.failed,
                        resumed=resumed, output=str(output), correct=tally.correct, judged=tally.judged,
                        tokens=tally.tokens)

