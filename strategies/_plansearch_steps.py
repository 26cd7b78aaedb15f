"""PlanSearch's idea on a model that writes no prose: plans are first steps.

ttc's built-in CountDown model cannot state observations or write a plan in words, so
the natural-language pipeline has no meaning for it. What carries over is the idea that
searching over distinct plans, rather than sampling whole answers again and again, makes
the candidates diverse. Here:

- an **observation** is a first step sampled from the model (``n_observations`` samples
  of one shared-prefix call, stopped at the step delimiter); a step that breaks the
  problem's constraints (``task.steps.dead_end``: a number not available, an illegal
  operation) does not parse as an observation, and when fewer than two distinct ones
  remain the call is repeated at a rising temperature;
- a **derived observation** is a second step sampled after an observation (``n_derived``
  per observation, one batched call);
- a **plan** is one observation, or an observation plus one of its derived steps; it is
  forced as the start of the completion (the prompt ends with the plan's steps, so the
  model continues after them); the task's plan-conditioned format takes only one hint,
  which cannot hold a two-step plan (with ``use_hint`` the plan's first operation is put
  in the hint as well);
- ``n`` solutions are spread evenly over the plans and sampled from each.

This is stratification of the first steps, PlanSearch's idea carried over, not its subset
search: there are no subsets of observations to combine, and critique and fix (which need
a model that writes prose) are skipped; the trace says so.
"""

from __future__ import annotations

import inspect

from ttc.backends.errors import BadInputError
from ttc.backends.types import Completion, SamplingParams
from ttc.core.contracts import SolveContext

from ._plansearch_common import Books, spread

__all__ = ["SKIPPED", "run_steps"]

#: Recorded on the strategy span (and in the docs) wherever critique and fix are skipped.
SKIPPED = ("skipped: the model writes no prose, so plans are first steps (stratification of the first steps, "
           "PlanSearch's idea carried over, not its subset search)")

# Distinct legal observations wanted before no retry is made.
_MIN_OBSERVATIONS = 2


def _takes_hint(task) -> bool:
    try:
        return "hint" in inspect.signature(task.prompt).parameters
    except (TypeError, ValueError):
        return False


def _op(step: str) -> str:
    """The operation of a step without the numbers it leaves (``81-48=33:27 5 33`` -> ``81-48=33``)."""
    return step.split(":", 1)[0].strip()


def run_steps(ctx: SolveContext, books: Books, *, n: int, n_observations: int, n_derived: int,
              obs_temperature: float, temperature_step: float, retries: int, temperature: float,
              seed: int | None, max_tokens: int | None, fmt: str, use_hint: bool) -> dict:
    """Runs the step-plan pipeline into ``books``; returns what the span should record."""
    task, problem = ctx.task, ctx.problem
    steps = task.steps
    if fmt not in steps.formats:
        raise BadInputError(f"plansearch on {task.name} plans over steps of the {', '.join(steps.formats)} format, "
                            f"got fmt={fmt!r}")
    planner = ctx.models.get("planner", fallback="policy")
    d, end = steps.delimiter, steps.end
    base = ctx.prompt(fmt)
    hinted = use_hint and _takes_hint(task)

    def seeded(offset: int) -> int | None:
        return None if seed is None else seed + offset

    def head(plan: tuple[str, ...]) -> str:
        return ctx.prompt(fmt, hint=_op(plan[0])) if hinted and plan else base

    def prompt_of(plan: tuple[str, ...]) -> str:
        return head(plan) + "".join(s + d for s in plan)

    def forced_tokens(plan: tuple[str, ...]) -> int:
        return ctx.policy.count_tokens(prompt_of(plan)) - ctx.policy.count_tokens(head(plan)) if plan else 0

    def text_of(plan: tuple[str, ...]) -> str:
        return d.join(plan)

    step_params = SamplingParams(max_tokens=steps.step_tokens, stop=(d, end), temperature=obs_temperature)
    complete: list[tuple[str, ...]] = []  # plans that are already whole answers

    def legal(prefix: tuple[str, ...], gen) -> list[tuple[str, ...]]:
        out, seen = [], set()
        for c in gen.completions:
            step = c.text.strip()
            plan = prefix + (step,)
            if c.finish_reason != "stop" or not step or step in seen or steps.dead_end(problem, text_of(plan)):
                continue
            seen.add(step)
            if steps.complete(text_of(plan), problem):
                if plan not in complete:
                    complete.append(plan)
            else:
                out.append(plan)
        return out

    # Observations: first steps, retried at a rising temperature while fewer than two are legal.
    first: list[tuple[str, ...]] = []
    attempts = 0
    for attempt in range(retries + 1):
        t = obs_temperature + attempt * temperature_step
        gens = books.call(planner, [base], step_params.model_copy(
            update={"n": n_observations, "temperature": t, "seed": seeded(attempt)}), name=f"observations {attempt}",
            planning=True)
        if not gens:
            break
        attempts += 1
        first += [p for p in legal((), gens[0]) if p not in first]
        if len(first) + len(complete) >= _MIN_OBSERVATIONS:
            break
    # Derived observations: a second step after each observation, one batched call.
    second: list[tuple[str, ...]] = []
    if first and n_derived > 0:
        gens = books.call(planner, [prompt_of(p) for p in first],
                          step_params.model_copy(update={"n": n_derived, "seed": seeded(50)}), name="derived",
                          planning=True)
        per_obs = [legal(p, g) for p, g in zip(first, gens)]
        # Round-robin over observations, so that a short n still reaches every observation's derivations.
        for i in range(max((len(x) for x in per_obs), default=0)):
            second += [x[i] for x in per_obs if i < len(x)]
    plans = first + second
    full = max_tokens or ctx.max_tokens(fmt)
    books.verify([Completion(text=text_of(p), completion_tokens=0, finish_reason="stop") for p in complete])
    if not plans:
        plans = [()]  # no legal first step: sample without a plan rather than return nothing
    counts = spread(n, len(plans), 1)
    # One call per distinct count (at most two): every plan's samples share its prefill.
    for k in sorted({c for c in counts if c > 0}, reverse=True):
        group = [p for p, c in zip(plans, counts) if c == k]
        # The forced steps are prompt tokens now: the answer's limit shrinks by the longest of them.
        forced = max(forced_tokens(p) for p in group)
        params = SamplingParams(n=k, temperature=temperature, seed=seeded(100 + k), stop=tuple(task.stop),
                                max_tokens=max(steps.step_tokens, full - forced) if forced else full)
        gens = books.call(ctx.policy, [prompt_of(p) for p in group], params, name=f"solutions x{k}")
        comps = []
        for plan, g in zip(group, gens):
            prefix = text_of(plan) + (d if plan else "")
            comps += [c.model_copy(update={"text": prefix + c.text}) for c in g.completions]
        books.verify(comps)
    return {"ttc.mode": "steps", "ttc.critique": SKIPPED, "ttc.hint": hinted,
            "ttc.observation_calls": attempts, "ttc.observations": [text_of(p) for p in first],
            "ttc.derived": [text_of(p) for p in second], "ttc.complete_plans": len(complete),
            "ttc.plans": [{"plan": text_of(p), "samples": c} for p, c in zip(plans, counts)]}
