"""Task graphs: a multi-stage task as a DAG of stages, declared in Python or in a file.

A stage either solves a problem of a registered task with a strategy (the allocation
picks the model, strategy and token budget), or is a user callable ``(ctx, inputs) ->
output`` that calls models through the context it is given. A stage's problem is built
from the graph's problem and the outputs of its upstream stages by its ``input``
function ``(problem, upstream) -> dict``.

File schema (YAML or JSON; ``ttc allocate GRAPH`` and ``ttc solve --graph GRAPH`` read it)::

    name: countdown-plan-solve            # the graph's name (allocation files name it)
    score: [solve]                        # stages whose correctness is the problem's score
    stages:
      - name: plan
        task: countdown                   # a registered task (ttc tasks list)
        input: ttc.orchestrator.graph.builtin:countdown_problem   # module:function
        options:                          # what the allocator may choose from
          - {model: countdown-direct, strategy: best_of_n, budgets: [128, 256, 512]}
          - {model: countdown-search, strategy: sequential, budgets: [256, 512, 1024],
             base_url: null}              # a model name, a checkpoint path, or a served model
      - name: solve
        task: countdown
        after: [plan]                     # upstream stages (the DAG's edges)
        input: ttc.orchestrator.graph.builtin:countdown_with_hint
        options:
          - {model: countdown-direct, strategy: best_of_n, budgets: [64, 128, 256]}

A user-callable stage names ``run: module:function`` instead of ``task``.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import networkx as nx
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_serializer, field_validator, model_validator

from ttc.backends.errors import BadInputError

from .allocation import Allocation, StageOption

__all__ = ["StageChoice", "StageSpec", "GraphSpec", "load_graph", "resolve_callable"]

_RESERVED = ("|", ":", "__start__", "__end__", "__fan__", "__item__")


def resolve_callable(ref: str | Callable | None) -> Callable | None:
    """A callable from ``module:function`` (or the callable itself)."""
    if ref is None or callable(ref):
        return ref
    module, _, attr = ref.partition(":")
    if not module or not attr:
        raise BadInputError(f"{ref!r} is not module:function")
    try:
        obj = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise BadInputError(f"cannot load {ref!r}: {exc}") from None
    if not callable(obj):
        raise BadInputError(f"{ref!r} is not callable")
    return obj


class StageChoice(BaseModel):
    """Options of one stage: a model with a strategy, at each of several budgets."""

    model_config = ConfigDict(extra="forbid")

    model: str
    strategy: str = "best_of_n"
    params: dict[str, Any] = Field(default_factory=dict)
    budgets: list[int] = Field(min_length=1)
    base_url: str | None = None

    @field_validator("budgets")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if any(b < 1 for b in v):
            raise ValueError("budgets must be positive token counts")
        return sorted(set(v))

    def options(self) -> list[StageOption]:
        return [StageOption(model=self.model, strategy=self.strategy, params=self.params, budget_tokens=b)
                for b in self.budgets]


class StageSpec(BaseModel):
    """One stage of a task graph.

    Attributes:
        name: Unique in the graph.
        task: Registered task the stage solves (None for a callable stage).
        run: A callable ``(ctx, inputs) -> output`` (or ``module:function``) instead of a task.
        input: ``(problem, upstream) -> dict`` building the stage's problem (default: the
            graph's problem as is); ``upstream`` maps each upstream stage to its output.
        after: Upstream stages.
        options: What the allocator may choose from.
        fan_out: ``input`` returns a list of problems, solved independently (one LangGraph
            ``Send`` each, run in parallel) with equal shares of the stage's budget; the
            stage's answer is the list of answers, right when every one is.
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    name: str
    task: str | None = None
    run: Any = None
    input: Any = None
    after: list[str] = Field(default_factory=list)
    options: list[StageChoice] = Field(default_factory=list)
    fan_out: bool = False

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not v or any(r in v for r in _RESERVED):
            raise ValueError(f"stage name {v!r} is empty or uses a reserved character (| or :)")
        return v

    @model_validator(mode="after")
    def _one_kind(self) -> "StageSpec":
        if (self.task is None) == (self.run is None):
            raise ValueError(f"stage {self.name!r} needs exactly one of task or run")
        if self.task is not None and not self.options:
            raise ValueError(f"stage {self.name!r} solves a task and needs options (model, strategy, budgets)")
        if self.fan_out and self.task is None:
            raise ValueError(f"stage {self.name!r}: fan_out needs a task stage (a callable stage can loop itself)")
        if self.fan_out and self.input is None:
            raise ValueError(f"stage {self.name!r}: fan_out needs an input function returning a list of problems")
        return self

    @field_serializer("run", "input")
    def _ref(self, fn: Any) -> str | None:
        # Recorded with a run so that it can resume: a module-level function by its import path.
        if fn is None or isinstance(fn, str):
            return fn
        return f"{fn.__module__}:{fn.__qualname__}"

    def input_fn(self) -> Callable[[dict, dict], dict] | None:
        return resolve_callable(self.input)

    def run_fn(self) -> Callable | None:
        return resolve_callable(self.run)

    def base_url_of(self, option: StageOption) -> str | None:
        """Where the option's model is served (None: in-process), as its choice declares."""
        choice = next((c for c in self.options if c.model == option.model and c.strategy == option.strategy), None)
        return choice.base_url if choice is not None else None

    def all_options(self) -> list[StageOption]:
        return [o for choice in self.options for o in choice.options()]


