"""TrimR: verifier-based thinking compression while streaming (arXiv 2505.17155).

A solve option, not a strategy: with ``TrimR`` on, every ``call_model`` of the policy
model, whatever strategy makes it, becomes ``n`` streams (``stream_model``) each watched
by a :class:`Monitor`. The monitor splits the chain of thought into thoughts; a thought
verifier (a :class:`ThoughtVerifier`; the core imports none, the orchestrator hands one
in) says on a worker thread, in batches, whether each thought states an answer and
whether it is equivalent to the previous one, while decoding goes on. The rules:

- overthinking: ``agree`` (M) consecutive equivalent answer pairs -> inject the mild
  conclusion prompt (paper: M = 2, i.e. three agreeing answers);
- underthinking: past ``ratio`` (R) x max_tokens generated or ``max_thoughts`` (N)
  thoughts without that convergence -> inject the firm conclusion prompt (paper: a token
  ratio and a thought count; its values are per model: ttc's R = 0.5, N = 16 are ours);
- repetition: the same ``repeat_window`` token ids seen ``repeat_count`` times (a
  rolling hash) -> inject the firm prompt, or stop if thinking already ended (ttc's
  64 / 3: the paper names the mechanism, not its constants).

Decisions act at the next thought boundary (``at_boundary``): the model was trained to
conclude after a whole thought. Injected tokens are prefilled prompt tokens: billed, and
held by a reservation taken before the injection (``BudgetedStream.inject``).
"""

from __future__ import annotations

import contextvars
import queue
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, runtime_checkable

from ttc.backends.base import Backend
from ttc.backends.types import Completion, Generation, SamplingParams, Usage

from ._trimr_monitor import DEFAULT_MARKERS, Decision, RepetitionDetector, Rules, Segmenter
from .budget import Ledger
from .calls import _ACTIVE_TRIMR, CallResult
from .cost import Cost, CostModel
from .streaming import BudgetedStream, stream_model
from .tracing import NullTracer, Tracer

__all__ = ["TrimR", "ThoughtVerifier", "CheckContext", "Checker", "Monitor", "TrimRSession", "Decision",
           "DEFAULT_MARKERS", "RULES", "run_monitored"]

#: The rules TrimR knows; ``first_answer`` is a baseline (stop at the first stated answer).
RULES = ("over", "under", "repetition", "first_answer")


@dataclass(frozen=True)
class TrimR:
    """TrimR's settings (see the module docstring for the rules and their sources).

    Format fields left None (``markers``, ``per_line``, ``conclude``, ``mild_prompt``,
    ``firm_prompt``) are filled by the orchestrator from the model's task format.

    Attributes:
        verifier: ``"exact"`` (canonical answers), ``"judge"`` (the ``judge`` role's model)
            or a :class:`ThoughtVerifier`.
        rules: Rules in force, among ``over``, ``under``, ``repetition``, ``first_answer``.
        agree: M, equivalent consecutive answer pairs that make overthinking.
        ratio: R, share of max_tokens after which a non-converged chain is cut.
        max_thoughts: N, thoughts after which a non-converged chain is cut.
        repeat_window, repeat_count: The repetition detector's span and count.
        truncate_tokens: Baseline: conclude once this many tokens were generated.
        at_boundary: Apply a decision at the end of the thought being written.
        asynchronous: Check on a worker thread (False: inline, for reproducible tests).
        batch: Most thoughts one verifier call checks.
    """

    verifier: Any = "exact"
    rules: tuple[str, ...] = ("over", "under", "repetition")
    agree: int = 2
    ratio: float = 0.5
    max_thoughts: int = 16
    repeat_window: int = 64
    repeat_count: int = 3
    markers: tuple[str, ...] | None = None
    per_line: bool | None = None
    conclude: str | None = None
    mild_prompt: str | None = None
    firm_prompt: str | None = None
    truncate_tokens: int | None = None
    at_boundary: bool = True
    asynchronous: bool = True
    batch: int = 64

    def __post_init__(self) -> None:
        from ttc.backends.errors import BadInputError

        bad = sorted(set(self.rules) - set(RULES))
        if bad:
            raise BadInputError(f"unknown TrimR rule(s) {', '.join(bad)}: use {', '.join(RULES)}")
        if self.agree < 1 or self.max_thoughts < 1 or not 0 < self.ratio <= 1:
            raise BadInputError("TrimR needs agree >= 1, max_thoughts >= 1 and 0 < ratio <= 1")

    def with_format(self, **fmt: Any) -> "TrimR":
        """These settings with the format fields that are None taken from ``fmt``."""
        return replace(self, **{k: v for k, v in fmt.items() if getattr(self, k, None) is None})

    def describe(self) -> dict[str, Any]:
        """JSON-able settings (for run records)."""
        v = self.verifier if isinstance(self.verifier, str) else type(self.verifier).__name__
        return {"verifier": v, "rules": list(self.rules), "agree": self.agree, "ratio": self.ratio,
                "max_thoughts": self.max_thoughts, "repeat_window": self.repeat_window,
                "repeat_count": self.repeat_count, "truncate_tokens": self.truncate_tokens}


