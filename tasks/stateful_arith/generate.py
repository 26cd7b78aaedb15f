"""Seeded contexts and queries of ``stateful-arith``, split into train and test by hashing.

A context defines 5-15 quantities, named ``a``, ``b``, ``c`` ... in order, each either a
constant or one of ``+ - *`` over earlier quantities and small constants, every value in
0..99 (a relation is redrawn otherwise). Queries come from a separate generator (the sleep
phase never sees them), three kinds in equal shares: a defined quantity (``c``), a
combination of two (``c+a``, ``d-b``, ``b*c``; non-negative, products at most 99) and a
counterfactual (``if a=9,c``: ``c`` had ``a`` been 9; ``c`` always depends on ``a`` and
every recomputed value stays in 0..99).

Split: a context whose CRC-32 is 0 mod 10 is "test", any other "train", so no test
context ever appears in training data whatever the seed.
"""

from __future__ import annotations

import random
import zlib

from ttc.verifiers.arith import evaluate, evaluate_query, parse_context

__all__ = ["KINDS", "SPLITS", "descendants", "make_context", "make_problems", "make_queries", "split_of"]

SPLITS = ("train", "test")
KINDS = ("defined", "combination", "counterfactual")
_NAMES = "abcdefghijklmnopqrstuvwxyz"


def split_of(context: str) -> str:
    """"test" for a tenth of all contexts (by CRC-32), "train" for the rest."""
    return "test" if zlib.crc32(context.encode()) % 10 == 0 else "train"


def _relation(rng: random.Random, names: list[str], vals: dict[str, int]) -> tuple[str, int]:
    """One definition over earlier quantities (biased to recent ones, for long chains)."""
    if not names or rng.random() < 0.08:
        v = rng.randint(0, 99) if names else rng.randint(2, 30)
        return str(v), v
    for _ in range(200):
        # Recent quantities are likelier operands, so dependency chains run deep.
        x = names[-1 - min(int(rng.expovariate(0.6)), len(names) - 1)]
        op = rng.choices("+-*", (0.4, 0.4, 0.2))[0]
        if rng.random() < 0.35 and len(names) > 1:
            y = rng.choice([n for n in names if n != x])
            yv = vals[y]
        else:
            y = str(rng.randint(2, 9) if op == "*" else rng.randint(1, 30))
            yv = int(y)
        if op != "*" and rng.random() < 0.15 and not y.isalpha():
            x, y = y, x  # a constant on the left: "b=50-a"
        xv = vals[x] if x.isalpha() else int(x)
        yv = vals[y] if y.isalpha() else int(y)
        v = xv + yv if op == "+" else xv - yv if op == "-" else xv * yv
        if 0 <= v <= 99:
            return f"{x}{op}{y}", v
    v = rng.randint(0, 99)
    return str(v), v


def make_context(rng: random.Random, n_min: int = 5, n_max: int = 15) -> str:
    """A random context of ``n_min..n_max`` quantities, e.g. ``a=7;b=a*3;c=b-4;d=c+a``."""
    n = rng.randint(n_min, n_max)
    names: list[str] = []
    vals: dict[str, int] = {}
    parts = []
    for i in range(n):
        expr, v = _relation(rng, names, vals)
        name = _NAMES[i]
        parts.append(f"{name}={expr}")
        names.append(name)
        vals[name] = v
    return ";".join(parts)


def descendants(defs, var: str) -> set[str]:
    """Quantities whose value depends on ``var`` (``var`` excluded)."""
    out: set[str] = set()
    for name, left, _op, right in defs:
        if any(isinstance(o, str) and (o == var or o in out) for o in (left, right)):
            out.add(name)
    return out


def _query(rng: random.Random, context: str, kind: str) -> str | None:
    defs = parse_context(context)
    names = [d[0] for d in defs]
    vals = evaluate(defs)
    if kind == "defined":
        return rng.choice(names)
    if kind == "combination":
        for _ in range(50):
            x, y = rng.sample(names, 2)
            op = rng.choices("+-*", (0.45, 0.4, 0.15))[0]
            if op == "-" and vals[x] < vals[y]:
                x, y = y, x
            if op == "*" and vals[x] * vals[y] > 99:
                continue
            return f"{x}{op}{y}"
        return None
    cands = [(v, sorted(descendants(defs, v))) for v in names]
    cands = [(v, d) for v, d in cands if d]
    for _ in range(50):
        if not cands:
            return None
        var, desc = rng.choice(cands)
        target = rng.choice(desc)
        new = rng.randint(0, 99)
        if new == vals[var]:
            continue
        cf = evaluate(defs, {var: new})
        if all(0 <= cf[n] <= 99 for n in desc):
            return f"if {var}={new},{target}"
    return None


def make_queries(context: str, q: int, seed: int | str) -> list[tuple[str, str]]:
    """``q`` (kind, query) pairs for a context, kinds cycling so each is a third."""
    rng = random.Random(f"arith-queries/{seed}/{context}")
    out: list[tuple[str, str]] = []
    offset = rng.randrange(3)  # which kind opens, so over many contexts each is a third
    for slot in range(offset, offset + 3 * q):
        if len(out) == q:
            break
        # Kinds cycle; a kind that finds no new query in 20 tries hands its turn on.
        kind = KINDS[slot % 3]
        for _ in range(20):
            query = _query(rng, context, kind)
            if query is not None and (kind, query) not in out:
                out.append((kind, query))
                break
    return out


def make_problems(n: int, seed: int = 0, split: str = "test", queries: int = 10) -> list[dict]:
    """``n`` contexts of ``split`` with ``queries`` queries each: ``n * queries`` problems.

    Each problem is ``{"id", "context", "query", "answer", "kind", "context_id"}``.

    Raises:
        ValueError: Unknown split or a non-positive count.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    if n < 1 or queries < 1:
        raise ValueError("n and queries must be positive")
    rng = random.Random(f"arith/{split}/{seed}")
    out: list[dict] = []
    seen: set[str] = set()
    while len(seen) < n:
        ctx = make_context(rng)
        if split_of(ctx) != split or ctx in seen:
            continue
        seen.add(ctx)
        cid = f"sa-{split}-{seed}-{len(seen) - 1}"
        for j, (kind, query) in enumerate(make_queries(ctx, queries, seed)):
            out.append({"id": f"{cid}-q{j}", "context_id": cid, "context": ctx, "query": query,
                        "answer": evaluate_query(ctx, query), "kind": kind})
    return out
