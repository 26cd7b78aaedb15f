"""``ttc allocate`` and ``ttc graph ...``: search an allocation for a task graph, run a graph
on a problem with an allocation file, resume an interrupted graph run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ttc.backends.errors import BadInputError

from ._cli_common import (
    DbOption,
    JsonOption,
    NO_REMOTE,
    RemoteOptions,
    emit_json,
    esc,
    make_table,
    open_orchestrator,
    read_text_arg,
    stderr,
    stdout,
    with_remote_options,
)

__all__ = ["graph_app", "allocate", "resolve_graph"]

graph_app = typer.Typer(help="Multi-stage task graphs: run with an allocation, resume, show.", no_args_is_help=True)

GraphArg = Annotated[str, typer.Argument(help="A built-in graph (plan-solve) or a YAML/JSON graph file.")]
PolicyOpt = Annotated[str, typer.Option("--policy", help="Run-time reallocation: static, carry or carry_weighted.")]


def resolve_graph(ref: str):
    """A built-in graph by name, or a graph file."""
    from ttc.orchestrator.graph import load_graph
    from ttc.orchestrator.graph.builtin import BUILTIN_GRAPHS

    if ref in BUILTIN_GRAPHS:
        return BUILTIN_GRAPHS[ref]
    if Path(ref).is_file():
        return load_graph(ref)
    raise BadInputError(f"no graph {ref!r}: give a built-in graph ({', '.join(BUILTIN_GRAPHS)}) or a graph file")


def _problems(path: Path | None, graph, n: int, split: str) -> list[dict]:
    if path is not None:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise BadInputError(f"cannot read problems file {path}: {exc}") from None
        out = []
        for i, line in enumerate(lines, 1):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise BadInputError(f"{path} line {i} is not JSON: {exc.msg}") from None
        if not out:
            raise BadInputError(f"{path} holds no problems")
        return out
    from ttc.orchestrator.graph.builtin import BUILTIN_GRAPHS, make_problems

    if graph.name not in BUILTIN_GRAPHS:
        raise BadInputError(f"graph {graph.name!r} is not built in: give --train FILE (JSONL problems)")
    return make_problems(n, seed=0, split=split)


@with_remote_options
def allocate(
    graph: GraphArg,
    train: Annotated[Path | None, typer.Option("--train", help="JSONL train problems (default: the built-in graph's train split).")] = None,
    train_size: Annotated[int, typer.Option("--train-size", min=1, help="Built-in train problems to use.")] = 50,
    trials: Annotated[int, typer.Option("--trials", min=1, max=1000, help="Distinct allocations evaluated, at most.")] = 20,
    method: Annotated[str, typer.Option("--method", help="planner (the built-in rule-based planner), random, grid or tpe.")] = "planner",
    budget: Annotated[float | None, typer.Option("--budget", min=0.0, help="Cost cap per problem in AgentTTS units (passes of the largest model).")] = None,
    seed: Annotated[int, typer.Option("--seed", min=0)] = 0,
    out: Annotated[Path | None, typer.Option("--out", help="Allocation file to write (default: GRAPH-allocation.json).")] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    remote: RemoteOptions = NO_REMOTE,
    db: DbOption = None,
    json_out: JsonOption = False,
) -> None:
    """Search the allocation (model, strategy, budget per stage) of a task graph on a train split."""
    if method not in ("planner", "random", "grid", "tpe"):
        raise BadInputError(f"unknown --method {method!r}; valid: grid, planner, random, tpe")
    g = resolve_graph(graph)
    out = out or Path(f"{g.name}-allocation.json")
    if out.exists() and out.is_dir():
        raise BadInputError(f"--out {out} is a directory")
    problems = _problems(train, g, train_size, "train")
    with open_orchestrator(db, device, remote) as orc, stderr.status(f"searching allocations of {esc(g.name)} ..."):
        found = orc.allocate(g, problems, method=method, trials=trials, budget=budget, seed=seed, out=out)
    best = found.pop("allocation")
    body = {**found, "allocation": best.model_dump(mode="json"), "file": str(out)}
    if json_out:
        emit_json(body)
        return
    table = make_table("stage", "model", "strategy", "budget", title=f"{esc(g.name)}: best of {body['trials']} trials")
    for stage, o in best.stages.items():
        table.add_row(esc(stage), esc(o.model), esc(o.strategy), str(o.budget_tokens))
    stdout.print(table)
    lo, hi = body["score_ci95"] or (body["score"], body["score"])
    stdout.print(f"score {body['score']:.1%} (95% CI {lo:.1%}-{hi:.1%}), cost {body['cost']:.2f} passes; "
                 f"written to {esc(out)}")


@graph_app.command("solve")
@with_remote_options
def graph_solve(
    graph: GraphArg,
    problem: Annotated[str, typer.Option("--problem", help="The graph's problem: inline JSON or @file.json.")],
    allocation: Annotated[Path | None, typer.Option("--allocation", help="Allocation file from `ttc allocate` (default: each stage's first option at its largest budget).")] = None,
    policy: PolicyOpt = "static",
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    remote: RemoteOptions = NO_REMOTE,
    db: DbOption = None,
    json_out: JsonOption = False,
) -> None:
    """Run a task graph on one problem; the run is checkpointed and resumable."""
    g = resolve_graph(graph)
    text = read_text_arg(problem, "problem")
    with open_orchestrator(db, device, remote) as orc, stderr.status(f"running {esc(g.name)} ..."):
        result = orc.solve(g, text, allocation=allocation, policy=policy)
    _show(result, json_out)


@graph_app.command("resume")
def graph_resume(
    run_id: Annotated[str, typer.Argument(help="The interrupted graph run.")],
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    db: DbOption = None,
    json_out: JsonOption = False,
) -> None:
    """Finish an interrupted graph run without re-running its finished stages."""
    from ttc.orchestrator.graph import resume_graph

    with open_orchestrator(db, device) as orc:
        result = resume_graph(orc, run_id)
    _show(result, json_out)


def _show(result, json_out: bool) -> None:
    if json_out:
        emit_json(result)
        return
    table = make_table("stage", "model", "answer", "correct", "tokens", title=f"{esc(result.graph)}")
    for name, o in result.outputs.items():
        table.add_row(esc(name), esc(o.model or "-"), esc(o.answer), esc(o.correct), f"{o.tokens}/{o.granted or '-'}")
    stdout.print(table)
    stdout.print(f"score {result.score:.2f}, {result.tokens} of {result.budget_tokens} tokens; "
                 f"trace: {esc(result.trace_id)}")
