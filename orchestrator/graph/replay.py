"""Replay tables: recorded allocation trials, served again without running a model.

A search over allocations is measured by how many trials it needs; measuring that over
many seeds and methods with real graph runs would cost far more than one run of the
whole space. A replay table records every allocation's ``TrialResult`` once (keyed by
``Allocation.key``) and ``ReplayObjective`` serves them to ``search`` as if the graph
had run.

Per-stage records go one level down, so a table can be filled from fewer runs: one
record is what one stage configuration produced on one input with one seed, keyed by
``(stage, model, strategy, params, input key, seed)``, holding the candidates in the
order they were drawn. A configuration recorded at its largest budget (or ``n``) serves
a smaller one from its first candidates, where that is meaningful (``prefix_ok``):
seeded independent draws whose i-th sample does not depend on how many follow it (true
of per-sample seeds; not of a strategy whose later calls depend on earlier ones, or of a
backend whose batch composition changes the samples). The prefix served is

- with ``params["n"]`` set: the first ``n`` candidates;
- otherwise: the longest prefix whose prompt tokens (prefilled once) plus generated
  tokens fit the option's ``budget_tokens``; a pooled draw that stops when the budget is
  spent sees the same.

The sample-count parameter ``n`` is left out of the record key so that every ``n`` of one
configuration shares its record; a record with ``prefix_ok`` false serves only exactly
its own budget and ``n``.

File format (JSON lines, UTF-8): the first line is the header, then one line per record::

    {"format": "ttc-replay/1", "name": "plan-solve-small", "graph": "plan-solve",
     "checkpoint_digests": {"countdown-direct-3m": "ab12..."},
     "space": {"order": ["plan", "solve"], "budget": 4.0,
               "options": {"plan": [{"option": {StageOption}, "cost": 0.5}, ...], ...}}}
    {"kind": "trial", "allocation": {"stages": {...}}, "result": {TrialResult}}
    {"kind": "stage", "record": {StageRecord}}

``space`` carries each option's cost, so the ``SearchSpace`` (and its budget filter)
comes back from the file without the models; it may be null.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from ttc.backends.errors import BadInputError

from .allocation import Allocation, SearchSpace, StageOption, TrialResult

__all__ = [
    "FORMAT",
    "CandidateRecord",
    "ReplayMissError",
    "ReplayObjective",
    "ReplayTable",
    "StageRecord",
    "optimum_set",
    "space_from_json",
    "space_to_json",
]

FORMAT = "ttc-replay/1"
SAMPLE_PARAM = "n"


class ReplayMissError(BadInputError, KeyError):
    """An allocation the replay table does not hold, asked of an objective with no fallback."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class CandidateRecord(BaseModel):
    """One candidate a stage drew: its answer, how it was judged, what it cost."""

    answer: Any = None
    correct: bool | None = None
    score: float | None = None
    tokens: int = Field(default=0, ge=0)


class StageRecord(BaseModel):
    """What one stage configuration produced on one input with one seed.

    Attributes:
        stage, model, strategy, params, seed: The configuration (``params`` may hold ``n``;
            it is not part of the key).
        input_key: Identifies the stage's input (e.g. a hash of its problem dict).
        budget_tokens: The budget the record was made at.
        prompt_tokens: Prompt tokens prefilled once for the stage's samples.
        candidates: In the order they were drawn.
        prefix_ok: Whether the first candidates stand for a run at a smaller budget or n.
    """

    stage: str
    model: str
    strategy: str
    params: dict[str, Any] = Field(default_factory=dict)
    input_key: str
    seed: int = 0
    budget_tokens: int = Field(ge=1)
    prompt_tokens: int = Field(default=0, ge=0)
    candidates: list[CandidateRecord] = Field(default_factory=list)
    prefix_ok: bool = True

    @property
    def key(self) -> tuple:
        return _stage_key(self.stage, self.model, self.strategy, self.params, self.input_key, self.seed)

    def serve(self, option: StageOption) -> list[CandidateRecord] | None:
        """The candidates ``option`` would have drawn, or None if this record cannot tell."""
        want_n, have_n = option.params.get(SAMPLE_PARAM), self.params.get(SAMPLE_PARAM)
        if not self.prefix_ok:
            exact = option.budget_tokens == self.budget_tokens and want_n == have_n
            return list(self.candidates) if exact else None
        if want_n is not None:
            if want_n > len(self.candidates) or option.budget_tokens > self.budget_tokens:
                return None
            return list(self.candidates[:want_n])
        if option.budget_tokens > self.budget_tokens:
            return None
        out, spent = [], self.prompt_tokens
        for c in self.candidates:
            spent += c.tokens
            if spent > option.budget_tokens:
                break
            out.append(c)
        return out


def _stage_key(stage: str, model: str, strategy: str, params: Mapping[str, Any], input_key: str,
               seed: int) -> tuple:
    shared = {k: v for k, v in params.items() if k != SAMPLE_PARAM}
    return (stage, model, strategy, json.dumps(shared, sort_keys=True, default=str), input_key, seed)


