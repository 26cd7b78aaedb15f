"""Sleep-time compute (Lin et al., arXiv 2504.13171): think about a context before its queries.

Sleep phase, ``S(context) -> artifacts``: a model of the ``sleep`` role (else the policy)
writes ``k`` notes for each context in one shared-prefix call (the notes being the
context's quantities worked out); the notes are combined by a vote per quantity across
the ``k`` notes, which is the model's own self-consistency (the task's solver is never
called). Where the task's model can propose queries (a format ``anticipate_prompt``),
proposed queries are answered ahead from the notes. Every token is charged, through
``call_model``, to the sleep ledger.

Test phase: a query is answered from the context plus its artifacts under the test
ledger: an anticipated answer is reused only on an exact match of the normalised query
(charged at least the query's prefill); otherwise any registered strategy runs on the
task's notes format (``with_notes``); and when there is no artifact, or the notes give no
answer, ordinary test-time compute runs (any registered strategy on the direct format).

The prompts come from the task's sleep formats (:func:`sleep_formats`): ``notes_prompt``,
``notes_query_prompt``, ``query_prompt``, optionally ``parse_notes``, ``anticipate_prompt``,
``normalize_context``, ``normalize_query``, looked up on the task object, then on its module.
The free-text form (contexts and queries from a user's JSONL, for chat models) is
:func:`free_text_session`: the same phases with plain-language prompts; anticipated
questions are reused on an exact match, or (off by default) on a word-overlap similarity,
whose false hits it counts where reference answers are given.
"""

from __future__ import annotations

import importlib
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from ttc.backends.base import Backend
from ttc.backends.errors import BadInputError
from ttc.backends.types import SamplingParams, Usage, UserInput
from ttc.core.artifacts import Artifact, artifact_key, config_hash, context_hash, model_digest
from ttc.core.budget import Ledger, Spend
from ttc.core.calls import call_model
from ttc.core.contracts import SolveContext
from ttc.core.tracing import NullTracer, Tracer
from ttc.core.types import Result

from .registry import SCORE_FREE_STRATEGIES, check_test_strategy, get_strategy

__all__ = ["SCORE_FREE_STRATEGIES", "FreeTextRecord", "SleepAnswer", "SleepConfig", "SleepFormats", "answer_query",
           "check_test_strategy", "combine_notes",
           "free_text_session", "is_counterfactual", "precompute_notes", "sleep_formats", "spend_delta", "vote"]

_ENTRY = re.compile(r"^\s*([A-Za-z_]\w*)\s*=.*?(-?\d+)\s*$")
_COUNTERFACTUAL = re.compile(r"^\s*if\b", re.IGNORECASE)


class SleepConfig(UserInput):
    """How the sleep phase works; its hash is part of every artifact's key.

    Attributes:
        notes: Parallel notes per context (``k``), combined by a vote per quantity.
        temperature, seed: Sampling of the notes.
        max_tokens: Tokens per note (None: the task's limit for its ``notes`` format).
        combine: ``majority`` (vote per quantity) or ``first`` (the first readable note).
        anticipate: Queries to propose and answer ahead (used only where the task has an
            ``anticipate_prompt`` format).
        version: Bumped when the sleep phase changes meaning, so old artifacts key apart.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    notes: int = Field(5, ge=1, le=64)
    temperature: float = Field(0.7, ge=0)
    seed: int = Field(0, ge=0)
    max_tokens: int | None = Field(None, ge=1)
    combine: Literal["majority", "first"] = "majority"
    anticipate: int = Field(0, ge=0, le=64)
    version: int = 1

    def key_fields(self, task: str) -> dict[str, Any]:
        """What the artifact key hashes: this configuration and the task's name."""
        return {"task": task, **self.model_dump()}


@dataclass(frozen=True)
class SleepFormats:
    """A task's prompts for sleep time (see the module docstring)."""

    notes_prompt: Callable[[str], str]
    notes_query_prompt: Callable[..., str]
    query_prompt: Callable[[str, str], str]
    parse_notes: Callable[[str], dict[str, int]]
    normalize_context: Callable[[str], str]
    normalize_query: Callable[[str], str]
    anticipate_prompt: Callable[[str], str] | None = None
    parse_answer: Callable[[str], Any] | None = None
    validate_context: Callable[[str], Any] | None = None


