"""``ttc bench throughput``: the bare-loop references and the ratios against them.

Runs the real bench on the seeded random ~1M model, shrunk to a few tokens and one round
so that it takes seconds; asserts what is reported, never how fast anything was.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import torch
from ttc.backends.errors import BadInputError
from ttc.backends.transformers_backend import TransformersBackend
from ttc.backends.types import SamplingParams
from ttc.orchestrator.bench import throughput
from ttc.orchestrator.cli import main

MODES = {"separate", "hf_forward_1", "batched_repeat", "shared_prefix", "hf_forward_16"}


@pytest.fixture(autouse=True)
def one_thread():
    # As ``ttc bench`` runs (its --threads default): tiny matmuls on a shared machine
    # slow down many times over when several threads contend for its cores.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def random_model(tmp_path_factory) -> Path:
    return throughput.random_checkpoint(tmp_path_factory.mktemp("bench") / "random-llama-1m")


def short_context_copy(src: Path, dst: Path, ctx: int) -> Path:
    """The same weights with a shorter declared context."""
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    cfg = json.loads((dst / "config.json").read_text())
    cfg["max_position_embeddings"] = ctx
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


@pytest.mark.parametrize("n", [1, 4])
def test_bare_loop_draws_the_tokens_the_backend_draws(random_model, n):
    # Same model, same seed, same sampling: the reference does the backend's work, no less.
    backend = TransformersBackend(random_model, device="cpu")
    params = SamplingParams(n=n, max_tokens=12, temperature=1.0, seed=3, ignore_eos=True)
    ours = [c.token_ids for c in backend.generate([throughput.PROMPT], params)[0].completions]
    ids = backend.tokenizer(throughput.PROMPT, add_special_tokens=True)["input_ids"]
    ref = throughput.hf_forward(backend.model, ids, n=n, max_tokens=12, seed=3)
    assert tuple(ref.shape) == (n, 12)
    assert ref.tolist() == ours
    other = throughput.hf_forward(backend.model, ids, n=n, max_tokens=12, seed=4)
    assert other.tolist() != ours


def test_result_carries_both_references_and_their_ratios(tmp_path):
    result = throughput.run_throughput(quick=True, out_dir=tmp_path, max_tokens=8, rounds=1)
    modes = result["modes"]
    assert set(modes) == MODES and result["max_tokens"] == 8 and result["rounds"] == 1
    prompt = result["prompt_tokens"]
    for mode, row in modes.items():
        assert row["completion_tokens"] == 16 * 8 and len(row["wall_s"]) == len(row["cpu_s"]) == 1, mode
        assert row["cpu_s_median"] == row["cpu_s"][0] > 0
        assert row["tokens_per_s"] == pytest.approx(16 * 8 / row["wall_s_median"])
    # One prefill for the shared-prefix paths, one per sample for the others.
    assert modes["hf_forward_16"]["prompt_tokens"] == modes["shared_prefix"]["prompt_tokens"] == prompt
    assert modes["hf_forward_1"]["prompt_tokens"] == modes["separate"]["prompt_tokens"] == 16 * prompt
    tps = {m: row["tokens_per_s"] for m, row in modes.items()}
    assert result["shared_prefix_vs_hf"] == pytest.approx(tps["shared_prefix"] / tps["hf_forward_16"])
    assert result["separate_vs_hf"] == pytest.approx(tps["separate"] / tps["hf_forward_1"])
    cpu = {m: row["cpu_s_median"] for m, row in modes.items()}
    assert result["cpu_ratios"] == pytest.approx({"shared_prefix_vs_hf": cpu["hf_forward_16"] / cpu["shared_prefix"],
                                                  "separate_vs_hf": cpu["hf_forward_1"] / cpu["separate"]})
    # The fields that were there before stay.
    assert result["speedup"] == pytest.approx(tps["shared_prefix"] / tps["separate"])
    assert {"speedup_batched_repeat", "prefix_sharing_gain", "n_samples", "model", "seed"} <= set(result)
    assert result["goal"] == {"speedup_at_least": 6.0, "shared_prefix_vs_hf_at_least": 0.95,
                              "separate_vs_hf_at_least": 0.95}
    for key, target in result["goal"].items():
        assert result["goal_met"][key] == (result[key.removesuffix("_at_least")] >= target)
    assert json.loads((tmp_path / "throughput.json").read_text()) == json.loads(json.dumps(result))
    assert (tmp_path / "throughput.png").stat().st_size > 0


def test_short_context_caps_the_tokens_of_every_mode(tmp_path, random_model):
    prompt = TransformersBackend(random_model, device="cpu").count_tokens(throughput.PROMPT)
    fits = short_context_copy(random_model, tmp_path / "fits", prompt + 9)
    result = throughput.run_throughput(model=str(fits), out_dir=tmp_path / "out", max_tokens=64, rounds=1)
    assert result["max_tokens"] == 9
    assert {row["completion_tokens"] for row in result["modes"].values()} == {16 * 9}
    tight = short_context_copy(random_model, tmp_path / "tight", prompt + 3)
    with pytest.raises(BadInputError, match="at least 8"):
        throughput.run_throughput(model=str(tight), out_dir=tmp_path / "out2", rounds=1)


def test_cli_table_prints_the_ratios_against_the_references(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(throughput, "run_throughput",
                        functools.partial(throughput.run_throughput, max_tokens=8, rounds=1))
    with pytest.raises(SystemExit) as exc:
        main(["bench", "throughput", "--quick", "--out", str(tmp_path)])
    out, _ = capsys.readouterr()
    assert exc.value.code == 0, out
    assert "hf_forward_1" in out and "hf_forward_16" in out
    result = json.loads((tmp_path / "throughput.json").read_text())
    for line_start, key in [("shared prefix vs hf_forward_16", "shared_prefix_vs_hf"),
                            ("separate vs hf_forward_1", "separate_vs_hf")]:
        line = next(ln for ln in out.splitlines() if ln.startswith(line_start))
        assert f"{result[key]:.2f}x" in line and "goal >= 0.95x" in line
        assert ("not met" in line) == (result[key] < 0.95)
