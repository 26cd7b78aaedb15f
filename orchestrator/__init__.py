"""The controller layer: Python API, CLI (`ttc`), benchmarks."""

from .api import GenerateResult, Orchestrator

__all__ = ["GenerateResult", "Orchestrator"]
