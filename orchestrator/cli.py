"""The ``ttc`` command line.

Exit codes (DESIGN.md contracts): 0 success, 2 bad input, 1 failure at run time. Errors
print one line on stderr; a traceback only with ``--debug``.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import click
import typer
from pydantic import ValidationError
from rich.table import Table
from rich.tree import Tree

from ttc.backends.errors import TTCError
from ttc.backends.types import SamplingParams
from ttc.core.budget import Budget

from ._cli_common import open_orchestrator, DbOption, JsonOption, emit_json, read_text_arg, stderr, stdout
from ._cli_bench import bench_app
from ._cli_models import models_app
from ._cli_solve import evaluate, solve

__all__ = ["app", "main"]

app = typer.Typer(
    name="ttc",
    help="ttc: spend test-time compute well on local models, and trace every token.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
traces_app = typer.Typer(help="Query the trace store.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(traces_app, name="traces")
app.add_typer(bench_app, name="bench")


@app.callback()
def _root(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False) -> None:
    """ttc: an agentic test-time compute orchestrator."""
    if debug:
        os.environ["TTC_DEBUG"] = "1"


# ---------------------------------------------------------------------- generate


@app.command()
def generate(
    model: Annotated[str, typer.Option("--model", "-m", help="Built-in name, checkpoint dir, or served name with --base-url.")],
    prompt: Annotated[str, typer.Option("--prompt", "-p", help="Prompt text, @FILE, or - for stdin.")],
    n: Annotated[int, typer.Option("-n", "--n", help="Completions to sample (they share one prefill).")] = 1,
    max_tokens: Annotated[int, typer.Option("--max-tokens", help="Tokens per completion, at most.")] = 128,
    temperature: Annotated[float, typer.Option("--temperature", "-t")] = 1.0,
    top_p: Annotated[float, typer.Option("--top-p")] = 1.0,
    seed: Annotated[int | None, typer.Option("--seed")] = None,
    stop: Annotated[list[str] | None, typer.Option("--stop", help="Stop string; repeatable.")] = None,
    budget_tokens: Annotated[int | None, typer.Option("--budget-tokens", help="Token budget; the call shrinks to fit.")] = None,
    base_url: Annotated[str | None, typer.Option("--base-url", help="OpenAI-compatible endpoint, e.g. http://localhost:8000/v1.")] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    db: DbOption = None,
    json_out: JsonOption = False,
) -> None:
    """Sample completions from a model and record the call in the trace store."""
    text = read_text_arg(prompt, "prompt")
    params = SamplingParams(n=n, max_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed,
                            stop=tuple(stop or ()))
    budget = Budget(tokens=budget_tokens)
    with open_orchestrator(db, device) as orc:
        out = orc.generate(model, text, params=params, budget=budget, base_url=base_url)
    completions = [
        {"prompt_index": i, "index": j, "text": c.text, "completion_tokens": c.completion_tokens,
         "finish_reason": c.finish_reason}
        for i, g in enumerate(out.generations) for j, c in enumerate(g.completions)
    ]
    usage = {**out.usage.model_dump(), "total_tokens": out.usage.total_tokens}
    if json_out:
        emit_json({"model": out.model, "trace_id": out.trace_id, "completions": completions, "usage": usage,
                   "flops": out.flops, "paper_flops": out.paper_flops, "eflops": out.eflops,
                   "skipped_prompts": out.skipped})
        return
    if not completions:
        stderr.print("[yellow]the budget cannot hold even one completion: nothing was sampled[/]")
    table = Table("#", "tokens", "finish", "text", title=f"{out.model}: {len(completions)} completion(s)")
    for c in completions:
        table.add_row(str(c["index"]), str(c["completion_tokens"]), c["finish_reason"], repr(c["text"]))
    stdout.print(table)
    flops = f"{out.flops:.3g}" if out.flops is not None else "unknown"
    stdout.print(f"usage: {usage['prompt_tokens']} prompt + {usage['completion_tokens']} completion = "
                 f"{usage['total_tokens']} tokens, {flops} FLOPs")
    stdout.print(f"trace: {out.trace_id}")


# ---------------------------------------------------------------------- solve and eval

app.command("solve")(solve)
app.command("eval")(evaluate)


# ---------------------------------------------------------------------- traces


@traces_app.command("list")
def traces_list(
    limit: Annotated[int, typer.Option("--limit", min=1)] = 20,
    kind: Annotated[str | None, typer.Option("--kind")] = None,
    status: Annotated[str | None, typer.Option("--status")] = None,
    db: DbOption = None,
    json_out: JsonOption = False,
) -> None:
    """List recent runs, newest first."""
    with open_orchestrator(db) as orc:
        runs = orc.list_runs(limit=limit, kind=kind, status=status)
    if json_out:
        emit_json({"runs": runs})
        return
    table = Table("id", "kind", "name", "status", "started", "in", "out")
    for r in runs:
        table.add_row(r.id, r.kind, r.name, r.status, r.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                      str(r.input_tokens), str(r.output_tokens))
    stdout.print(table if runs else "no runs recorded yet")


@traces_app.command("show")
def traces_show(
    run_id: Annotated[str, typer.Argument(help="Run id or a unique prefix of at least 6 characters.")],
    db: DbOption = None,
    json_out: JsonOption = False,
) -> None:
    """Show one run: its spans as a tree, and its candidates."""
    with open_orchestrator(db) as orc:
        detail = orc.get_run(run_id)
    if json_out:
        emit_json(detail)
        return
    r = detail.run
    root = Tree(f"[bold]{r.kind}[/] {r.name}  {r.id}  [{'green' if r.status == 'ok' else 'red'}]{r.status}[/]"
                f"  in={r.input_tokens} out={r.output_tokens}")
    nodes = {}
    for s in detail.spans:  # parents end after children, so place by parent id in a second pass
        label = f"{s.kind}:{s.name}"
        if s.model:
            label += f" model={s.model}"
        if s.input_tokens or s.output_tokens:
            label += f" in={s.input_tokens} out={s.output_tokens}"
        if s.finish_reason:
            label += f" finish={s.finish_reason}"
        if s.latency_s is not None:
            label += f" {s.latency_s * 1000:.0f}ms"
        if s.status == "error":
            label += f" [red]error: {s.error}[/]"
        nodes[s.id] = (s, label)
    children: dict[str | None, list[str]] = {}
    for sid, (s, _) in nodes.items():
        parent = s.parent_id if s.parent_id in nodes else None
        children.setdefault(parent, []).append(sid)

    def attach(tree: Tree, parent: str | None) -> None:
        for sid in children.get(parent, []):
            attach(tree.add(nodes[sid][1]), sid)

    attach(root, None)
    stdout.print(root)
    if detail.candidates:
        table = Table("#", "answer", "correct", "score", "tokens", "text", title="candidates")
        for c in detail.candidates:
            table.add_row(str(c.idx), str(c.answer), str(c.correct), "" if c.score is None else f"{c.score:.3g}",
                          str(c.tokens), repr(c.text[:80]))
        stdout.print(table)


@traces_app.command("stats")
def traces_stats(
    kind: Annotated[str | None, typer.Option("--kind")] = None,
    db: DbOption = None,
    json_out: JsonOption = False,
) -> None:
    """Totals over the store: runs by status, tokens per model, spans per kind."""
    with open_orchestrator(db) as orc:
        st = orc.stats(kind=kind)
    if json_out:
        emit_json(st)
        return
    stdout.print(f"runs: {st.runs} {dict(st.runs_by_status)}; tokens: {st.input_tokens} in, {st.output_tokens} out")
    table = Table("model", "calls", "in", "out", "mean latency")
    for m in st.models:
        lat = "" if m.mean_latency_s is None else f"{m.mean_latency_s * 1000:.0f}ms"
        table.add_row(str(m.model), str(m.calls), str(m.input_tokens), str(m.output_tokens), lat)
    stdout.print(table)
    stdout.print(f"spans by kind: {dict(st.span_kinds)}")


# ---------------------------------------------------------------------- demo


@app.command()
def demo(db: DbOption = None, json_out: JsonOption = False) -> None:
    """Run the main job on built-in defaults: a built-in model on a few problems, traced."""
    from .demo import run_demo

    result = run_demo(db=db, console=stdout if not json_out else stderr)
    if json_out:
        emit_json(result)


# ---------------------------------------------------------------------- entry point


def _one_line(text: str) -> str:
    lines = [ln.strip() for ln in str(text).strip().splitlines() if ln.strip()]
    return lines[0] if lines else "unknown error"


def _validation_message(exc: ValidationError) -> str:
    err = exc.errors()[0]
    msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    loc = ".".join(str(p) for p in err.get("loc", ()))
    return msg if not loc or loc in msg else f"{loc}: {msg}"


def main(argv: list[str] | None = None) -> None:
    """Console-script entry: runs the app and maps errors to one line and an exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or bool(os.environ.get("TTC_DEBUG"))
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # weight-loading bars are noise on a CLI
        hf_logging.set_verbosity_error()
    except Exception:  # transformers is optional for commands such as `traces`
        pass
    try:
        rv = app(args=args, prog_name="ttc", standalone_mode=False)
        code = rv if isinstance(rv, int) else 0
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.exceptions.Abort:
        stderr.print("aborted", highlight=False)
        code = 130
    except click.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
        print(f"error: {_one_line(exc.format_message())}{hint}", file=sys.stderr)
        code = 2
    except click.ClickException as exc:
        print(f"error: {_one_line(exc.format_message())}", file=sys.stderr)
        code = exc.exit_code
    except ValidationError as exc:
        if debug:
            raise
        print(f"error: {_validation_message(exc)}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = 130
    except Exception as exc:
        if debug:
            raise
        # Our own errors say which exit code they mean (TTCError, store errors).
        code = getattr(exc, "exit_code", 1) if isinstance(getattr(exc, "exit_code", None), int) else 1
        prefix = "" if isinstance(exc, TTCError) or hasattr(exc, "exit_code") else f"{type(exc).__name__}: "
        print(f"error: {prefix}{_one_line(str(exc)) if str(exc).strip() else type(exc).__name__}", file=sys.stderr)
    sys.exit(code)


if __name__ == "__main__":
    main()
