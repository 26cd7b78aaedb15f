"""The ``stateful-arith`` task (sleep-time compute): contexts, queries, formats, verifier.

A problem is ``{"id", "context", "query"}`` (generated ones also carry ``answer``,
``kind`` and ``context_id``); the sleep phase sees only ``context``::

    from ttc.tasks.stateful_arith import STATEFUL_ARITH, notes_prompt, notes_query_prompt
    problems = STATEFUL_ARITH.make_problems(200, seed=0, split="test")   # 200 contexts x 10
    text = STATEFUL_ARITH.prompt(problems[0])          # "a=13;b=a*6;...?e:"
    verdict = STATEFUL_ARITH.verifier.verify(problems[0], completion_text)
"""

from __future__ import annotations

from ttc.backends.errors import BadInputError
from ttc.tasks.registry import register_task
from ttc.verifiers.arith import (
    ArithVerifier,
    check_context,
    evaluate_query,
    normalize_context,
    normalize_query,
)

from .formats import (
    END,
    format_notes,
    notes_prompt,
    notes_query_prompt,
    parse_answer,
    parse_notes,
    query_prompt,
)
from .generate import KINDS, SPLITS, make_problems, split_of
from .solver import derivation, notes_text, solve

__all__ = [
    "KINDS",
    "SPLITS",
    "STATEFUL_ARITH",
    "StatefulArithTask",
    "check_context",
    "derivation",
    "format_notes",
    "make_problems",
    "notes_prompt",
    "notes_query_prompt",
    "notes_text",
    "parse_answer",
    "parse_notes",
    "query_prompt",
    "solve",
    "split_of",
]

_MAX_CONTEXT = 400


class StatefulArithTask:
    """stateful-arith as a task.

    Formats: "direct" (a: derivation from the context), "notes" (b: notes from the
    context alone; the problem's ``query`` is ignored) and "with_notes" (c: answer from the
    context plus the problem's ``notes``, a notes completion or a name -> value mapping).

    Attributes:
        name: "stateful-arith".
        verifier: An :class:`ArithVerifier`.
        stop: Every completion ends with ".".
    """

    name = "stateful-arith"
    formats = ("direct", "notes", "with_notes")
    default_model = "stateful-arith"

    def __init__(self) -> None:
        self.verifier = ArithVerifier()
        self.stop: tuple[str, ...] = (END,)

    def max_tokens(self, problem: dict | None = None, fmt: str = "direct") -> int:
        """Generation limit: 15 quantities with work shown need at most ~170 characters."""
        return {"direct": 224, "notes": 256, "with_notes": 224}.get(fmt, 224)

    def make_problems(self, n: int, seed: int = 0, split: str = "test", queries: int = 10) -> list[dict]:
        """``n`` contexts x ``queries`` queries; see :func:`generate.make_problems`."""
        try:
            return make_problems(n, seed=seed, split=split, queries=queries)
        except ValueError as exc:
            raise BadInputError(str(exc)) from None

    def prompt(self, problem: dict, fmt: str = "direct") -> str:
        """The prompt of ``problem`` in format ``fmt``."""
        if fmt == "direct":
            return query_prompt(problem["context"], problem["query"])
        if fmt == "notes":
            return notes_prompt(problem["context"])
        if fmt == "with_notes":
            if "notes" not in problem:
                raise BadInputError('format "with_notes" needs the problem field "notes"')
            return notes_query_prompt(problem["context"], problem["notes"], problem["query"])
        raise BadInputError(f"unknown format {fmt!r}; valid formats: {', '.join(self.formats)}")

    def parse_problem(self, obj) -> dict:
        """Validates user JSON ``{"context": "a=7;b=a*3", "query": "b", "id"?: str}``.

        Raises:
            BadInputError: With a one-line message naming what is wrong.
        """
        if not isinstance(obj, dict):
            raise BadInputError('a stateful-arith problem is a JSON object like {"context": "a=7;b=a*3", "query": "b"}')
        unknown = set(obj) - {"id", "context", "query", "answer", "kind", "context_id", "notes"}
        if unknown:
            raise BadInputError(f"unknown field(s) in stateful-arith problem: {', '.join(sorted(map(str, unknown)))}")
        ctx, query = obj.get("context"), obj.get("query")
        if not isinstance(ctx, str) or not ctx.strip() or len(ctx) > _MAX_CONTEXT:
            raise BadInputError(f'"context" must be a non-empty string of at most {_MAX_CONTEXT} characters')
        if not isinstance(query, str) or not query.strip():
            raise BadInputError('"query" must be a string like "c", "c+a" or "if a=9,c"')
        try:
            # Evaluated, not only parsed: a value outside 0..99 is refused as soon as it
            # appears, before a chain of squares grows into a bigint of millions of bits.
            check_context(ctx)
            answer = evaluate_query(ctx, query)
        except ValueError as exc:
            raise BadInputError(str(exc)) from None
        ctx, query = normalize_context(ctx), normalize_query(query)
        pid = obj.get("id")
        if pid is None:
            pid = f"sa-{ctx}-{query}"
        elif not isinstance(pid, (str, int)) or isinstance(pid, bool):
            raise BadInputError(f'"id" must be a string, got {type(pid).__name__}')
        out = {"id": str(pid), "context": ctx, "query": query, "answer": answer}
        if "notes" in obj:
            out["notes"] = obj["notes"]
        return out

    def verify(self, problem: dict, text: str):
        """Shorthand for ``self.verifier.verify``."""
        return self.verifier.verify(problem, text)

    def canonical(self, problem: dict, text: str) -> str | None:
        """Shorthand for ``self.verifier.canonical``."""
        return self.verifier.canonical(problem, text)


STATEFUL_ARITH = StatefulArithTask()
register_task(STATEFUL_ARITH)