def space_to_json(space: SearchSpace) -> dict[str, Any]:
    """The space as JSON: stage order, budget, and every option with its cost."""
    return {"order": list(space.order), "budget": space.budget,
            "options": {s: [{"option": o.model_dump(mode="json"), "cost": space.cost(Allocation(stages={s: o}))}
                            for o in space.options[s]] for s in space.order}}


def space_from_json(body: Mapping[str, Any]) -> SearchSpace:
    """The ``SearchSpace`` that ``space_to_json`` wrote; costs come from the recorded table."""
    costs: dict[tuple[str, str], float] = {}
    options: dict[str, list[StageOption]] = {}
    for stage, rows in body["options"].items():
        options[stage] = []
        for row in rows:
            o = StageOption.model_validate(row["option"])
            options[stage].append(o)
            costs[(stage, _option_key(o))] = float(row["cost"])

    def option_cost(stage: str, option: StageOption) -> float:
        try:
            return costs[(stage, _option_key(option))]
        except KeyError:
            raise BadInputError(f"stage {stage!r} option {option.label} has no recorded cost") from None

    return SearchSpace(options, list(body["order"]), option_cost, body.get("budget"))


def _option_key(o: StageOption) -> str:
    return json.dumps(o.model_dump(mode="json"), sort_keys=True)


