"""Test doubles shared by test files: a tracer that keeps every span, and the CLI run in-process."""

from __future__ import annotations

import contextlib
import io
from contextlib import contextmanager


class RecSpan:
    """A span that keeps its attributes and candidates."""

    span_id = None

    def __init__(self, kind, name, attrs):
        self.kind, self.name, self.attrs, self.candidates = kind, name, dict(attrs), []

    def set(self, **attrs):
        self.attrs.update(attrs)

    def record_usage(self, **kwargs):
        pass

    def add_candidates(self, candidates):
        self.candidates.extend(candidates)


class RecTracer:
    """Keeps every span in the order opened."""

    trace_id = None

    def __init__(self):
        self.spans: list[RecSpan] = []

    @contextmanager
    def span(self, kind, name, **attrs):
        s = RecSpan(kind, name, attrs)
        self.spans.append(s)
        yield s

    def kinds(self, kind):
        return [s for s in self.spans if s.kind == kind]

    def strategy(self) -> RecSpan:
        return self.kinds("strategy")[0]


def run_cli(args) -> tuple[int, str, str]:
    """Runs the ``ttc`` CLI in-process; returns (exit code, stdout, stderr)."""
    from ttc.orchestrator.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(args))
        except SystemExit as exc:
            code = exc.code or 0
    return code, out.getvalue(), err.getvalue()
