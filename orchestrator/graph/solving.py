"""Graph runs as the store records them: one run of kind ``graph`` per problem, its stages as
spans, its LangGraph checkpoint in the same database (thread id = run id), resumable."""

from __future__ import annotations

from typing import Any

from ttc.backends.errors import BadInputError

from .allocation import Allocation
from .run import GraphResult, Policy, checkpointer_for, run_graph
from .spec import GraphSpec

__all__ = ["allocate_graph", "resume_graph", "solve_graph"]


def _attributes(graph: GraphSpec, problem: dict, allocation: Allocation, policy: str,
                weights: dict[str, float] | None, budget_tokens: int | None) -> dict[str, Any]:
    return {"graph": graph.model_dump(mode="json"), "problem": problem,
            "allocation": allocation.model_dump(mode="json"), "policy": policy, "weights": weights or {},
            "budget_tokens": budget_tokens or allocation.budget_tokens}


def solve_graph(orc, graph: GraphSpec, problem: dict, allocation: Allocation, *, policy: Policy = "static",
                weights: dict[str, float] | None = None, budget_tokens: int | None = None,
                checkpoint: bool = True, on_stage=None) -> GraphResult:
    """Runs a task graph on one problem as a traced, checkpointed run (see ``run_graph``)."""
    from typing import get_args

    graph.check_allocation(allocation)
    if policy not in get_args(Policy):
        raise BadInputError(f"unknown reallocation policy {policy!r}; valid: {', '.join(get_args(Policy))}")
    if not isinstance(problem, dict):
        raise BadInputError(f"a graph's problem is a JSON object, not {type(problem).__name__}")
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


def allocate_graph(orc, graph: GraphSpec, problems: list[dict], *, method: str = "planner", trials: int = 20,
                   budget: float | None = None, seed: int = 0, out=None) -> dict[str, Any]:
    """Searches ``graph``'s allocation on ``problems`` as one traced run (kind ``allocate``).

    Every trial is a span of that run (allocation, per-stage scores and spend, score).

    Args:
        method: ``planner`` (the rule-based planner), ``random``, ``grid`` or ``tpe``.
        trials: Distinct allocations evaluated, at most.
        budget: Cost cap per problem in AgentTTS units (None: no cap).
        out: Allocation file to write (None: none).

    Returns:
        The allocation file's record (``graph``, ``checkpoint_digests``, ``score``,
        ``score_ci95``, ``trials``, ``cost``) with ``allocation`` as an ``Allocation``, plus
        ``method``, ``space`` and ``trace_id``.

    Raises:
        BadInputError: No allocation fits the budget, no problems, or an unknown method.
    """
    from .objective import GraphObjective, allocation_record, graph_space, write_allocation
    from .search import search

    if not problems:
        raise BadInputError("allocation search needs at least one train problem")
    if out is not None and (out.is_dir() or not out.parent.is_dir()):
        raise BadInputError(f"cannot write the allocation file {out}: a directory, or its folder does not exist")
    space = graph_space(orc, graph, budget)
    if space.size() == 0:
        raise BadInputError(f"no allocation of {graph.name!r} fits the budget {budget}")
    with orc.run("allocate", graph.name, graph=graph.name, method=method, trials=trials, budget=budget, seed=seed,
                 n_train=len(problems)) as tracer:
        objective = GraphObjective(orc, graph, problems, space, tracer)
        found = search(space, objective, method=method, max_trials=trials, seed=seed)
        best = found.best_result
        body = allocation_record(orc, graph, found.best, best, found.trials)
        if out is not None:
            write_allocation(out, body)
        tracer.outcome.update(score=best.score, cost=best.cost, allocation=body["allocation"],
                              guidelines=list(found.guidelines))
    return {**body, "allocation": found.best, "method": method, "space": space.size(), "trace_id": tracer.trace_id}
