"""The guard that keeps a checkpoint from running its own Python unless the user allows it.

A checkpoint is untrusted (DESIGN.md "Trust"): transformers imports Python shipped inside
it when ``config.json`` or ``tokenizer_config.json`` carries an ``auto_map``, or when its
``model_type`` is not one transformers knows. The guard reads those JSON files alone, so
it decides before anything of the checkpoint is imported. It lives apart from the
in-process backend because the OpenAI-compatible backend applies the same check to a
local tokenizer directory, and neither needs torch for it.
"""

from __future__ import annotations

import json
from pathlib import Path

from .errors import BadInputError, CheckpointError

__all__ = ["refuse_remote_code"]


def refuse_remote_code(path: Path) -> None:
    """Raises unless loading ``path`` would run only code that ships with transformers.

    Read from the JSON files alone, before anything of the checkpoint is imported: an
    ``auto_map`` in ``config.json`` or ``tokenizer_config.json``, or a ``model_type``
    transformers does not know, means loading would import Python from the checkpoint.

    Raises:
        BadInputError: The checkpoint wants to run its own code.
        CheckpointError: One of those files is not a JSON object.
    """
    # Imported here: the registry of built-in model types is the only part of
    # transformers the guard needs, and importing the package is slow.
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    reasons = []
    for name in ("config.json", "tokenizer_config.json"):
        f = path / name
        if not f.is_file():
            continue
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"cannot load checkpoint {path}: {name} is not valid JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise CheckpointError(f"cannot load checkpoint {path}: {name} is not a JSON object")
        if data.get("auto_map"):
            reasons.append(f"{name} has an auto_map")
        model_type = data.get("model_type") if name == "config.json" else None
        if model_type is not None and (not isinstance(model_type, str) or model_type not in CONFIG_MAPPING):
            reasons.append(f"model_type {model_type!r} is not built into transformers")
    if reasons:
        raise BadInputError(
            f"checkpoint {path} would run its own code ({'; '.join(reasons)}): pass --trust-remote-code to allow it"
        )
