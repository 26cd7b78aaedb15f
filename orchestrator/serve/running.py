"""Running a chat or completions plan: one plain sample, or n runs of a strategy under one budget.

Shared by ``ttc serve`` and the batch runner's chat lines, so both answer a body alike.
:func:`prepare_chat` does everything that can reject a request (loading its models,
checking strategy parameters, parsing the task's problem, fitting the prompt into the
model's context) before any run is opened; :meth:`PreparedChat.run` then samples inside
the caller's traced run. Every call reserves against one request ledger, so ``usage``
and the ``ttc`` field count every token the request spent: all samples, judge and
planner calls.

Prompts of in-process models get their chat template (or ttc's) and are fitted to their
context by :mod:`.prompts`; every in-process model of the pool fits the prompts it is
given, so a request never fails for a length.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ttc.backends.base import Backend
from ttc.backends.errors import BadInputError
from ttc.backends.types import Completion, SamplingParams
from ttc.core.budget import Budget, Ledger
from ttc.core.calls import call_model
from ttc.core.contracts import RecordedRuns, ModelPool, SolveContext
from ttc.core.streaming import stream_model
from ttc.core.types import Result, Verdict
from ttc.strategies.registry import StrategySpec, get_strategy
from ttc.tasks.registry import get_task
from ttc.verifiers.judge import JudgeVerifier

from .._cli_common import check_strategy_params
from ..chat import ChatPlan
from .prompts import chat_prompt, fit_prompt, fitted, tokenizer_of

__all__ = ["ChatOutcome", "ChatTask", "NoVerifier", "PreparedChat", "prepare_chat", "run_chat"]

#: What the judge checks in a free-form answer when the request gives no ``ttc.rubric``.
DEFAULT_RUBRIC = "The answer is correct, complete and responds to the last user message."
_SEED_MOD = 2**63

Loader = Callable[[str], Backend]
OnDelta = Callable[[int, str], None]


# ---------------------------------------------------------------------- free-form chat as a task


class NoVerifier:
    """The verifier of a free-form request without a judge: it decides nothing.

    Answers are the stripped text; votes pool answers equal up to whitespace.
    """

    def verify(self, problem: dict, text: str, ctx: Any = None) -> Verdict:
        return Verdict(correct=None, score=0.0, reason="free-form text: no verifier", answer=text.strip() or None)

    def canonical(self, problem: dict, text: str) -> str | None:
        return " ".join(text.split()) or None


class ChatTask:
    """A free-form conversation as a task of one problem ``{"id", "prompt"}``, so that any
    strategy can run on it; its prompt, stop strings and token limit are the request's."""

    name = "chat"
    formats = ("direct",)
    default_model = None

    def __init__(self, stop: tuple[str, ...], max_tokens: int, verifier: Any):
        self.stop, self._max_tokens, self.verifier = stop, max_tokens, verifier

    def parse_problem(self, obj: Any) -> dict:
        if not isinstance(obj, dict) or not isinstance(obj.get("prompt"), str):
            raise BadInputError("a chat problem is {\"prompt\": TEXT}")
        return {"id": obj.get("id", "chat"), "prompt": obj["prompt"]}

    def prompt(self, problem: dict, fmt: str = "direct", **_: Any) -> str:
        return problem["prompt"]

    def max_tokens(self, problem: dict | None, fmt: str = "direct") -> int:
        return self._max_tokens

    def make_problems(self, n: int, seed: int = 0, split: str = "test") -> list[dict]:
        raise BadInputError("the chat task has no problem generator")


# ---------------------------------------------------------------------- outcome


@dataclass
class ChatOutcome:
    """What a request produced.

    Attributes:
        choices: ``{"text", "finish_reason"}`` (and ``"logprobs"`` when asked for) per choice.
        usage: ``{"prompt_tokens", "completion_tokens"}``: every token the request spent.
        ttc: The response's ``ttc`` field (strategy, verifier, budget spent, FLOPs, trace id...).
        digests: Model name -> checkpoint digest.
        correct: The task verifier's verdict per run (strategies with a task), else empty.
    """

    choices: list[dict[str, Any]]
    usage: dict[str, int]
    ttc: dict[str, Any]
    digests: dict[str, str | None]
    correct: list[bool | None] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        return self.usage["prompt_tokens"] + self.usage["completion_tokens"]


def _token_logprobs(backend: Backend, comp: Completion) -> list[tuple[str, float]] | None:
    tok = tokenizer_of(backend)
    if comp.logprobs is None or comp.token_ids is None or tok is None:
        return None
    return [(tok.decode([t]), float(lp)) for t, lp in zip(comp.token_ids, comp.logprobs)]


def _choice(backend: Backend, comp: Completion, logprobs: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"text": comp.text, "finish_reason": comp.finish_reason}
    if logprobs:
        out["logprobs"] = _token_logprobs(backend, comp)
    return out