def _default_parse_notes(text: str) -> dict[str, int]:
    # "a=7,b=7*3=21" or one "name = ... value" per line: each entry's value is its last integer.
    out: dict[str, int] = {}
    for part in re.split(r"[,;\n]", str(text).strip().rstrip(".")):
        m = _ENTRY.match(part)
        if m and m.group(1) not in out:
            out[m.group(1)] = int(m.group(2))
    return out


def sleep_formats(task: Any) -> SleepFormats:
    """The sleep-time formats of ``task``: attributes of the task, else of the module of
    its class (or of a base class) or that module's ``formats``.

    Raises:
        BadInputError: The task has no ``notes_prompt`` / ``notes_query_prompt`` / ``query_prompt``.
    """
    sources: list[Any] = [task]
    # The modules of the task's class and its bases: a subclass keeps its base's formats.
    for cls in type(task).__mro__[:-1]:
        for name in (cls.__module__, cls.__module__ + ".formats"):
            try:
                sources.append(importlib.import_module(name))
            except ImportError:
                pass

    def find(attr: str) -> Any:
        return next((getattr(s, attr) for s in sources if callable(getattr(s, attr, None))), None)

    required = {a: find(a) for a in ("notes_prompt", "notes_query_prompt", "query_prompt")}
    if any(v is None for v in required.values()):
        raise BadInputError(f"task {getattr(task, 'name', '?')!r} has no sleep-time formats "
                            "(notes_prompt, notes_query_prompt, query_prompt); try --task stateful-arith")
    squash = lambda s: re.sub(r"\s+", " ", str(s)).strip()  # noqa: E731
    return SleepFormats(**required, parse_notes=find("parse_notes") or _default_parse_notes,
                        normalize_context=find("normalize_context") or squash,
                        normalize_query=find("normalize_query") or squash,
                        anticipate_prompt=find("anticipate_prompt"), parse_answer=find("parse_answer"),
                        validate_context=find("check_context") or find("parse_context"))


def is_counterfactual(query: str) -> bool:
    """A query that posits a changed value (``if a=9,c``): notes of the context as it is
    cannot answer it by lookup."""
    return bool(_COUNTERFACTUAL.match(str(query)))


def combine_notes(parsed: Sequence[dict[str, int]], method: str = "majority") -> dict[str, int]:
    """One set of values from ``k`` notes: per quantity the most common value across the
    notes that give it (ties: the earliest note's), or the first non-empty note's."""
    if method == "first":
        return dict(next((p for p in parsed if p), {}))
    names: list[str] = []
    for p in parsed:
        names.extend(n for n in p if n not in names)
    out = {}
    for name in names:
        values = [p[name] for p in parsed if name in p]
        counts = Counter(values)
        top = max(counts.values())
        out[name] = next(v for v in values if counts[v] == top)
    return dict(sorted(out.items()))


def vote(answers: Sequence[Any]) -> Any:
    """Self-consistency over parsed answers (None: unparsed): the most common, ties to the
    one that reached the top count first; None when nothing parsed (as ``majority_vote``)."""
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None
    top = max(counts.values())
    return next(a for a in answers if a is not None and counts[a] == top)


