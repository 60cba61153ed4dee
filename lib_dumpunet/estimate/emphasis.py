"""The webui's attention (emphasis) syntax, read into weighted pieces of text.

`(text)` multiplies the weight of what it encloses by 1.1, `[text]` divides it by 1.1, `(text:1.4)` sets the factor
to 1.4; brackets nest and their factors multiply. `\\(` and friends are literal brackets. A bracket left open at the
end still applies to everything after it; a closing bracket with nothing open is kept as text. The word `BREAK`
(upper case, on its own) ends the current 75-token chunk. The result is a list of `Piece`s with neighbours of equal
weight merged, which is what a prompt encoder needs to tokenise each piece and give every token its multiplier.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

__all__ = ["BREAK", "ROUND_FACTOR", "SQUARE_FACTOR", "Piece", "parse_emphasis"]

ROUND_FACTOR = 1.1
SQUARE_FACTOR = 1 / 1.1
BREAK = "BREAK"

# One lexical item: an escape, an explicit weight closing a round bracket, a bracket, a lone colon, or plain text.
_LEXEME = re.compile(
    r"""
    (?P<escape>\\.)
  | (?P<weight>:\s*(?P<number>[+-]?(?:\d+\.?\d*|\.\d+))\s*\))
  | (?P<open>[(\[])
  | (?P<close>[)\]])
  | (?P<text>[^\\()\[\]:]+|:)
    """,
    re.VERBOSE | re.DOTALL,
)
_BREAK_SPLIT = re.compile(r"\bBREAK\b")  # whitespace around a break is stripped after the split (linear time)


@dataclass
class Piece:
    """A run of text that shares one weight; `text == BREAK` with weight -1 marks a chunk break."""

    text: str
    weight: float

    @property
    def is_break(self) -> bool:
        return self.weight == -1 and self.text == BREAK


def _add_text(pieces: list[Piece], text: str) -> None:
    parts = _BREAK_SPLIT.split(text)
    for n, part in enumerate(parts):
        if n > 0:
            pieces.append(Piece(BREAK, -1))
            part = part.lstrip()
        if n < len(parts) - 1:
            part = part.rstrip()
        if part:
            pieces.append(Piece(part, 1.0))


class _Factors:
    """Bracket factors over ranges of pieces, applied once at the end (linear in the number of pieces however many
    brackets there are): per piece, the sum of log|factor|, the count of negative and of zero factors."""

    def __init__(self) -> None:
        self.ranges: list[tuple[int, int, float]] = []

    def add(self, start: int, end: int, factor: float) -> None:
        self.ranges.append((start, end, factor))

    def apply(self, pieces: list[Piece]) -> None:
        n = len(pieces)
        logs, negatives, zeros = [0.0] * (n + 1), [0] * (n + 1), [0] * (n + 1)
        for start, end, factor in self.ranges:
            if factor == 0:
                zeros[start] += 1
                zeros[end] -= 1
                continue
            logs[start] += math.log(abs(factor))
            logs[end] -= math.log(abs(factor))
            if factor < 0:
                negatives[start] += 1
                negatives[end] -= 1
        log_sum, negative, zero = 0.0, 0, 0
        for i, piece in enumerate(pieces):
            log_sum, negative, zero = log_sum + logs[i], negative + negatives[i], zero + zeros[i]
            if piece.is_break or (log_sum == 0 and negative == 0 and zero == 0):
                continue
            weight = 0.0 if zero else round(math.exp(log_sum), 12)
            piece.weight = -weight if negative % 2 else weight


def _merge(pieces: list[Piece]) -> list[Piece]:
    merged: list[Piece] = []
    texts: list[list[str]] = []
    for piece in pieces:
        previous = merged[-1] if merged else None
        if previous and not piece.is_break and not previous.is_break and previous.weight == piece.weight:
            texts[-1].append(piece.text)
        else:
            merged.append(piece)
            texts.append([piece.text])
    for piece, parts in zip(merged, texts, strict=True):
        piece.text = "".join(parts)
    return merged or [Piece("", 1.0)]


def parse_emphasis(text: str) -> list[Piece]:
    """Split `text` into weighted pieces as the webui's "Original" emphasis reads it."""
    pieces: list[Piece] = []
    open_round: list[int] = []  # index into `pieces` where each open bracket starts
    open_square: list[int] = []
    factors = _Factors()
    for match in _LEXEME.finditer(text):
        kind = match.lastgroup if match.lastgroup != "number" else "weight"
        lexeme = match.group(0)
        if kind == "escape":
            pieces.append(Piece(lexeme[1], 1.0))
        elif kind == "open":
            (open_round if lexeme == "(" else open_square).append(len(pieces))
        elif kind == "weight" and open_round:
            factors.add(open_round.pop(), len(pieces), float(match.group("number")))
        elif kind == "close" and lexeme == ")" and open_round:
            factors.add(open_round.pop(), len(pieces), ROUND_FACTOR)
        elif kind == "close" and lexeme == "]" and open_square:
            factors.add(open_square.pop(), len(pieces), SQUARE_FACTOR)
        else:
            _add_text(pieces, lexeme)
    for start in open_round:
        factors.add(start, len(pieces), ROUND_FACTOR)
    for start in open_square:
        factors.add(start, len(pieces), SQUARE_FACTOR)
    factors.apply(pieces)
    return _merge(pieces)
