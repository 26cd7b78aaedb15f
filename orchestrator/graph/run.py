"""Running a task graph: the DAG compiled into a LangGraph ``StateGraph``.

One node per stage, the DAG's edges (a stage with several parents waits for all of them),
and a checkpointer on the trace store's own database, so an interrupted graph run resumes
without re-running finished stages (``thread_id`` = the run id). Each task stage runs its
allocated strategy in a child of the run's ledger: the stage's budget is its own limit and
the graph's total is never exceeded. A stage's n samples stay one batched core call inside
the strategy, so shared-prefix batching is kept. A ``fan_out`` stage is three nodes: one
that fixes its share of carried tokens, one ``Send`` per item of its input list (run in
parallel, each with an equal share of the stage's budget), and a join that makes them one
stage output.

Run-time reallocation (``policy``): with ``static`` each stage gets its allocation; with
``carry`` what finished stages left unspent is handed to the stages still to run, in
equal shares; with ``carry_weighted`` in proportion to ``weights`` (e.g. each stage's
marginal gain per token from the allocation table).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any, Literal, TypedDict

from pydantic import BaseModel, Field
from ttc.backends.errors import BadInputError
from ttc.backends.types import Usage
from ttc.core.budget import Budget, Ledger
from ttc.core.contracts import ModelPool, SolveContext
from ttc.strategies.registry import get_strategy
from ttc.tasks.registry import get_task

from .allocation import Allocation
from .spec import GraphSpec

__all__ = ["GraphResult", "Policy", "StageOutput", "checkpointer_for", "compile_graph", "run_graph"]

Policy = Literal["static", "carry", "carry_weighted"]


def _merge(a: dict, b: dict) -> dict:
    return {**a, **b}


def _merge_items(a: dict, b: dict) -> dict:
    return {k: {**a.get(k, {}), **b.get(k, {})} for k in {*a, *b}}


class _State(TypedDict, total=False):
    problem: dict
    outputs: Annotated[dict, _merge]   # stage -> StageOutput as a dict
    left: Annotated[dict, _merge]      # stage -> tokens it left unspent of what it was given
    carried: Annotated[dict, _merge]   # stage -> tokens it received from finished stages
    items: Annotated[dict, _merge_items]  # fan-out stage -> item index -> StageOutput as a dict


class _Item(TypedDict):
    stage: str
    index: int
    problem: dict
    tokens: int


class StageOutput(BaseModel):
    """What one stage produced (task stages) or returned (callable stages)."""

    stage: str
    answer: Any = None
    correct: bool | None = None
    tokens: int = 0
    granted: int | None = None
    model: str | None = None
    strategy: str | None = None
    stop_reason: str | None = None
    problem: dict | None = None


class GraphResult(BaseModel):
    """A task graph's result on one problem."""

    graph: str
    score: float
    outputs: dict[str, StageOutput]
    tokens: int
    budget_tokens: int
    trace_id: str | None = None
    policy: str = "static"
    resumed_stages: list[str] = Field(default_factory=list)


@contextmanager
def checkpointer_for(db_url: str) -> Iterator[Any]:
    """A LangGraph checkpointer on the trace store's database (SQLite file or PostgreSQL)."""
    from sqlalchemy.engine import make_url

    url = make_url(db_url)
    if url.get_backend_name() == "sqlite":
        from langgraph.checkpoint.sqlite import SqliteSaver

        # check_same_thread=False: LangGraph writes checkpoints from its worker threads; the
        # saver serialises access with its own lock.
        conn = sqlite3.connect(url.database or ":memory:", check_same_thread=False)
        try:
            saver = SqliteSaver(conn)
            saver.setup()
            yield saver
        finally:
            conn.close()
    elif url.get_backend_name() == "postgresql":
        from langgraph.checkpoint.postgres import PostgresSaver

        plain = url.set(drivername="postgresql").render_as_string(hide_password=False)
        with PostgresSaver.from_conn_string(plain) as saver:
            saver.setup()
            yield saver
    else:
        raise BadInputError(f"no graph checkpointer for database {url.get_backend_name()!r}")


