"""The two small grammars users type: block (layer) lists and step lists.

Both are comma lists of items; an item is a single value, an inclusive range `A-B`, or a range with a stride
`A-B(+N)` (the `+` is optional, whitespace is allowed around every part):

    Layers:  IN00   IN00,IN01   IN00-IN02   IN00-OUT11(+2)     (IN11, M00 and OUT00 are neighbours)
    Steps:   5      5,10        5-10        5-10(+2) = 5,7,9   (empty field = every step)

A third, smaller grammar names self-attention query points: `4x4` (a grid, at most 16x16) or a `;`-separated list
of `x,y` fractions of the width and height, e.g. `0.5,0.5; 0.25,0.75`.

Block names are matched case-insensitively against the loaded model's blocks (IN00…IN11, M00, OUT00…OUT11 for
SD1/SD2; IN00…IN08, M00, OUT00…OUT08 for SDXL); numbers may have leading zeros. Where a field takes views
(`views=True`: the U-Net features tab) three pseudo-blocks may stand among the names: `latent` (the U-Net's input
latent), `x0` (the guided prediction of the clean latent) and `cfg` (the guidance, cond − uncond). They are named
one by one — never the end of a range, and no range of blocks includes them — and come back with `latent` first and
`x0`, `cfg` after the blocks. Everything else — an empty or
blank item, an unknown name, a name the model lacks, a backwards range, a zero stride, a negative or zero step —
raises `SpecError` with a caret under the offending text. Every field has a length limit (`MAX_SPEC_LENGTH`,
`MAX_POINTS_LENGTH`; `check_length` words the refusal) and every parser here reads its text once, left to right,
with no backtracking, so its time grows linearly with the text. Stdlib only.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from lib_dumpunet.errors import DumpUnetError, SpecError

__all__ = [
    "ALL_STEPS",
    "LAYERS_FIELD",
    "MAX_POINTS_LENGTH",
    "MAX_SPEC_LENGTH",
    "STEPS_FIELD",
    "VIEWS_AFTER",
    "VIEWS_BEFORE",
    "VIEW_NAMES",
    "StepSelection",
    "check_length",
    "describe_names",
    "format_steps",
    "parse_block_name",
    "parse_layer_span",
    "parse_layers",
    "parse_points",
    "parse_steps",
]

LAYERS_FIELD = "Layers"
STEPS_FIELD = "Image saving steps"
POINTS_FIELD = "Query points"
MAX_GRID = 16

# The pseudo-blocks of the U-Net features tab: views of the sampling around the U-Net, in the order they are shown
# (the input latent before the blocks, the prediction and the guidance after them).
VIEWS_BEFORE = ("latent",)
VIEWS_AFTER = ("x0", "cfg")
VIEW_NAMES = (*VIEWS_BEFORE, *VIEWS_AFTER)
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9]*")

# Longest text accepted in a layer or step field (a whole U-Net with strides is ~20 characters), and in the query
# points field (~500 points; a grid is at most 16x16 anyway).
MAX_SPEC_LENGTH = 1000
MAX_POINTS_LENGTH = 4000
# Longest number in a query point, digits and dot together.
_MAX_FRACTION = 32
# Most items in one layer or step list (a full-length field holds at most ~500).
MAX_ITEMS = 1000
# How much of an offending word an error message quotes.
_QUOTE = 20

# Numbers longer than this are refused: no sampler runs a billion steps, and Python refuses to convert very long
# digit strings anyway.
_MAX_DIGITS = 9
_NAME = re.compile(r"([A-Za-z]+)([0-9]+)")
_DIGITS = re.compile(r"[0-9]+")
# One character class, repeated, with nothing after it: these match in one pass and never backtrack.
_SPACE_RUN = re.compile(r"\s*")
_DIGIT_RUN = re.compile(r"[0-9]*")


def check_length(field: str, text: str, limit: int | None) -> None:
    """Refuse `text` longer than `limit` characters (None: no limit) with a message naming `field`."""
    if limit is not None and len(text) > limit:
        msg = f"{field} is {len(text):,} characters long; at most {limit:,} are allowed — shorten it"
        raise DumpUnetError(msg)


def _quoted(word: str) -> str:
    """`word` for a message, cut to a readable length."""
    return repr(word) if len(word) <= _QUOTE else repr(word[:_QUOTE]) + "…"


@dataclass(frozen=True)
class StepSelection:
    """The sampler steps (1-based) a user asked for; no ranges at all means every step."""

    ranges: tuple[range, ...] = ()

    @property
    def is_all(self) -> bool:
        return not self.ranges

    def __contains__(self, step: object) -> bool:
        if not isinstance(step, int) or step < 1:
            return False
        return self.is_all or any(step in r for r in self.ranges)

    def resolve(self, total: int) -> tuple[int, ...]:
        """The selected steps that exist in a run of `total` steps, ascending."""
        return tuple(s for s in range(1, total + 1) if s in self)

    def first_beyond(self, total: int) -> int | None:
        """The smallest selected step greater than `total`, if any (such a step would never run)."""
        starts = [r.start if r.start > total else _next_in(r, total) for r in self.ranges]
        beyond = [s for s in starts if s is not None]
        return min(beyond) if beyond else None

    def __str__(self) -> str:
        return format_steps(self)


def _next_in(r: range, total: int) -> int | None:
    """The first member of `r` above `total`, or None."""
    if r.stop - 1 <= total:
        return None
    k = (total + 1 - r.start + r.step - 1) // r.step
    candidate = r.start + k * r.step
    return candidate if candidate in r else None


ALL_STEPS = StepSelection()


def format_steps(selection: StepSelection) -> str:
    """Write a selection back in the step grammar (empty string = every step)."""
    parts = []
    for r in selection.ranges:
        last = r[-1]
        if r.start == last:
            parts.append(str(r.start))
        elif r.step == 1:
            parts.append(f"{r.start}-{last}")
        else:
            parts.append(f"{r.start}-{last}(+{r.step})")
    return ",".join(parts)


# --- the shared item grammar -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Item:
    """One comma item: `first`, or `first-last`, or `first-last(+stride)`."""

    first: int
    last: int
    stride: int


class _Cursor:
    """A position in the text being parsed, with helpers that raise `SpecError` at the right place."""

    def __init__(self, field: str, text: str, pos: int, end: int) -> None:
        self.field, self.text, self.pos, self.end = field, text, pos, end

    def skip_space(self) -> None:
        self.pos = _SPACE_RUN.match(self.text, self.pos, self.end).end()  # type: ignore[union-attr]

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < self.end else ""

    def fail(self, reason: str, position: int | None = None, length: int = 1) -> SpecError:
        return SpecError(self.field, self.text, self.pos if position is None else position, reason, length)

    def match(self, pattern: re.Pattern[str]) -> re.Match[str] | None:
        m = pattern.match(self.text, self.pos, self.end)
        if m:
            self.pos = m.end()
        return m

    def number(self, what: str) -> int:
        start = self.pos
        m = self.match(_DIGITS)
        if m is None:
            raise self.fail(f"expected {what}")
        if len(m.group()) > _MAX_DIGITS:
            raise self.fail(f"the number {m.group()[:12]}… is too large", start, len(m.group()))
        return int(m.group())


def _parse_items(
    field: str,
    text: str,
    atom: Callable[[_Cursor], int],
    *,
    allow_plus: bool,
    span: tuple[int, int] | None = None,
) -> list[_Item]:
    """Split `text` (or `text[span[0]:span[1]]`) on commas and parse each non-empty item with `atom`."""
    items: list[_Item] = []
    pos, stop = span or (0, len(text))
    for piece in text[pos:stop].split(","):
        start, end = pos, pos + len(piece)
        pos = end + 1
        if piece == "":
            continue  # "IN00,,IN01" and a trailing comma are harmless
        cur = _Cursor(field, text, start, end)
        cur.skip_space()
        if cur.pos == end:
            raise cur.fail("an item between commas is blank", start, max(1, len(piece)))
        first_at = cur.pos
        first = atom(cur)
        cur.skip_space()
        last, stride = first, 1
        if cur.peek() == "-":
            cur.pos += 1
            cur.skip_space()
            last = atom(cur)
            cur.skip_space()
            if cur.peek() == "(":
                stride = _stride(cur, allow_plus=allow_plus)
                cur.skip_space()
            if last < first:
                raise cur.fail(
                    f"the range {_quoted(text[first_at : cur.pos].strip())} runs backwards; write the lower end first",
                    first_at,
                    cur.pos - first_at,
                )
        elif cur.peek() == "(":
            raise cur.fail("a stride (+N) needs a range before it, e.g. A-B(+2)")
        if cur.pos != end:
            raise cur.fail(f"unexpected {text[cur.pos]!r}; expected ',', '-' or the end of the item")
        if len(items) == MAX_ITEMS:
            raise cur.fail(f"a list has at most {MAX_ITEMS} items; use ranges such as 1-20(+2)", first_at)
        items.append(_Item(first, last, stride))
    return items


def _stride(cur: _Cursor, *, allow_plus: bool) -> int:
    open_at = cur.pos
    cur.pos += 1  # "("
    cur.skip_space()
    if allow_plus and cur.peek() == "+":
        cur.pos += 1
        cur.skip_space()
    stride_at = cur.pos
    stride = cur.number("a stride such as (+2)")
    if stride == 0:
        raise cur.fail("the stride must be at least 1", stride_at)
    cur.skip_space()
    if cur.peek() != ")":
        raise cur.fail("expected ')' to close the stride", open_at)
    cur.pos += 1
    return stride


# --- layers ------------------------------------------------------------------------------------------------------


def parse_block_name(name: str) -> tuple[str, int] | None:
    """Split a block name into (upper-case prefix, index): 'in5' -> ('IN', 5); None if it is not name-shaped."""
    m = _NAME.fullmatch(name.strip())
    if m is None or len(m.group(2)) > _MAX_DIGITS:
        return None
    return m.group(1).upper(), int(m.group(2))


def describe_names(names: Sequence[str]) -> str:
    """'IN00–IN11, M00, OUT00–OUT11' for a model's block names, grouped by prefix."""
    groups: dict[str, list[str]] = {}
    for name in names:
        parsed = parse_block_name(name)
        groups.setdefault(parsed[0] if parsed else name, []).append(name)
    return ", ".join(g[0] if len(g) == 1 else f"{g[0]}–{g[-1]}" for g in groups.values())


