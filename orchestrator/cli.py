"""The ``ttc`` command line.

Exit codes (DESIGN.md contracts): 0 success, 2 bad input, 1 failure at run time. Errors
print one line on stderr; a traceback only with ``--debug``.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Annotated

import typer
from pydantic import ValidationError

from ttc.backends.errors import TTCError
from ttc.backends.types import SamplingParams
from ttc.core.budget import Budget

from ._cli_common import (
    NO_REMOTE, DbOption, JsonOption, RemoteOptions, check_budget, check_int, check_seed, check_temperature,
    check_top_p, emit_json, esc, make_table, open_orchestrator, read_text_arg, stderr, stdout, with_remote_options,
)
from ._cli_batch import batch_app
from ._cli_bench import bench_app
from . import _cli_bench_trimr  # noqa: F401  (registers "ttc bench trimr")
from . import _cli_bench_sleeptime  # noqa: F401  (registers "ttc bench sleeptime")
from ._cli_models import models_app
from ._cli_graph import allocate, graph_app
from ._cli_registry import strategies_app, tasks_app, verify_app
from ._cli_serve import serve
from ._cli_sleep import sleep_app
from ._cli_solve import evaluate, solve
from ._cli_traces import traces_app

try:  # typer >= 0.2x parses with its own copy of click, whose errors are not click's
    from typer._click import exceptions as _parser_errors
except ImportError:  # older typer: click itself
    from click import exceptions as _parser_errors

ClickException = _parser_errors.ClickException
UsageError = _parser_errors.UsageError
# click < 8.2 prints a bare group's help itself: then there is nothing to catch.
NoArgsIsHelpError = getattr(_parser_errors, "NoArgsIsHelpError", ())

__all__ = ["app", "main"]

app = typer.Typer(
    name="ttc",
    help="ttc: spend test-time compute well on local models, and trace every token.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain help: Rich's help panels print a type after every flag (`--json <bool>`).
    rich_markup_mode=None,
)
app.add_typer(models_app, name="models")
app.add_typer(traces_app, name="traces")
app.add_typer(bench_app, name="bench")
app.add_typer(batch_app, name="batch")
app.add_typer(tasks_app, name="tasks")
app.add_typer(strategies_app, name="strategies")
app.add_typer(verify_app, name="verify")
app.add_typer(graph_app, name="graph")
app.add_typer(sleep_app, name="sleep")
app.command("allocate")(allocate)
app.command("serve")(serve)


def _print_version(value: bool) -> None:
    if value:
        from ttc import __version__

        print(f"ttc {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """ttc: an agentic test-time compute orchestrator."""
    if debug:
        os.environ["TTC_DEBUG"] = "1"


# ---------------------------------------------------------------------- generate


@app.command()
@with_remote_options
def generate(
    model: Annotated[str, typer.Option("--model", "-m", help="Built-in name, checkpoint dir, or served name with --base-url.")],
    prompt: Annotated[str, typer.Option("--prompt", "-p", help="Prompt text, @FILE, or - for stdin.")],
    n: Annotated[int, typer.Option("-n", "--n", help="Completions to sample (they share one prefill).")] = 1,
    max_tokens: Annotated[int, typer.Option("--max-tokens", help="Tokens per completion, at most.")] = 128,
    temperature: Annotated[float, typer.Option("--temperature", "-t")] = 1.0,
    top_p: Annotated[float, typer.Option("--top-p")] = 1.0,
    seed: Annotated[int | None, typer.Option("--seed")] = None,
    stop: Annotated[list[str] | None, typer.Option("--stop", metavar="TEXT", help="Stop string; repeatable.")] = None,
    budget_tokens: Annotated[int | None, typer.Option("--budget-tokens", help="Token budget; the call shrinks to fit.")] = None,
    base_url: Annotated[str | None, typer.Option(
        "--base-url", envvar="TTC_BASE_URL", help="OpenAI-compatible endpoint, e.g. http://localhost:8000/v1.")] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    remote: RemoteOptions = NO_REMOTE,
    db: DbOption = None,
    json_out: JsonOption = False,
) -> None:
    """Sample completions from a model and record the call in the trace store."""
    check_int(n, "--n")
    check_int(max_tokens, "--max-tokens")
    check_temperature(temperature)
    check_top_p(top_p)
    if seed is not None:
        check_seed(seed)
    budget = Budget(tokens=check_budget(budget_tokens))
    text = read_text_arg(prompt, "prompt")
    params = SamplingParams(n=n, max_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed,
                            stop=tuple(stop or ()))
    with open_orchestrator(db, device, remote) as orc:
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
                   "skipped_prompts": out.skipped, "overdrawn": out.overdrawn})
        return
    if not completions:
        stderr.print("[yellow]the budget cannot hold even one completion: nothing was sampled[/]")
    table = make_table("#", "tokens", "finish", "text", title=f"{out.model}: {len(completions)} completion(s)")
    for c in completions:
        table.add_row(str(c["index"]), str(c["completion_tokens"]), esc(c["finish_reason"]), esc(repr(c["text"])))
    stdout.print(table)
    flops = f"{out.flops:.3g}" if out.flops is not None else "unknown"
    stdout.print(f"usage: {usage['prompt_tokens']} prompt + {usage['completion_tokens']} completion = "
                 f"{usage['total_tokens']} tokens, {flops} FLOPs")
    stdout.print(f"trace: {esc(out.trace_id)}")


# ---------------------------------------------------------------------- solve and eval

app.command("solve")(solve)
app.command("eval")(evaluate)


# ---------------------------------------------------------------------- demo


@app.command()
@with_remote_options
def demo(
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    remote: RemoteOptions = NO_REMOTE,
    db: DbOption = None,
    json_out: JsonOption = False,
) -> None:
    """Run the main job on built-in defaults: a built-in model on a few problems, traced."""
    from .demo import run_demo

    result = run_demo(db=db, console=stdout if not json_out else stderr, progress=stderr, device=device,
                      remote=remote)
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


def _fail(code: int, kind: str, message: str, json_mode: bool) -> int:
    """Reports a failure: one line on stderr and, under ``--json``, one error object on stdout."""
    message = _one_line(message)
    print(f"error: {message}" if code != 130 else message, file=sys.stderr)
    if json_mode:
        sys.stdout.write(json.dumps({"error": {"type": kind, "message": message}}) + "\n")
        sys.stdout.flush()
    return code


def _run(args: list[str], debug: bool, json_mode: bool) -> int:
    """Runs the app; every error becomes one line (and, under --json, one error object) and a code."""
    try:
        rv = app(args=args, prog_name="ttc", standalone_mode=False)
        code = rv if isinstance(rv, int) else 0
        if code == 130:  # typer turns any KeyboardInterrupt (SIGTERM's RunInterrupted too) into 130
            from .durability import consume_interruption

            stop = consume_interruption()
            code = stop.exit_code if stop else 130
            _fail(code, type(stop).__name__ if stop else "KeyboardInterrupt", str(stop) if stop else "interrupted",
                  json_mode)
        elif code:
            _fail(code, "Exit", f"exit status {code}", json_mode)
    except typer.Exit as exc:
        code = exc.exit_code
    except typer.Abort:
        code = _fail(130, "Abort", "aborted", json_mode)
    except NoArgsIsHelpError as exc:  # `ttc` or `ttc traces` alone: the help is the answer
        print(exc.format_message())
        code = 0
    except UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
        code = _fail(2, type(exc).__name__, _one_line(exc.format_message()) + hint, json_mode)
    except ClickException as exc:
        code = _fail(exc.exit_code, type(exc).__name__, exc.format_message(), json_mode)
    except ValidationError as exc:
        code = _fail(2, "BadInputError", _validation_message(exc), json_mode)
        if debug:
            raise
    except KeyboardInterrupt:
        code = _fail(130, "KeyboardInterrupt", "interrupted", json_mode)
    except BrokenPipeError:
        raise  # the reader of stdout went away: main() ends quietly
    except Exception as exc:
        # Our own errors say which exit code they mean (TTCError, store errors).
        code = exc.exit_code if isinstance(getattr(exc, "exit_code", None), int) else 1
        plain = isinstance(exc, TTCError) or hasattr(exc, "exit_code")
        text = _one_line(str(exc)) if str(exc).strip() else type(exc).__name__
        code = _fail(code, type(exc).__name__, text if plain else f"{type(exc).__name__}: {text}", json_mode)
        if debug:
            raise
    return code


def main(argv: list[str] | None = None) -> None:
    """Console-script entry: runs the app and maps every error to one line and an exit code.

    With ``--json`` among the arguments, a failure also prints exactly one
    ``{"error": {"type", "message"}}`` object on stdout, whatever raised it (a usage error
    of the parser included), with the same exit code.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or bool(os.environ.get("TTC_DEBUG"))
    json_mode = "--json" in args
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # weight-loading bars are noise on a CLI
        hf_logging.set_verbosity_error()
    except Exception:  # transformers is optional for commands such as `traces`
        pass
    try:
        code = _run(args, debug, json_mode)
        sys.stdout.flush()
    except BrokenPipeError:
        # `ttc traces list | head`: no traceback, and no second error when Python flushes at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 1
    sys.exit(code)


if __name__ == "__main__":
    main()