@dataclass
class CheckContext:
    """What a thought verifier may charge: a judge reserves here before it calls."""

    ledger: Ledger
    tracer: Tracer = field(default_factory=NullTracer)


@runtime_checkable
class ThoughtVerifier(Protocol):
    """Answers TrimR's two questions, never whether an answer is right (that is an oracle)."""

    def answers(self, problem: dict, thoughts: Sequence[str], ctx: CheckContext) -> list[str | None]:
        """Per thought: the answer it states (any key ``equivalent`` understands), or None."""
        ...

    def equivalent(self, problem: dict, pairs: Sequence[tuple[str, str]], ctx: CheckContext) -> list[bool]:
        """Per pair of answers (as ``answers`` gave them): whether they are the same answer."""
        ...


class Checker:
    """Runs the thought verifier for many monitors, on a worker thread, in batches.

    One checker serves every monitor of a session (or of a bench's batch): thoughts that
    queued up while a check ran are checked together, one verifier call per problem.
    """

    def __init__(self, verifier: ThoughtVerifier, ctx: CheckContext, batch: int = 64, asynchronous: bool = True):
        self.verifier, self.ctx, self.batch = verifier, ctx, batch
        self.error: BaseException | None = None
        self.checks = 0
        self.calls = 0
        self._q: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        if asynchronous:
            # A copied context, so that check spans nest under the span open now.
            run = contextvars.copy_context().run
            self._thread = threading.Thread(target=run, args=(self._loop,), name="trimr-checker", daemon=True)
            self._thread.start()

    def submit(self, mon: "Monitor", index: int, thought: str) -> None:
        if self._thread is None:
            self._safe_process([(mon, index, thought)])
        else:
            self._q.put((mon, index, thought))

    def close(self) -> None:
        if self._thread is not None:
            self._q.put(None)
            self._thread.join()
            self._thread = None

    def _loop(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            items = [item]
            stop = False
            while len(items) < self.batch:  # batch what queued up while the last check ran
                try:
                    nxt = self._q.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                items.append(nxt)
            self._safe_process(items)
            if stop:
                return

    def _safe_process(self, items: list[tuple["Monitor", int, str]]) -> None:
        # Whatever goes wrong in a check (a verifier breaking its contract included) is
        # recorded and the worker lives on: decoding goes on, untrimmed by that check.
        try:
            self._process(items)
        except Exception as exc:
            self.error = exc

    def _process(self, items: list[tuple["Monitor", int, str]]) -> None:
        items = [it for it in items if not it[0].finished]
        groups: dict[int, list[tuple[Monitor, int, str]]] = {}
        for it in items:
            groups.setdefault(id(it[0].problem), []).append(it)
        for group in groups.values():
            self._check(group)

    def _check(self, items: list[tuple["Monitor", int, str]]) -> None:
        problem = items[0][0].problem
        with self.ctx.tracer.span("trimr", "check", **{"ttc.trimr.thoughts": len(items)}) as span:
            try:
                answers = list(self.verifier.answers(problem, [t for _, _, t in items], self.ctx))
                last: dict[int, str | None] = {}
                pairs: list[tuple[str, str]] = []
                for (mon, _, _), a in zip(items, answers):
                    prev = last.get(id(mon), mon.rules.last)
                    if a is not None and prev is not None:
                        pairs.append((prev, a))
                    if a is not None:
                        last[id(mon)] = a
                verdicts = list(self.verifier.equivalent(problem, pairs, self.ctx)) if pairs else []
                if len(answers) != len(items) or len(verdicts) != len(pairs):
                    raise ValueError(f"thought verifier {type(self.verifier).__name__} gave {len(answers)} answers "
                                     f"for {len(items)} thoughts and {len(verdicts)} verdicts for {len(pairs)} pairs")
                eq = iter(verdicts)
            except Exception as exc:  # a failing verifier must not kill decoding: record it, trim nothing
                self.error = exc
                span.set(**{"ttc.trimr.error": f"{type(exc).__name__}: {exc}"[:300]})
                return
            self.checks += len(items)
            self.calls += 1
            span.set(**{"ttc.trimr.answers": sum(a is not None for a in answers), "ttc.trimr.pairs": len(pairs)})
            for (mon, idx, _), a in zip(items, answers):
                with mon.lock:
                    e = next(eq) if a is not None and mon.rules.last is not None else None
                    mon.rules.on_answer(idx, a, e)
                    mon.on_checked(idx, a)


class Monitor:
    """Watches one stream: fed deltas, returns what to do (see :class:`TrimR`).

    Args:
        cfg: Settings (format fields filled).
        checker: The verifier runner shared by the session's monitors.
        max_tokens: The stream's generation limit.
        problem: The problem the stream answers (what the verifier reads thoughts against).
        tracer: Where thought and decision spans go.
    """

    def __init__(self, cfg: TrimR, checker: Checker, max_tokens: int, problem: dict,
                 tracer: Tracer | None = None):
        self.cfg, self.checker, self.tracer, self.problem = cfg, checker, tracer or NullTracer(), problem
        self.lock = threading.Lock()
        self.seg = Segmenter(cfg.markers or DEFAULT_MARKERS, per_line=bool(cfg.per_line), conclude=cfg.conclude)
        self.rep = RepetitionDetector(cfg.repeat_window, cfg.repeat_count) if "repetition" in cfg.rules else None
        self.rules = Rules(frozenset(cfg.rules), cfg.agree, cfg.ratio, cfg.max_thoughts, max_tokens)
        self.tokens = 0
        self.text = ""
        self.decision: Decision | None = None   # the decision applied
        self.decided_at: int | None = None      # tokens generated when it was applied
        self.finished = False
        self._pending: Decision | None = None
        self._checked_at: dict[int, int] = {}   # thought index -> tokens when it was submitted
        self.lags: list[int] = []               # tokens decoded while each check ran

    @property
    def thinking(self) -> bool:
        return self.decision is None and not self.seg.concluded and not self.finished

    def on_checked(self, index: int, answer: str | None) -> None:
        """Called by the checker (under ``lock``) with thought ``index``'s answer."""
        self.lags.append(self.tokens - self._checked_at.get(index, self.tokens))
        if self._pending is not None or self.decision is not None:
            return
        if "first_answer" in self.cfg.rules and answer is not None:
            self._pending = Decision("first_answer", "stop", "", index + 1)
        elif self.rules.over():
            self._pending = Decision("over", "inject", self.cfg.mild_prompt or "", index + 1)

    def feed(self, delta: str, ids: Sequence[int] | None = None) -> Decision | None:
        """Takes a delta (and its token ids, if known); returns a decision to apply now, or None."""
        self.text += delta
        if self.decision is not None:
            # Thinking is over: only a loop in the conclusion is still cut.
            if self.rep is not None and self.rep.feed(self._ids(delta, ids)):
                return self._apply(Decision("repetition", "stop", "", len(self.seg.thoughts)))
            return None
        self.tokens += len(ids) if ids is not None else 1
        looped = self.rep is not None and self.rep.feed(self._ids(delta, ids))
        for thought in self.seg.feed(delta):
            index = len(self.seg.thoughts) - 1
            with self.tracer.span("trimr", "thought", **{"ttc.trimr.index": index, "ttc.trimr.tokens": self.tokens,
                                                         "ttc.trimr.text": thought[:200]}):
                pass
            self._checked_at[index] = self.tokens
            self.checker.submit(self, index, thought)
        if self.seg.concluded:
            return None  # the model concluded by itself
        if looped:
            return self._apply(Decision("repetition", "inject", self.cfg.firm_prompt or "", len(self.seg.thoughts)))
        with self.lock:
            d, self._pending = self._pending, None
            if d is None and self.rules.under(self.tokens, len(self.seg.thoughts)):
                d = Decision("under", "inject", self.cfg.firm_prompt or "", len(self.seg.thoughts))
        if d is None and self.cfg.truncate_tokens is not None and self.tokens >= self.cfg.truncate_tokens:
            return self._apply(Decision("truncate", "inject", self.cfg.mild_prompt or "", len(self.seg.thoughts)))
        if d is not None and d.action == "inject" and self.cfg.at_boundary and self.seg._line:
            with self.lock:  # mid-thought: hold it until the thought ends
                self._pending = self._pending or d
            return None
        return self._apply(d) if d is not None else None

    def _apply(self, d: Decision) -> Decision:
        if d.action == "inject" and d.text and self.text and not self.text.endswith("\n") \
                and not d.text.startswith("\n"):
            d = replace(d, text="\n" + d.text)
        self.decision, self.decided_at = d, self.tokens
        with self.tracer.span("trimr", "decision", **{"ttc.trimr.rule": d.rule, "ttc.trimr.action": d.action,
                                                      "ttc.trimr.tokens": self.tokens,
                                                      "ttc.trimr.thoughts": len(self.seg.thoughts)}):
            pass
        return d

    @staticmethod
    def _ids(delta: str, ids: Sequence[int] | None) -> Sequence[int]:
        # Without token ids (a remote server's text deltas) each character stands for one.
        return ids if ids is not None else [ord(c) for c in delta]

    def finish(self) -> None:
        """At the end of the stream: checks of the last thought are no longer wanted."""
        self.finished = True


def run_monitored(stream: BudgetedStream, monitor: Monitor) -> str:
    """Reads a budgeted stream to its end under a monitor, applying its decisions."""
    try:
        for delta in stream:
            d = monitor.feed(delta, None)
            if d is None:
                continue
            if d.action == "stop" or not d.text or not stream.inject(d.text):
                stream.close()
                break
    finally:
        monitor.finish()
        stream.close()
    return stream.text


class TrimRSession:
    """TrimR for one solve: routes the policy model's calls through monitored streams.

    Args:
        cfg: Settings with the format fields filled.
        verifier: The thought verifier.
        problem: The problem being solved.
        ledger, tracer: The solve's.
        policy: The backend whose calls are monitored.
    """

    def __init__(self, cfg: TrimR, verifier: ThoughtVerifier, problem: dict, ledger: Ledger, tracer: Tracer,
                 policy: Backend):
        self.cfg, self.verifier, self.problem = cfg, verifier, problem
        self.ledger, self.tracer, self.policy = ledger, tracer, policy
        self.monitors: list[Monitor] = []
        # The checks charge a child ledger: the solve's budget holds them, and what they
        # spent can be told apart from the policy's calls (verifier_usage).
        self.check_ledger = ledger.child()
        self.checker = Checker(verifier, CheckContext(self.check_ledger, tracer), cfg.batch, cfg.asynchronous)

    @contextmanager
    def active(self) -> Iterator["TrimRSession"]:
        """Within this block, ``call_model`` on the policy model goes through TrimR."""
        token = _ACTIVE_TRIMR.set(self)
        try:
            yield self
        finally:
            _ACTIVE_TRIMR.reset(token)
            self.checker.close()

    def applies(self, backend: Backend) -> bool:
        return backend is self.policy

    def call(self, backend: Backend, prompts: Sequence[str], params: SamplingParams, ledger: Ledger,
             tracer: Tracer, *, name: str, min_tokens: int | None, cost_model: CostModel) -> CallResult:
        """``call_model``'s contract, each sample a monitored stream (reserved one by one)."""
        result = CallResult()
        used = params.model_copy(update={"n": 1, "max_total_tokens": None})
        for p_i, prompt in enumerate(prompts):
            comps: list[Completion] = []
            usage, plen, latency = Usage(), 0, 0.0
            for i in range(params.n):
                seed = None if params.seed is None else params.seed + i
                with tracer.span("trimr", f"{name} sample {i}", **{"ttc.trimr": self.cfg.describe()}) as span:
                    stream = stream_model(backend, prompt, used.model_copy(update={"seed": seed}), ledger, tracer,
                                          name=name, min_tokens=min_tokens or used.max_tokens, cost_model=cost_model)
                    if stream is None:
                        break
                    mon = Monitor(self.cfg, self.checker, stream.params.max_tokens, self.problem, tracer)
                    self.monitors.append(mon)
                    run_monitored(stream, mon)
                    span.set(**{"ttc.trimr.rule": mon.decision.rule if mon.decision else None,
                                "ttc.trimr.thoughts": len(mon.seg.thoughts)})
                gen = stream.generation
                if gen is None:
                    continue
                comps.extend(gen.completions)
                usage, plen, latency = usage + gen.usage, gen.prompt_tokens, latency + gen.latency_s
                result.usage, result.cost = result.usage + stream.usage, result.cost + stream.cost
                result.params = stream.params.model_copy(update={"n": params.n})
            if not comps:
                result.skipped = len(prompts) - p_i
                break
            result.generations.append(Generation(model=backend.name, prompt_tokens=plen, completions=comps,
                                                 usage=usage, latency_s=latency))
        return result

    def verifier_usage(self) -> tuple[Usage, Cost]:
        """Tokens and compute the thought verifier's checks spent (a judge's calls; none for exact)."""
        s = self.check_ledger.spent
        return (Usage(prompt_tokens=s.prompt_tokens, completion_tokens=s.completion_tokens, calls=s.calls),
                Cost(s.flops, s.paper_flops, s.eflops))

    def summary(self) -> dict[str, Any]:
        """Decisions by rule, thoughts and checks of this session (for the result record)."""
        rules: dict[str, int] = {}
        for m in self.monitors:
            if m.decision is not None:
                rules[m.decision.rule] = rules.get(m.decision.rule, 0) + 1
        return {"streams": len(self.monitors), "decisions": rules, "checks": self.checker.checks,
                "thoughts": sum(len(m.seg.thoughts) for m in self.monitors),
                "verifier_error": None if self.checker.error is None else str(self.checker.error)[:200]}