def _name_atom(names: Sequence[str], views: Sequence[str] = ()) -> Callable[[_Cursor], int]:
    """An atom reading a block name (its index in `names`) or, when `views` are allowed, a view name alone (its
    index after the blocks: len(names) + position in `views`)."""
    index = {parse_block_name(n): i for i, n in enumerate(names)}
    view_index = {v.lower(): len(names) + i for i, v in enumerate(views)}
    also = f", and the views {', '.join(views)}" if views else ""

    def atom(cur: _Cursor) -> int:
        start = cur.pos
        if views:
            word = _WORD.match(cur.text, cur.pos, cur.end)
            if word is not None and word.group().lower() in view_index:
                cur.pos = word.end()
                _alone(cur, start, word.group())
                return view_index[word.group().lower()]
        m = cur.match(_NAME)
        if m is None:
            raise cur.fail(f"expected a block name such as {names[0]}, M00 or {names[-1]}{also}")
        key = (m.group(1).upper(), int(m.group(2)) if len(m.group(2)) <= _MAX_DIGITS else -1)
        if key not in index:
            raise cur.fail(
                f"{_quoted(m.group())} is not a block of this model (it has {describe_names(names)}{also})",
                start,
                len(m.group()),
            )
        return index[key]

    return atom


def _alone(cur: _Cursor, start: int, word: str) -> None:
    """Refuse a view at either end of a range: views are named one by one."""
    item_start = cur.text.rfind(",", 0, start) + 1
    ends_range = cur.text[item_start:start].rstrip().endswith("-")
    after = _SPACE_RUN.match(cur.text, cur.pos, cur.end).end()  # type: ignore[union-attr]
    if ends_range or (after < cur.end and cur.text[after] == "-"):
        msg = f"{word!r} is a view, not a block: name it alone (ranges such as IN00-OUT11 never include views)"
        raise cur.fail(msg, start, len(word))


