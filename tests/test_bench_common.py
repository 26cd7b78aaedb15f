"""The fields every bench JSON carries (DESIGN.md contracts), and the atomic write."""

from __future__ import annotations

import json
import time

from ttc.core.metrics import wilson_ci95
from ttc.orchestrator.bench.common import bench_header, write_result


def test_header_carries_the_contract_fields_and_wall_time(tmp_path):
    models = [{"name": "countdown-direct", "digest": "abc"}]
    head = bench_header("x", seed=0, quick=True, models=models, n_problems=3, started=time.time() - 2.0)
    assert {"bench", "seed", "git_commit", "models", "checkpoint_digests", "n_problems", "machine"} <= set(head)
    assert head["checkpoint_digests"] == {"countdown-direct": "abc"} and head["n_problems"] == 3
    assert 2.0 <= head["elapsed_s"] < 60
    assert "elapsed_s" not in bench_header("x", seed=0, quick=True, models=models, n_problems=3)
    path = write_result("x", head | {"ci95": wilson_ci95(1, 4)}, tmp_path)
    assert json.loads(path.read_text())["bench"] == "x" and not list(tmp_path.glob("*.tmp"))
    lo, hi = wilson_ci95(1, 4)
    assert 0 < lo < 0.25 < hi < 1


def test_sequential_budgets_step_by_half_octaves_up_to_the_context():
    from ttc.orchestrator.bench.backtrack import _budgets_l

    assert _budgets_l(980) == [128, 192, 256, 384, 512, 768, 980]
    assert _budgets_l(1024) == [128, 192, 256, 384, 512, 768, 1024]
    assert _budgets_l(100) == [100]
