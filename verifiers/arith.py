"""Exact checker of the ``stateful-arith`` task.

A context is a chain of definitions over single lowercase letters, ``a=7;b=a*3;c=b-4;d=c+a``
(spaces are ignored). A query is a quantity (``c``), a combination of two (``c+a``) or a
counterfactual (``if a=9,c``: what ``c`` would be if ``a`` were 9; the intervention
replaces ``a``'s definition, everything downstream is recomputed). The verifier evaluates
the query against the problem's own context (the context is the problem's constraint, as
CountDown's target is), never a stored answer, with its own parser (no ``eval``).

The answer of a completion is its last integer (``a=7,b=7*3=21,c=21-4=17;17.`` -> 17).
Garbage gives ``correct=False`` with a reason; it never raises.
"""

from __future__ import annotations

import re

from ttc.core.types import Verdict

__all__ = [
    "VALUE_MAX",
    "VALUE_MIN",
    "ArithVerifier",
    "Definition",
    "check_context",
    "evaluate",
    "evaluate_query",
    "normalize_context",
    "normalize_query",
    "parse_answer",
    "parse_context",
]

_MAX_TEXT = 4000
#: Every value of a context (and of a counterfactual's recomputation) lies in this range.
VALUE_MIN, VALUE_MAX = 0, 99
_DEF = re.compile(r"^([a-z])=([a-z]|[0-9]{1,3})(?:([-+*])([a-z]|[0-9]{1,3}))?$")
_COMBO = re.compile(r"^([a-z])([-+*])([a-z])$")
_CF = re.compile(r"^if ([a-z])=([0-9]{1,3}),([a-z])$")
_INT = re.compile(r"-?[0-9]+")

#: One definition: (name, left operand, op or None, right operand or None); an operand is
#: a letter (an earlier quantity) or an int constant.
Definition = tuple[str, "str | int", "str | None", "str | int | None"]


def normalize_context(text: str) -> str:
    """The canonical spelling of a context: no whitespace, ``;`` between definitions."""
    s = re.sub(r"\s+", "", str(text)).replace(",", ";").strip(";.")
    return s


def normalize_query(text: str) -> str:
    """The canonical spelling of a query: ``c``, ``c+a`` or ``if a=9,c``.

    Accepts ``if a = 9, what is c?`` and ``what is c + a?`` as well.
    """
    s = re.sub(r"\s+", " ", str(text)).strip().lower().rstrip("?. ")
    s = re.sub(r"what( is|'s)|would be|value of|then", " ", s)
    s = re.sub(r"\s+", "", s)
    # One space after "if" keeps a counterfactual readable ("if a=9,c") at one token.
    return "if " + s[2:] if s.startswith("if") and "=" in s else s


def _operand(tok: str) -> str | int:
    return tok if tok.isalpha() else int(tok)


def parse_context(text: str) -> list[Definition]:
    """The definitions of a context, in order.

    Raises:
        ValueError: Unreadable, a name defined twice, or a use before definition.
    """
    defs: list[Definition] = []
    seen: set[str] = set()
    body = normalize_context(text)
    if not body:
        raise ValueError("empty context")
    for part in body.split(";"):
        m = _DEF.match(part)
        if not m:
            raise ValueError(f"unreadable definition {part!r} (expected like 'b=a*3')")
        name, left, op, right = m.groups()
        if name in seen:
            raise ValueError(f"{name} is defined twice")
        for tok in (left, right):
            if tok is not None and tok.isalpha() and tok not in seen:
                raise ValueError(f"{part!r} uses {tok} before it is defined")
        defs.append((name, _operand(left), op, None if right is None else _operand(right)))
        seen.add(name)
    return defs


def _apply(x: int, op: str | None, y: int | None) -> int:
    if op is None:
        return x
    return x + y if op == "+" else x - y if op == "-" else x * y