def precompute_notes(task: Any, contexts: Sequence[str], backend: Backend, ledger: Ledger,
                     tracer: Tracer | None = None, config: SleepConfig | None = None) -> list[Artifact | None]:
    """The sleep phase over many contexts in one shared-prefix call (``k`` notes each).

    Args:
        task: The task (its sleep formats, stop strings and token limits).
        contexts: Context texts (validated by the caller).
        backend: The sleep model.
        ledger: The sleep budget; every token is charged here.
        tracer: Where spans go.
        config: The sleep configuration (default: ``SleepConfig()``).

    Returns:
        One Artifact per context (``trace_id`` unset), None where the budget held no call;
        where the budget held fewer notes than ``config.notes``, the artifact's key and
        ``config`` name the number written.
    """
    config, tracer = config or SleepConfig(), tracer or NullTracer()
    fm = sleep_formats(task)
    digest, cfg = model_digest(backend.info), config.key_fields(task.name)
    cfg_hash = config_hash(cfg)
    with tracer.span("strategy", "sleeptime.precompute", **{"ttc.contexts": len(contexts),
                                                             "ttc.notes": config.notes}) as span:
        params = SamplingParams(n=config.notes, temperature=config.temperature, seed=config.seed,
                                max_tokens=config.max_tokens or task.max_tokens(None, "notes"), stop=tuple(task.stop))
        call = call_model(backend, [fm.notes_prompt(c) for c in contexts], params, ledger, tracer, name="sleep notes")
        out: list[Artifact | None] = [None] * len(contexts)
        for i, (context, gen) in enumerate(zip(contexts, call.generations)):
            texts = [c.text for c in gen.completions]
            notes = combine_notes([fm.parse_notes(t) for t in texts], config.combine)
            # The budget may shrink the call to fewer notes than configured: such an
            # artifact is keyed by the notes actually written, so the full configuration
            # never finds (and reuses) a smaller one.
            a_cfg, a_hash = cfg, cfg_hash
            if len(texts) != config.notes:
                a_cfg = config.model_copy(update={"notes": len(texts)}).key_fields(task.name)
                a_hash = config_hash(a_cfg)
            out[i] = Artifact(key=artifact_key(fm.normalize_context(context), digest, a_hash), task=task.name,
                              context_hash=context_hash(fm.normalize_context(context)), checkpoint_digest=digest,
                              config_hash=a_hash, model=backend.name, notes=notes, notes_text=texts,
                              notes_tokens=[c.completion_tokens for c in gen.completions],
                              config=a_cfg, usage=gen.usage)
        if config.anticipate and fm.anticipate_prompt is not None:
            _anticipate(task, fm, contexts, out, backend, ledger, tracer, config)
        span.set(**{"ttc.written": sum(a is not None for a in out), "ttc.skipped": call.skipped})
    return out


def _anticipate(task: Any, fm: SleepFormats, contexts: Sequence[str], arts: list[Artifact | None], backend: Backend,
                ledger: Ledger, tracer: Tracer, config: SleepConfig) -> None:
    # Skill (d): propose queries, then answer each from the notes (self-consistency over
    # a few samples), all charged to the sleep ledger and to each context's artifact.
    todo = [(i, c) for i, c in enumerate(contexts) if arts[i] is not None]
    params = SamplingParams(n=config.anticipate, temperature=config.temperature, seed=config.seed + 1,
                            max_tokens=32, stop=("\n",))
    call = call_model(backend, [fm.anticipate_prompt(c) for _, c in todo], params, ledger, tracer,
                      name="sleep anticipate")
    for (i, context), gen in zip(todo, call.generations):
        art = arts[i]
        queries = list(dict.fromkeys(fm.normalize_query(c.text) for c in gen.completions if c.text.strip()))
        usage = gen.usage
        if queries:
            solve = SamplingParams(n=3, temperature=config.temperature, seed=config.seed + 2,
                                   max_tokens=task.max_tokens(None, "with_notes"), stop=tuple(task.stop))
            prompts = [fm.notes_query_prompt(context, art.notes, q) for q in queries]
            answers = call_model(backend, prompts, solve, ledger, tracer, name="sleep solve ahead")
            parse = fm.parse_answer or (lambda t: (re.findall(r"-?\d+", t) or [None])[-1])
            for q, g in zip(queries, answers.generations):
                best = vote([parse(c.text) for c in g.completions])
                if best is not None:
                    art.anticipated[q] = str(best)
                usage = usage + g.usage
        arts[i] = art.model_copy(update={"usage": art.usage + usage})


class SleepAnswer(BaseModel):
    """A query answered in the test phase.

    Attributes:
        answer, correct: The chosen answer and the verifier's verdict on it.
        route: ``anticipated`` (exact-match reuse), ``notes`` (a strategy on context +
            notes), ``fallback`` (ordinary test-time compute) or ``none`` (no budget).
        artifact_hit: Stored artifacts were found and used.
        exact_hit: An anticipated answer was reused.
        usage: Test tokens charged for this query.
        result: The strategy's Result on the notes or fallback route.
    """

    answer: str | None = None
    correct: bool | None = None
    route: Literal["anticipated", "notes", "fallback", "none"] = "none"
    artifact_hit: bool = False
    exact_hit: bool = False
    usage: Usage = Field(default_factory=Usage)
    result: Result | None = None


def spend_delta(before: Spend, after: Spend) -> Usage:
    """Tokens and calls a ledger charged between two snapshots."""
    return Usage(prompt_tokens=after.prompt_tokens - before.prompt_tokens,
                 completion_tokens=after.completion_tokens - before.completion_tokens, calls=after.calls - before.calls)


