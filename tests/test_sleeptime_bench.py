"""``ttc bench sleeptime``: its accounting on a scripted model, the CLI, and a real-model run."""

from __future__ import annotations

import json
import math
import os
import random
from pathlib import Path

import pytest

import ttc.tasks.stateful_arith as sa
from ttc.backends.scripted import ScriptedBackend
from ttc.orchestrator.bench import sleeptime as bench
from ttc.tasks.registry import CHECKPOINT_DIR, get_task

TASK = get_task("stateful-arith")
# The shipped checkpoint; TTC_TEST_ARITH_CHECKPOINT points the test at another build of it.
CHECKPOINT = Path(os.environ.get("TTC_TEST_ARITH_CHECKPOINT", CHECKPOINT_DIR / "stateful-arith"))


def noisy_model(prompt: str, i: int, params) -> str:
    """Derivations right 60% of the time; notes right 80%; answers from notes follow the notes."""
    rng = random.Random(f"{prompt}/{i}")
    if prompt.endswith("#"):
        notes = sa.notes_text(prompt[:-1])
        return notes + "." if rng.random() < 0.8 else notes + "1."
    body, _, query = prompt[:-1].rpartition("?")
    if "|" in body:
        ctx, _, notes = body.partition("|")
        return sa.derivation(ctx, query, with_notes=True) + "."
    d = sa.derivation(body, query)
    return d + "." if rng.random() < 0.6 else d + "3."


def test_needed_interpolates_on_the_best_so_far_curve():
    pts = [{"t": 10, "accuracy": 0.5}, {"t": 20, "accuracy": 0.7}, {"t": 40, "accuracy": 0.6}, {"t": 80, "accuracy": 0.9}]
    assert bench._needed(pts, 0.5, "t") == 10
    assert bench._needed(pts, 0.6, "t") == pytest.approx(15)
    assert bench._needed(pts, 0.8, "t") == pytest.approx(40 + 40 * (0.1 / 0.2))  # 0.7 carried to t=40
    assert bench._needed(pts, 0.95, "t") is None


def test_bench_accounting_on_a_scripted_model(tmp_path):
    problems = TASK.make_problems(6, seed=3, split="test", queries=10)
    b = ScriptedBackend(noisy_model, name="noisy")
    r = bench.run_sleeptime_bench(quick=True, problems=problems, backend=b, out_dir=tmp_path)
    assert (tmp_path / "sleeptime.json").is_file() and (tmp_path / "sleeptime.png").stat().st_size > 0
    assert json.loads((tmp_path / "sleeptime.json").read_text())["test_token_reduction"] == r["test_token_reduction"]
    assert r["n_contexts"] == 6 and r["n_problems"] == 60 and r["seed"] == 0 and "git_commit" in r
    assert [p["samples"] for p in r["baseline"]] == [1, 3] and set(r["sleeptime"]) == {"1", "2", "5"}
    # The shared prefix of a context's derivation prompts ("<context>?") is counted once per context.
    mean_prefix = sum(len(c) + 1 for c in dict.fromkeys(p["context"] for p in problems)) / 6
    assert r["baseline"][0]["prefix_tokens_per_context"] == pytest.approx(mean_prefix, abs=1)
    e = r["economics"]["5"]["generated"]
    assert r["test_token_reduction"] == pytest.approx(e["baseline_test_tokens_per_query"]
                                                      / e["sleeptime_test_tokens_per_query"])
    c10 = e["cost_per_query"]["10"]["10"]
    assert c10["sleeptime"] == pytest.approx(e["sleep_tokens_per_context"] / 10
                                             + 10 * e["sleeptime_test_tokens_per_query"])
    assert c10["baseline"] == pytest.approx(10 * e["baseline_test_tokens_per_query"])
    assert r["cost_per_query_reduction_at_10"] == pytest.approx(c10["baseline"] / c10["sleeptime"])
    even = e["break_even_queries_per_context"]["10"]
    assert even == pytest.approx(e["sleep_tokens_per_context"]
                                 / (10 * (e["baseline_test_tokens_per_query"] - e["sleeptime_test_tokens_per_query"])))
    one = e["cost_per_query"]["10"]
    assert one["1"]["sleeptime"] > one["10"]["sleeptime"]  # sleep cost amortizes over queries
    assert [row["notes"] for row in r["accuracy_vs_sleep_budget"]] == [1, 2, 5]
    assert r["accuracy_vs_sleep_budget"][2]["notes_all_right"] >= r["accuracy_vs_sleep_budget"][0]["notes_all_right"]
    assert "counterfactual" in r["per_kind"]["sleeptime_5_notes_1_sample"] and "Counterfactuals" in r["counterfactuals"]
    assert r["predictability"]["available"] is False  # a scripted model cannot score text
    assert r["paper"]["test_token_reduction"] == 5.0 and r["paper"]["cost_per_query_reduction_at_10"] == 2.5


