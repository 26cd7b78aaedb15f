"""``ttc bench trimr``: TrimR on the reflective CountDown model, paired with its baseline.

Registered on ``bench_app`` when ``orchestrator/cli.py`` imports this module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._cli_bench import ForceOpt, OutOpt, _running, bench_app, bench_out_dir, bench_problems
from ._cli_common import JsonOption, emit_json, esc, make_table, stderr, stdout

__all__ = ["bench_trimr"]


@bench_app.command("trimr")
def bench_trimr(
    quick: Annotated[bool, typer.Option("--quick", help="300 held-out problems (the full run: 1000).")] = False,
    problems_file: Annotated[Path | None, typer.Option(
        "--problems-file", help="JSONL of CountDown problems to use instead of held-out ones.")] = None,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda or auto.")] = "cpu",
    out_dir: OutOpt = None,
    force: ForceOpt = False,
    json_out: JsonOption = False,
) -> None:
    """TrimR (exact thought verifier) vs no TrimR on the same seeds: tokens, FLOPs, wall time, accuracy;
    the per-rule ablation, the first_answer and truncate baselines, and the search-trace model."""
    out_dir = bench_out_dir(out_dir, quick=quick, name="trimr", force=force)
    problems = bench_problems(problems_file, "countdown")
    from .bench.trimr import run_trimr_bench

    with _running("trimr"):
        r = run_trimr_bench(quick=quick, out_dir=out_dir, problems=problems, device=device,
                            progress=lambda msg: stderr.print(esc(msg)))
    if json_out:
        emit_json(r)
        return
    base = r["baseline"]
    table = make_table("run", "accuracy", "95% CI", "tokens", "token cut", "acc. delta (pts)", "wall cut",
                       title=f"TrimR, {r['n_problems']} CountDown problems (corrected share {r['corrected_share']:.1%})")
    lo, hi = base["accuracy_ci95"]
    table.add_row("baseline", f"{base['accuracy']:.1%}", f"{lo:.1%}-{hi:.1%}", f"{base['tokens']:.0f}", "-", "-", "-")
    rows = [(f"reflective.{k}", v) for k, v in r["reflective"].items()] + [("search.both", r["search"]["both"])]
    for name, v in rows:
        lo, hi = v["accuracy_ci95"]
        dlo, dhi = v["accuracy_delta_ci95"]
        table.add_row(esc(name), f"{v['accuracy']:.1%}", f"{lo:.1%}-{hi:.1%}", f"{v['tokens']:.0f}",
                      f"{v['token_reduction']:.1%}", esc(f"{v['accuracy_delta']:+.1f} [{dlo:+.1f}, {dhi:+.1f}]"),
                      f"{v['wall_reduction']:.1%}" if v.get("wall_reduction") is not None else "-")
    stdout.print(table)
    met = "[green]met[/green]" if r["goal"]["met"] else "[red]not met[/red]"
    stdout.print(f"goal (>= 30% fewer tokens, <= 1 point lost, beats first_answer): {met}")
    stdout.print(f"written to {esc(str(out_dir / 'trimr.json'))}")
