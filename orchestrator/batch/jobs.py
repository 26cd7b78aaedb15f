"""Running one batch line: a task, graph or chat request, traced as a ``job`` span.

Each kind returns what its output line's ``response.body`` holds and a short summary
(correct, tokens, the models' checkpoint digests) that the store keeps beside the line.
A job's seed is the body's ``seed`` when it gives one, else derived from the run seed and
its ``custom_id`` (``durability.problem_seed``), so the same line draws the same samples in
any run, alone or batched, before or after a resume.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ttc.backends.errors import BadInputError
from ttc.core.budget import Budget
from ttc.core.types import Result
from ttc.strategies.registry import get_strategy
from ttc.tasks.registry import get_task

from ..chat import chat_completion, plan_chat
from ..durability import outcome, problem_seed
from .lines import BatchLine

__all__ = ["JobOutput", "error_line", "output_line", "request_id", "run_job"]


class JobOutput:
    """What a job produced: its response body and the summary stored beside its line
    (``models``: each model's name as the body gave it -> its checkpoint digest)."""

    def __init__(self, body: dict[str, Any], correct: bool | None, tokens: int, models: dict[str, str | None],
                 **facets: Any):
        self.body, self.correct, self.tokens, self.models = body, correct, tokens, models
        #: What trace queries filter and group jobs by: task, strategy, model, flops.
        self.facets = facets


def request_id(run_id: str, key: str) -> str:
    """A stable id for a line's request (the same in a rewritten output file)."""
    return hashlib.sha256(f"{run_id}:{key}".encode()).hexdigest()[:24]


def output_line(run_id: str, line: BatchLine, body: dict[str, Any]) -> dict[str, Any]:
    """The output line of a job that answered."""
    rid = request_id(run_id, line.key)
    return {"id": f"batch_req_{rid}", "custom_id": line.custom_id,
            "response": {"status_code": 200, "request_id": rid, "body": body}, "error": None}


def error_line(run_id: str, line: BatchLine, message: str, *, bad_input: bool) -> dict[str, Any]:
    """The output line of a bad line (400) or of a job that failed every attempt (500)."""
    rid = request_id(run_id, line.key)
    code, kind = (400, "invalid_request_error") if bad_input else (500, "server_error")
    return {"id": f"batch_req_{rid}", "custom_id": line.custom_id,
            "response": {"status_code": code, "request_id": rid, "body": {"error": {"message": message, "type": kind}}},
            "error": {"code": "invalid_request" if bad_input else "job_failed", "message": message}}


def _seed(run_seed: int, line: BatchLine, given: Any) -> int:
    return int(given) if given is not None else problem_seed(run_seed, line.custom_id or line.key)


def _strategy_params(spec, params: dict[str, Any], seed: int) -> dict[str, Any]:
    # A seed in params wins; else the job's seed, for strategies that take one.
    params = dict(params)
    if "seed" in spec.parameters() and params.get("seed") is None:
        params["seed"] = seed
    return params


def _result_body(task: str, result: Result, model: str) -> dict[str, Any]:
    return {"object": "ttc.result", "task": task, "strategy": result.strategy, "model": model, **outcome(result),
            "usage": {**result.usage.model_dump(), "total_tokens": result.usage.total_tokens},
            "overdrawn": result.overdrawn}


def _run_task(orc, tracer, task: str, problem: Any, strategy: str, model: str | None, models: dict[str, str],
              budget: Budget | None, params: dict[str, Any], seed: int, base_url: str | None):
    task_obj = get_task(task)
    spec = get_strategy(strategy)
    spec.check_params(params)
    problem = task_obj.parse_problem(problem)
    pool = orc.models(task, model, models or None, base_url=base_url)
    spec.check_models(pool)
    result = orc._run_strategy(tracer, task_obj, spec, pool, problem, budget, _strategy_params(spec, params, seed))
    return result, pool


def _model_digests(task: str, model: str | None, models: dict[str, str], pool) -> dict[str, str | None]:
    # Keyed by the name the body gave (what a resume loads again), not by role.
    named = {**models, **({"policy": model} if model else {})}
    named.setdefault("policy", get_task(task).default_model)
    return {named[role]: pool[role].info.checkpoint_digest for role in pool.roles() if named.get(role)}


def _task_job(orc, tracer, line: BatchLine, run_seed: int, base_url: str | None) -> JobOutput:
    b = line.body or {}
    budget = Budget(**b["budget"]) if b.get("budget") else None
    seed = _seed(run_seed, line, b.get("seed"))
    result, pool = _run_task(orc, tracer, b["task"], b["problem"], b.get("strategy", "sample"), b.get("model"),
                             b.get("models") or {}, budget, b.get("params") or {}, seed, base_url)
    body = _result_body(b["task"], result, pool.policy.name)
    return JobOutput(body, result.correct, result.tokens,
                     _model_digests(b["task"], b.get("model"), b.get("models") or {}, pool),
                     task=b["task"], strategy=result.strategy, model=pool.policy.name, flops=result.flops)


def _graph_job(orc, tracer, line: BatchLine, base_url: str | None) -> JobOutput:
    from ttc.orchestrator.graph import Allocation
    from ttc.orchestrator.graph.builtin import BUILTIN_GRAPHS
    from ttc.orchestrator.graph.objective import read_allocation
    from ttc.orchestrator.graph.run import run_graph

    if base_url is not None:
        raise BadInputError("allocation bodies run the built-in graphs' in-process models; drop --base-url")
    b = line.body or {}
    graph = BUILTIN_GRAPHS[b["task"]]
    alloc = b["allocation"]
    if alloc is None or alloc == "default":
        allocation = graph.default_allocation()
    elif isinstance(alloc, dict):
        try:
            allocation = Allocation.model_validate(alloc)
        except ValidationError as exc:
            raise BadInputError(f"bad body.allocation: {exc.errors()[0]['msg']}") from None
    else:
        allocation = read_allocation(orc, Path(str(alloc)), graph)
    graph.check_allocation(allocation)
    tokens = (b.get("budget") or {}).get("tokens")
    result = run_graph(orc, graph, b["problem"], allocation, policy=b.get("policy", "static"), budget_tokens=tokens,
                       tracer=tracer)
    body = {"object": "ttc.graph_result", **result.model_dump(mode="json")}
    correct = all(o.correct is True for o in result.outputs.values()) if result.outputs else None
    return JobOutput(body, correct, result.tokens, {}, task=graph.name, strategy="graph")


def _chat_job(orc, tracer, line: BatchLine, run_seed: int, base_url: str | None) -> JobOutput:
    # The same runner as `ttc serve`, so a chat body answers alike in a batch file and on the server.
    from ..serve.running import run_chat

    plan = plan_chat(line.body)
    seed = _seed(run_seed, line, plan.seed)
    out = run_chat(plan, lambda name: orc.backend(name, base_url=base_url), tracer, seed, artifacts=orc.artifacts())
    body = chat_completion(request_id(tracer.trace_id, line.key), plan.model, out.choices, out.usage, out.ttc)
    correct = out.correct[0] if len(out.correct) == 1 else None
    return JobOutput(body, correct, out.tokens, out.digests, task=plan.task, strategy=plan.strategy,
                     model=plan.model, flops=out.ttc.get("flops"))


def run_job(orc, tracer, line: BatchLine, *, run_seed: int, base_url: str | None) -> JobOutput:
    """Runs one valid line inside a ``job`` span of the batch run.

    Raises:
        BadInputError: The request is bad in a way only its models could tell (an unknown
            model, a missing role): a 400 line, never retried.
        Exception: Anything else fails this attempt (retried up to ``--max-attempts``).
    """
    with tracer.span("job", line.key, custom_id=line.custom_id, line=line.line, request=line.kind) as span:
        if line.kind == "task":
            out = _task_job(orc, tracer, line, run_seed, base_url)
        elif line.kind == "graph":
            out = _graph_job(orc, tracer, line, base_url)
        else:
            out = _chat_job(orc, tracer, line, run_seed, base_url)
        span.set(correct=out.correct, tokens=out.tokens, **{k: v for k, v in out.facets.items() if v is not None})
    return out
