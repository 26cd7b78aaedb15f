"""``plansearch``: search over natural-language plans, not over solutions (PlanSearch, 2024).

Sampling one solution after another from the same prompt gives near-copies; PlanSearch
makes the model commit to different ideas first, and the diversity of those ideas is what
search then profits from. For a chat or instruction model (``mode="prose"``), with the
observation and plan calls on the ``planner`` role (the policy model when none is given):

1. **observations**: about ``n_observations`` first-order observations about the problem
   (hints, no solution), parsed from a numbered list; a reply with fewer than two items
   is asked for again at a rising temperature (``retries``, ``temperature_step``);
2. **subsets**: every subset of at most ``max_subset`` observations, the empty one included;
3. **derived observations**: from each non-empty subset, new observations derived from it
   (one call, a list), the subset plus them being a new subset; repeated for ``layers``
   layers; every distinct subset at any layer seeds a plan;
4. **plans**: a natural-language plan from each seed; a critique of each plan, then a
   fixed version (both plans are kept, ``critique=True``);
5. **solutions**: ``per_plan`` solutions from each plan (the task's prompt in ``fmt``,
   preceded by the plan), on the ``policy`` model; all candidates are pooled, the verifier
   judges each, and the best-scored one is the answer (the earliest among equals).

Each stage is one batched, budgeted call through the context (reserved before it is made,
so the budget is never exceeded); when the budget runs short a stage keeps what was
admitted and the later stages work with that. Under a token budget the planning calls
may spend ``plan_share`` of it (half by default), so that solutions are always sampled.

For a model that writes no prose (``mode="steps"``, chosen by ``mode="auto"`` for a task
whose answers are steps, such as CountDown and its built-in model), plans are first steps
forced as the start of the completion: stratification of the first steps, PlanSearch's
idea carried over, not its subset search. Critique and fix are skipped and the strategy's
span says so (``ttc.critique``). See :mod:`ttc.strategies._plansearch_steps`.

Prose mode is checked against scripted backends and a fake OpenAI-compatible endpoint
only: no instruction model can be had on the machines ttc is built on.
"""

from __future__ import annotations

import itertools

from ttc.backends.errors import BadInputError
from ttc.backends.types import SamplingParams
from ttc.core.contracts import SolveContext
from ttc.core.types import Result

from . import _plansearch_prompts as P
from ._plansearch_common import Books, spread
from ._plansearch_steps import SKIPPED, run_steps
from ._rounds import finish
from .registry import strategy

__all__ = ["SKIPPED", "plansearch"]

# Items a first-order observation list must have to count as parsed.
_MIN_ITEMS = 2


def _prose_mode(ctx: SolveContext, fmt: str | None) -> bool:
    steps = getattr(ctx.task, "steps", None)
    return steps is None or (fmt is not None and fmt not in steps.formats)


def _check(name: str, value, minimum: int) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < minimum):
        raise BadInputError(f"plansearch {name} must be an integer >= {minimum}, got {value!r}")