@dataclass
class PreparedChat:
    """A plan whose models are loaded and whose input is checked; :meth:`run` runs it."""

    plan: ChatPlan
    pool: ModelPool
    prompts: list[str]
    params: SamplingParams
    prompt_tokens_cut: int = 0
    spec: StrategySpec | None = None
    task: Any = None
    problem: dict | None = None
    strategy_params: dict[str, Any] = field(default_factory=dict)
    artifacts: RecordedRuns | None = None

    @property
    def verifier_name(self) -> str | None:
        if self.task is None or isinstance(self.task.verifier, NoVerifier):
            return None
        return type(self.task.verifier).__name__

    def digests(self) -> dict[str, str | None]:
        names = {"policy": self.plan.model, **self.plan.models}
        return {names[r]: self.pool[r].info.checkpoint_digest for r in self.pool.roles() if r in names}

    def run(self, tracer: Any, seed: int, *, on_delta: OnDelta | None = None,
            cancelled: Callable[[], bool] = lambda: False) -> ChatOutcome:
        """Samples the plan inside ``tracer``'s run.

        Args:
            tracer: Where spans go (the caller's run).
            seed: The request's seed; run ``i`` of a strategy uses ``seed + i``.
            on_delta: Called with (choice index, text) as text becomes final: a plain
                sample's tokens as they are generated (one prompt, n = 1), else each
                choice's whole text once it is chosen.
            cancelled: Polled between deltas; True closes a stream early (what was
                generated stays charged) and skips the runs not started.
        """
        ledger = Ledger(self.plan.budget)
        if self.spec is None:
            choices, extra = self._plain(ledger, tracer, seed, on_delta, cancelled)
        else:
            choices, extra = self._strategy(ledger, tracer, seed, on_delta, cancelled)
        spent = ledger.spent
        ttc = {"strategy": self.spec.name if self.spec else None, "task": self.plan.task,
               "verifier": self.verifier_name, "models": self.pool.roles(),
               "budget": self.plan.budget.model_dump(exclude_none=True) if self.plan.budget else None,
               "tokens": spent.tokens, "calls": spent.calls, "samples": spent.samples, "flops": spent.flops,
               "paper_flops": spent.paper_flops, "eflops": spent.eflops,
               "prompt_tokens_cut": self.prompt_tokens_cut, "overdrawn": ledger.overdrawn, "seed": seed,
               "trace_id": getattr(tracer, "trace_id", None), **extra}
        usage = {"prompt_tokens": spent.prompt_tokens, "completion_tokens": spent.completion_tokens}
        return ChatOutcome(choices, usage, ttc, self.digests(), extra.get("correct", []))

    def _plain(self, ledger: Ledger, tracer: Any, seed: int, on_delta: OnDelta | None,
               cancelled: Callable[[], bool]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        backend = self.pool.policy
        params = self.params if self.params.seed is not None else self.params.model_copy(update={"seed": seed})
        if on_delta is not None and params.n == 1 and len(self.prompts) == 1:
            stream = stream_model(backend, self.prompts[0], params, ledger, tracer)
            if stream is None:  # the budget cannot hold one token
                return [{"text": "", "finish_reason": "length"}], {"skipped": 1}
            with stream:
                for delta in stream:
                    on_delta(0, delta)
                    if cancelled():
                        stream.close()
                        break
            comps = stream.generation.completions if stream.generation else []
            choices = [_choice(backend, c, params.logprobs) for c in comps]
            return choices or [{"text": stream.text, "finish_reason": "stop"}], {"skipped": 0}
        call = call_model(backend, self.prompts, params, ledger, tracer)
        choices = [_choice(backend, c, params.logprobs) for g in call.generations for c in g.completions]
        # Prompts the budget could not hold still get their choices, empty and cut short.
        want = len(self.prompts) * params.n
        choices += [{"text": "", "finish_reason": "length"} for _ in range(want - len(choices))]
        if on_delta is not None:
            for i, c in enumerate(choices):
                if c["text"]:
                    on_delta(i, c["text"])
        return choices, {"skipped": call.skipped}

    def _strategy(self, ledger: Ledger, tracer: Any, seed: int, on_delta: OnDelta | None,
                  cancelled: Callable[[], bool]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        n = self.plan.sampling.n
        choices: list[dict[str, Any]] = []
        correct: list[bool | None] = []
        stops: list[str] = []
        for i in range(n):
            left = ledger.remaining_tokens()
            if cancelled() or (left is not None and left <= 0):
                choices.append({"text": "", "finish_reason": "length"})
                correct.append(None)
                stops.append("no_budget")
                continue
            # The n runs share the request's budget: each may use an even share of what is left.
            child = ledger.child(Budget(tokens=max(1, left // (n - i))) if left is not None else None)
            with tracer.span("choice", f"choice {i}", **{"ttc.index": i}):
                result = self._solve(child, tracer, (seed + i) % _SEED_MOD)
            chosen = next((c for c in result.candidates if result.answer is not None and c.answer == result.answer),
                          None)
            choices.append({"text": result.answer or "",
                            "finish_reason": chosen.finish_reason if chosen else "length"})
            correct.append(result.correct)
            stops.append(result.stop_reason)
            if on_delta is not None and choices[-1]["text"]:
                on_delta(i, choices[-1]["text"])
        return choices, {"correct": correct, "stop_reasons": stops}

    def _solve(self, ledger: Ledger, tracer: Any, seed: int) -> Result:
        assert self.spec is not None and self.problem is not None
        ctx = SolveContext(task=self.task, problem=self.problem, verifier=self.task.verifier, ledger=ledger,
                           models=self.pool, tracer=tracer, artifacts=self.artifacts)
        params = dict(self.strategy_params)
        if "seed" in self.spec.parameters() and params.get("seed") is None:
            params["seed"] = seed
        if self.spec.prepare is not None:
            params = {**params, **self.spec.prepare(ctx, params)}
        result = self.spec(ctx, **params)
        result.overdrawn = result.overdrawn or ledger.overdrawn
        return result


# ---------------------------------------------------------------------- preparing and running


def _strategy_params(spec: StrategySpec, plan: ChatPlan, max_tokens: int | None) -> dict[str, Any]:
    params = dict(plan.params)
    takes = spec.parameters()
    # The body's own temperature and max_tokens steer a strategy that has such parameters,
    # unless ttc.params sets them; the seed is the runner's (see PreparedChat._solve).
    if "temperature" in plan.explicit and "temperature" in takes:
        params.setdefault("temperature", plan.sampling.temperature)
    if max_tokens is not None and "max_tokens" in takes:
        params.setdefault("max_tokens", max_tokens)
    spec.check_params(params)
    return check_strategy_params(params, source="ttc.params.")


def prepare_chat(plan: ChatPlan, load: Loader, *, artifacts: RecordedRuns | None = None) -> PreparedChat:
    """Loads the plan's models and checks everything that can reject it.

    Args:
        plan: From ``plan_chat`` or ``plan_completion``.
        load: A model by name (the server's catalog, or the batch runner's loader).
        artifacts: Earlier recorded results, for strategies that look them up (``auto``).

    Raises:
        BadInputError: An unknown model, task, role or strategy parameter; a malformed problem.
    """
    models = {"policy": load(plan.model), **{r: load(m) for r, m in plan.models.items()}}
    pool = ModelPool({r: fitted(b) for r, b in models.items()}, loader=load)
    policy = pool.policy
    if plan.strategy is None:
        prompts = [chat_prompt(policy, plan.messages)] if plan.kind == "chat" else list(plan.prompts)
        fits = [fit_prompt(policy, p, plan.sampling.max_tokens) for p in prompts]
        params = plan.sampling.model_copy(update={"max_tokens": min(m for _, m, _ in fits)})
        return PreparedChat(plan, pool, [p for p, _, _ in fits], params, sum(c for _, _, c in fits))
    spec = get_strategy(plan.strategy)
    if plan.task is not None:
        task = get_task(plan.task)
        problem = task.parse_problem(plan.problem)
        given = plan.sampling.max_tokens if "max_tokens" in plan.explicit else None
        prepared = PreparedChat(plan, pool, [], plan.sampling, spec=spec, task=task, problem=problem,
                                strategy_params=_strategy_params(spec, plan, given), artifacts=artifacts)
    else:
        prompt = chat_prompt(policy, plan.messages) if plan.kind == "chat" else plan.prompt
        prompt, max_tokens, cut = fit_prompt(policy, prompt, plan.sampling.max_tokens)
        if "judge" in pool:
            verifier: Any = JudgeVerifier(plan.rubric or DEFAULT_RUBRIC, describe=lambda p: p["prompt"])
        else:
            verifier = NoVerifier()
        task = ChatTask(plan.sampling.stop, max_tokens, verifier)
        prepared = PreparedChat(plan, pool, [prompt], plan.sampling, cut, spec=spec, task=task,
                                problem={"id": "chat", "prompt": prompt},
                                strategy_params=_strategy_params(spec, plan, max_tokens), artifacts=artifacts)
    spec.check_models(pool)
    return prepared


def run_chat(plan: ChatPlan, load: Loader, tracer: Any, seed: int, *, artifacts: RecordedRuns | None = None,
             on_delta: OnDelta | None = None) -> ChatOutcome:
    """Prepares and runs ``plan`` in ``tracer``'s run (the batch runner's one call)."""
    return prepare_chat(plan, load, artifacts=artifacts).run(tracer, seed, on_delta=on_delta)