def answer_query(ctx: SolveContext, artifact: Artifact | None, *, strategy: str = "majority_vote",
                 params: dict[str, Any] | None = None, fallback: str = "majority_vote",
                 fallback_params: dict[str, Any] | None = None, notes_format: str = "with_notes",
                 counterfactuals: Literal["notes", "fallback"] = "notes") -> SleepAnswer:
    """The test phase for one problem (``{"id", "context", "query"}``) under ``ctx.ledger``.

    Args:
        ctx: The solve context; its ledger is the test budget.
        artifact: The context's artifacts (None: none stored, so ordinary test-time compute).
        strategy, params: The registered strategy run on context + notes (format ``notes_format``);
            one sample (``n=1``) unless ``params`` say otherwise.
        fallback, fallback_params: The registered strategy run on the direct format when
            nothing helps (one sample unless said otherwise).
        counterfactuals: ``notes`` sends counterfactual queries through the notes like any
            other (the model re-derives what the change affects); ``fallback`` derives
            them from the context alone.

    Raises:
        BadInputError: ``strategy`` or ``fallback`` selects by the score of a ``graded``
            verifier (see :func:`check_test_strategy`).
    """
    check_test_strategy(ctx.verifier, strategy, "strategy")
    check_test_strategy(ctx.verifier, fallback, "fallback")
    problem = ctx.problem
    before = ctx.ledger.spent.model_copy()
    out = SleepAnswer(artifact_hit=artifact is not None)
    with ctx.tracer.span("strategy", "sleeptime.ask", **{"ttc.artifact": artifact.key if artifact else None}) as span:
        query = str(problem.get("query", ""))
        fm = sleep_formats(ctx.task)
        if artifact is not None and artifact.anticipated:
            reused = artifact.anticipated.get(fm.normalize_query(query))
            if reused is not None and _charge_prefill(ctx.ledger, ctx.policy, ctx.tracer, fm.normalize_query(query)):
                verdict = ctx.verifier.verify(problem, reused, ctx)
                out = out.model_copy(update={"answer": verdict.answer or reused, "correct": verdict.correct,
                                             "route": "anticipated", "exact_hit": True})
        use_notes = (artifact is not None and artifact.notes and notes_format in getattr(ctx.task, "formats", ())
                     and not (counterfactuals == "fallback" and is_counterfactual(query)))
        if out.route == "none" and use_notes:
            sub = replace(ctx, problem={**problem, "notes": dict(artifact.notes)})
            result = _run(sub, strategy, {"fmt": notes_format, **(params or {})})
            if result.answer is not None:
                out = out.model_copy(update={"answer": result.answer, "correct": result.correct, "route": "notes",
                                             "result": result})
        if out.route == "none" and not ctx.ledger.exhausted:
            result = _run(ctx, fallback, {"fmt": "direct", **(fallback_params or {})})
            out = out.model_copy(update={"answer": result.answer, "correct": result.correct,
                                         "route": "fallback" if result.answer is not None or result.candidates
                                         else "none", "result": result})
        out = out.model_copy(update={"usage": spend_delta(before, ctx.ledger.spent)})
        span.set(**{"ttc.route": out.route, "ttc.exact_hit": out.exact_hit, "ttc.answer": out.answer,
                    "ttc.correct": out.correct, "ttc.test_tokens": out.usage.total_tokens})
    return out


def _run(ctx: SolveContext, name: str, params: dict[str, Any]) -> Result:
    spec = get_strategy(name)
    if "n" in spec.parameters() and "n" not in params:
        params = {**params, "n": 1}  # one sample unless asked: the test phase is meant to be cheap
    if "fmt" not in spec.parameters():
        params = {k: v for k, v in params.items() if k != "fmt"}
    spec.check_params(params)
    return spec(ctx, **params)


def _charge_prefill(ledger: Ledger, backend: Backend, tracer: Tracer, query: str) -> bool:
    # A reused answer is not free: the query still has to be read, so it is charged at
    # least its own prefill (which also keeps every token ratio finite).
    tokens = max(1, backend.count_tokens(query))
    held = ledger.reserve(tokens, 1, 1)
    if held is None:
        return False
    ledger.settle(held, Usage(prompt_tokens=tokens, calls=0), samples=0)
    with tracer.span("llm", "anticipated answer reused", **{"ttc.prefill_only": True}) as span:
        span.record_usage(input_tokens=tokens, model=backend.name, finish_reason="reused")
    return True


# ---------------------------------------------------------------------- free-text form