@strategy("plansearch", roles={"planner": "policy"})
def plansearch(
    ctx: SolveContext,
    *,
    mode: str = "auto",
    n: int | None = None,
    n_observations: int = 10,
    max_subset: int = 2,
    layers: int = 2,
    n_derived: int = 2,
    max_subsets: int | None = None,
    critique: bool = True,
    per_plan: int = 1,
    retries: int = 3,
    obs_temperature: float | None = None,
    temperature_step: float = 0.3,
    plan_temperature: float = 0.7,
    plan_tokens: int = 512,
    temperature: float = 0.7,
    seed: int | None = 0,
    max_tokens: int | None = None,
    fmt: str | None = None,
    use_hint: bool = False,
    plan_share: float = 0.5,
) -> Result:
    """Plans first, then solutions from each plan; the verifier picks among all candidates.

    Args:
        mode: "prose" (observations, plans, critiques in words), "steps" (plans are first
            steps, for a model that writes no prose) or "auto" (steps for a task whose
            answers are steps and ``fmt`` one of their formats, else prose).
        n: Solutions in all, spread evenly over the plans (default: prose, ``per_plan``
            per plan; steps, 16).
        n_observations: Prose: observations asked for; steps: first steps sampled.
        max_subset: Prose: largest subset of first-order observations combined.
        layers: Prose: layers of derived observations.
        n_derived: Derived observations kept per call (prose: asked for; steps: second
            steps sampled per observation).
        max_subsets: Prose: first-layer subsets used at most (default: all).
        critique: Prose: critique each plan and keep a fixed version beside it.
        per_plan: Solutions per plan when ``n`` is not given.
        retries: Observation calls repeated at a rising temperature when too few parse.
        obs_temperature: Temperature of the first observation call (default: 0 in prose,
            1.0 in steps, where each sample is one observation).
        temperature_step: Added to it at each retry.
        plan_temperature: Prose: temperature of derivation, plan, critique and fix calls.
        plan_tokens: Prose: token limit of each planner reply.
        temperature, seed, max_tokens: Sampling of the solutions (``max_tokens`` default:
            the task's for ``fmt``). Stage calls use seeds derived from ``seed``.
        fmt: The task's prompt format for solutions (default: prose, "instruct" where the
            task has it, else "direct"; steps, the step format).
        use_hint: Steps: also put a plan's first operation in the prompt's ``hint``, where
            the task's prompt takes one (CountDown's plan-conditioned format). Off by
            default: the forced steps already fix the plan, and on 40 training problems
            the hint cost about 150 tokens a problem without solving more.
        plan_share: Under a token budget, the share of it the planning calls may spend
            (observations, derivations, plans, critiques, fixes); the rest is kept for
            solutions. Without a budget planning is not limited.

    Raises:
        BadInputError: An unknown mode or format, or a count out of range.
    """
    if mode not in ("auto", "prose", "steps"):
        raise BadInputError(f"unknown plansearch mode {mode!r}; valid modes: auto, prose, steps")
    for name, value, low in (("n", n, 1), ("n_observations", n_observations, 1), ("max_subset", max_subset, 0),
                             ("layers", layers, 0), ("n_derived", n_derived, 0), ("max_subsets", max_subsets, 1),
                             ("per_plan", per_plan, 1), ("retries", retries, 0), ("plan_tokens", plan_tokens, 1),
                             ("max_tokens", max_tokens, 1)):
        _check(name, value, low)
    if isinstance(plan_share, bool) or not isinstance(plan_share, (int, float)) or not 0 < plan_share < 1:
        raise BadInputError(f"plansearch plan_share must be between 0 and 1, got {plan_share!r}")
    if mode == "auto":
        mode = "prose" if _prose_mode(ctx, fmt) else "steps"
    if mode == "steps" and getattr(ctx.task, "steps", None) is None:
        raise BadInputError(f"plansearch mode 'steps' needs a task whose answers are steps; "
                            f"{getattr(ctx.task, 'name', 'this task')} has none (use mode='prose')")
    with ctx.tracer.span("strategy", "plansearch", **{"ttc.mode": mode, "ttc.n": n,
                                                   "ttc.temperature": temperature}) as span:
        books = Books(ctx, span, plan_share)
        if mode == "steps":
            attrs = run_steps(ctx, books, n=16 if n is None else n, n_observations=n_observations,
                              n_derived=n_derived, obs_temperature=1.0 if obs_temperature is None else obs_temperature,
                              temperature_step=temperature_step, retries=retries, temperature=temperature, seed=seed,
                              max_tokens=max_tokens, fmt=fmt or ctx.task.steps.formats[0], use_hint=use_hint)
        else:
            attrs = _run_prose(ctx, books, n=n, n_observations=n_observations, max_subset=max_subset, layers=layers,
                               n_derived=n_derived, max_subsets=max_subsets, critique=critique, per_plan=per_plan,
                               retries=retries, obs_temperature=obs_temperature or 0.0,
                               temperature_step=temperature_step, plan_temperature=plan_temperature,
                               plan_tokens=plan_tokens, temperature=temperature, seed=seed, max_tokens=max_tokens,
                               fmt=fmt)
        books.stop_reason()
        span.set(**attrs)
        chosen = max(books.out.candidates, key=lambda c: c.verdict.score, default=None)
        return finish("plansearch", books.out, chosen, span)