def parse_layers(
    text: str,
    names: Sequence[str],
    *,
    field: str = LAYERS_FIELD,
    max_length: int | None = MAX_SPEC_LENGTH,
    views: bool = False,
) -> tuple[str, ...]:
    """Parse a layer spec into block names of `names` (the model's blocks in U-Net order), in U-Net order, unique;
    with `views`, the pseudo-blocks of `VIEW_NAMES` may be named too (`latent` first, `x0` and `cfg` last).

    >>> parse_layers("OUT00, IN11-M00", ["IN11", "M00", "OUT00"])
    ('IN11', 'M00', 'OUT00')
    >>> parse_layers("cfg, M00, latent", ["IN11", "M00", "OUT00"], views=True)
    ('latent', 'M00', 'cfg')
    """
    check_length(field, text, max_length)
    blocks = parse_layer_span(text, 0, len(text), names, field=field, views=views) if text.strip() else ()
    if not blocks:
        raise DumpUnetError(f"{field} is empty: name at least one block, e.g. {names[0]} or {names[0]}-{names[-1]}")
    return blocks


def parse_layer_span(
    text: str, start: int, end: int, names: Sequence[str], *, field: str, views: bool = False
) -> tuple[str, ...]:
    """Parse the layer spec in `text[start:end]` (errors point into the whole `text`); may select nothing."""
    if not names:
        raise SpecError(field, text, start, "the model has no U-Net blocks")
    allowed = VIEW_NAMES if views else ()
    chosen: set[int] = set()
    for item in _parse_items(field, text, _name_atom(names, allowed), allow_plus=True, span=(start, end)):
        chosen.update(range(item.first, item.last + 1, item.stride))
    picked = {allowed[i - len(names)] for i in chosen if i >= len(names)}
    blocks = tuple(names[i] for i in sorted(chosen) if i < len(names))
    return (*(v for v in VIEWS_BEFORE if v in picked), *blocks, *(v for v in VIEWS_AFTER if v in picked))