def _share(policy: Policy, stage: str, pending: list[str], weights: dict[str, float]) -> float:
    if policy == "carry":
        return 1.0 / len(pending)
    total = sum(max(weights.get(s, 0.0), 0.0) for s in pending)
    if total <= 0:
        return 1.0 / len(pending)
    return max(weights.get(stage, 0.0), 0.0) / total


def compile_graph(orc, graph: GraphSpec, allocation: Allocation, ledger: Ledger, tracer, *,
                  policy: Policy = "static", weights: dict[str, float] | None = None, checkpointer=None,
                  on_stage=None, cache: dict | None = None):
    """The LangGraph ``StateGraph`` of ``graph`` under ``allocation``, compiled.

    Args:
        orc: The orchestrator (models, artifacts).
        graph, allocation: What to run and with what.
        ledger: The run's ledger; each task stage spends in a child of it.
        tracer: Where stage spans go.
        policy, weights: Run-time reallocation (see the module docstring).
        checkpointer: A LangGraph checkpointer (None: no resume).
        on_stage: Called as ``on_stage(stage, output)`` after a stage finishes.
        cache: Stage results by (task, option, input, carry), shared across calls: seeded
            runs repeat, so a stage seen before is not run again (allocation search).
    """
    from langgraph.graph import END, START, StateGraph

    graph.check_allocation(allocation)
    if policy not in ("static", "carry", "carry_weighted"):
        raise BadInputError(f"unknown reallocation policy {policy!r}; valid: carry, carry_weighted, static")
    weights = weights or {}
    dag = graph.dag()
    order = graph.order()

    def carry_for(name: str, state: _State) -> int:
        if policy == "static":
            return 0
        outputs = state.get("outputs", {})
        started = set(outputs) | set(state.get("carried", {}))
        pool = sum(state.get("left", {}).values()) - sum(state.get("carried", {}).values())
        # Callable stages have no allocation to add to; leftovers go to task stages.
        pending = [s for s in order if s not in started and graph.stage(s).task is not None]
        return max(0, int(pool * _share(policy, name, pending, weights))) if pending else 0

    def stage_input(name: str, state: _State):
        spec = graph.stage(name)
        outputs = state.get("outputs", {})
        upstream = {u: outputs[u] for u in dag.predecessors(name)}
        make_input = spec.input_fn()
        return (make_input(state["problem"], upstream) if make_input else state["problem"]), upstream

    def run_cached(name: str, option, stage_problem: dict, upstream: dict, carry: int) -> tuple[StageOutput, int]:
        spec = graph.stage(name)
        key = None
        if cache is not None and spec.task is not None:
            # Keyed by task, not stage name: seeded runs of one task, option and input are
            # the same run in whichever stage (or graph) they appear.
            key = (spec.task, option.model_dump_json(), spec.base_url_of(option),
                   json.dumps(stage_problem, sort_keys=True), carry)
        if key is not None and key in cache:
            out, left = cache[key]
            ledger.settle(None, Usage(prompt_tokens=out.tokens), samples=0)  # it was spent once
            return out.model_copy(update={"stage": name}), left
        out, left = _run_stage(orc, spec, option, stage_problem, upstream, ledger, tracer, carry)
        if key is not None:
            cache[key] = (out, left)
        return out, left

    def finish(name: str, out: StageOutput, left: int, carry: int) -> dict:
        if on_stage is not None:
            on_stage(name, out)
        update: dict[str, Any] = {"outputs": {name: out.model_dump(mode="json")}, "left": {name: left}}
        if policy != "static" and not graph.stage(name).fan_out:
            update["carried"] = {name: carry}
        return update

    def make_node(name: str):
        def node(state: _State) -> dict:
            carry = carry_for(name, state)
            stage_problem, upstream = stage_input(name, state)
            option = allocation.stages.get(name)
            out, left = run_cached(name, option, stage_problem, upstream, carry)
            return finish(name, out, left, carry)

        return node

    def fan_total(name: str, state: _State) -> int:
        return allocation.stages[name].budget_tokens + state.get("carried", {}).get(name, 0)

    def make_fan(name: str):
        # Marks the stage started (and fixes its carry) before its items are sent.
        def fan(state: _State) -> dict:
            return {"carried": {name: carry_for(name, state)}} if policy != "static" else {}

        def route(state: _State):
            from langgraph.types import Send

            items, _ = stage_input(name, state)
            if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
                raise BadInputError(f"fan-out stage {name!r}: its input must be a list of problems")
            if not items:
                return name
            share = fan_total(name, state) // len(items)  # shares never add up to more than the stage's budget
            return [Send(f"__item__{name}", {"stage": name, "index": i, "problem": p, "tokens": share})
                    for i, p in enumerate(items)]

        def item(arg: _Item) -> dict:
            option = allocation.stages[name].model_copy(update={"budget_tokens": arg["tokens"]})
            out, left = run_cached(name, option, arg["problem"], {}, 0)
            return {"items": {name: {str(arg["index"]): {**out.model_dump(mode="json"), "left": left}}}}

        def join(state: _State) -> dict:
            got = [v for _, v in sorted(state.get("items", {}).get(name, {}).items(), key=lambda kv: int(kv[0]))]
            option = allocation.stages[name]
            given = sum(g.get("granted") or 0 for g in got)
            verdicts = [g.get("correct") for g in got]
            out = StageOutput(stage=name, answer=[g.get("answer") for g in got],
                              correct=all(verdicts) if got and None not in verdicts else None,
                              tokens=sum(g.get("tokens", 0) for g in got),
                              granted=given,
                              model=option.model, strategy=option.strategy,
                              stop_reason=",".join(sorted({str(g.get("stop_reason")) for g in got})) or None,
                              problem={"items": [g.get("problem") for g in got]})
            # What the items left, and the remainder no item was given, is the stage's leftover.
            return finish(name, out, sum(g.get("left", 0) for g in got) + fan_total(name, state) - given, 0)

        return fan, route, item, join

    g = StateGraph(_State)
    for name in order:
        entry = name
        if graph.stage(name).fan_out:
            fan, route, item, join = make_fan(name)
            entry = f"__fan__{name}"
            g.add_node(entry, fan)
            g.add_node(f"__item__{name}", item, input_schema=_Item)
            g.add_node(name, join)
            g.add_conditional_edges(entry, route, [f"__item__{name}", name])
            g.add_edge(f"__item__{name}", name)
        else:
            g.add_node(name, make_node(name))
        preds = list(dag.predecessors(name))
        if not preds:
            g.add_edge(START, entry)
        else:
            # The list form waits for every parent (two plain edges would run the stage twice).
            g.add_edge(preds if len(preds) > 1 else preds[0], entry)
        if dag.out_degree(name) == 0:
            g.add_edge(name, END)
    return g.compile(checkpointer=checkpointer)