class ReplayTable:
    """Recorded trials (by ``Allocation.key``) and per-stage records of one graph.

    Args:
        name: The table's name (e.g. the bench that made it).
        graph: The graph's name.
        checkpoint_digests: Model name -> checkpoint digest the records were made with.
        space: The search space the trials come from (None: unknown).
    """

    def __init__(self, name: str, graph: str, checkpoint_digests: Mapping[str, str | None] | None = None,
                 space: SearchSpace | None = None):
        self.name, self.graph = name, graph
        self.checkpoint_digests = dict(checkpoint_digests or {})
        self.space = space
        self._trials: dict[str, tuple[Allocation, TrialResult]] = {}
        self._stages: dict[tuple, list[StageRecord]] = {}

    # -- trials -------------------------------------------------------------------------
    def add_trial(self, allocation: Allocation, result: TrialResult) -> None:
        """Records (or replaces) the result of ``allocation``."""
        self._trials[allocation.key] = (allocation, result)

    def get(self, allocation: Allocation) -> TrialResult | None:
        hit = self._trials.get(allocation.key)
        return hit[1] if hit else None

    def __contains__(self, allocation: object) -> bool:
        return isinstance(allocation, Allocation) and allocation.key in self._trials

    def __len__(self) -> int:
        return len(self._trials)

    def trials(self) -> Iterator[tuple[Allocation, TrialResult]]:
        """Every recorded (allocation, result), in the order they were added."""
        return iter(list(self._trials.values()))

    # -- stage records ------------------------------------------------------------------
    def add_stage(self, record: StageRecord) -> None:
        """Records what a stage drew; a prefix-servable record covered by a larger one is dropped."""
        kept = self._stages.setdefault(record.key, [])
        if record.prefix_ok and any(r.prefix_ok and _covers(r, record) for r in kept):
            return
        if record.prefix_ok:
            kept[:] = [r for r in kept if not (r.prefix_ok and _covers(record, r))]
        kept.append(record)

    def stage(self, stage: str, option: StageOption, input_key: str, seed: int = 0) -> list[CandidateRecord] | None:
        """The candidates ``option`` draws on ``input_key`` with ``seed``, or None if not recorded.

        An exact record is preferred; otherwise the smallest prefix-servable record that
        covers the option's budget (and ``n``).
        """
        records = self._stages.get(_stage_key(stage, option.model, option.strategy, option.params, input_key, seed), [])
        exact = [r for r in records if r.budget_tokens == option.budget_tokens
                 and r.params.get(SAMPLE_PARAM) == option.params.get(SAMPLE_PARAM)]
        for r in exact + sorted(records, key=lambda r: (r.budget_tokens, len(r.candidates))):
            served = r.serve(option)
            if served is not None:
                return served
        return None

    def stage_records(self) -> Iterator[StageRecord]:
        return iter([r for rs in self._stages.values() for r in rs])

    # -- files --------------------------------------------------------------------------
    def check(self, graph: str, checkpoint_digests: Mapping[str, str | None]) -> None:
        """Raises BadInputError unless the table was made for ``graph`` with these checkpoints."""
        if graph != self.graph:
            raise BadInputError(f"replay table {self.name!r} is for graph {self.graph!r}, not {graph!r}")
        changed = sorted(m for m, d in self.checkpoint_digests.items() if checkpoint_digests.get(m) != d)
        if changed:
            raise BadInputError(f"replay table {self.name!r} was recorded with other checkpoints of "
                                f"{', '.join(changed)}")

    def write(self, path: str | Path) -> None:
        """Writes the table as JSON lines (see the module docstring)."""
        header = {"format": FORMAT, "name": self.name, "graph": self.graph,
                  "checkpoint_digests": self.checkpoint_digests,
                  "space": space_to_json(self.space) if self.space is not None else None}
        lines = [json.dumps(header, sort_keys=True)]
        lines += [json.dumps({"kind": "trial", "allocation": a.model_dump(mode="json"),
                              "result": r.model_dump(mode="json")}, sort_keys=True) for a, r in self.trials()]
        lines += [json.dumps({"kind": "stage", "record": r.model_dump(mode="json")}, sort_keys=True)
                  for r in self.stage_records()]
        Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")

    @classmethod
    def read(cls, path: str | Path) -> ReplayTable:
        """Reads a table ``write`` made; anything malformed is BadInputError naming the line."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise BadInputError(f"cannot read replay table {path}: {exc}") from None
        lines = [(i, ln) for i, ln in enumerate(text.splitlines(), 1) if ln.strip()]
        if not lines:
            raise BadInputError(f"replay table {path} is empty")
        table = None
        for i, line in lines:
            try:
                row = json.loads(line)
                if table is None:
                    if row.get("format") != FORMAT:
                        raise ValueError(f"format {row.get('format')!r} is not {FORMAT!r}")
                    space = space_from_json(row["space"]) if row.get("space") is not None else None
                    table = cls(row["name"], row["graph"], row.get("checkpoint_digests"), space)
                elif row["kind"] == "trial":
                    table.add_trial(Allocation.model_validate(row["allocation"]),
                                    TrialResult.model_validate(row["result"]))
                elif row["kind"] == "stage":
                    table.add_stage(StageRecord.model_validate(row["record"]))
                else:
                    raise ValueError(f"unknown kind {row['kind']!r}")
            except (ValueError, KeyError, TypeError, AttributeError, ValidationError) as exc:
                if isinstance(exc, BadInputError):
                    raise
                msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise BadInputError(f"replay table {path} line {i}: {msg}") from None
        return table


def _covers(big: StageRecord, small: StageRecord) -> bool:
    """Whether ``big`` serves everything ``small`` can (same key, both prefix-servable)."""
    return big.budget_tokens >= small.budget_tokens and len(big.candidates) >= len(small.candidates) \
        and big.candidates[:len(small.candidates)] == small.candidates


class ReplayObjective:
    """An objective for ``search`` that serves recorded trials.

    Args:
        table: The replay table.
        fallback: Called for an allocation the table lacks (e.g. a ``GraphObjective``);
            None raises ``ReplayMissError``.
        record: Add what the fallback returned to the table, so it is served next time.

    Attributes:
        hits, misses: How many calls the table answered, and how many it did not.
    """

    def __init__(self, table: ReplayTable, fallback: Callable[[Allocation], TrialResult] | None = None,
                 record: bool = True):
        self.table, self.fallback, self.record = table, fallback, record
        self.hits = self.misses = 0

    def __call__(self, allocation: Allocation) -> TrialResult:
        hit = self.table.get(allocation)
        if hit is not None:
            self.hits += 1
            return hit
        self.misses += 1
        if self.fallback is None:
            raise ReplayMissError(f"replay table {self.table.name!r} holds no trial of {allocation.digest} "
                                  f"({', '.join(f'{s}={o.label}' for s, o in allocation.stages.items())})")
        result = self.fallback(allocation)
        if self.record:
            self.table.add_trial(allocation, result)
        return result


def optimum_set(table: ReplayTable, paired_se: bool = True) -> set[str]:
    """Keys of every allocation within one standard error of the best in ``table``.

    With ``paired_se`` the standard error is that of the per-problem differences from the
    best (``TrialResult.scores``, paired over the same train problems), so an allocation
    that loses on every problem by a hair is out while a noisy near-tie is in; without
    it, the two means' standard errors are combined as if independent. A result without
    per-problem scores has no spread: only exact ties with the best count. Allocations
    the table's space rules out (over its budget) are left out.

    Raises:
        BadInputError: The table is empty, or paired scores differ in length.
    """
    rows = [(a, r) for a, r in table.trials() if table.space is None or table.space.feasible(a)]
    if not rows:
        raise BadInputError(f"replay table {table.name!r} holds no feasible trial")
    best = max((r for _, r in rows), key=lambda r: r.score)
    out = set()
    for a, r in rows:
        gap = best.score - r.score
        if paired_se:
            if len(r.scores) != len(best.scores):
                raise BadInputError(f"replay table {table.name!r}: {a.digest} has {len(r.scores)} per-problem "
                                    f"scores, the best {len(best.scores)}: cannot pair them")
            se = _se([x - y for x, y in zip(best.scores, r.scores)])
        else:
            se = math.sqrt(_se(best.scores) ** 2 + _se(r.scores) ** 2)
        if gap <= se + 1e-12:
            out.add(a.key)
    return out


def _se(values: list[float]) -> float:
    """Standard error of the mean (sample standard deviation); 0 for fewer than two values."""
    n = len(values)
    if n < 2:
        return 0.0
    m = sum(values) / n
    return math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1) / n)