FREE_SLEEP_PROMPT = ("Read the context and write notes for questions that will come later: work out every "
                     "quantity and fact it implies, then list likely questions with their answers, one per line, "
                     "as 'Q: <question> A: <answer>'.\n\nContext:\n{context}\n\nNotes:\n")
FREE_ASK_PROMPT = "Context:\n{context}\n\nNotes:\n{notes}\n\nQuestion: {query}\nAnswer briefly.\nAnswer:"
FREE_DERIVE_PROMPT = "Context:\n{context}\n\nQuestion: {query}\nThink step by step, then answer.\nAnswer:"
_QA = re.compile(r"^\s*Q:\s*(.+?)\s+A:\s*(.+?)\s*$", re.MULTILINE)


class FreeTextRecord(UserInput):
    """One line of the free-text JSONL: a context, its queries, optionally reference answers."""

    model_config = ConfigDict(extra="forbid")

    context: str = Field(min_length=1)
    queries: list[str] = Field(min_length=1)
    answers: list[str] | None = None


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


def _norm(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def free_text_session(records: Sequence[FreeTextRecord], backend: Backend, *, sleep_ledger: Ledger,
                      test_budget: Callable[[], Ledger], tracer: Tracer | None = None,
                      similarity: float | None = None, max_tokens: int = 256, seed: int = 0) -> dict[str, Any]:
    """The free-text form: one sleep call over all contexts, then each query answered.

    Args:
        records: Contexts with their queries (``answers``, when given, only score false hits).
        backend: A chat model (prompts are plain text; no chat template is applied here).
        sleep_ledger: The sleep budget.
        test_budget: Makes each query's test ledger.
        similarity: Reuse an anticipated answer whose question shares at least this
            fraction of words (Jaccard) with the query; None (the default): exact match only.
        max_tokens, seed: Sampling of notes and answers (greedy).

    Returns:
        ``answers`` (one per query: context index, query, answer, route, match, test
        tokens), ``sleep_tokens``, ``similar_hits``, ``false_hits`` and ``false_hit_rate``.
    """
    tracer = tracer or NullTracer()
    greedy = SamplingParams(n=1, temperature=0.0, seed=seed, max_tokens=max_tokens)
    call = call_model(backend, [FREE_SLEEP_PROMPT.format(context=r.context) for r in records], greedy,
                      sleep_ledger, tracer, name="sleep notes (free text)")
    notes = [g.completions[0].text for g in call.generations] + [""] * call.skipped
    rows, similar, false_hits = [], 0, 0
    for i, (rec, note) in enumerate(zip(records, notes)):
        pairs = {_norm(q): a for q, a in _QA.findall(note)}
        for j, query in enumerate(rec.queries):
            ledger, match, route, answer = test_budget(), None, "none", None
            reused = pairs.get(_norm(query))
            if reused is not None:
                match = "exact"
            elif similarity is not None and pairs:
                best = max(pairs, key=lambda q: _jaccard(_words(q), _words(query)))
                if _jaccard(_words(best), _words(query)) >= similarity:
                    reused, match = pairs[best], "similar"
            if reused is not None and _charge_prefill(ledger, backend, tracer, query):
                answer, route = reused, "anticipated"
                if match == "similar":
                    similar += 1
                    ref = rec.answers[j] if rec.answers and j < len(rec.answers) else None
                    false_hits += int(ref is not None and _norm(ref) != _norm(reused))
            if answer is None and note.strip():
                answer, route = _free_call(backend, FREE_ASK_PROMPT.format(context=rec.context, notes=note,
                                                                           query=query), greedy, ledger, tracer), "notes"
            if not answer:
                answer, route = _free_call(backend, FREE_DERIVE_PROMPT.format(context=rec.context, query=query),
                                           greedy, ledger, tracer), "fallback"
            rows.append({"context": i, "query": query, "answer": answer or None, "route": route, "match": match,
                         "test_tokens": ledger.spent.tokens})
    return {"answers": rows, "sleep_tokens": sleep_ledger.spent.tokens, "similarity": similarity,
            "similar_hits": similar, "false_hits": false_hits,
            "false_hit_rate": false_hits / similar if similar else None}


def _jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a | b else 0.0


def _free_call(backend: Backend, prompt: str, params: SamplingParams, ledger: Ledger, tracer: Tracer) -> str | None:
    call = call_model(backend, [prompt], params, ledger, tracer, name="ask (free text)")
    return call.generations[0].completions[0].text.strip() if call.generations else None
