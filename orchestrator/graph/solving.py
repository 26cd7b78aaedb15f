"""Graph runs as the store records them: one run of kind ``graph`` per problem, its stages as
spans, its LangGraph checkpoint in the same database (thread id = run id), resumable."""

from __future__ import annotations

from typing import Any

from ttc.backends.errors import BadInputError

from .allocation import Allocation
from .run import GraphResult, Policy, checkpointer_for, run_graph
from .spec import GraphSpec

__all__ = ["solve_graph", "resume_graph"]


def _attributes(graph: GraphSpec, problem: dict, allocation: Allocation, policy: str,
                weights: dict[str, float] | None, budget_tokens: int | None) -> dict[str, Any]:
    return {"graph": graph.model_dump(mode="json"), "problem": problem,
            "allocation": allocation.model_dump(mode="json"), "policy": policy, "weights": weights or {},
            "budget_tokens": budget_tokens or allocation.budget_tokens}


def solve_graph(orc, graph: GraphSpec, problem: dict, allocation: Allocation, *, policy: Policy = "static",
                weights: dict[str, float] | None = None, budget_tokens: int | None = None,
                checkpoint: bool = True, on_stage=None) -> GraphResult:
    """Runs a task graph on one problem as a traced, checkpointed run (see ``run_graph``)."""
    graph.check_allocation(allocation)
    attrs = _attributes(graph, problem, allocation, policy, weights, budget_tokens)
    with orc.run("graph", graph.name, **attrs) as tracer:
        if checkpoint:
            with checkpointer_for(orc.db_url) as saver:
                result = run_graph(orc, graph, problem, allocation, policy=policy, weights=weights,
                                   budget_tokens=budget_tokens, tracer=tracer, checkpointer=saver,
                                   thread_id=tracer.trace_id, on_stage=on_stage)
        else:
            result = run_graph(orc, graph, problem, allocation, policy=policy, weights=weights,
                               budget_tokens=budget_tokens, tracer=tracer, on_stage=on_stage)
        tracer.outcome.update(score=result.score, tokens=result.tokens,
                              stages={k: {"correct": o.correct, "tokens": o.tokens} for k, o in result.outputs.items()})
    return result


def resume_graph(orc, run_id: str, graph: GraphSpec | None = None, on_stage=None) -> GraphResult:
    """Finishes an interrupted graph run: finished stages are not run again, and the tokens
    the run spent before (the interrupted stage's included) count against its total.

    Args:
        graph: The graph, when it was declared with callables that are not importable by
            name (default: the one recorded with the run).
    """
    run = orc.store.get_run_record(run_id)
    if run.kind != "graph":
        raise BadInputError(f"run {run.id} is a {run.kind} run, not a graph run")
    if run.status == "running":
        raise BadInputError(f"run {run.id} is still running (pid {run.pid} on {run.host})")
    if run.status == "ok":
        raise BadInputError(f"run {run.id} already finished")
    attrs = run.attributes or {}
    graph = graph or GraphSpec.model_validate(attrs["graph"])
    allocation = Allocation.model_validate(attrs["allocation"])
    spent = sum((s.input_tokens or 0) + (s.output_tokens or 0) for s in orc.get_run(run.id).spans if s.kind == "llm")
    if not orc.store.claim_run(run.id, run.status):
        raise BadInputError(f"run {run.id} changed while resuming it (another process resumed it?)")
    with orc._traced(run.id, graph.name, {"resumed": True}, resumable=True) as tracer:
        with checkpointer_for(orc.db_url) as saver:
            result = run_graph(orc, graph, attrs["problem"], allocation, policy=attrs.get("policy", "static"),
                               weights=attrs.get("weights"), budget_tokens=attrs.get("budget_tokens"),
                               tracer=tracer, checkpointer=saver, thread_id=run.id, resume=True,
                               spent_before=spent, on_stage=on_stage)
        tracer.outcome.update(score=result.score, tokens=result.tokens, resumed_stages=result.resumed_stages)
    return result