def test_query_logprobs_score_the_query_given_the_context(tiny_checkpoint):
    from ttc.backends.transformers_backend import TransformersBackend

    b = TransformersBackend(tiny_checkpoint, device="cpu")
    lps, spent = bench._query_logprobs(b, ["a=1;b=a+2?", "a=1;b=a+2?"], ["b", "b+a"])
    assert all(lp is not None and math.isfinite(lp) and lp < 0 for lp in lps)
    assert lps[1] < lps[0]  # more query text, more negative log-probability
    assert spent == b.count_tokens("a=1;b=a+2?b") + b.count_tokens("a=1;b=a+2?b+a")
    import torch  # the same figure from one unpadded forward pass, token by token

    ids = b.tokenizer("a=1;b=a+2?b+a")["input_ids"]
    n_pre = len(b.tokenizer("a=1;b=a+2?")["input_ids"])
    with torch.no_grad():
        logp = torch.log_softmax(b.model(input_ids=torch.tensor([ids])).logits[0].float(), dim=-1)
    assert lps[1] == pytest.approx(sum(float(logp[t - 1, ids[t]]) for t in range(n_pre, len(ids))), abs=1e-3)


def test_cli_bench_sleeptime(capsys, tmp_path, monkeypatch):
    from ttc.orchestrator import _cli_bench_sleeptime  # noqa: F401 - registers the command
    from ttc.orchestrator.cli import main

    problems = TASK.make_problems(3, seed=1, split="test", queries=4)
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps({k: p[k] for k in ("id", "context", "query")}) + "\n" for p in problems))
    monkeypatch.setattr("ttc.orchestrator.models.load_backend", lambda name, **kw: ScriptedBackend(noisy_model))
    with pytest.raises(SystemExit) as exc:
        main(["bench", "sleeptime", "--quick", "--problems-file", str(path), "--out", str(tmp_path / "o"), "--json"])
    out = capsys.readouterr().out
    assert exc.value.code == 0 and json.loads(out)["n_problems"] == 12 and out.count("\n") == 1
    with pytest.raises(SystemExit) as exc:
        main(["bench", "sleeptime", "--quick", "--problems-file", str(tmp_path / "none.jsonl"), "--json"])
    captured = capsys.readouterr()
    assert exc.value.code == 2 and "cannot read" in json.loads(captured.out)["error"]["message"]


@pytest.mark.skipif(not (CHECKPOINT / "config.json").is_file(),
                    reason=f"the stateful-arith checkpoint is not built yet ({CHECKPOINT})")
def test_real_model_bench_subset(tmp_path):
    import torch

    torch.set_num_threads(1)
    from ttc.backends.transformers_backend import TransformersBackend

    problems = TASK.make_problems(8, seed=11, split="test", queries=10)
    b = TransformersBackend(CHECKPOINT, name="stateful-arith", device="cpu")
    r = bench.run_sleeptime_bench(quick=True, problems=problems, backend=b, out_dir=tmp_path, plot=False)
    assert r["checkpoint_digests"]["stateful-arith"] == b.info.checkpoint_digest
    assert r["predictability"]["available"] and r["predictability"]["analysis_tokens"] > 0
    assert len(r["predictability"]["bins"]) == 4
    # Answers read off the notes are short: far fewer generated test tokens than derivations.
    assert r["sleeptime"]["5"][0]["test_generated_tokens_per_query"] < r["baseline"][0]["test_generated_tokens_per_query"]
    assert r["test_token_reduction"] > 1
