"""The webui's emphasis syntax, read once for the whole library: prompt text → runs of text sharing one weight.

`(x)` multiplies the weight of what it encloses by 1.1, `[x]` divides it by 1.1, `(x:w)` multiplies it by w; brackets
nest and their factors multiply; a bracket left open at the end applies to the rest of the prompt; a closing bracket
with nothing open, and a weight that is not a number, stay literal text (the webui would stop with an error on the
latter); `\\(`, `\\)`, `\\[`, `\\]`, `\\\\` are literal characters and a backslash before anything else vanishes.
The word `BREAK` (upper case, on its own; surrounding whitespace dropped) becomes the fragment ("BREAK", -1), which
ends a 75-token chunk — unless a bracket around it multiplies that -1 too, as the webui does, and then it is only the
word "BREAK" with a negative weight. Neighbouring runs of equal weight are joined.

Cost: the webui applies each bracket's factor to every run after its opening, one multiplication at a time. Here the
factors are collected as ranges and applied in the same order, so the weights are the webui's bit for bit — while
that takes at most `EXACT_WORK` multiplications. A hostile prompt ("(a" fifty thousand times) would take billions;
past the budget the product of each run's factors comes from running sums of their logarithms (linear time, equal
to the webui's to about 12 significant digits).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

__all__ = ["BREAK", "EXACT_WORK", "ROUND_FACTOR", "SQUARE_FACTOR", "Fragment", "parse_emphasis"]

BREAK = "BREAK"
ROUND_FACTOR = 1.1
SQUARE_FACTOR = 1 / 1.1
EXACT_WORK = 2_000_000  # multiplications spent on exact weights before switching to log sums

_LOG_MAX = math.log(1.7976931348623157e308)  # beyond it a product is inf, as the multiplications would give
_ESCAPED = frozenset("()[]\\")
_WEIGHT = re.compile(r":\s*([+-]?[.\d]+)\s*\)")
_TEXT = re.compile(r"[^\\()\[\]:]+")
_BREAK_SPLIT = re.compile(r"\s*\bBREAK\b\s*", re.S)


@dataclass(frozen=True)
class Fragment:
    """A run of prompt text and its emphasis weight; ("BREAK", -1) marks a chunk break."""

    text: str
    weight: float

    @property
    def is_break(self) -> bool:
        return self.text == BREAK and self.weight == -1


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


class _Reader:
    """The prompt's runs (text, weight 1 or -1 for a break) and its brackets' factors as ranges, in closing order."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.weights: list[float] = []
        self.ranges: list[tuple[int, int, float]] = []  # (first run, end: the runs there when closed, factor)
        self.rounds: list[int] = []
        self.squares: list[int] = []

    def add(self, text: str, weight: float = 1.0) -> None:
        self.texts.append(text)
        self.weights.append(weight)

    def add_text(self, text: str) -> None:
        for i, part in enumerate(_BREAK_SPLIT.split(text)):
            if i:
                self.add(BREAK, -1.0)
            self.add(part)

    def close(self, start: int, factor: float) -> None:
        self.ranges.append((start, len(self.texts), factor))

    def read(self, prompt: str) -> None:
        pos, n = 0, len(prompt)
        while pos < n:
            ch = prompt[pos]
            if ch == "\\":
                nxt = prompt[pos + 1 : pos + 2]
                literal = nxt if nxt in _ESCAPED and nxt else ""
                self.add(literal)
                pos += 1 + len(literal)
            elif ch in "([":
                (self.rounds if ch == "(" else self.squares).append(len(self.texts))
                pos += 1
            elif ch == ":":
                pos = self._colon(prompt, pos)
            elif ch == ")" and self.rounds:
                self.close(self.rounds.pop(), ROUND_FACTOR)
                pos += 1
            elif ch == "]" and self.squares:
                self.close(self.squares.pop(), SQUARE_FACTOR)
                pos += 1
            elif ch in ")]":
                self.add_text(ch)
                pos += 1
            else:
                end = _TEXT.match(prompt, pos).end()  # type: ignore[union-attr]  # ch is none of the specials
                self.add_text(prompt[pos:end])
                pos = end
        for start in self.rounds:
            self.close(start, ROUND_FACTOR)
        for start in self.squares:
            self.close(start, SQUARE_FACTOR)

    def _colon(self, prompt: str, pos: int) -> int:
        m = _WEIGHT.match(prompt, pos)
        weight = _number(m.group(1)) if m else None
        if m and self.rounds and weight is not None:
            self.close(self.rounds.pop(), weight)
            return m.end()
        if m and not self.rounds:  # a weight with nothing open: all of it is text
            self.add_text(m.group(0))
            return m.end()
        self.add_text(":")
        return pos + 1

    def weighted(self) -> list[float]:
        weights = list(self.weights)
        work = sum(end - start for start, end, _ in self.ranges)
        if work <= EXACT_WORK:
            for start, end, factor in self.ranges:
                for i in range(start, end):
                    weights[i] *= factor
            return weights
        return _by_logarithms(weights, self.ranges)


def _by_logarithms(weights: list[float], ranges: list[tuple[int, int, float]]) -> list[float]:
    """Every run's weight times the product of the factors over it, from running sums (linear in runs + ranges)."""
    n = len(weights)
    logs, negatives, zeros = [0.0] * (n + 1), [0] * (n + 1), [0] * (n + 1)
    for start, end, factor in ranges:
        if factor == 0:
            zeros[start] += 1
            zeros[end] -= 1
            continue
        logs[start] += math.log(abs(factor))
        logs[end] -= math.log(abs(factor))
        if factor < 0:
            negatives[start] += 1
            negatives[end] -= 1
    out, log_sum, negative, zero = [], 0.0, 0, 0
    for i, weight in enumerate(weights):
        log_sum, negative, zero = log_sum + logs[i], negative + negatives[i], zero + zeros[i]
        scale = 0.0 if zero else math.inf if log_sum > _LOG_MAX else round(math.exp(log_sum), 12)
        out.append(weight * (-scale if negative % 2 else scale))
    return out


def parse_emphasis(prompt: str) -> list[Fragment]:
    """`prompt` as runs of equal emphasis, as the webui's "Original" emphasis reads it (see the module docstring)."""
    reader = _Reader()
    reader.read(prompt)
    texts: list[list[str]] = []  # joined once at the end: repeated `+=` would copy the text over and over
    weights: list[float] = []
    for text, weight in zip(reader.texts, reader.weighted(), strict=True):
        if weights and weights[-1] == weight:
            texts[-1].append(text)
        else:
            texts.append([text])
            weights.append(weight)
    return [Fragment("".join(t), float(w)) for t, w in zip(texts, weights, strict=True)] or [Fragment("", 1.0)]
