"""OpenAI chat and completions requests mapped onto ttc: which strategy, task, models and budget they ask for.

Shared by the batch runner (chat bodies in a batch file) and ``ttc serve``. A request picks
its strategy by model name (``best_of_n/countdown-direct``; the prefix splits off only
when it is a registered strategy, so ``Qwen/Qwen2.5-7B`` stays a model name) or by
``"ttc": {"strategy": ..., "budget": {...}, "task": ..., "models": {...}, "params": {...},
"rubric": ...}``. A request that names a task hands the last user message (a completions
request: its prompt) to the task as its problem (a JSON object) and gets the task's
verifier; a free-form request with a strategy is judged by the LLM judge when it names a
``judge`` model, else it may only use a verifier-free strategy (``VERIFIER_FREE``). A bare
model name gets one plain sample of the conversation, as any OpenAI-compatible server
would give. Running a plan is :mod:`ttc.orchestrator.serve.running`'s job.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from ttc.backends.errors import BadInputError
from ttc.backends.types import SamplingParams
from ttc.core.budget import Budget
from ttc.strategies.registry import get_strategy

__all__ = [
    "VERIFIER_FREE", "ChatPlan", "RequestError", "TtcOptions", "chat_completion", "openai_finish", "plan_chat",
    "plan_completion", "render_messages", "split_model_name", "text_completion", "usage_object",
]

#: Strategies that need no verifier to choose: a free-form request may use them without a judge.
VERIFIER_FREE = ("sample", "majority_vote")
# OpenAI's own default max_tokens of /completions; chat's is "as much as fits", 256 here.
_COMPLETIONS_MAX_TOKENS = 16
_CHAT_MAX_TOKENS = 256
_MAX_TOKENS_LIMIT = 2**31 - 1
_SEED_MAX = 2**63 - 1


class RequestError(BadInputError):
    """A request field that is invalid; ``param`` names it (OpenAI's ``error.param``)."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


class TtcOptions(BaseModel):
    """The ``ttc`` object of a request body; unknown keys are bad input."""

    model_config = ConfigDict(extra="forbid")

    strategy: str | None = None
    task: str | None = None
    budget: dict[str, Any] | None = None
    models: dict[str, str] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)
    rubric: str | None = Field(None, min_length=1)


