"""Benchmarks behind ``ttc bench NAME``: side-by-side measurements written under bench/results/."""

__all__: list[str] = []
