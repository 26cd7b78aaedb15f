"""``ttc solve`` and ``ttc eval``: a strategy on one problem, or over a problem file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ttc.backends.errors import BadInputError
from ttc.core.budget import Budget

from ._cli_common import (
    NO_REMOTE, DbOption, JsonOption, RemoteOptions, check_budget, check_int, check_seed, check_strategy_params,
    check_temperature, emit_json, esc, open_orchestrator, parse_roles, read_text_arg, stderr, stdout,
    with_remote_options,
)
from ._cli_models import read_problems_file

__all__ = ["solve", "evaluate", "read_problem", "strategy_params"]

StrategyOpt = Annotated[str, typer.Option("--strategy", "-s", help="Registry name of the strategy.")]
ModelOpt = Annotated[str | None, typer.Option("--model", "-m", help="Built-in name or checkpoint dir (default: the task's).")]
RoleOpt = Annotated[list[str] | None, typer.Option(
    "--role", metavar="ROLE=MODEL", help="Model for a role, e.g. search=countdown-search; repeatable.")]
TempOpt = Annotated[float | None, typer.Option("--temperature", "-t", help="Sampling temperature (>= 0).")]
SeedOpt = Annotated[int | None, typer.Option("--seed", help="Sampling seed (0 to 2**63-1).")]
NOpt = Annotated[int | None, typer.Option("-n", "--n", help="Samples at most (parallel strategies).")]
MaxTokOpt = Annotated[int | None, typer.Option("--max-tokens", help="Tokens per sample / trace length L.")]
ParamOpt = Annotated[list[str] | None, typer.Option(
    "--param", "-P", metavar="KEY=VALUE", help="Other strategy parameter (JSON value); repeatable.")]
BudgetOpt = Annotated[int | None, typer.Option("--budget-tokens", help="Token budget per problem.")]
BaseUrlOpt = Annotated[str | None, typer.Option(
    "--base-url", envvar="TTC_BASE_URL", help="OpenAI-compatible endpoint serving --model.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")]
TrimROpt = Annotated[bool, typer.Option("--trimr", help="TrimR: cut redundant thinking of the policy model "
                                        "while it streams (a thought verifier, injected conclusion prompts).")]
TrimRVerifierOpt = Annotated[str | None, typer.Option("--trimr-verifier", help="TrimR's thought verifier: exact "
                                                      "(canonical answers; default) or judge (the --role judge=MODEL).")]
TrimRRulesOpt = Annotated[str | None, typer.Option("--trimr-rules", help="Comma-separated TrimR rules: over, under, "
                                                   "repetition (default: all three).")]
TrimRAgreeOpt = Annotated[int | None, typer.Option("--trimr-agree", help="M: consecutive equivalent answer pairs "
                                                   "that end thinking (default, as the paper: 2).")]
TrimRRatioOpt = Annotated[float | None, typer.Option("--trimr-ratio", help="R: share of max tokens after which a "
                                                     "non-converged chain concludes (default 0.5).")]
TrimRThoughtsOpt = Annotated[int | None, typer.Option("--trimr-thoughts", help="N: thoughts after which a "
                                                      "non-converged chain concludes (default 16).")]


def trimr_option(on: bool, verifier: str | None, rules: str | None, agree: int | None, ratio: float | None,
                 thoughts: int | None):
    """The ``TrimR`` the flags describe (None without ``--trimr``), checked.

    Raises:
        BadInputError: A ``--trimr-*`` flag without ``--trimr``, an unknown verifier or
            rule, no rules, or a value out of range.
    """
    given = {"--trimr-verifier": verifier, "--trimr-rules": rules, "--trimr-agree": agree,
             "--trimr-ratio": ratio, "--trimr-thoughts": thoughts}
    if not on:
        extra = [flag for flag, v in given.items() if v is not None]
        if extra:  # silently ignored settings would look like TrimR ran with them
            raise BadInputError(f"{', '.join(extra)} set TrimR, which is off: add --trimr")
        return None
    from ttc.core.trimr import TrimR

    verifier = "exact" if verifier is None else verifier
    if verifier not in ("exact", "judge"):
        raise BadInputError(f"--trimr-verifier must be exact or judge, got {verifier!r}")
    names = ("over", "under", "repetition") if rules is None else tuple(r.strip() for r in rules.split(",") if r.strip())
    if not names:
        raise BadInputError("--trimr-rules names no rule: give some of over, under, repetition")
    return TrimR(verifier=verifier, rules=names, agree=2 if agree is None else agree,
                 ratio=0.5 if ratio is None else ratio, max_thoughts=16 if thoughts is None else thoughts)


def read_problem(value: str) -> dict:
    """``--problem``: inline JSON or ``@file.json``."""
    text = read_text_arg(value, "problem")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadInputError(f"--problem is not valid JSON: {exc.msg} (line {exc.lineno} column {exc.colno})") from None
    if not isinstance(obj, dict):
        raise BadInputError("--problem must be a JSON object")
    return obj


def strategy_params(temperature, seed, n, max_tokens, extra: list[str] | None) -> dict[str, Any]:
    """Strategy keyword parameters from the common flags plus ``--param KEY=VALUE``, checked.

    Raises:
        BadInputError: A malformed ``KEY=VALUE``, or a value out of range (``n`` < 1, a NaN temperature ...).
    """
    if temperature is not None:
        check_temperature(temperature)
    if seed is not None:
        check_seed(seed)
    if n is not None:
        check_int(n, "--n")
    if max_tokens is not None:
        check_int(max_tokens, "--max-tokens")
    params = {k: v for k, v in {"temperature": temperature, "seed": seed, "n": n, "max_tokens": max_tokens}.items()
              if v is not None}
    extras: dict[str, Any] = {}
    for item in extra or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise BadInputError(f"--param expects KEY=VALUE, got {item!r}")
        try:
            extras[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            extras[key.strip()] = raw  # a bare word is a string
    check_strategy_params(extras, source="-P ")
    return params | extras


def _common(task, strategy, temperature, seed, n, max_tokens, param, budget_tokens, role):
    """The parameters, budget and role models of a solve or an eval, all checked before any work."""
    params = strategy_params(temperature, seed, n, max_tokens, param)
    budget = Budget(tokens=check_budget(budget_tokens))
    roles = parse_roles(role)
    # `models=` only when roles are given: an Orchestrator without role support still runs the rest.
    return params, budget, ({"models": roles} if roles else {})


@with_remote_options
def solve(
    task: Annotated[str | None, typer.Option("--task", help="Task family, e.g. countdown.")] = None,
    problem: Annotated[str | None, typer.Option("--problem", help='Inline JSON or @file.json, e.g. {"numbers": [3, 5, 7], "target": 22}.')] = None,
    graph: Annotated[str | None, typer.Option("--graph", help="Solve with a task graph (built-in name or file) instead of a task.")] = None,
    allocation: Annotated[Path | None, typer.Option("--allocation", help="With --graph: an allocation file from `ttc allocate`.")] = None,
    strategy: StrategyOpt = "sample",
    model: ModelOpt = None,
    role: RoleOpt = None,
    temperature: TempOpt = None,
    seed: SeedOpt = None,
    n: NOpt = None,
    max_tokens: MaxTokOpt = None,
    param: ParamOpt = None,
    budget_tokens: BudgetOpt = None,
    base_url: BaseUrlOpt = None,
    device: DeviceOpt = "auto",
    trimr: TrimROpt = False,
    trimr_verifier: TrimRVerifierOpt = None,
    trimr_rules: TrimRRulesOpt = None,
    trimr_agree: TrimRAgreeOpt = None,
    trimr_ratio: TrimRRatioOpt = None,
    trimr_thoughts: TrimRThoughtsOpt = None,
    remote: RemoteOptions = NO_REMOTE,
    db: DbOption = None,
    json_out: JsonOption = False,
) -> None:
    """Solve one problem with a strategy and a model (or a task graph with an allocation); the run lands in the trace store."""
    if problem is None:
        raise BadInputError("give --problem (inline JSON or @file.json)")
    if graph is not None or allocation is not None:
        if graph is None or task is not None:
            raise BadInputError("--allocation goes with --graph (and no --task): "
                                "ttc solve --graph GRAPH --allocation FILE --problem JSON")
        from ._cli_graph import graph_solve

        return graph_solve.__wrapped__(graph, problem, allocation, device=device, remote=remote, db=db,
                                       json_out=json_out)
    if task is None:
        raise BadInputError("give --task (or --graph with --allocation)")
    params, budget, models = _common(task, strategy, temperature, seed, n, max_tokens, param, budget_tokens, role)
    trim = trimr_option(trimr, trimr_verifier, trimr_rules, trimr_agree, trimr_ratio, trimr_thoughts)
    if trim is not None:
        models["trimr"] = trim  # only when on: an Orchestrator without TrimR still runs the rest
    obj = read_problem(problem)
    # Loading a model and a tree search take seconds; the spinner is on stderr and leaves no line behind.
    with open_orchestrator(db, device, remote) as orc, stderr.status(f"solving with {esc(strategy)} ..."):
        result = orc.solve(task, obj, strategy=strategy, model=model, budget=budget, base_url=base_url,
                           **models, **params)
        trim_summary = orc.get_run(result.trace_id).run.attributes.get("trimr") if trim is not None else None
    chosen = next((c for c in result.candidates if result.answer is not None and c.answer == result.answer), None)
    reason = chosen.verdict.reason if chosen and chosen.verdict else None
    usage = {**result.usage.model_dump(), "total_tokens": result.usage.total_tokens}
    if json_out:
        emit_json({"task": task, "strategy": result.strategy, "answer": result.answer, "correct": result.correct,
                   "reason": reason, "usage": usage, "tokens": result.tokens, "flops": result.flops,
                   "paper_flops": result.paper_flops, "eflops": result.eflops, "stop_reason": result.stop_reason,
                   "overdrawn": result.overdrawn, "trace_id": result.trace_id,
                   "samples": len(result.candidates),
                   **({"trimr": trim_summary} if trim is not None else {}),
                   "cut": sum(c.finish_reason == "budget" for c in result.candidates),
                   "candidates": [{"text": c.text, "answer": c.answer, "tokens": c.tokens,
                                   "finish_reason": c.finish_reason,
                                   "correct": c.verdict.correct if c.verdict else None} for c in result.candidates]})
        return
    if result.stop_reason == "no_budget":
        stdout.print("[yellow]the budget cannot hold even one sample: no answer[/]")
    else:
        mark = {True: "[green]correct[/]", False: "[red]wrong[/]", None: "[yellow]unchecked[/]"}[result.correct]
        stdout.print(f"answer: {esc(repr(result.answer))}  {mark}" + (f" ({esc(reason)})" if reason else "")
                     + f"  \\[{len(result.candidates)} candidate(s), {esc(result.stop_reason)}]")
    stdout.print(f"usage: {usage['prompt_tokens']} prompt + {usage['completion_tokens']} completion = "
                 f"{usage['total_tokens']} tokens")
    if trim_summary:
        stdout.print(f"trimr: {esc(json.dumps(trim_summary.get('decisions', {})))} over "
                     f"{trim_summary.get('streams', 0)} stream(s)")
    stdout.print(f"trace: {esc(result.trace_id)}")


@with_remote_options
def evaluate(
    task: Annotated[str | None, typer.Option("--task", help="Task family, e.g. countdown.")] = None,
    problems: Annotated[Path | None, typer.Option("--problems", help="JSONL file, one problem per line.")] = None,
    strategy: StrategyOpt = "sample",
    model: ModelOpt = None,
    role: RoleOpt = None,
    temperature: TempOpt = None,
    seed: SeedOpt = None,
    n: NOpt = None,
    max_tokens: MaxTokOpt = None,
    param: ParamOpt = None,
    budget_tokens: BudgetOpt = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Use the first N problems only.")] = None,
    resume: Annotated[str | None, typer.Option("--resume", metavar="RUN_ID", help="Finish an interrupted eval run; its problems and settings come from the store.")] = None,
    max_concurrency: Annotated[int, typer.Option("--max-concurrency", min=1, max=1024, help="Problems solved at once; their calls to one in-process model are batched (same answers).")] = 1,
    base_url: BaseUrlOpt = None,
    device: DeviceOpt = "auto",
    trimr: TrimROpt = False,
    trimr_verifier: TrimRVerifierOpt = None,
    trimr_rules: TrimRRulesOpt = None,
    trimr_agree: TrimRAgreeOpt = None,
    trimr_ratio: TrimRRatioOpt = None,
    trimr_thoughts: TrimRThoughtsOpt = None,
    remote: RemoteOptions = NO_REMOTE,
    db: DbOption = None,
    json_out: JsonOption = False,
) -> None:
    """Run a strategy over a problem file: accuracy with its 95% interval, and what it cost."""
    from ttc.tasks.registry import get_task

    from .durability import RunInterrupted

    if resume is not None:
        given = {"--task": task, "--problems": problems, "--strategy": None if strategy == "sample" else strategy,
                 "--model": model, "--role": role, "--temperature": temperature, "--seed": seed, "--n": n,
                 "--max-tokens": max_tokens, "--param": param, "--budget-tokens": budget_tokens, "--limit": limit,
                 "--trimr": trimr, "--trimr-verifier": trimr_verifier, "--trimr-rules": trimr_rules,
                 "--trimr-agree": trimr_agree, "--trimr-ratio": trimr_ratio, "--trimr-thoughts": trimr_thoughts}
        extra = [flag for flag, v in given.items() if v or (flag.startswith("--trimr-") and v is not None)]
        if extra:
            raise BadInputError(f"--resume takes the problems and settings from the store; drop {', '.join(extra)}")
    elif task is None or problems is None:
        raise BadInputError("give --task and --problems (or --resume RUN_ID)")
    else:
        params, budget, models = _common(task, strategy, temperature, seed, n, max_tokens, param, budget_tokens, role)
        trim = trimr_option(trimr, trimr_verifier, trimr_rules, trimr_agree, trimr_ratio, trimr_thoughts)
        if trim is not None:
            models["trimr"] = trim
        loaded = read_problems_file(problems, get_task(task))[:limit]
    # transient: a finished (or failed) bar leaves no line behind on a log or a terminal.
    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("correct {task.fields[ok]}"), TimeElapsedColumn(), console=stderr, transient=True)
    with open_orchestrator(db, device, remote) as orc, bar:
        tid = bar.add_task(esc(f"resume {resume}" if resume else f"{task}/{strategy}"), total=None, ok=0)
        solved = [0]

        def start(total, done):
            solved[0] = sum(r.correct is True for r in done)
            bar.update(tid, total=total, completed=len(done), ok=solved[0])

        def tick(i, result):
            solved[0] += result.correct is True
            bar.update(tid, advance=1, ok=solved[0])

        try:
            if resume is not None:
                report = orc.resume(resume, base_url=base_url, on_problem=tick, on_start=start,
                                    max_concurrency=max_concurrency)
            else:
                report = orc.evaluate(task, loaded, strategy=strategy, model=model, budget=budget, base_url=base_url,
                                      on_problem=tick, on_start=start, max_concurrency=max_concurrency,
                                      **models, **params)
        except RunInterrupted as exc:
            # typer turns any KeyboardInterrupt into exit 130; RunStopped carries 130 or 143.
            raise exc.as_error() from None
    if json_out:
        emit_json(report)
        return
    lo, hi = report.ci95
    stdout.print(f"{esc(report.strategy)} on {report.n_problems} {esc(report.task)} problems with {esc(report.model)}: "
                 f"accuracy {report.accuracy:.1%} (95% CI {lo:.1%}-{hi:.1%}), "
                 f"{report.mean_tokens:.0f} tokens per problem")
    stdout.print(f"trace: {esc(report.trace_id)}")