def _run_stage(orc, spec, option, problem: dict, upstream: dict, ledger: Ledger, tracer,
               carry: int) -> tuple[StageOutput, int]:
    if spec.task is None:
        ctx = SolveContext(task=None, problem=problem, verifier=None, ledger=ledger.child(),
                           models=ModelPool({}, loader=orc.backend), tracer=tracer)
        with tracer.span("stage", spec.name, **{"ttc.stage.kind": "callable"}) as span:
            value = spec.run_fn()(ctx, {"problem": problem, **{u: o["answer"] for u, o in upstream.items()}})
            spent = ctx.ledger.spent.tokens
            span.set(**{"ttc.tokens": spent})
        return StageOutput(stage=spec.name, answer=value, tokens=spent), 0
    task = get_task(spec.task)
    parsed = task.parse_problem(problem)
    base_url = spec.base_url_of(option)
    strategy = get_strategy(option.strategy)
    strategy.check_params(option.params)
    pool = orc.models(spec.task, option.model, base_url=base_url)
    strategy.check_models(pool)
    granted = option.budget_tokens + carry
    child = ledger.child(Budget(tokens=granted))
    ctx = SolveContext(task=task, problem=parsed, verifier=task.verifier, ledger=child, models=pool, tracer=tracer,
                       artifacts=orc.artifacts())
    params = dict(option.params)
    if strategy.prepare is not None:
        params.update(strategy.prepare(ctx, params))
    with tracer.span("stage", spec.name, **{"ttc.stage.model": option.model, "ttc.stage.strategy": option.strategy,
                                            "ttc.stage.budget": option.budget_tokens, "ttc.stage.carry": carry}) as span:
        result = strategy(ctx, **params)
        span.set(**{"ttc.answer": result.answer, "ttc.correct": result.correct, "ttc.tokens": result.tokens})
    out = StageOutput(stage=spec.name, answer=result.answer, correct=result.correct, tokens=child.spent.tokens,
                      granted=granted, model=option.model, strategy=option.strategy, stop_reason=result.stop_reason,
                      problem=parsed)
    return out, max(0, granted - child.spent.tokens)


