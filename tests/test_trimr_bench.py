"""``ttc bench trimr``: its batched, live driver, its paired summary and its JSON shape.

The figures themselves come from ``ttc bench trimr`` on the built-in models; here a tiny
random-weight checkpoint stands in for both models (shape and accounting only).
"""

from __future__ import annotations

import json

import pytest
from ttc.core.trimr import TrimR
from ttc.tasks.countdown import COUNTDOWN

from recording import run_cli

FMT = {"markers": ("Wait", "But", "Alternatively", "Hmm"), "per_line": True, "conclude": "#",
       "mild_prompt": "#\n", "firm_prompt": "Hmm,no time\n#\n"}


@pytest.fixture(scope="module")
def tiny(tiny_checkpoint):
    from ttc.backends.transformers_backend import TransformersBackend

    return TransformersBackend(tiny_checkpoint, device="cpu")


def test_drive_counts_injected_tokens_as_prompt_and_keeps_rows_paired(tiny):
    from ttc.orchestrator.bench.trimr import drive

    problems = COUNTDOWN.make_problems(4, seed=1, split="test")
    prompts = [f"{' '.join(map(str, p['numbers']))}>{p['target']}!\n" for p in problems]
    base, _ = drive(tiny, problems, prompts, 24, (), None)
    cut, _ = drive(tiny, problems, prompts, 24, (), TrimR(**FMT, rules=(), truncate_tokens=6, at_boundary=False))
    for b, c, pr in zip(base, cut, prompts):
        assert c["rule"] == "truncate" and c["injected"] >= 2  # "\n#\n" (or "#\n") prefilled
        assert c["tokens"] == tiny.count_tokens(pr) + c["injected"] + c["generated"]
        assert c["text"][:4] == b["text"][:4]  # the same draws until TrimR acted (at 6 token ids)
        assert b["tokens"] == tiny.count_tokens(pr) + b["generated"] and b["rule"] is None


def test_summary_reports_paired_deltas():
    from ttc.orchestrator.bench.trimr import summarize

    base = [{"correct": c, "tokens": 100, "generated": 90, "flops": 1.0, "rule": None, "lag": None}
            for c in (True, True, False, False)]
    rows = [{"correct": c, "tokens": 60, "generated": 50, "flops": 0.6, "rule": "over", "lag": 2.0}
            for c in (True, False, False, True)]
    s = summarize(rows, 5.0, base, 10.0)
    assert s["token_reduction"] == pytest.approx(0.4) and s["wall_reduction"] == pytest.approx(0.5)
    assert s["accuracy_delta"] == 0.0 and s["decisions"] == {"over": 4}
    lo, hi = s["accuracy_delta_ci95"]
    assert lo < 0 < hi


def test_bench_writes_the_issue_json_shape(tiny, tmp_path, monkeypatch):
    import ttc.orchestrator.models as models
    import ttc.tasks.countdown.reflective as reflective
    from ttc.orchestrator.bench.trimr import run_trimr_bench

    monkeypatch.setattr(models, "load_backend", lambda name, **kw: tiny)
    monkeypatch.setattr(reflective, "REFLECTIVE_MAX_TOKENS", 16)
    monkeypatch.setattr(COUNTDOWN, "max_tokens", lambda problem=None, fmt="direct": 16)
    problems = COUNTDOWN.make_problems(5, seed=2, split="test")
    r = run_trimr_bench(quick=True, out_dir=tmp_path, problems=problems)
    on_disk = json.loads((tmp_path / "trimr.json").read_text())
    assert on_disk["n_problems"] == 5 == r["n_problems"]
    assert set(r["baseline"]) >= {"accuracy", "accuracy_ci95", "tokens"}
    assert 0.0 <= r["corrected_share"] <= 1.0
    assert set(r["reflective"]) == {"both", "over", "under", "first_answer", "truncate"}
    for entry in [*r["reflective"].values(), r["search"]["both"]]:
        assert {"token_reduction", "accuracy_delta", "accuracy_delta_ci95", "wall_reduction", "flops"} <= set(entry)
    assert {"seed", "git_commit", "models", "checkpoint_digests"} <= set(r)


def test_cli_bench_trimr_rejects_an_unreadable_problems_file(tmp_path):
    import ttc.orchestrator._cli_bench_trimr  # noqa: F401  (registers the command)

    code, out, err = run_cli(["bench", "trimr", "--quick", "--problems-file", str(tmp_path / "none.jsonl"),
                              "--json"])
    assert code == 2 and "none.jsonl" in out + err and "Traceback" not in err
