"""``ttc tasks list``, ``ttc strategies list`` and ``ttc verify answer``: what is registered
(built-ins and plug-ins alike) and checking one answer with a task's verifier."""

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
verify_app = typer.Typer(help="Check answers with a task's verifier.", no_args_is_help=True)


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
