"""Exact CountDown checker.

Parses any model output and checks it against the problem's constraints only (never a
stored answer): every given number used exactly once, no foreign numbers, each
intermediate a positive integer (larger minus smaller, exact division), each written
result correct, the end value equal to the target. Arithmetic is evaluated by its own
parser, never ``eval``. Garbage gives ``correct=False`` with a reason; it never raises.

Accepted answers (the last ``A:`` segment if there is one, else the last non-empty line):

- steps: ``81-48=33,33-27=6,6*5=30`` (separated by commas, semicolons or spaces;
  ``x``, ``×``, ``÷``, ``−`` accepted), each optionally followed by the numbers left
  (``81-48=33:27 5 33,...``), which are ignored;
- an expression: ``(81-48-27)*5`` optionally followed by ``=30``.
"""

from __future__ import annotations

import re
from collections import Counter
from fractions import Fraction

from ttc.core.types import Verdict

__all__ = ["CountdownVerifier", "parse_answer", "ParsedAnswer"]

_MAX_TEXT = 4000  # answers longer than this are not answers; avoids quadratic work
_MAX_LITERAL = 10**9
_MAX_VALUE = 10**15
_MAX_DEPTH = 64
_TRANS = str.maketrans({"×": "*", "x": "*", "X": "*", "÷": "/", "−": "-", "–": "-"})
# A step, optionally followed by the numbers it leaves (":27 5 33"), which are not checked.
_STEP = re.compile(r"\s*\(?\s*([0-9]+)\s*([-+*/])\s*([0-9]+)\s*\)?\s*=\s*([0-9]+)(?:\s*:[0-9 ]*)?\s*")
_STEP_SEP = re.compile(r"[,;\s]+")


class _Reject(Exception):
    """A reason the candidate is wrong (internal control flow)."""


class ParsedAnswer:
    """What was read from a candidate: steps (a, op, b, claimed) or an expression tree."""

    def __init__(self, text: str, steps=None, tree=None, claim=None, error=None):
        self.text = text
        self.error = error
        self.steps = steps
        self.tree = tree
        self.claim = claim


def _segment(text: str) -> str:
    idx = text.rfind("A:")
    if idx >= 0:
        seg = text[idx + 2 :]
    else:
        lines = [ln for ln in text.splitlines() if ln.strip()]
        seg = lines[-1] if lines else ""
    seg = seg.split("\n", 1)[0].strip()
    return seg.rstrip(". \t").strip()


def _parse_steps(seg: str):
    if "=" not in seg:
        return None
    steps = []
    pos = 0
    while pos < len(seg):
        m = _STEP.match(seg, pos)
        if not m:
            return None
        steps.append((int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4))))
        pos = m.end()
        pos = _STEP_SEP.match(seg, pos).end() if _STEP_SEP.match(seg, pos) else pos
    return steps or None


class _Expr:
    """Recursive-descent parser: expr := term (('+'|'-') term)*; term := atom (('*'|'/') atom)*."""

    def __init__(self, s: str):
        self.s = s
        self.i = 0

    def peek(self) -> str:
        while self.i < len(self.s) and self.s[self.i] == " ":
            self.i += 1
        return self.s[self.i] if self.i < len(self.s) else ""

    def parse(self):
        tree = self.expr(0)
        if self.peek():
            raise _Reject(f"unexpected {self.peek()!r} in expression")
        return tree

    def expr(self, depth):
        node = self.term(depth)
        while self.peek() in ("+", "-"):
            op = self.s[self.i]
            self.i += 1
            node = (op, node, self.term(depth))
        return node

    def term(self, depth):
        node = self.atom(depth)
        while self.peek() in ("*", "/"):
            op = self.s[self.i]
            self.i += 1
            node = (op, node, self.atom(depth))
        return node

    def atom(self, depth):
        if depth > _MAX_DEPTH:
            raise _Reject("expression nested too deeply")
        c = self.peek()
        if c == "(":
            self.i += 1
            node = self.expr(depth + 1)
            if self.peek() != ")":
                raise _Reject("unbalanced parentheses")
            self.i += 1
            return node
        j = self.i
        while j < len(self.s) and "0" <= self.s[j] <= "9":
            j += 1
        if j == self.i:
            raise _Reject("expected a number" + (f" at {c!r}" if c else " at end"))
        lit = self.s[self.i : j]
        self.i = j
        if len(lit) > 10 or int(lit) > _MAX_LITERAL:
            raise _Reject("number too large")
        return int(lit)


def parse_answer(text: str) -> ParsedAnswer | None:
    """Reads the answer part of a completion, or None when there is nothing to read."""
    if not isinstance(text, str):
        return None
    seg = _segment(text[-_MAX_TEXT:]).translate(_TRANS)
    if not seg or len(seg) > 400:
        return None
    steps = _parse_steps(seg)
    if steps:
        return ParsedAnswer(seg, steps=steps)
    claim = None
    if "=" in seg:
        left, _, right = seg.partition("=")
        right = right.strip()
        if not re.fullmatch(r"[0-9]{1,12}", right):
            return None
        seg, claim = left.strip(), int(right)
    if not re.fullmatch(r"[0-9+\-*/() ]+", seg):
        return None
    try:
        tree = _Expr(seg).parse()
    except _Reject as r:
        return ParsedAnswer(seg, tree=None, claim=claim, error=str(r))
    except RecursionError:
        return ParsedAnswer(seg, tree=None, claim=claim, error="expression nested too deeply")
    return ParsedAnswer(seg, tree=tree, claim=claim)


