"""TrimR's per-stream machinery: thought segmentation, repetition detection, the rules.

Everything here is pure bookkeeping over text deltas and token ids (no threads, no
models): :mod:`core.trimr` feeds it from a stream and runs the thought verifier beside
decoding. Split out of ``trimr`` to keep each file readable.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["Decision", "Segmenter", "RepetitionDetector", "Rules", "DEFAULT_MARKERS"]

#: Reflection markers that start a new thought in R1-style chains of thought (the
#: paper's examples: "Wait", "But", "Alternatively", "Hmm"), used when neither the model
#: nor the task format names its own.
DEFAULT_MARKERS = ("Wait", "But", "Alternatively", "Hmm")


@dataclass(frozen=True)
class Decision:
    """What the monitor wants done with the stream.

    Attributes:
        rule: ``over``, ``under``, ``repetition`` (or a baseline's name).
        action: ``inject`` (continue after ``text``) or ``stop`` (end the stream now).
        text: The prompt to inject (empty for ``stop``).
        at_thought: Thoughts completed when the decision was taken.
    """

    rule: str
    action: str
    text: str = ""
    at_thought: int = 0


class Segmenter:
    """Splits streamed text into thoughts.

    A thought ends where the next begins: at a line that starts with a reflection marker,
    after a blank line, at a marker following a sentence end within a line, or (with
    ``per_line``) at every newline. A line starting with ``conclude`` ends thinking: the
    text after it is the model's conclusion and is not segmented.

    Args:
        markers: Words that start a new thought.
        per_line: Every line is a thought (formats that write one thought per line).
        conclude: The conclusion marker, or None.
    """

    def __init__(self, markers: Sequence[str] = DEFAULT_MARKERS, *, per_line: bool = False,
                 conclude: str | None = None):
        self.markers = tuple(m for m in markers if m)
        self.per_line, self.conclude = per_line, conclude
        alt = "|".join(re.escape(m) for m in sorted(self.markers, key=len, reverse=True))
        # A marker right after a sentence end within a line also opens a thought.
        self._inline = re.compile(rf"(?<=[.!?])\s+(?=(?:{alt})\b)") if alt else None
        self._line = ""          # the line being written
        self._thought = ""       # the thought being written (full lines so far)
        self.concluded = False   # the conclusion marker was seen
        self.thoughts: list[str] = []

    def feed(self, delta: str) -> list[str]:
        """Takes a text delta; returns the thoughts it completed, in order."""
        done: list[str] = []
        if self.concluded:
            return done
        for ch in delta:
            if ch != "\n":
                self._line += ch
                continue
            done += self._end_line()
            if self.concluded:
                break
        return done

    def flush(self) -> list[str]:
        """At the end of the stream: the unfinished thought, if any."""
        done = [] if self.concluded else self._end_line(final=True)
        if not self.concluded and self._thought.strip():
            done.append(self._emit(self._thought))
        self._thought = ""
        return done

    def _starts_marker(self, line: str) -> bool:
        s = line.lstrip()
        return any(s.startswith(m) and (len(s) == len(m) or not s[len(m)].isalnum()) for m in self.markers)

    def _end_line(self, final: bool = False) -> list[str]:
        line, self._line = self._line, ""
        if not line and final:
            return []
        done: list[str] = []
        if self.conclude and line.lstrip().startswith(self.conclude):
            if self._thought.strip():
                done.append(self._emit(self._thought))
            self._thought, self.concluded = "", True
            return done
        if not line.strip():  # a blank line closes the thought
            if self._thought.strip():
                done.append(self._emit(self._thought))
            self._thought = ""
            return done
        parts = self._inline.split(line) if self._inline is not None and not self.per_line else [line]
        for i, part in enumerate(parts):
            if (i > 0 or self._starts_marker(part)) and self._thought.strip():
                done.append(self._emit(self._thought))
                self._thought = ""
            self._thought += (" " if self._thought and i > 0 else "") + part
        if self.per_line:
            done.append(self._emit(self._thought))
            self._thought = ""
        else:
            self._thought += "\n"
        return done

    def _emit(self, text: str) -> str:
        text = text.strip()
        self.thoughts.append(text)
        return text


class RepetitionDetector:
    """Detects token loops with a rolling (Rabin-Karp) hash over the last ``window`` ids.

    A loop is declared when the same window of ``window`` token ids has been seen
    ``count`` times. Generic text rarely repeats a 64-token span three times; a
    degenerate loop does so within a few periods.
    """

    _BASE, _MOD = 1_000_003, (1 << 61) - 1

    def __init__(self, window: int = 64, count: int = 3):
        self.window, self.count = max(1, window), max(2, count)
        self._ids: deque[int] = deque()
        self._hash = 0
        self._top = pow(self._BASE, self.window - 1, self._MOD)
        self._seen: dict[int, int] = {}

    def feed(self, ids: Sequence[int]) -> bool:
        """Takes new token ids; True once a loop is detected."""
        hit = False
        for t in ids:
            t = (int(t) + 1) % self._MOD
            if len(self._ids) == self.window:
                self._hash = (self._hash - self._ids.popleft() * self._top) % self._MOD
            self._ids.append(t)
            self._hash = (self._hash * self._BASE + t) % self._MOD
            if len(self._ids) == self.window:
                c = self._seen.get(self._hash, 0) + 1
                self._seen[self._hash] = c
                hit = hit or c >= self.count
        return hit


@dataclass
class Rules:
    """TrimR's decision rules over the verifier's per-thought answers.

    Answers are compared between consecutive answer-stating thoughts (thoughts that
    state none are skipped, as the paper's verifier does). ``pairs`` counts consecutive
    equivalent pairs; it resets when a new answer differs.

    Attributes:
        enabled: Rules in force (``over``, ``under``, ``repetition``).
        agree: M: equivalent pairs that make overthinking (2: three agreeing answers).
        ratio: R: share of ``max_tokens`` after which a non-converged chain is underthinking.
        max_thoughts: N: thoughts after which a non-converged chain is underthinking.
        max_tokens: The stream's token limit.
    """

    enabled: frozenset[str]
    agree: int
    ratio: float
    max_thoughts: int
    max_tokens: int
    answers: list[str | None] = field(default_factory=list)
    pairs: int = 0
    last: str | None = None
    first_answer: str | None = None
    first_thought: int | None = None

    def on_answer(self, index: int, answer: str | None, equivalent: bool | None) -> None:
        """Records thought ``index``'s answer and whether it matches the previous answer."""
        self.answers.append(answer)
        if answer is None:
            return
        if self.first_answer is None:
            self.first_answer, self.first_thought = answer, index
        if self.last is not None:
            self.pairs = self.pairs + 1 if equivalent else 0
        self.last = answer

    @property
    def converged(self) -> bool:
        return self.pairs >= self.agree

    def over(self) -> bool:
        return "over" in self.enabled and self.converged

    def under(self, tokens: int, thoughts: int) -> bool:
        if "under" not in self.enabled or self.converged:
            return False
        return tokens >= self.ratio * self.max_tokens or thoughts >= self.max_thoughts
