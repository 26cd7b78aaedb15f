"""``ttc tasks list``, ``ttc strategies list``, ``ttc verify answer`` and ``ttc verify code``:
what is registered (built-ins and plug-ins alike), checking one answer with a task's
verifier, and running a program against tests in the code sandbox."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from ttc.backends.errors import BadInputError

from ._cli_common import JsonOption, emit_json, esc, make_table, read_text_arg, stderr, stdout

__all__ = ["tasks_app", "strategies_app", "verify_app"]

tasks_app = typer.Typer(help="Task families: built-in and installed plug-ins (entry points ttc.tasks).",
                        no_args_is_help=True)
strategies_app = typer.Typer(help="Strategies: built-in and installed plug-ins (entry points ttc.strategies).",
                             no_args_is_help=True)
verify_app = typer.Typer(help="Check answers with a task's verifier, or code against tests in the sandbox.", no_args_is_help=True)


def _warn_broken(registry) -> None:
    for name, error in registry.errors.items():
        stderr.print(f"[yellow]plug-in {esc(name)} failed to load: {esc(error)}[/]")


@tasks_app.command("list")
def tasks_list(json_out: JsonOption = False) -> None:
    """List the task families ttc knows."""
    from ttc.tasks.registry import TASKS, describe_task

    rows = [describe_task(name) for name in TASKS.names()]
    _warn_broken(TASKS)
    if json_out:
        emit_json({"tasks": rows})
        return
    table = make_table("name", "formats", "default model", "verifier", "origin", title="tasks")
    for r in rows:
        table.add_row(esc(r["name"]), esc(", ".join(r["formats"])), esc(r["default_model"] or "-"),
                      esc(r["verifier"]), esc(r["origin"]))
    stdout.print(table)


@strategies_app.command("list")
def strategies_list(json_out: JsonOption = False) -> None:
    """List the strategies with the model roles they use and their parameters."""
    from ttc.strategies.registry import STRATEGIES

    rows = [spec.describe() for _, spec in STRATEGIES.items()]
    _warn_broken(STRATEGIES)
    if json_out:
        emit_json({"strategies": rows})
        return
    table = make_table("name", "roles", "parameters (defaults)", "origin", title="strategies")
    for r in rows:
        roles = ", ".join(f"{k} ({v})" for k, v in r["roles"].items())
        params = ", ".join(f"{k}={v}" for k, v in r["parameters"].items())
        table.add_row(esc(r["name"]), esc(roles), esc(params), esc(r["origin"]))
    stdout.print(table)


@verify_app.command("answer")
def verify_answer(
    task: Annotated[str, typer.Option("--task", help="Task name (see `ttc tasks list`).")],
    problem: Annotated[str, typer.Option("--problem", help="Problem as inline JSON or @file.json.")],
    answer: Annotated[str, typer.Option("--answer", help="The answer text, @file, or - for stdin.")],
    json_out: JsonOption = False,
) -> None:
    """Check one answer with the task's verifier (exit 0 whenever a verdict is returned)."""
    from ttc.tasks.registry import get_task

    task_obj = get_task(task)
    raw = read_text_arg(problem, "problem")
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise BadInputError(f"problem is not valid JSON: {exc.msg} (line {exc.lineno} column {exc.colno})") from None
    parsed = task_obj.parse_problem(obj)
    text = read_text_arg(answer, "answer")
    verdict = task_obj.verifier.verify(parsed, text)
    canonical = task_obj.verifier.canonical(parsed, text)
    out = {"task": task, "problem_id": parsed["id"], "correct": verdict.correct, "answer": verdict.answer,
           "canonical": canonical, "score": verdict.score, "reason": verdict.reason}
    if json_out:
        emit_json(out)
        return
    mark = {True: "[green]correct[/]", False: "[red]wrong[/]", None: "[yellow]undecided[/]"}[verdict.correct]
    stdout.print(f"{mark}: {esc(verdict.reason)}")
    stdout.print(f"answer: {esc(verdict.answer)}   canonical: {esc(canonical)}")


@verify_app.command("code")
def verify_code(
    program: Annotated[str, typer.Argument(help="The candidate program, a Python file (untrusted).")],
    tests: Annotated[str, typer.Option("--tests", help="Python file run after the program in the same namespace.")],
    timeout: Annotated[float, typer.Option("--timeout", help="Wall-clock and CPU-time limit in seconds.")] = 10.0,
    json_out: JsonOption = False,
) -> None:
    """Run PROGRAM then the tests as one script in the sandbox (namespaces, cgroups, no network).

    Passed when the whole script runs to its end. Exit 0 whenever a verdict is returned
    (passed or not), 2 for bad input, 1 when the sandbox cannot isolate the run (it refuses
    to run code unconfined) or fails itself.
    """
    import math

    from ttc.verifiers.code import run_code_tests

    if not math.isfinite(timeout) or not 0 < timeout <= 600:
        raise BadInputError(f"--timeout must be in (0, 600] seconds, got {timeout:g}")
    program_text = read_text_arg("@" + program, "program")
    tests_text = read_text_arg("@" + tests, "tests")
    result = run_code_tests(program_text, tests_text, timeout=timeout)
    out = {"passed": result.passed, "correct": result.passed, "status": result.status, "reason": result.reason,
           "output": result.output, "output_truncated": result.output_truncated,
           "wall_seconds": result.wall_seconds, "isolation": result.isolation}
    if json_out:
        emit_json(out)
        return
    mark = "[green]passed[/]" if result.passed else f"[red]{esc(result.status)}[/]"
    stdout.print(f"{mark}: {esc(result.reason)}")
    if result.output:
        stdout.print(esc(result.output.rstrip("\n")) + (" [dim](output truncated)[/]" if result.output_truncated else ""))
