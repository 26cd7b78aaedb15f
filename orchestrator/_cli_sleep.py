"""``ttc sleep precompute|ask``: sleep-time compute on a context, then queries against it.

``precompute`` stores the context's artifacts in the trace store (``--db``); ``ask`` uses
them when they exist for the same context, sleep model and configuration, and never
precomputes by itself.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from ttc.backends.errors import BadInputError
from ttc.core.budget import Budget

from ._cli_common import (
    NO_REMOTE, DbOption, JsonOption, RemoteOptions, check_budget, check_int, check_seed, check_temperature,
    emit_json, esc, open_orchestrator, parse_roles, read_text_arg, stdout, with_remote_options,
)

__all__ = ["sleep_app"]

sleep_app = typer.Typer(help="Sleep-time compute: precompute a context's notes, then ask it queries.",
                        no_args_is_help=True)

TaskOpt = Annotated[str, typer.Option("--task", help="Task with sleep formats, e.g. stateful-arith.")]
ContextOpt = Annotated[str, typer.Option("--context", help="The context's text, @FILE, or - for stdin "
                                         "(e.g. 'a=7;b=a*3;c=b-4').")]
ModelOpt = Annotated[str | None, typer.Option("--model", "-m", help="Policy model (default: the task's).")]
RoleOpt = Annotated[list[str] | None, typer.Option(
    "--role", metavar="ROLE=MODEL", help="Model for a role, e.g. sleep=stateful-arith; repeatable.")]
NotesOpt = Annotated[int, typer.Option("--notes", help="Parallel notes per context, combined by a vote per quantity.")]
SleepTempOpt = Annotated[float, typer.Option("--sleep-temperature", help="Temperature of the notes.")]
SleepSeedOpt = Annotated[int, typer.Option("--sleep-seed", help="Seed of the notes.")]
BudgetOpt = Annotated[int | None, typer.Option("--budget-tokens", help="Token budget of this phase.")]
BaseUrlOpt = Annotated[str | None, typer.Option(
    "--base-url", envvar="TTC_BASE_URL", help="OpenAI-compatible endpoint serving the models.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")]


def _sleep_config(notes: int, temperature: float, seed: int) -> dict[str, Any]:
    check_int(notes, "--notes", lo=1, hi=64)
    return {"notes": notes, "temperature": check_temperature(temperature, "--sleep-temperature"),
            "seed": check_seed(seed, "--sleep-seed")}


def _context(value: str) -> str:
    text = read_text_arg(value, "context")
    if not text.strip():
        raise BadInputError("--context is empty; give the context's text or @FILE")
    return text


def _models(role: list[str] | None) -> dict[str, Any]:
    roles = parse_roles(role)
    return {"models": roles} if roles else {}


@sleep_app.command("precompute")
@with_remote_options
def precompute(
    task: TaskOpt,
    context: ContextOpt,
    model: ModelOpt = None,
    role: RoleOpt = None,
    notes: NotesOpt = 5,
    sleep_temperature: SleepTempOpt = 0.7,
    sleep_seed: SleepSeedOpt = 0,
    budget_tokens: BudgetOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Recompute even when the artifacts are stored.")] = False,
    base_url: BaseUrlOpt = None,
    device: DeviceOpt = "auto",
    remote: RemoteOptions = NO_REMOTE,
    db: DbOption = None,
    json_out: JsonOption = False,
) -> None:
    """Think about a context before its queries: write and store its notes (sleep budget)."""
    config = _sleep_config(notes, sleep_temperature, sleep_seed)
    budget = Budget(tokens=check_budget(budget_tokens))
    text = _context(context)
    extra = _models(role)
    with open_orchestrator(db, device, remote) as orc:
        out = orc.precompute(task, text, model=model, budget=budget, config=config, base_url=base_url, force=force,
                             **extra)
    art = out.artifact
    if json_out:
        emit_json({"key": out.key, "reused": out.reused, "notes": art.notes, "notes_text": art.notes_text,
                   "notes_written": len(art.notes_text), "anticipated": art.anticipated, "model": art.model, "checkpoint_digest": art.checkpoint_digest,
                   "sleep_tokens": out.sleep_tokens, "sleep_generated_tokens": out.sleep_generated_tokens,
                   "trace_id": out.trace_id})
        return
    what = "already stored" if out.reused else "stored"
    stdout.print(f"notes ({what}): {esc(', '.join(f'{k}={v}' for k, v in art.notes.items()) or '(none readable)')}")
    if len(art.notes_text) < notes:  # the budget shrank the call: stored under the smaller count's key
        stdout.print(f"the sleep budget held only {len(art.notes_text)} of {notes} notes; stored as "
                     f"--notes {len(art.notes_text)}")
    stdout.print(f"sleep tokens: {out.sleep_tokens} ({out.sleep_generated_tokens} generated); key {esc(out.key)}")
    stdout.print(f"trace: {esc(out.trace_id)}")


@sleep_app.command("ask")
@with_remote_options
def ask(
    task: TaskOpt,
    context: ContextOpt,
    query: Annotated[str, typer.Option("--query", help="The query, e.g. 'c+a' or 'if a=9,c'.")],
    model: ModelOpt = None,
    role: RoleOpt = None,
    notes: NotesOpt = 5,
    sleep_temperature: SleepTempOpt = 0.7,
    sleep_seed: SleepSeedOpt = 0,
    strategy: Annotated[str, typer.Option("--strategy", "-s", help="Strategy on context + notes.")] = "majority_vote",
    fallback: Annotated[str, typer.Option("--fallback", help="Strategy on the context alone when nothing helps.")]
    = "majority_vote",
    n: Annotated[int | None, typer.Option("-n", "--n", help="Samples of either strategy, at most "
                                          "(default 1).")] = None,
    param: Annotated[list[str] | None, typer.Option(
        "--param", "-P", metavar="KEY=VALUE", help="Other strategy parameter (JSON value); repeatable.")] = None,
    counterfactuals: Annotated[str, typer.Option(
        "--counterfactuals", help="notes (answer them from the notes too) or fallback (from the context).")] = "notes",
    budget_tokens: BudgetOpt = None,
    base_url: BaseUrlOpt = None,
    device: DeviceOpt = "auto",
    remote: RemoteOptions = NO_REMOTE,
    db: DbOption = None,
    json_out: JsonOption = False,
) -> None:
    """Answer a query about a context (test budget), with its stored notes when they exist."""
    from ttc.strategies.registry import check_test_strategy, get_strategy
    from ttc.tasks.registry import get_task

    from ._cli_solve import strategy_params

    config = _sleep_config(notes, sleep_temperature, sleep_seed)
    if not query.strip():
        raise BadInputError("--query is empty")
    if counterfactuals not in ("notes", "fallback"):
        raise BadInputError(f"--counterfactuals must be notes or fallback, got {counterfactuals!r}")
    params = strategy_params(None, None, n, None, param)
    for name in (strategy, fallback):
        get_strategy(name).check_params(params)
    # Refused before any model loads: a graded verifier (stateful-arith's) may not select.
    verifier = get_task(task).verifier
    check_test_strategy(verifier, strategy, "--strategy")
    check_test_strategy(verifier, fallback, "--fallback")
    budget = Budget(tokens=check_budget(budget_tokens))
    text = _context(context)
    extra = _models(role)
    with open_orchestrator(db, device, remote) as orc:
        out = orc.ask(task, text, query, model=model, budget=budget, config=config, strategy=strategy,
                      params=params, fallback=fallback, fallback_params=params, counterfactuals=counterfactuals,
                      base_url=base_url, **extra)
    if json_out:
        emit_json(out.model_dump(mode="json"))
        return
    hit = "used stored notes" if out.artifact_hit else "no stored notes: answered from the context"
    stdout.print(f"answer: {esc(out.answer)} ({esc(out.route)}; {hit})")
    stdout.print(f"test tokens: {out.test_tokens} ({out.test_generated_tokens} generated); "
                 f"sleep tokens of the notes: {out.sleep_tokens}")
    stdout.print(f"trace: {esc(out.trace_id)}")
