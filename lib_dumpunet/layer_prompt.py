"""The per-block prompt grammar `(~: … :~)` and its expansion into one prompt per U-Net block.

    a (~: IN00-OUT11: cute ; M00: excellent :~) girl
      → M00 sees "a  excellent  girl", every other block "a  cute  girl"

A construct holds `BLOCKS: text` pairs separated by `;` (the last `;` is optional). BLOCKS is a layer spec (`IN00`,
`IN00,IN03`, `IN00-OUT11`, `IN00-OUT11(+2)`; see `specs`) or `_`, which stands for every block no other pair names.
Later pairs win where they overlap; blocks nobody names get the empty string. The text of a pair runs from just
after its `:` to the next `;` (or the end of the construct) and is kept verbatim, spaces included; only after `_ :`
is leading whitespace dropped. The text may contain `:` (so `(word:1.2)` and `[a:b:0.5]` work) and newlines; `\\;`
stands for a literal `;` and `\\\\` for a backslash — any other backslash is left alone for the webui's own
escapes such as `\\(`. A text cannot contain `:~)` or `AND` (AND splits a whole prompt into sub-prompts: put it
outside the construct).

Every construct of a prompt expands independently, and erasing removes each construct entirely (the baseline of the
difference map). Mistakes raise `SpecError` with line, position and a caret, before anything is generated. A prompt
is read once, left to right (the time grows linearly with its length), and may be at most `MAX_PROMPT_LENGTH`
characters long.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from lib_dumpunet.errors import SpecError
from lib_dumpunet.specs import MAX_SPEC_LENGTH, check_length, parse_layer_span

__all__ = [
    "MAX_PROMPT_LENGTH",
    "Construct",
    "LayerPrompt",
    "Pair",
    "block_texts",
    "parse_layer_prompt",
    "replace_blocks",
]

OPEN, CLOSE = "(~:", ":~)"
_AND = re.compile(r"\bAND\b")
_BLANKS = re.compile(r"\s*")
# The first ';' after an even run of backslashes (none, or escaped backslashes): the end of a pair's text. Only the
# start of a backslash run can pass the look-behind, so the search is linear.
_TEXT_END = re.compile(r"(?<!\\)(?:\\\\)*;")
# The longest prompt read for (~: … :~) constructs: far beyond what CLIP's chunks can use.
MAX_PROMPT_LENGTH = 65536


@dataclass(frozen=True)
class Pair:
    blocks: tuple[str, ...] | None  # None for `_`: every block no other pair names
    text: str
    spec: tuple[int, int] = (0, 0)  # where its BLOCKS part is in the prompt


@dataclass(frozen=True)
class Construct:
    start: int  # span of the whole `(~: … :~)` in the prompt
    end: int
    pairs: tuple[Pair, ...]

    def text_for(self, block: str) -> str:
        named = [p.text for p in self.pairs if p.blocks is not None and block in p.blocks]
        if named:
            return named[-1]
        fallback = [p.text for p in self.pairs if p.blocks is None]
        return fallback[-1] if fallback else ""


@dataclass(frozen=True)
class LayerPrompt:
    """A prompt with its `(~: … :~)` constructs parsed."""

    text: str
    constructs: tuple[Construct, ...]

    def __bool__(self) -> bool:
        return bool(self.constructs)

    def expand(self, block: str) -> str:
        """The prompt as `block` sees it."""
        return self._fill(lambda c: c.text_for(block))

    def erase(self) -> str:
        """The prompt with every construct removed: what the blocks see without per-block prompts."""
        return self._fill(lambda _c: "")

    def per_block(self, names: Sequence[str]) -> dict[str, str]:
        return {name: self.expand(name) for name in names}

    def _fill(self, choose) -> str:
        parts, pos = [], 0
        for c in self.constructs:
            parts += [self.text[pos : c.start], choose(c)]
            pos = c.end
        parts.append(self.text[pos:])
        return "".join(parts)


def parse_layer_prompt(
    text: str, names: Sequence[str], *, field: str = "Prompt", max_length: int | None = MAX_PROMPT_LENGTH
) -> LayerPrompt:
    """Find and parse every `(~: … :~)` in `text`; `names` are the loaded model's block names."""
    check_length(field, text, max_length)
    constructs = []
    pos = 0
    while (start := text.find(OPEN, pos)) >= 0:
        body = start + len(OPEN)
        close = text.find(CLOSE, body)
        if close < 0:
            raise SpecError(field, text, start, f"this {OPEN} is never closed with {CLOSE}", len(OPEN))
        nested = text.find(OPEN, body, close)
        if nested >= 0:
            raise SpecError(field, text, nested, f"{OPEN} … {CLOSE} constructs cannot be nested", len(OPEN))
        constructs.append(Construct(start, close + len(CLOSE), _pairs(text, body, close, names, field)))
        pos = close + len(CLOSE)
    return LayerPrompt(text, tuple(constructs))


