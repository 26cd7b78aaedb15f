"""No checkpoint code runs without consent (DESIGN.md, Trust).

Each test copies a shipped checkpoint, makes it ask for its own Python (an ``auto_map``
and/or a ``model_type`` transformers does not know) and points that map at a module
that writes a marker file when imported: the marker proves whether the code ran.
"""

from __future__ import annotations

import builtins
import json
import shutil
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from ttc.backends.errors import BadInputError  # noqa: E402
from ttc.backends.transformers_backend import TransformersBackend, load_tokenizer  # noqa: E402
from ttc.backends.types import SamplingParams  # noqa: E402

SHIPPED = Path(__file__).resolve().parents[1] / "tasks" / "checkpoints" / "countdown-direct-small"

EVIL = '''
from pathlib import Path

Path({marker!r}).write_text("checkpoint code ran")

from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast


class EvilConfig(LlamaConfig):
    model_type = "ttc-evil"


class EvilModel(LlamaForCausalLM):
    config_class = EvilConfig


class EvilTokenizer(PreTrainedTokenizerFast):
    pass
'''


@pytest.fixture(autouse=True)
def no_stdin(monkeypatch):
    """transformers asks on stdin when trust_remote_code is left unset; it never may."""

    def refuse(*args, **kwargs):
        raise AssertionError("transformers prompted on stdin")

    monkeypatch.setattr(builtins, "input", refuse)


def _edit(path: Path, **fields) -> None:
    data = json.loads(path.read_text())
    data.update(fields)
    path.write_text(json.dumps(data))


def _copy(tmp_path: Path) -> tuple[Path, Path]:
    ckpt = tmp_path / "evil-ckpt"
    shutil.copytree(SHIPPED, ckpt)
    marker = tmp_path / "MARKER"
    (ckpt / "evil.py").write_text(EVIL.format(marker=str(marker)))
    return ckpt, marker


def _custom_model(ckpt: Path) -> None:
    _edit(ckpt / "config.json", model_type="ttc-evil",
          auto_map={"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"})


def _refused(ckpt: Path, marker: Path) -> str:
    with pytest.raises(BadInputError) as e:
        TransformersBackend(ckpt, device="cpu")
    message = str(e.value)
    assert e.value.exit_code == 2
    assert "pass --trust-remote-code to allow it" in message
    assert str(ckpt) in message and "\n" not in message
    assert not marker.exists()
    return message


def test_custom_model_is_refused_without_running_its_code(tmp_path):
    ckpt, marker = _copy(tmp_path)
    _custom_model(ckpt)
    message = _refused(ckpt, marker)
    assert "auto_map" in message and "ttc-evil" in message


def test_auto_map_in_tokenizer_config_alone_is_refused(tmp_path):
    ckpt, marker = _copy(tmp_path)
    _edit(ckpt / "tokenizer_config.json", auto_map={"AutoTokenizer": ["evil.EvilTokenizer", None]})
    message = _refused(ckpt, marker)
    assert "tokenizer_config.json" in message


def test_unknown_model_type_without_auto_map_is_refused(tmp_path):
    ckpt, marker = _copy(tmp_path)
    _edit(ckpt / "config.json", model_type="ttc-evil")
    assert "'ttc-evil'" in _refused(ckpt, marker)


def test_load_tokenizer_never_runs_or_asks_by_default(tmp_path):
    """Called alone (not through the backend), the loader still refuses rather than prompt."""
    ckpt, marker = _copy(tmp_path)
    _edit(ckpt / "tokenizer_config.json", tokenizer_class="EvilTokenizer",
          auto_map={"AutoTokenizer": [None, "evil.EvilTokenizer"]})
    with pytest.raises(ValueError, match="trust_remote_code"):
        load_tokenizer(ckpt)
    assert not marker.exists()


def test_shipped_checkpoint_loads_as_before(tmp_path):
    ckpt, marker = _copy(tmp_path)
    backend = TransformersBackend(ckpt, device="cpu")
    assert backend.generate(["1 2 3 4>10:"], SamplingParams(temperature=0, max_tokens=4))[0].completions
    assert not marker.exists()


def test_consent_runs_the_checkpoint_code(tmp_path, monkeypatch):
    """With trust_remote_code=True the flag reaches transformers, which imports the code."""
    import transformers.dynamic_module_utils as dyn

    # transformers copies the checkpoint's module into its modules cache and imports it
    # from there: keep both the cache and the import path inside this test.
    monkeypatch.setattr(dyn, "HF_MODULES_CACHE", str(tmp_path / "modules"))
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    ckpt, marker = _copy(tmp_path)
    _custom_model(ckpt)
    try:
        backend = TransformersBackend(ckpt, device="cpu", trust_remote_code=True)
        assert marker.exists()
        assert type(backend.model).__name__ == "EvilModel"
        g = backend.generate(["1 2 3 4>10:"], SamplingParams(temperature=0, max_tokens=4))[0]
        assert g.completions[0].completion_tokens >= 1
    finally:
        for name in set(sys.modules) - before:
            if name.startswith("transformers_modules"):
                del sys.modules[name]


@pytest.mark.parametrize("where", ["config", "tokenizer_config"])
def test_cli_solve_with_yes_on_stdin_exits_2_and_runs_nothing(tmp_path, where):
    """As a user meets it: `ttc solve --model DIR` with "y" typed on stdin."""
    import subprocess
    import sys

    ckpt, marker = _copy(tmp_path)
    if where == "config":
        _custom_model(ckpt)
    else:
        _edit(ckpt / "tokenizer_config.json", auto_map={"AutoTokenizer": ["evil.EvilTokenizer", None]})
    proc = subprocess.run(
        [sys.executable, "-m", "ttc", "solve", "--task", "countdown", "--model", str(ckpt),
         "--problem", '{"numbers": [3, 5, 7], "target": 22}', "--db", f"sqlite:///{tmp_path / 't.db'}"],
        input="y\ny\n", capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "--trust-remote-code" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not marker.exists()