def run_graph(orc, graph: GraphSpec, problem: dict, allocation: Allocation, *, policy: Policy = "static",
              weights: dict[str, float] | None = None, budget_tokens: int | None = None, tracer,
              checkpointer=None, thread_id: str | None = None, resume: bool = False, spent_before: int = 0,
              on_stage=None, cache: dict | None = None) -> GraphResult:
    """Runs ``graph`` on one problem under ``allocation`` (see :func:`compile_graph`).

    Args:
        budget_tokens: The graph's total (default: the allocation's sum of stage budgets).
        thread_id: Checkpoint thread (the run id) when ``checkpointer`` is given.
        resume: Continue the checkpointed thread instead of starting it.
        spent_before: Tokens already spent on this run before an interruption (counted
            against the total, so a resumed run never exceeds it).
    """
    graph.check_allocation(allocation)
    # Models load here, in this thread, before the stages run in LangGraph's worker threads.
    for name, option in allocation.stages.items():
        orc.backend(option.model, base_url=graph.stage(name).base_url_of(option))
    total = budget_tokens or allocation.budget_tokens
    ledger = Ledger(Budget(tokens=total))
    if spent_before:
        ledger.settle(None, Usage(prompt_tokens=spent_before), samples=0)
    compiled = compile_graph(orc, graph, allocation, ledger, tracer, policy=policy, weights=weights,
                             checkpointer=checkpointer, on_stage=on_stage, cache=cache)
    config = {"configurable": {"thread_id": thread_id}} if checkpointer is not None else None
    done_before: list[str] = []
    if resume:
        if checkpointer is None or thread_id is None:
            raise BadInputError("resuming a graph run needs its checkpoint (the run's database)")
        snapshot = compiled.get_state(config)
        done_before = sorted((snapshot.values or {}).get("outputs", {}))
        kwargs = {"durability": "sync"}
        state = compiled.invoke(None, config, **kwargs)
    else:
        kwargs = {"durability": "sync"} if checkpointer is not None else {}
        state = compiled.invoke({"problem": problem, "outputs": {}, "left": {}, "carried": {}}, config, **kwargs)
    outputs = {k: StageOutput.model_validate(v) for k, v in state["outputs"].items()}
    scored = graph.scored()
    score = sum(bool(outputs[s].correct) for s in scored) / len(scored) if scored else 0.0
    return GraphResult(graph=graph.name, score=score, outputs=outputs, tokens=ledger.spent.tokens,
                       budget_tokens=total, trace_id=getattr(tracer, "trace_id", None), policy=policy,
                       resumed_stages=done_before)