def _pairs(text: str, start: int, end: int, names: Sequence[str], field: str) -> tuple[Pair, ...]:
    pairs = []
    i = start
    while True:
        i = _BLANKS.match(text, i, end).end()  # type: ignore[union-attr]  # `*` always matches
        if i >= end:
            break
        colon = text.find(":", i, end)
        if colon < 0:
            raise SpecError(field, text, i, "expected 'BLOCKS: text', e.g. 'M00: a cat'", end - i)
        if text[i:colon].strip() == "_":
            blocks = None
            j = _BLANKS.match(text, colon + 1, end).end()  # type: ignore[union-attr]
        else:
            blocks = parse_layer_span(text, i, colon, names, field=field)
            if not blocks:
                raise SpecError(field, text, i, "name at least one block before ':'", max(1, colon - i))
            j = colon + 1
        content, j = _content(text, j, end)
        if text.find("AND", colon + 1, j) >= 0 and (m := _AND.search(text, colon + 1, j)) is not None:
            raise SpecError(field, text, m.start(), "AND cannot be inside (~: … :~); put it outside", 3)
        pairs.append(Pair(blocks, content, (i, colon)))
        i = j + 1  # past the ';'
        if j >= end:
            break
    if not pairs:
        raise SpecError(field, text, start - len(OPEN), f"empty {OPEN}{CLOSE}: give at least one 'BLOCKS: text'", 6)
    return tuple(pairs)


def _content(text: str, i: int, end: int) -> tuple[str, int]:
    """The text of a pair from `i` up to an unescaped ';' (or `end`); returns it and the position of the ';'.

    `text[i - 1]` is never a backslash (it is the pair's ':', a blank after it, or the previous pair's ';')."""
    m = _TEXT_END.search(text, i, end) if text.find(";", i, end) >= 0 else None
    stop = m.end() - 1 if m else end
    # `\\` → `\` and `\;` → `;`, pairing backslashes from the left as a reader does: split at the pairs first.
    return "\\".join(part.replace("\\;", ";") for part in text[i:stop].split("\\\\")), stop


def block_texts(
    prompt: LayerPrompt,
    names: Sequence[str],
    split: Callable[[str], list[str]] = lambda text: [text],
    *,
    field: str = "Prompt",
) -> list[dict[str, str]]:
    """What each block must be given instead of what the webui encodes.

    The webui encodes the erased prompt; `split` cuts a prompt into the sub-prompts it makes rows of (the webui's
    AND split for prompts, no split for negative prompts). Returns, per sub-prompt, {block: text} for the blocks
    whose text differs from the erased prompt's — blocks not listed keep the webui's own conditioning.
    """
    base = split(prompt.erase())
    changed: list[dict[str, str]] = [{} for _ in base]
    for name in names:
        subs = split(prompt.expand(name))
        if len(subs) != len(base):
            at = prompt.constructs[0].start if prompt.constructs else 0
            msg = f"in {name} the (~: … :~) text changes how AND splits the prompt; keep AND outside the constructs"
            raise SpecError(field, prompt.text, at, msg, len(OPEN))
        for sub, (text, plain) in enumerate(zip(subs, base, strict=True)):
            if text != plain:
                changed[sub][name] = text
    return changed


def replace_blocks(text: str, blocks: str, names: Sequence[str], *, field: str = "Prompt") -> str:
    """`text` with the BLOCKS of every pair (but `_`) of every construct replaced by `blocks` (X/Y/Z sweeps)."""
    check_length("X/Y/Z values", blocks, MAX_SPEC_LENGTH)
    parse_layer_span(blocks, 0, len(blocks), names, field="X/Y/Z values")
    spans = [p.spec for c in parse_layer_prompt(text, names, field=field).constructs for p in c.pairs if p.blocks]
    out, pos = [], 0
    for start, end in spans:
        out += [text[pos:start], blocks]
        pos = end
    out.append(text[pos:])
    return "".join(out)