class _Message(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        # The content-parts form: only text parts carry anything a text model can read.
        return "".join(str(p.get("text", "")) for p in self.content if p.get("type") == "text")


class _Sampling(BaseModel):
    """The sampling fields both endpoints share; unknown OpenAI parameters are allowed (and ignored)."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    model: str = Field(min_length=1)
    n: int = Field(1, ge=1, le=128)
    max_tokens: int | None = Field(None, ge=1, le=_MAX_TOKENS_LIMIT)
    max_completion_tokens: int | None = Field(None, ge=1, le=_MAX_TOKENS_LIMIT)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0, le=_SEED_MAX)
    stream: bool | None = False
    stream_options: dict[str, Any] | None = None
    logprobs: bool | int | None = None
    ignore_eos: bool | None = False  # the vLLM extension benchmarks use for fixed-length outputs
    ttc: TtcOptions | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, v: str | list[str] | None) -> str | list[str] | None:
        stops = [v] if isinstance(v, str) else v or []
        if len(stops) > 16 or any(not s for s in stops):
            raise ValueError("stop takes at most 16 non-empty strings")
        return v


class _ChatBody(_Sampling):
    messages: list[_Message] = Field(min_length=1)


class _CompletionBody(_Sampling):
    prompt: str | list[str]


class ChatPlan(BaseModel):
    """What a chat or completions request asks ttc to do.

    Attributes:
        kind: ``chat`` (``/v1/chat/completions``) or ``completion`` (``/v1/completions``).
        model: The policy model's name.
        strategy: A registered strategy, or None for one plain sample.
        task: The task whose problem the last user message (or the prompt) holds, if any.
        problem: That problem (a JSON object), when ``task`` is set.
        messages: The conversation as ``{"role", "content"}`` text turns (chat only).
        prompts: The prompts to sample: the rendered conversation, or the completions prompts.
        sampling: Sampling parameters of a plain sample.
        explicit: Sampling fields the body set itself (``temperature``, ``max_tokens``,
            ``seed``), which a strategy then takes over when it has such a parameter.
        budget: The request's budget; ``models`` other roles; ``params`` strategy parameters.
        rubric: What the LLM judge checks in a free-form answer.
        seed: The seed the request gave (None: the caller picks one).
        stream, include_usage: Stream the answer; end the stream with a usage chunk.
    """

    kind: Literal["chat", "completion"] = "chat"
    model: str
    strategy: str | None
    task: str | None
    problem: dict[str, Any] | None = None
    messages: list[dict[str, str]] = Field(default_factory=list)
    prompts: list[str]
    sampling: SamplingParams
    explicit: frozenset[str] = frozenset()
    budget: Budget | None
    models: dict[str, str]
    params: dict[str, Any]
    rubric: str | None = None
    seed: int | None
    stream: bool = False
    include_usage: bool = False

    @property
    def prompt(self) -> str:
        """The first (for chat: the only) prompt."""
        return self.prompts[0]

    def model_names(self) -> list[str]:
        """Every model the request names: the policy model, then the other roles'."""
        return [self.model, *self.models.values()]


def _is_strategy(name: str) -> bool:
    try:
        get_strategy(name)
    except BadInputError:
        return False
    return True


def split_model_name(name: str) -> tuple[str | None, str]:
    """``"best_of_n/countdown-direct"`` -> ``("best_of_n", "countdown-direct")``; a prefix that is
    not a registered strategy stays part of the model name."""
    head, sep, rest = name.partition("/")
    if sep and rest and _is_strategy(head):
        return head, rest
    return None, name


def render_messages(messages: list[_Message] | list[dict[str, Any]]) -> str:
    """The conversation as the prompt text of a model without a chat template.

    The built-in models read a task prompt and continue it, so the rendering is the turns'
    text in order, one per line, ending with the last user turn; any sequence of roles
    (several system messages, assistant turns in the middle) renders.
    """
    msgs = [m if isinstance(m, _Message) else _Message.model_validate(m) for m in messages]
    return "\n".join(t for t in (m.text() for m in msgs) if t)


def _validate(model: type[BaseModel], body: Any, what: str) -> Any:
    if not isinstance(body, dict):
        raise RequestError(f"a {what} request body is a JSON object, not {type(body).__name__}")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        raise RequestError(f"bad {what} request: {where}: {msg}", param=where or None) from None


def _budget(opts: TtcOptions) -> Budget | None:
    if opts.budget is None:
        return None
    unknown = sorted(set(opts.budget) - set(Budget.model_fields))
    if unknown:
        raise RequestError(f"unknown key(s) in ttc.budget: {', '.join(unknown)} "
                           f"(known: {', '.join(Budget.model_fields)})", param="ttc.budget")
    for key, value in opts.budget.items():
        ok = value is None or (not isinstance(value, bool) and isinstance(value, (int, float))
                               and math.isfinite(value))
        if not ok:
            raise RequestError(f"ttc.budget.{key} must be a number, got {value!r}", param=f"ttc.budget.{key}")
    try:
        return Budget(**opts.budget)
    except (ValidationError, TypeError, BadInputError) as exc:
        raise RequestError(f"bad ttc.budget: {str(exc).splitlines()[0]}", param="ttc.budget") from None


def _problem(task: str, text: str, where: str) -> dict[str, Any]:
    try:
        problem = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise RequestError(f"with ttc.task the {where} holds the {task} problem as a JSON object, "
                           "e.g. {\"numbers\": [3, 5, 7], \"target\": 22}", param=where) from None
    if not isinstance(problem, dict):
        raise RequestError(f"the {where} must hold the problem as a JSON object", param=where)
    return problem


def _common(req: _Sampling, default_max_tokens: int) -> dict[str, Any]:
    """The plan fields both endpoints derive the same way."""
    strategy, model = split_model_name(req.model)
    opts = req.ttc or TtcOptions()
    if opts.strategy is not None:
        if not _is_strategy(opts.strategy):
            raise RequestError(f"unknown strategy {opts.strategy!r} in ttc.strategy", param="ttc.strategy")
        strategy = opts.strategy
    if "policy" in opts.models:
        raise RequestError("the policy model is the request's model; ttc.models names the other roles",
                           param="ttc.models.policy")
    given_max = req.max_completion_tokens or req.max_tokens
    stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    try:
        sampling = SamplingParams(n=req.n, max_tokens=given_max or default_max_tokens,
                                  temperature=1.0 if req.temperature is None else req.temperature,
                                  top_p=1.0 if req.top_p is None else req.top_p, stop=tuple(stop), seed=req.seed,
                                  logprobs=bool(req.logprobs), ignore_eos=bool(req.ignore_eos))
    except (ValidationError, BadInputError) as exc:
        raise RequestError(f"bad sampling parameters: {str(exc).splitlines()[0]}") from None
    explicit = {k for k, v in (("temperature", req.temperature), ("max_tokens", given_max), ("seed", req.seed))
                if v is not None}
    include_usage = bool((req.stream_options or {}).get("include_usage"))
    return {"model": model, "strategy": strategy, "task": opts.task, "sampling": sampling,
            "explicit": frozenset(explicit), "budget": _budget(opts), "models": opts.models, "params": opts.params,
            "rubric": opts.rubric, "seed": req.seed, "stream": bool(req.stream), "include_usage": include_usage}


def _check_strategy(fields: dict[str, Any]) -> None:
    strategy, task = fields["strategy"], fields["task"]
    if task is not None:
        fields["strategy"] = strategy or "sample"
    elif strategy is not None and strategy not in VERIFIER_FREE and "judge" not in fields["models"]:
        raise RequestError(f"strategy {strategy!r} needs a verifier: set ttc.task for the task's verifier, or "
                           "ttc.models.judge for the LLM judge (verifier-free strategies: "
                           f"{', '.join(VERIFIER_FREE)})", param="ttc")


def plan_chat(body: Any) -> ChatPlan:
    """Reads a chat request body.

    Raises:
        RequestError: Not a chat request, a bad parameter, an unknown ``ttc`` key or strategy,
            a task named whose problem is not in the last user message, or a strategy that
            needs a verifier on a free-form request without a judge.
    """
    req = _validate(_ChatBody, body, "chat")
    fields = _common(req, _CHAT_MAX_TOKENS)
    if fields["task"] is not None:
        users = [m for m in req.messages if m.role == "user"]
        if not users:
            raise RequestError("ttc.task is set but the request has no user message to hold the problem",
                               param="messages")
        fields["problem"] = _problem(fields["task"], users[-1].text(), "last user message")
    _check_strategy(fields)
    messages = [{"role": m.role, "content": m.text()} for m in req.messages]
    return ChatPlan(kind="chat", messages=messages, prompts=[render_messages(req.messages)], **fields)


def plan_completion(body: Any) -> ChatPlan:
    """Reads a completions request body (``prompt``: a string or a list of strings).

    Raises:
        RequestError: As for :func:`plan_chat`; token-id prompts, an empty prompt list, or
            several prompts with a strategy.
    """
    req = _validate(_CompletionBody, body, "completions")
    prompts = [req.prompt] if isinstance(req.prompt, str) else list(req.prompt)
    if not prompts:
        raise RequestError("prompt must not be an empty list", param="prompt")
    fields = _common(req, _COMPLETIONS_MAX_TOKENS)
    if fields["strategy"] is not None or fields["task"] is not None:
        if len(prompts) != 1:
            raise RequestError("with a strategy, prompt is one string", param="prompt")
        if fields["task"] is not None:
            fields["problem"] = _problem(fields["task"], prompts[0], "prompt")
    _check_strategy(fields)
    return ChatPlan(kind="completion", prompts=prompts, **fields)


def openai_finish(reason: str | None) -> str:
    # ttc's "budget" (a pooled cap ran out) is nearest to OpenAI's "length".
    return "length" if reason in ("budget", None) else reason


def chat_completion(request_id: str, model: str, choices: list[dict[str, Any]], usage: dict[str, int],
                    ttc: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI ``chat.completion`` object; each choice ``{"text", "finish_reason"}`` and
    optionally ``"logprobs"`` (``[(token, logprob), ...]``).

    ttc's finish reason ``budget`` is sent as ``length``, the nearest OpenAI has.
    """
    def logprobs(c: dict[str, Any]) -> dict[str, Any] | None:
        if c.get("logprobs") is None:
            return None
        return {"content": [{"token": t, "logprob": lp, "bytes": list(t.encode()), "top_logprobs": []}
                            for t, lp in c["logprobs"]], "refusal": None}

    return {
        "id": f"chatcmpl-{request_id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": i, "message": {"role": "assistant", "content": c["text"]},
                     "finish_reason": openai_finish(c["finish_reason"]), "logprobs": logprobs(c)}
                    for i, c in enumerate(choices)],
        "usage": usage_object(usage),
        "ttc": ttc,
    }


def text_completion(request_id: str, model: str, choices: list[dict[str, Any]], usage: dict[str, int],
                    ttc: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI ``text_completion`` object (``/v1/completions``); choices as for :func:`chat_completion`."""
    def logprobs(c: dict[str, Any]) -> dict[str, Any] | None:
        if c.get("logprobs") is None:
            return None
        tokens = [t for t, _ in c["logprobs"]]
        offsets = [sum(len(t) for t in tokens[:i]) for i in range(len(tokens))]
        return {"tokens": tokens, "token_logprobs": [lp for _, lp in c["logprobs"]], "top_logprobs": None,
                "text_offset": offsets}

    return {
        "id": f"cmpl-{request_id}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": i, "text": c["text"], "finish_reason": openai_finish(c["finish_reason"]),
                     "logprobs": logprobs(c)}
                    for i, c in enumerate(choices)],
        "usage": usage_object(usage),
        "ttc": ttc,
    }


def usage_object(usage: dict[str, int]) -> dict[str, int]:
    """OpenAI's ``usage``: prompt, completion and total tokens."""
    return {"prompt_tokens": usage["prompt_tokens"], "completion_tokens": usage["completion_tokens"],
            "total_tokens": usage["prompt_tokens"] + usage["completion_tokens"]}