class GraphSpec(BaseModel):
    """A multi-stage task: stages, their order, and which stages score the problem."""

    model_config = ConfigDict(extra="forbid")

    name: str
    stages: list[StageSpec]
    score: list[str] = Field(default_factory=list)
    description: str = ""

    @model_validator(mode="after")
    def _check(self) -> "GraphSpec":
        names = [s.name for s in self.stages]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"stage names must be unique: {dupes}")
        for s in self.stages:
            unknown = [u for u in s.after if u not in names]
            if unknown:
                raise ValueError(f"stage {s.name!r} comes after unknown stage(s) {unknown}")
        bad = [s for s in self.score if s not in names]
        if bad:
            raise ValueError(f"score names unknown stage(s) {bad}")
        if not nx.is_directed_acyclic_graph(self.dag()):
            raise ValueError(f"graph {self.name!r} has a cycle")
        return self

    def dag(self) -> nx.DiGraph:
        g = nx.DiGraph()
        for s in self.stages:
            g.add_node(s.name, spec=s)
            for u in s.after:
                g.add_edge(u, s.name)
        return g

    def order(self) -> list[str]:
        """Stages upstream first (a topological order, stable by declaration)."""
        pos = {s.name: i for i, s in enumerate(self.stages)}
        return list(nx.lexicographical_topological_sort(self.dag(), key=lambda n: pos[n]))

    def stage(self, name: str) -> StageSpec:
        return next(s for s in self.stages if s.name == name)

    def scored(self) -> list[str]:
        """The stages whose correctness is the score (default: the sinks of the DAG)."""
        if self.score:
            return self.score
        g = self.dag()
        return [n for n in self.order() if g.out_degree(n) == 0]

    def check_allocation(self, allocation: Allocation) -> None:
        """Raises BadInputError unless every task stage has exactly one option allocated."""
        wanted = {s.name for s in self.stages if s.task is not None}
        missing, extra = wanted - set(allocation.stages), set(allocation.stages) - wanted
        if missing or extra:
            raise BadInputError(f"allocation for graph {self.name!r}: missing stages {sorted(missing)}, "
                                f"unknown stages {sorted(extra)}")

    def default_allocation(self) -> Allocation:
        """Each task stage's first option at its largest budget: a starting point."""
        stages = {}
        for s in self.stages:
            if s.task is not None:
                choice = s.options[0]
                stages[s.name] = choice.options()[-1]
        return Allocation(stages=stages)


def load_graph(path: str | Path) -> GraphSpec:
    """A graph from a YAML or JSON file (BadInputError with one line on any problem)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInputError(f"cannot read graph file {path}: {exc}") from None
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:  # yaml and json parse errors differ in type
        raise BadInputError(f"graph file {path} is not valid {path.suffix.lstrip('.') or 'JSON'}: "
                            f"{str(exc).splitlines()[0]}") from None
    try:
        return GraphSpec.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err.get("loc", ()))
        raise BadInputError(f"graph file {path}: {loc}: {err.get('msg', 'invalid')}".replace("Value error, ", ""))
