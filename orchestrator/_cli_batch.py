"""``ttc batch run|resume|status``: JSONL batch files run as durable, resumable runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ttc.backends.errors import BadInputError

from ._cli_common import (
    NO_REMOTE,
    DbOption,
    JsonOption,
    RemoteOptions,
    check_seed,
    emit_json,
    esc,
    open_orchestrator,
    stderr,
    stdout,
    with_remote_options,
)

__all__ = ["batch_app"]

batch_app = typer.Typer(help="Run JSONL batch files (OpenAI Batch line shape) as resumable runs.",
                        no_args_is_help=True)


def _shard(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    i, sep, n = value.partition("/")
    try:
        shard = (int(i), int(n))
    except ValueError:
        shard = None
    if not sep or shard is None or not 0 <= shard[0] < shard[1]:
        raise BadInputError(f"--shard takes i/N with 0 <= i < N (0-based), got {value!r}")
    return shard


def _progress(title: str):
    # On stderr and transient: --json keeps stdout to one object, and a log keeps no bar.
    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("failed {task.fields[failed]}  correct {task.fields[acc]}  tokens {task.fields[tokens]}"),
                   TimeElapsedColumn(), console=stderr, transient=True)
    tid = bar.add_task(esc(title), total=None, failed=0, acc="-", tokens=0)

    def update(t) -> None:
        acc = f"{t.correct}/{t.judged} ({t.correct / t.judged:.0%})" if t.judged else "-"
        bar.update(tid, total=t.total, completed=t.done, failed=t.failed, acc=acc, tokens=t.tokens)

    return bar, update


def _report(summary, json_out: bool) -> None:
    if json_out:
        emit_json({"run_id": summary.run_id, "status": summary.status, "jobs": summary.jobs, "ok": summary.ok,
                   "failed": summary.failed, "resumed": summary.resumed, "output": summary.output,
                   "correct": summary.correct, "judged": summary.judged, "tokens": summary.tokens})
        return
    acc = f", {summary.correct}/{summary.judged} correct" if summary.judged else ""
    stdout.print(f"batch {esc(summary.run_id)}: {summary.jobs} line(s), {summary.ok} ok, {summary.failed} failed"
                 f"{acc}, {summary.tokens} tokens ({summary.resumed} from an earlier run); "
                 f"output: {esc(summary.output)}")


@batch_app.command("run")
@with_remote_options
def batch_run(
    input_file: Annotated[Path, typer.Argument(metavar="FILE.jsonl", help="Input lines: {custom_id, body}.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output JSONL: one line per input line.")],
    max_concurrency: Annotated[int | None, typer.Option("--max-concurrency", min=1, max=1024, help="Jobs run at once (default 1; a resume keeps the run's); their calls to one in-process model are batched.")] = None,
    max_attempts: Annotated[int, typer.Option("--max-attempts", min=1, max=100, help="Tries of a failing job before its error line.")] = 3,
    shard: Annotated[str | None, typer.Option("--shard", metavar="i/N", help="Run shard i of N (0-based; by sha256 of custom_id).")] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Run the first N lines (of the shard) only.")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Run seed; each job's seed derives from it and its custom_id.")] = None,
    executor: Annotated[str, typer.Option("--executor", help="local (threads) or ray.")] = "local",
    ray_address: Annotated[str | None, typer.Option("--ray-address", help="A Ray cluster to join (default: a local instance owned by this run).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an output file that holds a finished run's results.")] = False,
    base_url: Annotated[str | None, typer.Option("--base-url", envvar="TTC_BASE_URL", help="OpenAI-compatible server serving the models named.")] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    remote: RemoteOptions = NO_REMOTE,
    db: DbOption = None,
    json_out: JsonOption = False,
) -> None:
    """Run a batch file; on an output an unfinished run owns, resume that run."""
    from .batch import start_batch
    from .durability import RunInterrupted

    if executor not in ("local", "ray"):
        raise BadInputError(f"--executor is local or ray, not {executor!r}")
    if ray_address is not None and executor != "ray":
        raise BadInputError("--ray-address goes with --executor ray")
    if seed is not None:
        check_seed(seed)
    bar, update = _progress(input_file.name)
    with open_orchestrator(db, device, remote) as orc, bar:
        try:
            summary = start_batch(orc, input_file, output, max_concurrency=max_concurrency,
                                  max_attempts=max_attempts, shard=_shard(shard), limit=limit, seed=seed,
                                  executor=executor, ray_address=ray_address, base_url=base_url,
                                  overwrite=overwrite, on_start=update, on_job=update)
        except RunInterrupted as exc:
            exc.resume_command = f"ttc batch resume {exc.run_id}"
            raise exc.as_error() from None
    _report(summary, json_out)


@batch_app.command("resume")
@with_remote_options
def batch_resume(
    run_id: Annotated[str, typer.Argument(help="The batch run (id or a unique prefix).")],
    max_concurrency: Annotated[int | None, typer.Option("--max-concurrency", min=1, max=1024, help="Override the run's concurrency.")] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    remote: RemoteOptions = NO_REMOTE,
    db: DbOption = None,
    json_out: JsonOption = False,
) -> None:
    """Finish an interrupted batch run: its input, output and settings come from the store."""
    from .batch import resume_batch
    from .durability import RunInterrupted

    bar, update = _progress(f"resume {run_id}")
    with open_orchestrator(db, device, remote) as orc, bar:
        try:
            summary = resume_batch(orc, run_id, max_concurrency=max_concurrency, on_start=update, on_job=update)
        except RunInterrupted as exc:
            exc.resume_command = f"ttc batch resume {exc.run_id}"
            raise exc.as_error() from None
    _report(summary, json_out)


@batch_app.command("status")
def batch_status_cmd(
    run_id: Annotated[str, typer.Argument(help="The batch run (id or a unique prefix).")],
    db: DbOption = None,
    json_out: JsonOption = False,
) -> None:
    """Summarize a batch run from the store: lines done, failed, retryable, left."""
    from .batch import batch_status

    with open_orchestrator(db) as orc:
        st = batch_status(orc, run_id)
    if json_out:
        emit_json(st)
        return
    acc = f", {st['correct']}/{st['judged']} correct" if st["judged"] else ""
    stdout.print(f"batch {esc(st['run_id'])} \\[{esc(st['status'])}]: {st['done']}/{st['jobs']} done, "
                 f"{st['ok']} ok, {st['failed']} failed, {st['retryable']} to retry, {st['left']} left{acc}; "
                 f"{st['tokens']} tokens")
    stdout.print(f"input: {esc(st['input'])}\noutput: {esc(st['output'])}")
    if st["error"]:
        stdout.print(f"[red]error: {esc(st['error'])}[/]")