def _run_prose(ctx: SolveContext, books: Books, *, n, n_observations, max_subset, layers, n_derived, max_subsets,
               critique, per_plan, retries, obs_temperature, temperature_step, plan_temperature, plan_tokens,
               temperature, seed, max_tokens, fmt) -> dict:
    task = ctx.task
    formats = tuple(getattr(task, "formats", ("direct",)))
    fmt = fmt or ("instruct" if "instruct" in formats else "direct")
    if fmt not in formats:
        raise BadInputError(f"unknown format {fmt!r} for {getattr(task, 'name', 'this task')}; "
                            f"valid formats: {', '.join(formats)}")
    planner = ctx.models.get("planner", fallback="policy")
    problem = ctx.prompt("direct" if "direct" in formats else fmt)  # the statement the planner reads

    def seeded(offset: int) -> int | None:
        return None if seed is None else seed + offset

    def ask(prompts: list[str], name: str, offset: int, temp: float = plan_temperature) -> list[str]:
        params = SamplingParams(max_tokens=plan_tokens, temperature=temp, seed=seeded(offset))
        gens = books.call(planner, prompts, params, name, planning=True)
        return [g.completions[0].text if g.completions else "" for g in gens]

    # 1. First-order observations, retried at a rising temperature until the list parses.
    observations: list[str] = []
    attempts = 0
    for attempt in range(retries + 1):
        replies = ask([P.observations_prompt(problem, n_observations)], f"observations {attempt}", attempt,
                      obs_temperature + attempt * temperature_step)
        if not replies:
            break
        attempts += 1
        observations = P.parse_list(replies[0], n_observations)
        if len(observations) >= _MIN_ITEMS:
            break
    # 2. Every subset of at most max_subset observations, the empty one included.
    layer = [tuple(observations[i] for i in idx) for size in range(min(max_subset, len(observations)) + 1)
             for idx in itertools.combinations(range(len(observations)), size)]
    layer = layer[:max_subsets] if max_subsets is not None else layer
    seeds, seen = [], set()

    def keep(subsets):
        fresh = []
        for s in subsets:
            key = frozenset(P.normalize(o) for o in s)
            if key not in seen:
                seen.add(key)
                fresh.append(s)
        seeds.extend(fresh)
        return fresh

    layer = keep(layer)
    # 3. Derived observations, layer by layer: a subset plus what follows from it is a new subset.
    for depth in range(1, layers + 1):
        parents = [s for s in layer if s]
        replies = ask([P.derive_prompt(problem, s, n_derived) for s in parents], f"derive layer {depth}", 10 * depth)
        children = []
        for s, reply in zip(parents, replies):
            new = [o for o in P.parse_list(reply, n_derived) if P.normalize(o) not in {P.normalize(x) for x in s}]
            if new:
                children.append(s + tuple(new))
        layer = keep(children)
    # 4. A plan from each seed; a critique of each plan and a fixed version, both kept.
    drafts = ask([P.plan_prompt(problem, s) for s in seeds], "plans", 100)
    plans = [(s, p.strip(), "plan") for s, p in zip(seeds, drafts) if p.strip()]
    fixed_n = 0
    if critique and plans:
        critiques = ask([P.critique_prompt(problem, p) for _, p, _ in plans], "critiques", 200)
        fixes = ask([P.fix_prompt(problem, p, c) for (_, p, _), c in zip(plans, critiques)], "fixes", 300)
        both = []
        for i, (s, p, kind) in enumerate(plans):
            both.append((s, p, kind))
            if i < len(fixes) and fixes[i].strip():
                both.append((s, fixes[i].strip(), "fixed"))
                fixed_n += 1
        plans = both
    # 5. Solutions from each plan (the policy model, the task's own prompt after the plan);
    # when not even one plan could be written (the budget), solutions without one.
    if not plans:
        plans = [((), "", "none")]
    counts = spread(n, len(plans), per_plan)
    stop = tuple(task.stop_for(fmt)) if hasattr(task, "stop_for") else tuple(task.stop)
    task_prompt = ctx.prompt(fmt)
    for k in sorted({c for c in counts if c > 0}, reverse=True):
        group = [p for (_, p, _), c in zip(plans, counts) if c == k]
        params = SamplingParams(n=k, temperature=temperature, seed=seeded(400 + k), stop=stop,
                                max_tokens=max_tokens or ctx.max_tokens(fmt))
        prompts = [P.solution_prompt(task_prompt, p) if p else task_prompt for p in group]
        gens = books.call(ctx.policy, prompts, params, f"solutions x{k}")
        books.verify([c for g in gens for c in g.completions])
    return {"ttc.mode": "prose", "ttc.format": fmt, "ttc.observation_calls": attempts,
            "ttc.observations": observations, "ttc.seeds": len(seeds),
            "ttc.plans": [{"kind": kind, "observations": len(s), "samples": c}
                          for (s, _, kind), c in zip(plans, counts)],
            "ttc.critique": "done" if critique else "off", "ttc.fixed_plans": fixed_n}
