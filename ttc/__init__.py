"""ttc: an agentic test-time compute orchestrator.

The public face of the package; the layers live in subpackages (``ttc.orchestrator``,
``ttc.strategies``, ``ttc.tasks``, ``ttc.verifiers``, ``ttc.core``, ``ttc.backends``,
``ttc.store``). Names are imported lazily so that ``import ttc`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Public name -> the module that defines it.
_EXPORTS = {
    "Orchestrator": "ttc.orchestrator.api",
    "GenerateResult": "ttc.orchestrator.api",
    "EvalReport": "ttc.orchestrator.api",
    "Budget": "ttc.core.budget",
    "Ledger": "ttc.core.budget",
    "Result": "ttc.core.types",
    "Candidate": "ttc.core.types",
    "Verdict": "ttc.core.types",
    "SamplingParams": "ttc.backends.types",
    "Usage": "ttc.backends.types",
    "BadInputError": "ttc.backends.errors",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'ttc' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
