"""Exact derivations of ``stateful-arith`` (training data and reference answers only).

A derivation writes each needed quantity in context order with its work shown:
``a=7,b=7*3=21,c=21-4=17`` (a constant is just ``a=7``). What is "needed":

- a defined quantity or a combination: the quantities it depends on, itself included;
- a counterfactual ``if x=v,t``: ``x=v`` first, then the ancestors of ``t`` with ``x``'s
  definition replaced (so upstream of ``x`` is skipped);
- the same with notes (worked-out values of the context): only the quantities the change
  affects are recomputed; every other operand is read from the notes.
"""

from __future__ import annotations

from ttc.verifiers.arith import Definition, evaluate, normalize_query, parse_context

from .generate import descendants

__all__ = ["ancestors", "derivation", "notes_text", "query_parts", "solve"]


def query_parts(query: str) -> tuple[str, list[str], str | None, int | None, str | None]:
    """``(kind, targets, op, cf_value, cf_var)`` of a normalized query."""
    q = normalize_query(query)
    if q.startswith("if"):
        var, rest = q[3:].split("=", 1)
        value, target = rest.split(",", 1)
        return "counterfactual", [target], None, int(value), var
    if len(q) == 3:
        return "combination", [q[0], q[2]], q[1], None, None
    return "defined", [q], None, None, None


def ancestors(defs: list[Definition], targets: list[str], cut: str | None = None) -> set[str]:
    """``targets`` and every quantity they depend on; ``cut``'s own inputs are not followed."""
    by_name = {d[0]: d for d in defs}
    out: set[str] = set()
    stack = list(targets)
    while stack:
        n = stack.pop()
        if n in out:
            continue
        out.add(n)
        if n == cut:
            continue
        _, left, _op, right = by_name[n]
        stack += [o for o in (left, right) if isinstance(o, str)]
    return out


def _step(d: Definition, vals: dict[str, int]) -> str:
    name, left, op, right = d
    lv = vals[left] if isinstance(left, str) else left
    if op is None:
        return f"{name}={lv}"
    rv = vals[right] if isinstance(right, str) else right
    return f"{name}={lv}{op}{rv}={vals[name]}"


def notes_text(context: str) -> str:
    """The notes of a context with work shown: ``a=7,b=7*3=21,c=21-4=17,d=17+7=24``."""
    defs = parse_context(context)
    vals = evaluate(defs)
    return ",".join(_step(d, vals) for d in defs)


def derivation(context: str, query: str, with_notes: bool = False) -> str:
    """The worked answer to ``query`` (no final "."): ``a=7,b=7*3=21,c=21-4=17;17+7=24``.

    With notes a defined quantity is ``c=17``, a combination ``c+a=17+7=24``, and a
    counterfactual recomputes only what the change affects: ``a=9,b=9*3=27,c=27-4=23;23``.
    """
    defs = parse_context(context)
    kind, targets, op, value, var = query_parts(query)
    override = {var: value} if var else None
    vals = evaluate(defs, override)
    if kind == "defined" and with_notes:
        return f"{targets[0]}={vals[targets[0]]}"
    if kind == "combination":
        x, y = targets
        combo = f"{vals[x]}{op}{vals[y]}={evaluate_combo(vals[x], op, vals[y])}"
        if with_notes:
            return f"{x}{op}{y}={combo}"
    need = ancestors(defs, targets, cut=var)
    if with_notes and var:
        need &= descendants(defs, var) | {var}
    steps = []
    for d in defs:
        if d[0] not in need:
            continue
        steps.append(f"{var}={value}" if d[0] == var else _step(d, vals))
    tail = combo if kind == "combination" else str(vals[targets[0]])
    return ",".join(steps) + ";" + tail


def evaluate_combo(x: int, op: str, y: int) -> int:
    """``x op y``."""
    return x + y if op == "+" else x - y if op == "-" else x * y


def solve(context: str, query: str) -> int:
    """The exact answer (same as the verifier's)."""
    defs = parse_context(context)
    kind, targets, op, value, var = query_parts(query)
    vals = evaluate(defs, {var: value} if var else None)
    return evaluate_combo(vals[targets[0]], op, vals[targets[1]]) if kind == "combination" else vals[targets[0]]
