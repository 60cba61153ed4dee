"""The project's own user-facing errors.

Everything a user can get wrong (a layer spec, a step list, a colour expression, a per-block prompt, a dump
folder) raises `DumpUnetError` or a subclass, with a message that says what to change. Parse errors carry the
offending text and position and render a caret line under it, so the webui can show them verbatim before any
image is generated.
"""

from __future__ import annotations

__all__ = ["PREFIX", "DumpUnetError", "SpecError", "caret_excerpt"]

PREFIX = "[Dump U-Net]"

# How much of a long line is shown on each side of the offending position.
_EXCERPT_RADIUS = 30


class DumpUnetError(ValueError):
    """A problem with the user's input or setup; the message tells the user how to fix it."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return f"{PREFIX} {self.message}"


class SpecError(DumpUnetError):
    """A syntax or meaning error at a position in a text the user typed.

    `field` names the input ("Layers", "Image saving steps", "Prompt" …), `position` is a 0-based character offset
    into `text` and `length` how many characters are at fault (at least 1, for the caret).
    """

    def __init__(self, field: str, text: str, position: int, reason: str, length: int = 1) -> None:
        self.field = field
        self.text = text
        self.position = max(0, min(position, len(text)))
        self.length = max(1, length)
        self.reason = reason
        line, column, excerpt, caret = caret_excerpt(text, self.position, self.length)
        self.line = line
        self.column = column
        where = f"line {line}, position {column}" if "\n" in text else f"position {column}"
        super().__init__(f"{field}: {reason} (at {where})\n    {excerpt}\n    {caret}")


def caret_excerpt(text: str, position: int, length: int = 1) -> tuple[int, int, str, str]:
    """Locate `position` in `text` and draw a caret under it.

    Returns (line number from 1, column from 1, the excerpt of that line, the caret line). Long lines are cut to a
    window around the position, marked with an ellipsis; tabs and newlines inside the excerpt are shown as spaces so
    the caret stays aligned.
    """
    position = max(0, min(position, len(text)))
    line_start = text.rfind("\n", 0, position) + 1
    line_end = text.find("\n", position)
    if line_end < 0:
        line_end = len(text)
    line_text = text[line_start:line_end].replace("\t", " ")
    line_no = text.count("\n", 0, position) + 1
    column = position - line_start
    length = max(1, min(length, max(1, len(line_text) - column), 2 * _EXCERPT_RADIUS))  # a long culprit is cut too

    start = max(0, column - _EXCERPT_RADIUS)
    end = min(len(line_text), column + length + _EXCERPT_RADIUS)
    head = "…" if start > 0 else ""
    tail = "…" if end < len(line_text) else ""
    excerpt = f"{head}{line_text[start:end]}{tail}"
    caret = " " * (len(head) + column - start) + "^" + "~" * (length - 1)
    return line_no, column + 1, excerpt, caret
