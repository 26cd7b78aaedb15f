"""``ttc bench overhead``: what orchestration and tracing cost on top of the model calls.

Orchestrated best-of-16 (``Orchestrator.solve``: budget ledger, strategy, verifier spans,
trace store writes) against a hand-written loop making the same backend calls (one
shared-prefix call of 16 samples, then the verifier on each), in one warm process with the
store already migrated. The two modes run interleaved; each reports the median wall time
of its runs, and ``ratio`` = orchestrated / hand-written (goal: at most 1.05).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from ttc.backends.types import SamplingParams

from .common import bench_header, write_result

__all__ = ["run_overhead"]

SEED = 0
N = 16


def run_overhead(*, quick: bool = False, model: str | None = None, out_dir: Path = Path("bench/results"),
                 progress=None) -> dict[str, Any]:
    started = time.time()
    import torch

    from ttc.backends.transformers_backend import TransformersBackend
    from ttc.tasks.registry import find_builtin, get_task

    from ..api import Orchestrator
    from ..models import resolve_checkpoint
    from .throughput import random_checkpoint

    runs = 11 if quick else 21
    task = get_task("countdown")
    problems = task.make_problems(3 if quick else 8, seed=SEED, split="test")
    torch.manual_seed(SEED)
    with tempfile.TemporaryDirectory(prefix="ttc-overhead-") as tmp:
        if model is None and find_builtin(task.default_model) is None:
            name, path = "random-llama-1m", random_checkpoint(Path(tmp) / "random-llama-1m")
        else:
            name, path = resolve_checkpoint(model or task.default_model)
        backend = TransformersBackend(path, name=name, device="cpu")
        params = SamplingParams(n=N, max_tokens=task.max_tokens(None, "direct"), temperature=0.7, seed=SEED,
                                stop=tuple(task.stop))
        orc = Orchestrator(db=f"sqlite:///{Path(tmp) / 'overhead.db'}")

        def hand_written() -> list:
            answers = []
            for p in problems:
                gen = backend.generate([task.prompt(p)], params)[0]
                verdicts = [task.verifier.verify(p, c.text) for c in gen.completions]
                answers.append(max(verdicts, key=lambda v: v.score).answer)
            return answers

        def orchestrated() -> list:
            return [orc.solve("countdown", p, strategy="best_of_n", model=backend, n=N, early_stop=False,
                              temperature=0.7, seed=SEED).answer for p in problems]

        modes = {"hand_written": hand_written, "orchestrated": orchestrated}
        # Warm-up: migrates the store, loads lazy code paths, fills allocator caches.
        same_answers = modes["hand_written"]() == modes["orchestrated"]()
        walls: dict[str, list[float]] = {m: [] for m in modes}
        for r in range(runs):
            for mode, fn in (modes.items() if r % 2 == 0 else reversed(modes.items())):
                t0 = time.perf_counter()
                fn()
                walls[mode].append(time.perf_counter() - t0)
            if progress is not None:
                progress.print(f"run {r + 1}/{runs}: " + ", ".join(f"{m} {walls[m][-1]:.2f}s" for m in modes))
        spans = orc.stats().span_kinds
        orc.close()
    med = {m: statistics.median(w) for m, w in walls.items()}
    info = backend.info
    model_row = {"name": name, "params": info.parameters, "digest": info.checkpoint_digest}
    result = bench_header("overhead", seed=SEED, quick=quick, models=[model_row], n_problems=len(problems), started=started)
    result.update({
        "model": model_row, "n": N, "runs": runs, "same_answers": same_answers,
        "modes": {m: {"wall_s_median": med[m], "wall_s": walls[m]} for m in modes},
        "ratio": med["orchestrated"] / med["hand_written"],
        "spans_written": spans, "goal": {"ratio_at_most": 1.05},
        "files": {"json": str(out_dir / "overhead.json")},
    })
    write_result("overhead", result, out_dir)
    return result
