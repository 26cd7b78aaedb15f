"""``ttc models list|train|eval``: the built-in checkpoints, how they are made and measured."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ttc.backends.errors import BadInputError

from ._cli_common import JsonOption, check_seed, check_temperature, emit_json, esc, make_table, stderr, stdout

__all__ = ["models_app", "read_problems_file"]

models_app = typer.Typer(help="Built-in checkpoints: list, train, evaluate.", no_args_is_help=True)


@models_app.command("list")
def models_list(json_out: JsonOption = False) -> None:
    """List the built-in checkpoints."""
    from ttc.tasks.registry import builtin_models

    rows = [{"name": m.name, "path": m.path, "task": m.task, "kind": m.kind, "params": m.params}
            for m in builtin_models()]
    if json_out:
        emit_json({"models": rows})
        return
    table = make_table("name", "task", "kind", "params", "path")
    for r in rows:
        table.add_row(esc(r["name"]), esc(r["task"]), esc(r["kind"]), f"{r['params']:,}", esc(r["path"]))
    stdout.print(table if rows else "no built-in models are installed")


@models_app.command("train")
def models_train(
    name: Annotated[str, typer.Argument(help="Recipe name, e.g. countdown-direct.")],
    out: Annotated[Path | None, typer.Option("--out", help="Checkpoint directory (default: runs/NAME).")] = None,
    minutes: Annotated[float | None, typer.Option("--minutes", min=0.01, help="Wall-time budget of the whole run (overrides the recipe; split across its stages).")] = None,
    steps: Annotated[int | None, typer.Option("--steps", min=1, help="Step budget of the whole run instead of minutes (split across stages).")] = None,
    seed: Annotated[int | None, typer.Option("--seed")] = None,
    threads: Annotated[int, typer.Option("--threads", min=1, help="torch CPU threads.")] = 1,
    json_out: JsonOption = False,
) -> None:
    """Train a built-in recipe from scratch on freshly generated data; saves a from_pretrained checkpoint."""
    import torch

    from ttc.tasks.training import RECIPES, train, with_budget

    if seed is not None:
        check_seed(seed)
    if minutes is not None and not minutes < float("inf"):  # NaN and inf pass min=
        raise BadInputError(f"--minutes must be a finite number, got {minutes}")
    if name not in RECIPES:
        raise BadInputError(f"unknown recipe {name!r}; valid recipes: {', '.join(sorted(RECIPES))}")
    # A staged recipe (e.g. countdown-direct: solver answers, then rejection sampling)
    # splits --minutes / --steps across its stages.
    cfg = with_budget(RECIPES[name], minutes=minutes, steps=steps, seed=seed)
    out = out or Path("runs") / name
    torch.set_num_threads(threads)
    final = train(cfg, out, progress=not json_out)
    summary = {k: v for k, v in final.items() if k != "history"} | {"path": str(out)}
    if json_out:
        emit_json(summary)
        return
    stdout.print(f"trained {name}: {final['params']:,} params, {final['steps']} steps, {final['tokens']:,} tokens "
                 f"in {final['minutes']:.1f} min, loss {final['loss']:.3f}; saved to {out}")


def read_problems_file(path: Path, task) -> list[dict]:
    """Problems from a JSONL file (one problem per line, as for ``--problem``).

    Raises:
        BadInputError: Unreadable file, or a line that is not a valid problem (names the line).
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise BadInputError(f"cannot read problems file {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise BadInputError(f"problems file {path} is not UTF-8 text (byte {exc.start})") from None
    problems = []
    for no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            problems.append(task.parse_problem(json.loads(line)))
        except json.JSONDecodeError as exc:
            raise BadInputError(f"{path}:{no}: not valid JSON: {exc.msg}") from None
        except BadInputError as exc:
            raise BadInputError(f"{path}:{no}: {exc}") from None
    if not problems:
        raise BadInputError(f"{path} holds no problems")
    return problems


@models_app.command("eval")
def models_eval(
    model: Annotated[str, typer.Argument(help="Built-in name or checkpoint directory.")],
    problems: Annotated[Path | None, typer.Option("--problems", help="JSONL file, one problem per line.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Problems to use at most.")] = 200,
    temperature: Annotated[float, typer.Option("--temperature", "-t", min=0.0)] = 0.7,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    quick: Annotated[bool, typer.Option("--quick", help="Fewer samples per problem (pass@1 and pass@4 only).")] = False,
    json_out: JsonOption = False,
) -> None:
    """Reproduce a model card's numbers on its held-out split, or measure on a problem file."""
    check_temperature(temperature)
    check_seed(seed)

    import torch

    from ttc.tasks.registry import get_task
    from ttc.tasks.training import evaluate_checkpoint

    from .models import resolve_checkpoint

    name, path = resolve_checkpoint(model)
    card_file = path / "card.json"
    task_name = json.loads(card_file.read_text()).get("task", "countdown") if card_file.is_file() else "countdown"
    task = get_task(task_name)
    loaded = read_problems_file(problems, task) if problems is not None else None
    torch.set_num_threads(max(1, torch.get_num_threads()))
    # A transient spinner: minutes of work show on a terminal and leave no line in a log.
    with stderr.status(f"evaluating {esc(name)} on {len(loaded[:limit]) if loaded else limit} "
                       f"{esc(task_name)} problems ..."):
        result = evaluate_checkpoint(path, problems=loaded, limit=limit, temperature=temperature, seed=seed,
                                     quick=quick)
    result = {"model": name, "task": task_name, **result}
    if json_out:
        emit_json(result)
        return
    table = make_table("measure", "value", title=f"{name} on {result.get('n_problems')} problems")
    for key, value in result.items():
        if key not in ("model", "task"):
            table.add_row(esc(key), esc(json.dumps(value) if isinstance(value, (dict, list)) else value))
    stdout.print(table)
