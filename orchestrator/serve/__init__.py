"""``ttc serve``: an OpenAI-compatible endpoint with test-time compute behind it.

``create_app(orc, ...)`` builds the FastAPI application (``app``); ``running`` holds the
request runner the batch runner shares, which needs no web framework, so names are
imported lazily: ``import ttc.orchestrator.serve.running`` never loads FastAPI.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        return importlib.import_module("ttc.orchestrator.serve.app").create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