def _apply(a, op: str, b):
    """One CountDown operation with the rules on operands; returns the value or rejects."""
    if op == "+":
        r = a + b
    elif op == "*":
        r = a * b
    elif op == "-":
        r = a - b
    else:
        if b == 0:
            raise _Reject("division by zero")
        r = Fraction(a) / Fraction(b)
    if isinstance(r, Fraction):
        if r.denominator != 1:
            raise _Reject(f"{a}/{b} is not an integer")
        r = r.numerator
    if r <= 0:
        raise _Reject(f"{a}{op}{b} is not positive")
    if r > _MAX_VALUE:
        raise _Reject("intermediate value too large")
    return r


def _canon_tree(node) -> str:
    if isinstance(node, int):
        return str(node)
    op, a, b = node
    x, y = _canon_tree(a), _canon_tree(b)
    if op in "+*" and (len(x), x) > (len(y), y):
        x, y = y, x
    return f"({x}{op}{y})"


class CountdownVerifier:
    """Exact checker of CountDown answers; ``verify`` returns a :class:`Verdict`."""

    name = "countdown"

    def verify(self, problem: dict, text: str, ctx=None) -> Verdict:
        """Checks a completion against a problem's numbers and target; never raises.
        An exact check: ``ctx`` (for verifiers that call models) is not used."""
        try:
            return self._verify(problem, text)
        except Exception as exc:  # a last guard: a verifier must not crash a strategy
            return Verdict(correct=False, score=0.0, reason=f"unreadable answer ({type(exc).__name__})")

    def canonical(self, problem: dict, text: str) -> str | None:
        """A canonical form of the parsed answer (for majority vote), or None.

        CountDown answers read the same whatever the problem; it is part of the contract."""
        try:
            parsed = parse_answer(text)
            if parsed is None:
                return None
            if parsed.steps:
                pool: list = []
                for a, op, b, r in parsed.steps:
                    ta = next((t for t in pool if t[0] == a), None)
                    if ta is not None:
                        pool.remove(ta)
                    tb = next((t for t in pool if t[0] == b), None)
                    if tb is not None:
                        pool.remove(tb)
                    pool.append((r, (op, ta[1] if ta else a, tb[1] if tb else b)))
                return " ".join(sorted(_canon_tree(t[1]) for t in pool))
            return _canon_tree(parsed.tree) if parsed.tree is not None else None
        except Exception:
            return None

    def _verify(self, problem: dict, text: str) -> Verdict:
        numbers = [int(n) for n in problem["numbers"]]
        target = int(problem["target"])
        parsed = parse_answer(text)
        if parsed is None:
            return Verdict(correct=False, score=0.0, reason="no answer found")
        try:
            value = self._check_steps(parsed.steps, numbers) if parsed.steps else self._check_tree(parsed, numbers)
        except _Reject as r:
            return Verdict(correct=False, score=0.0, reason=str(r), answer=parsed.text)
        if value != target:
            return Verdict(correct=False, score=0.0, reason=f"reaches {value}, not {target}", answer=parsed.text)
        return Verdict(correct=True, score=1.0, reason=f"hits {target}", answer=parsed.text)

    @staticmethod
    def _check_steps(steps, numbers: list[int]) -> int:
        pool = Counter(numbers)
        given = Counter(numbers)
        for a, op, b, claimed in steps:
            for x in (a, b):
                if pool[x] <= 0:
                    raise _Reject(f"uses {x} twice" if given[x] else f"uses {x}, which is not available")
                pool[x] -= 1
            value = _apply(a, op, b)
            if value != claimed:
                raise _Reject(f"{a}{op}{b} is {value}, not {claimed}")
            pool[value] += 1
        left = +pool
        if sum(left.values()) != 1:
            unused = sorted((left - Counter()).elements())
            raise _Reject("does not use every number exactly once (left: " + " ".join(map(str, unused)) + ")")
        return next(iter(left))

    @staticmethod
    def _check_tree(parsed: ParsedAnswer, numbers: list[int]) -> int:
        if parsed.tree is None:
            raise _Reject(parsed.error or "unparseable expression")
        leaves: list[int] = []

        def ev(node):
            if isinstance(node, int):
                leaves.append(node)
                return node
            op, a, b = node
            return _apply(ev(a), op, ev(b))

        value = ev(parsed.tree)
        have, need = Counter(leaves), Counter(numbers)
        if have != need:
            extra, missing = have - need, need - have
            if extra:
                x = next(iter(extra))
                raise _Reject(f"uses {x} twice" if need[x] else f"uses {x}, which is not given")
            raise _Reject("does not use " + " ".join(map(str, sorted(missing.elements()))))
        if parsed.claim is not None and parsed.claim != value:
            raise _Reject(f"expression is {value}, not {parsed.claim}")
        return int(value)
