"""OpenAI chat requests mapped onto ttc: which strategy, task, models and budget they ask for.

Shared by the batch runner (chat bodies in a batch file) and ``ttc serve``. A request picks
its strategy by model name (``best_of_n/countdown-direct``; the prefix splits off only
when it is a registered strategy, so ``Qwen/Qwen2.5-7B`` stays a model name) or by
``"ttc": {"strategy": ..., "budget": {...}, "task": ..., "models": {...}, "params": {...}}``.
A request that names a task hands the last user message to the task as its problem (a
JSON object) and gets the task's verifier; a bare model name gets one plain sample of the
rendered conversation, as any OpenAI-compatible server would give.
"""

from __future__ import annotations

import json
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ttc.backends.errors import BadInputError
from ttc.backends.types import SamplingParams
from ttc.core.budget import Budget
from ttc.strategies.registry import get_strategy

__all__ = ["ChatPlan", "TtcOptions", "chat_completion", "plan_chat", "render_messages", "split_model_name"]


class TtcOptions(BaseModel):
    """The ``ttc`` object of a request body; unknown keys are bad input."""

    model_config = ConfigDict(extra="forbid")

    strategy: str | None = None
    task: str | None = None
    budget: dict[str, Any] | None = None
    models: dict[str, str] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)


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


class _ChatBody(BaseModel):
    model_config = ConfigDict(extra="allow")  # unknown OpenAI parameters are ignored here

    model: str
    messages: list[_Message] = Field(min_length=1)
    n: int = Field(1, ge=1, le=128)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    ttc: TtcOptions | None = None


class ChatPlan(BaseModel):
    """What a chat request asks ttc to do.

    Attributes:
        model: The policy model's name.
        strategy: A registered strategy, or None for one plain sample.
        task: The task whose problem the last user message holds, if any.
        problem: That problem (a JSON object), when ``task`` is set.
        prompt: The conversation rendered for a plain sample.
        sampling: Sampling parameters of a plain sample.
        budget: The request's budget; ``models`` other roles; ``params`` strategy parameters.
        seed: The seed the request gave (None: the caller derives one).
    """

    model: str
    strategy: str | None
    task: str | None
    problem: dict[str, Any] | None = None
    prompt: str
    sampling: SamplingParams
    budget: Budget | None
    models: dict[str, str]
    params: dict[str, Any]
    seed: int | None


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


def plan_chat(body: Any) -> ChatPlan:
    """Reads a chat request body.

    Raises:
        BadInputError: Not a chat request, a bad parameter, an unknown ``ttc`` key or strategy,
            or a task named whose problem is not in the last user message.
    """
    if not isinstance(body, dict):
        raise BadInputError(f"a chat request body is a JSON object, not {type(body).__name__}")
    try:
        req = _ChatBody.model_validate(body)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise BadInputError(f"bad chat request: {where}: {err['msg']}") from None
    strategy, model = split_model_name(req.model)
    opts = req.ttc or TtcOptions()
    if opts.strategy is not None:
        if not _is_strategy(opts.strategy):
            raise BadInputError(f"unknown strategy {opts.strategy!r} in ttc.strategy")
        strategy = opts.strategy
    budget = None
    if opts.budget is not None:
        unknown = sorted(set(opts.budget) - set(Budget.model_fields))
        if unknown:
            raise BadInputError(f"unknown key(s) in ttc.budget: {', '.join(unknown)} "
                                f"(known: {', '.join(Budget.model_fields)})")
        try:
            budget = Budget(**opts.budget)
        except (ValidationError, TypeError, BadInputError) as exc:
            raise BadInputError(f"bad ttc.budget: {str(exc).splitlines()[0]}") from None
    max_tokens = req.max_completion_tokens or req.max_tokens or 256
    stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    try:
        sampling = SamplingParams(n=req.n, max_tokens=max_tokens, temperature=req.temperature, top_p=req.top_p,
                                  stop=tuple(stop), seed=req.seed)
    except (ValidationError, BadInputError) as exc:
        raise BadInputError(f"bad sampling parameters: {str(exc).splitlines()[0]}") from None
    problem = None
    if opts.task is not None:
        users = [m for m in req.messages if m.role == "user"]
        if not users:
            raise BadInputError("ttc.task is set but the request has no user message to hold the problem")
        try:
            problem = json.loads(users[-1].text())
        except json.JSONDecodeError:
            raise BadInputError(f"with ttc.task the last user message holds the {opts.task} problem as a JSON "
                                "object, e.g. {\"numbers\": [3, 5, 7], \"target\": 22}") from None
        if not isinstance(problem, dict):
            raise BadInputError("the last user message must hold the problem as a JSON object")
        strategy = strategy or "sample"
    elif strategy is not None:
        raise BadInputError(f"strategy {strategy!r} needs a task to verify candidates: set ttc.task "
                            "(a free-form chat request gets one plain sample)")
    return ChatPlan(model=model, strategy=strategy, task=opts.task, problem=problem,
                    prompt=render_messages(req.messages), sampling=sampling, budget=budget, models=opts.models,
                    params=opts.params, seed=req.seed)


def chat_completion(request_id: str, model: str, choices: list[dict[str, Any]], usage: dict[str, int],
                    ttc: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI ``chat.completion`` object; each choice ``{"text", "finish_reason"}``.

    ttc's finish reason ``budget`` is sent as ``length``, the nearest OpenAI has.
    """
    return {
        "id": f"chatcmpl-{request_id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": i, "message": {"role": "assistant", "content": c["text"]},
                     "finish_reason": "length" if c["finish_reason"] in ("budget", None) else c["finish_reason"],
                     "logprobs": None}
                    for i, c in enumerate(choices)],
        "usage": {"prompt_tokens": usage["prompt_tokens"], "completion_tokens": usage["completion_tokens"],
                  "total_tokens": usage["prompt_tokens"] + usage["completion_tokens"]},
        "ttc": ttc,
    }
