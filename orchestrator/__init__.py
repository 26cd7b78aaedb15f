"""The controller layer: Python API, CLI (`ttc`), benchmarks."""

from .api import EvalReport, GenerateResult, Orchestrator

__all__ = ["EvalReport", "GenerateResult", "Orchestrator"]