def evaluate(defs: list[Definition], override: dict[str, int] | None = None, *,
             strict: bool = False) -> dict[str, int]:
    """All quantities' values, with ``override`` replacing those quantities' definitions.

    Args:
        defs: The context's definitions (:func:`parse_context`).
        override: Quantities whose definitions a counterfactual replaces by a value.
        strict: Raise as soon as a value leaves 0..99, the task's range. Without it a
            chain like ``a=999;b=a*a;c=b*b;...`` doubles its digits per line (bigints of
            millions of bits); the lenient form is for the generator, which evaluates its
            own bounded contexts and rejects out-of-range counterfactuals afterwards.

    Raises:
        ValueError: ``strict`` and a value outside 0..99 (naming the quantity).
    """
    override = override or {}
    vals: dict[str, int] = {}
    for name, left, op, right in defs:
        if name in override:
            vals[name] = override[name]
        else:
            x = vals[left] if isinstance(left, str) else left
            y = None if right is None else vals[right] if isinstance(right, str) else right
            vals[name] = _apply(x, op, y)
        if strict and not VALUE_MIN <= vals[name] <= VALUE_MAX:
            raise ValueError(f"{name} = {vals[name]} is outside {VALUE_MIN}..{VALUE_MAX}; "
                             "every value of a stateful-arith context must stay in that range")
    return vals


def check_context(text: str) -> dict[str, int]:
    """Parses and evaluates a context, rejecting it as soon as a value leaves 0..99.

    Raises:
        ValueError: Unreadable, or a value outside 0..99.
    """
    return evaluate(parse_context(text), strict=True)


def evaluate_query(context: str, query: str) -> int:
    """The exact answer of ``query`` against ``context``.

    Raises:
        ValueError: An unreadable context or query, a query naming an undefined quantity,
            or a value (of the context, or recomputed under a counterfactual) outside 0..99.
    """
    defs = parse_context(context)
    names = {d[0] for d in defs}
    q = normalize_query(query)
    if m := _CF.match(q):
        var, value, target = m.group(1), int(m.group(2)), m.group(3)
        for v in (var, target):
            if v not in names:
                raise ValueError(f"{v} is not defined in the context")
        evaluate(defs, strict=True)  # the context itself must be in range, too
        return evaluate(defs, {var: value}, strict=True)[target]
    vals = evaluate(defs, strict=True)
    if m := _COMBO.match(q):
        x, op, y = m.groups()
        for v in (x, y):
            if v not in names:
                raise ValueError(f"{v} is not defined in the context")
        return _apply(vals[x], op, vals[y])
    if len(q) == 1 and q in names:
        return vals[q]
    raise ValueError(f"unreadable query {query!r} (expected like 'c', 'c+a' or 'if a=9,c')")


def parse_answer(text: str) -> int | None:
    """The final answer of any completion: its last integer (before the closing ``.``)."""
    if not isinstance(text, str):
        return None
    nums = _INT.findall(text[-_MAX_TEXT:])
    if not nums:
        return None
    tok = nums[-1]
    # "21-4" reads as 21 then -4; a minus right after a digit is an operator, not a sign.
    return int(tok.lstrip("-")) if tok.startswith("-") and _follows_digit(text, tok) else int(tok)


def _follows_digit(text: str, tok: str) -> bool:
    i = text.rfind(tok)
    return i > 0 and text[i - 1].isdigit()


class ArithVerifier:
    """Judges a completion by its last integer against the query evaluated on the context.

    Attributes:
        graded: True: this verifier *grades* results but must never *select* among
            candidates. It evaluates the query against the context, which is exactly
            the reference answer (checking an answer here is solving the problem), so a
            strategy that picks candidates by its score (best_of_n, weighted_vote,
            tree_search, ...) would be an oracle, not test-time compute. Strategies that
            choose without the verifier (sample, majority_vote) may run with it, and
            their ``correct`` is then a grade.
    """

    graded = True

    def verify(self, problem: dict, text: str, ctx=None) -> Verdict:
        """``correct`` when the completion's final integer equals the query's value."""
        got = parse_answer(text)
        if got is None:
            return Verdict(correct=False, score=0.0, reason="no answer found")
        try:
            want = evaluate_query(problem["context"], problem["query"])
        except (KeyError, TypeError, ValueError) as exc:
            return Verdict(correct=False, score=0.0, reason=f"bad problem: {exc}", answer=str(got))
        if got != want:
            return Verdict(correct=False, score=0.0, reason=f"answers {got}, not {want}", answer=str(got))
        return Verdict(correct=True, score=1.0, reason=f"{problem['query']} = {want}", answer=str(got))

    def canonical(self, problem: dict, text: str) -> str | None:
        """The parsed integer as a string, or None."""
        got = parse_answer(text)
        return None if got is None else str(got)
