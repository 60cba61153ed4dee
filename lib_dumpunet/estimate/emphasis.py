"""The webui's attention (emphasis) syntax, read into weighted pieces of text.

`(text)` multiplies the weight of what it encloses by 1.1, `[text]` divides it by 1.1, `(text:1.4)` sets the factor
to 1.4; brackets nest and their factors multiply. `\\(` and friends are literal brackets. A bracket left open at the
end still applies to everything after it; a closing bracket with nothing open is kept as text. The word `BREAK`
(upper case, on its own) ends the current 75-token chunk. The result is a list of `Piece`s with neighbours of equal
weight merged, which is what a prompt encoder needs to tokenise each piece and give every token its multiplier.
"""

from __future__ import annotations

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
_BREAK_SPLIT = re.compile(r"\s*\bBREAK\b\s*")


@dataclass
class Piece:
    """A run of text that shares one weight; `text == BREAK` with weight -1 marks a chunk break."""

    text: str
    weight: float

    @property
    def is_break(self) -> bool:
        return self.weight == -1 and self.text == BREAK


def _add_text(pieces: list[Piece], text: str) -> None:
    for n, part in enumerate(_BREAK_SPLIT.split(text)):
        if n > 0:
            pieces.append(Piece(BREAK, -1))
        if part:
            pieces.append(Piece(part, 1.0))


def _scale(pieces: list[Piece], start: int, factor: float) -> None:
    for piece in pieces[start:]:
        if not piece.is_break:
            piece.weight *= factor


def _merge(pieces: list[Piece]) -> list[Piece]:
    merged: list[Piece] = []
    for piece in pieces:
        previous = merged[-1] if merged else None
        if previous and not piece.is_break and not previous.is_break and previous.weight == piece.weight:
            previous.text += piece.text
        else:
            merged.append(piece)
    return merged or [Piece("", 1.0)]


def parse_emphasis(text: str) -> list[Piece]:
    """Split `text` into weighted pieces as the webui's "Original" emphasis reads it."""
    pieces: list[Piece] = []
    open_round: list[int] = []  # index into `pieces` where each open bracket starts
    open_square: list[int] = []
    for match in _LEXEME.finditer(text):
        kind = match.lastgroup if match.lastgroup != "number" else "weight"
        lexeme = match.group(0)
        if kind == "escape":
            pieces.append(Piece(lexeme[1], 1.0))
        elif kind == "open":
            (open_round if lexeme == "(" else open_square).append(len(pieces))
        elif kind == "weight" and open_round:
            _scale(pieces, open_round.pop(), float(match.group("number")))
        elif kind == "close" and lexeme == ")" and open_round:
            _scale(pieces, open_round.pop(), ROUND_FACTOR)
        elif kind == "close" and lexeme == "]" and open_square:
            _scale(pieces, open_square.pop(), SQUARE_FACTOR)
        else:
            _add_text(pieces, lexeme)
    for start in open_round:
        _scale(pieces, start, ROUND_FACTOR)
    for start in open_square:
        _scale(pieces, start, SQUARE_FACTOR)
    return _merge(pieces)
