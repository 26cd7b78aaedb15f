"""What every benchmark records: seed, commit, models and digests, and where files go."""

from __future__ import annotations

import json
import platform
import statistics
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["bench_header", "git_commit", "one_draw", "write_result"]


def one_draw(task, backend, problems: list[dict], n: int, seed: int) -> tuple[list[int], float, float]:
    """``n`` direct samples per problem in one shared-prefix call each (T = 0.7): the verified
    count per problem, the mean prompt tokens and the mean tokens of one sample; what the
    unbiased pass@n curves of the benches are read from."""
    from ttc.backends.types import SamplingParams

    params = SamplingParams(n=n, temperature=0.7, seed=seed, max_tokens=task.max_tokens(None, "direct"),
                            stop=tuple(task.stop))
    gens = backend.generate([task.prompt(p) for p in problems], params)
    correct = [sum(bool(task.verifier.verify(p, c.text).correct) for c in g.completions)
               for p, g in zip(problems, gens)]
    prompt = statistics.fmean(g.prompt_tokens for g in gens)
    per = statistics.fmean(c.completion_tokens for g in gens for c in g.completions)
    return correct, prompt, per


def git_commit() -> str | None:
    """The commit of the code being measured ("<sha>-dirty" with uncommitted changes)."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        # Figures written by an earlier bench of the same series are not code: they do not
        # make the code being measured dirty.
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ":/",
                                ":(exclude,top)bench/results"], cwd=here,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}-dirty" if dirty else sha


def bench_header(name: str, *, seed: int, quick: bool, models: list[dict[str, Any]], n_problems: int,
                 started: float | None = None) -> dict:
    """Fields every bench JSON carries (DESIGN.md contracts); ``started`` (a ``time.time()``)
    adds the run's wall time so far as ``elapsed_s``."""
    import torch

    return {
        "bench": name,
        "seed": seed,
        "quick": quick,
        "git_commit": git_commit(),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "models": [m["name"] for m in models],
        "checkpoint_digests": {m["name"]: m.get("digest") for m in models},
        "n_problems": n_problems,
        **({"elapsed_s": round(time.time() - started, 1)} if started is not None else {}),
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "torch_threads": torch.get_num_threads(), "cpu_count": _cpu_count()},
    }


def _cpu_count() -> int | None:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def write_result(name: str, result: dict, out_dir: Path) -> Path:
    """Writes ``<out_dir>/<name>.json`` atomically and returns its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(path)
    return path