# --- steps -------------------------------------------------------------------------------------------------------


def _step_atom(cur: _Cursor) -> int:
    start = cur.pos
    if cur.peek() == "+":
        cur.pos += 1
    elif cur.peek() == "-":
        raise cur.fail("steps are counted from 1; negative numbers are not allowed")
    step = cur.number("a step number such as 5")
    if step == 0:
        raise cur.fail("steps are counted from 1; there is no step 0", start, cur.pos - start)
    return step


def parse_steps(text: str, *, field: str = STEPS_FIELD, max_length: int | None = MAX_SPEC_LENGTH) -> StepSelection:
    """Parse a step spec; an empty (or blank) field selects every step.

    >>> parse_steps("1,5-20(+5)").resolve(20)
    (1, 5, 10, 15, 20)
    """
    check_length(field, text, max_length)
    if not text.strip():
        return ALL_STEPS
    items = _parse_items(field, text, _step_atom, allow_plus=True)
    return StepSelection(tuple(range(i.first, i.last + 1, i.stride) for i in items))


# --- self-attention query points -------------------------------------------------------------------------------------

_GRID_SIGNS = frozenset("xX×*")


def _skip_space(text: str, pos: int) -> int:
    return _SPACE_RUN.match(text, pos).end()  # type: ignore[union-attr]  # `*` always matches


def _skip_digits(text: str, pos: int) -> int:
    return _DIGIT_RUN.match(text, pos).end()  # type: ignore[union-attr]


def _grid(text: str) -> tuple[tuple[int, int], tuple[int, int] | None] | None:
    """Spans of N and M in 'N' or 'NxM' (1–3 digits each, blanks around), or None if `text` is not a grid."""
    first = _skip_space(text, 0)
    first_end = _skip_digits(text, first)
    if not 1 <= first_end - first <= 3:
        return None
    pos = _skip_space(text, first_end)
    if pos == len(text):
        return (first, first_end), None
    if text[pos] not in _GRID_SIGNS:
        return None
    second = _skip_space(text, pos + 1)
    second_end = _skip_digits(text, second)
    if not 1 <= second_end - second <= 3 or _skip_space(text, second_end) != len(text):
        return None
    return (first, first_end), (second, second_end)


def _fraction(word: str) -> bool:
    """True for digits with at most one dot and a digit after it: 1, 0.5, .25 (not 5. or 1e-3)."""
    if not 0 < len(word) <= _MAX_FRACTION:
        return False
    head, dot, tail = word.partition(".")
    digits = head + tail
    return not (dot and not tail) and digits.isascii() and digits.isdigit()


def parse_points(
    text: str, *, field: str = POINTS_FIELD, max_length: int | None = MAX_POINTS_LENGTH
) -> tuple[tuple[float, float], ...]:
    """Query points as (x, y) fractions: 'NxM' is a grid of cell centres, 'x,y; x,y' a list.

    >>> parse_points("2x1")
    ((0.25, 0.5), (0.75, 0.5))
    """
    check_length(field, text, max_length)
    if not text.strip():
        raise DumpUnetError(f"{field} is empty: give a grid such as 4x4 or points such as 0.5,0.5; 0.25,0.75")
    grid = _grid(text)
    if grid is not None:
        spans = (grid[0], grid[1] or grid[0])
        nx, ny = (int(text[a:b]) for a, b in spans)
        for (a, b), n in zip(spans, (nx, ny), strict=True):
            if not 1 <= n <= MAX_GRID:
                raise SpecError(field, text, a, f"a grid must be between 1x1 and {MAX_GRID}x{MAX_GRID}", b - a)
        return tuple(((i + 0.5) / nx, (j + 0.5) / ny) for j in range(ny) for i in range(nx))
    points = []
    pos = 0
    for piece in text.split(";"):
        start, pos = pos, pos + len(piece) + 1
        if not piece.strip():
            if start + len(piece) >= len(text):
                continue  # a trailing ';'
            raise SpecError(field, text, start, "a point between ';' is blank")
        if len(points) == MAX_GRID * MAX_GRID:
            msg = f"at most {MAX_GRID * MAX_GRID} points (as many as a {MAX_GRID}x{MAX_GRID} grid)"
            raise SpecError(field, text, start, msg, len(piece))
        points.append(_point(field, text, piece, start))
    if not points:
        raise DumpUnetError(f"{field} is empty: give a grid such as 4x4 or points such as 0.5,0.5")
    return tuple(points)


def _point(field: str, text: str, piece: str, start: int) -> tuple[float, float]:
    """One 'x,y' point: `piece` is found at `start` of `text`."""
    coords, offset = [], start
    for part in piece.split(","):
        word = part.strip()
        if not _fraction(word):
            reason = f"a fraction has at most {_MAX_FRACTION} characters" if len(word) > _MAX_FRACTION else ""
            reason = reason or "expected a fraction between 0 and 1, like 0.25"
            raise SpecError(field, text, offset, reason, max(1, len(part)))
        value = float(word)
        if value > 1:
            at = offset + part.index(word)
            raise SpecError(field, text, at, "fractions go from 0 to 1", len(word))
        coords.append(value)
        offset += len(part) + 1
        if len(coords) > 2:
            break
    if len(coords) != 2:
        raise SpecError(field, text, start, "a point is 'x,y' (two fractions)", max(1, len(piece)))
    return coords[0], coords[1]
