"""The prompt tensor view: the conditioning the U-Net's cross-attention reads, drawn as a picture with its tokens.

A prompt reaches the U-Net as a (77·chunks × width) tensor — one row per context column (start token, 75 prompt
tokens or padding, end token, per chunk), width 768 for SD1, 1024 for SD2 and 2048 for SDXL (CLIP-L's 768 columns
then OpenCLIP-G's 1280). The study note behind this project showed it as an image; this module makes that image
for every distinct conditioning of a job: each AND sub-prompt, the negative prompt, and each per-block text of the
Layer Prompt syntax (labelled with the blocks that receive it). A prompt-editing schedule (`[a:b:0.5]`) gives one
image per entry, labelled with the steps it is used for. With hires fix and prompts of the hires pass's own (the
webui's Hires prompt fields), each of those texts the first pass did not use is drawn too, as the hires pass encodes
it (its size, its step count), keyed on pass 1 so it is labelled and named like the hires pass's other maps.

`collect` lists those conditionings from a finished `Job` (the texts it saw and the per-block texts its switch
used) and encodes each once through a `PromptSource` — the host's own encoder, so the tensor is the one sampling
used — with the token inspector's table (`lib_dumpunet.tokens.TokenTable`) for the row labels: position, token,
emphasis weight, embedding vectors, BOS/EOS, padding runs, and what began each chunk (BREAK, a long prompt, a wrap at
a comma). `render` draws them with one diverging colour scale per job, centred on 0 and clipped at a stated
percentile of |value| over all of the job's tensors, so the pictures of one job compare; a scale bar, column ticks
and the encoders' halves (SDXL) are drawn around the rows. The results are `MapImage`s, which the webui's gallery and
saving path and the command line's writer take like any other map.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from lib_dumpunet.capture import Key
from lib_dumpunet.errors import DumpUnetError
from lib_dumpunet.render import MapImage
from lib_dumpunet.tokens import CHUNK_TOKENS, COLUMNS_PER_CHUNK, TokenRow, TokenTable, parse_emphasis

__all__ = [
    "PROMPT_KIND",
    "Encoding",
    "HiresPass",
    "Part",
    "PromptSource",
    "PromptTensor",
    "PromptViewSettings",
    "collect",
    "render",
    "row_label",
    "shared_limit",
]

log = logging.getLogger(__name__)

PROMPT_KIND = "prompt"  # Key.kind of prompt tensor maps (file names: -dumpunet-prompt-…)
WHOLE_TEXT = "text"  # Key.place of a whole prompt or negative prompt; per-block texts use their blocks
PERCENTILE_FIELD = "Attention › Prompt tensor › Colour range percentile"
MIN_PERCENTILE = 50.0

# Drawing (pixels)
ROW_PX = 10  # height of one context column's row
MAX_COLUMN_PX = 8  # narrow (test-size) tensors get wider columns, up to this
COLUMN_TARGET = 768  # …so that the rows come out about this wide; real widths (768-2048) get 1 px a column
PART_GAP = 3  # dark band between two encoders' halves
CHUNK_BAND = 14  # band above each chunk holding its caption
LABEL_WIDTH = 200
MARGIN = 10
MIN_WIDTH = 620  # room for the title and the scale bar
BAR_WIDTH = 256

_INK = (32, 32, 32)
_MUTED = (118, 118, 118)
_WEIGHTED = (191, 86, 0)
_EMBEDDING = (112, 48, 160)
_GAP = (70, 70, 70)
_PAPER = (255, 255, 255)
# A diverging scale: dark blue (most negative) - light grey (0) - dark red (most positive), linear between anchors.
_ANCHORS = (
    (-1.0, (5, 48, 97)),
    (-0.5, (67, 147, 195)),
    (0.0, (242, 242, 242)),
    (0.5, (214, 96, 77)),
    (1.0, (103, 0, 31)),
)


# --------------------------------------------------------------------------------------------------------------------
# Settings


@dataclass(frozen=True)
class PromptViewSettings:
    """Attention tab › "Prompt tensor": draw the conditioning the U-Net receives."""

    enabled: bool = False
    # colours reach their ends at this percentile of |value| over all of the job's prompt tensors
    percentile: float = 99.0
    negative: bool = True  # also the negative prompt (and its per-block texts)

    def check(self) -> None:
        """Raise DumpUnetError for a setting no picture can be drawn with (called before generation; a view that is
        switched off is never drawn, so its settings are not checked)."""
        if self.enabled and not MIN_PERCENTILE <= self.percentile <= 100:
            msg = (
                f"{PERCENTILE_FIELD} is {self.percentile:g}; give a percentile from {MIN_PERCENTILE:g} to 100 "
                "(99 clips the 1 % largest values, 100 uses the largest value)"
            )
            raise DumpUnetError(msg)


# --------------------------------------------------------------------------------------------------------------------
# Sources and results


@dataclass(frozen=True)
class Part:
    """A run of context columns made by one text encoder (SDXL: CLIP-L, then OpenCLIP-G)."""

    name: str
    width: int


@dataclass(frozen=True)
class Encoding:
    """One entry of a prompt's schedule: its context is used up to and including schedule step `end_at_step`."""

    end_at_step: int
    context: torch.Tensor  # (tokens, width)
    pooled: torch.Tensor | None = None  # SDXL's pooled text vector
    text: str | None = None  # the entry's own text (prompt editing resolved), for its token labels


class PromptSource(Protocol):
    """What drawing prompt tensors needs from a host: its encoder, its token table, its encoders' widths."""

    @property
    def parts(self) -> tuple[Part, ...]:
        """The encoders whose outputs sit side by side in a context row; () for a single encoder."""
        ...

    def encode(self, text: str, *, negative: bool) -> Sequence[Encoding]:
        """The schedule `text` becomes in the pass this source encodes for (the first pass, unless it is a
        `HiresPass`'s source): one entry unless it edits the prompt."""
        ...

    def token_table(self, text: str) -> TokenTable | None:
        """The token inspector's table of `text` as this host chunks it (None: no labels)."""
        ...


@dataclass(frozen=True)
class HiresPass:
    """The texts a job's hires-fix pass encoded for itself, by image (only images whose hires pass had prompts of its
    own; a text also used by the first pass is skipped when drawing), and how to encode and label them."""

    source: PromptSource  # encodes as the hires pass does (its size, its step count)
    prompts: Mapping[int, Sequence[str]] = field(default_factory=dict)  # image -> its AND sub-prompts
    negatives: Mapping[int, str] = field(default_factory=dict)  # image -> its negative prompt
    steps: int | None = None  # the hires pass's sampler steps
    calls_per_step: int = 1


@dataclass(frozen=True)
class PromptTensor:
    """One distinct conditioning of a job, ready to draw."""

    key: Key  # image it is shown after, pass, schedule start step, place ("text" or its blocks), branch, AND sub
    title: str  # "prompt", "prompt, AND 2", "negative prompt, hires pass", "per-block text of IN04, IN05"
    text: str  # what was encoded (a prompt-editing entry's own text)
    context: torch.Tensor  # (tokens, width), float32 on the CPU
    rows: tuple[TokenRow, ...]  # one per context row
    steps: str | None = None  # "steps 1-11 of 20" for a prompt-editing entry
    parts: tuple[Part, ...] = ()
    pooled: torch.Tensor | None = None
    chunk_notes: tuple[str, ...] = ()  # per chunk: what began it

    @property
    def label(self) -> str:
        """The gallery's description: 'prompt tensor: prompt, AND 2, steps 1-11 of 20'."""
        return ", ".join(filter(None, [f"prompt tensor: {self.title}", self.steps]))


@dataclass(frozen=True)
class _Use:
    image: int  # first image of the job whose sampling used it
    branch: str  # "cond" or "uncond"
    sub: int
    text: str
    blocks: tuple[str, ...] = ()  # per-block text: the blocks that receive it
    pass_index: int = 0  # 1: the hires pass's own text


def _order_of_uses(uses: Iterable[_Use], order: Mapping[str, int]) -> list[_Use]:
    """Per image: first-pass whole texts, then its per-block texts in U-Net order, then the hires pass's texts."""

    def place(u: _Use) -> tuple:
        block = order.get(u.blocks[0], 0) if u.blocks else 0
        return (u.image, u.pass_index, bool(u.blocks), u.branch != "cond", u.sub, block)

    return sorted(uses, key=place)


def _hires_uses(hires: HiresPass, first: Iterable[_Use], negative: bool) -> list[_Use]:
    """The hires pass's texts that the first pass did not use, each at the first image whose hires pass used it."""
    seen = {(u.branch, u.text) for u in first if not u.blocks}
    found: dict[tuple[str, str], _Use] = {}
    for image in sorted(set(hires.prompts) | set(hires.negatives)):
        wanted = [("cond", sub, text) for sub, text in enumerate(hires.prompts.get(image, ()))]
        if negative and image in hires.negatives:
            wanted.append(("uncond", 0, hires.negatives[image]))
        for branch, sub, text in wanted:
            if (branch, text) not in seen:
                found.setdefault((branch, text), _Use(image, branch, sub, text, pass_index=1))
    return list(found.values())


def _uses(job: Any, negative: bool) -> list[_Use]:
    """The distinct texts a job's U-Net was conditioned on, in the order of the images that first used them."""
    found: dict[tuple, _Use] = {}
    order = {name: i for i, name in enumerate(job.layout.names)}
    for image in sorted(job.images):
        meta = job.images[image]
        for sub, text in enumerate(meta.cond_texts):
            found.setdefault(("cond", (), text), _Use(image, "cond", sub, text))
        if negative:
            found.setdefault(("uncond", (), meta.negative), _Use(image, "uncond", 0, meta.negative))
    switch = getattr(job, "switch", None)
    if switch is not None:
        receivers: dict[tuple[str, str], set[str]] = {}
        first: dict[tuple[str, str], tuple[int, int]] = {}
        for row, blocks in switch.texts.items():
            if row.branch == "uncond" and not negative:
                continue
            for block, text in blocks.items():
                name = (row.branch, text)
                receivers.setdefault(name, set()).add(block)
                first[name] = min(first.get(name, (row.image, row.sub)), (row.image, row.sub))
        for (branch, text), blocks in receivers.items():
            ordered = tuple(sorted(blocks, key=lambda b: order.get(b, len(order))))
            image, sub = first[(branch, text)]
            found.setdefault((branch, ordered, text), _Use(image, branch, sub, text, ordered))
    return _order_of_uses(found.values(), order)


def _title(use: _Use) -> str:
    if use.blocks:
        whose = "negative prompt" if use.branch == "uncond" else "prompt" + (f" AND {use.sub + 1}" if use.sub else "")
        return f"per-block text of {', '.join(use.blocks)} ({whose})"
    title = "negative prompt" if use.branch == "uncond" else "prompt" + (f", AND {use.sub + 1}" if use.sub else "")
    return f"{title}, hires pass" if use.pass_index else title


def _place(blocks: tuple[str, ...]) -> str:
    """A short file-name part: 'text', or the first block and how many more ('IN04+2')."""
    if not blocks:
        return WHOLE_TEXT
    return blocks[0] + (f"+{len(blocks) - 1}" if len(blocks) > 1 else "")


def _spans(schedule: Sequence[Encoding], total: int | None, calls_per_step: int = 1) -> list[tuple[int, int | None]]:
    """(first, last) sampler step, from 1, of each schedule entry (last None: to the end of sampling).

    An entry is used while the denoiser's 0-based count of model calls is at most its `end_at_step`; a second-order
    sampler makes `calls_per_step` calls a step, so a step may see the end of one entry and the start of the next."""
    spans: list[tuple[int, int | None]] = []
    start = 1
    for entry in schedule:
        last: int | None = entry.end_at_step // calls_per_step + 1
        if total is not None:
            last = min(last, total)
        elif entry is schedule[-1]:
            last = None
        spans.append((start, last))
        start = (entry.end_at_step + 1) // calls_per_step + 1
    return spans


def collect(
    job: Any,
    source: PromptSource,
    settings: PromptViewSettings,
    *,
    steps: int | None = None,
    calls_per_step: int = 1,
    hires: HiresPass | None = None,
) -> list[PromptTensor]:
    """Every distinct conditioning of a finished `Job`, encoded through `source`. `steps` (the job's sampler steps)
    and `calls_per_step` (model calls a step: 2 for second-order samplers) turn prompt-editing entries into steps;
    `hires` adds the hires pass's own texts (encoded and labelled by its own source and steps)."""
    uses = _uses(job, settings.negative)
    if hires is not None:
        order = {name: i for i, name in enumerate(job.layout.names)}
        uses = _order_of_uses([*uses, *_hires_uses(hires, uses, settings.negative)], order)
    out: list[PromptTensor] = []
    for use in uses:
        if use.pass_index and hires is not None:
            out += _encoded(use, hires.source, hires.steps, hires.calls_per_step)
        else:
            out += _encoded(use, source, steps, calls_per_step)
    log.debug("%d prompt tensors from %d distinct texts", len(out), len({t.text for t in out}))
    return out


def _encoded(use: _Use, source: PromptSource, steps: int | None, calls_per_step: int) -> list[PromptTensor]:
    """One text's schedule through `source`: a tensor per entry, labelled with the steps it is used for."""
    schedule = list(source.encode(use.text, negative=use.branch == "uncond"))
    parts = tuple(source.parts)
    spans = _spans(schedule, steps, max(1, calls_per_step))
    tables: dict[str, TokenTable | None] = {}
    out: list[PromptTensor] = []
    for entry, (first, last) in zip(schedule, spans, strict=True):
        text = use.text if entry.text is None else entry.text
        if text not in tables:
            tables[text] = source.token_table(text)
        context = entry.context.detach().float().cpu()
        if context.ndim != 2:
            msg = f"a prompt tensor must be (tokens, width); the encoder gave {tuple(context.shape)}"
            raise DumpUnetError(msg)
        rows = _rows(tables[text], context.shape[0])
        span = _span_text(first, last, steps) if len(schedule) > 1 else None
        place = _place(use.blocks)
        key = Key(use.image, use.pass_index, first, place, PROMPT_KIND, use.branch, use.sub)  # type: ignore[arg-type]
        pooled = None if entry.pooled is None else entry.pooled.detach().float().cpu().reshape(-1)
        notes = _chunk_notes(rows, text)
        fitting = parts if sum(p.width for p in parts) == context.shape[1] else ()
        out.append(PromptTensor(key, _title(use), text, context, rows, span, fitting, pooled, notes))
    return out


def _rows(table: TokenTable | None, tokens: int) -> tuple[TokenRow, ...]:
    """The table's rows when they match the tensor; otherwise rows that only know their position."""
    if table is not None and len(table) == tokens:
        return table.rows
    if table is not None:
        log.warning("the token table has %d rows, the prompt tensor %d: rows labelled by position", len(table), tokens)
    return tuple(TokenRow(i, i // COLUMNS_PER_CHUNK, i % COLUMNS_PER_CHUNK, 0, "", "text", 1.0) for i in range(tokens))


def _span_text(first: int, last: int | None, steps: int | None) -> str:
    """'steps 1-11 of 20', 'step 4 of 4', 'steps 12-end'."""
    of = f" of {steps}" if steps else ""
    if last == first:
        return f"step {first}{of}"
    return f"steps {first}-{last if last is not None else 'end'}{of}"


def _chunk_notes(rows: Sequence[TokenRow], text: str) -> tuple[str, ...]:
    """What began each chunk: the prompt's start, a BREAK, a wrap at a comma, or more than 75 tokens."""
    chunks = max((r.chunk for r in rows), default=0) + 1
    breaks = sum(f.is_break for f in parse_emphasis(text))
    notes = ["start of the prompt"]
    for c in range(1, chunks):
        before = [r for r in rows if r.chunk == c - 1 and r.kind in ("text", "embedding")]
        opening = next((r for r in rows if r.chunk == c and r.kind in ("text", "embedding")), None)
        if len(before) >= CHUNK_TOKENS:
            notes.append("the prompt goes on past 75 tokens")
        elif breaks and (not before or before[-1].text != ",") and (opening is None or opening.kind != "embedding"):
            breaks -= 1
            notes.append("after BREAK")
        elif before and before[-1].text == ",":
            notes.append("wrapped after a comma")
        else:
            notes.append("an embedding did not fit in the chunk before")
    return tuple(notes)


# --------------------------------------------------------------------------------------------------------------------
# Colour range


def shared_limit(tensors: Iterable[PromptTensor], percentile: float) -> float:
    """The value where colours reach their ends: `percentile` of |value| over every context (and pooled vector)."""
    tensors = list(tensors)
    values = [t.context.abs().reshape(-1) for t in tensors]
    values += [t.pooled.abs() for t in tensors if t.pooled is not None]
    if not values:
        return 1.0
    flat = torch.cat(values).numpy()
    limit = float(np.percentile(flat, percentile))
    if not np.isfinite(limit) or limit <= 0:
        largest = float(flat.max()) if flat.size else 0.0
        return largest if np.isfinite(largest) and largest > 0 else 1.0
    return limit


@functools.cache
def _palette() -> np.ndarray:
    """(255, 3) uint8: index 0 the most negative colour, 127 zero, 254 the most positive (odd: 0 has its own)."""
    stops = np.array([a for a, _ in _ANCHORS])
    colours = np.array([c for _, c in _ANCHORS], dtype=np.float64)
    where = np.linspace(-1.0, 1.0, 255)
    return np.stack([np.interp(where, stops, colours[:, i]) for i in range(3)], axis=1).round().astype(np.uint8)


def colours(values: np.ndarray, limit: float) -> np.ndarray:
    """RGB (…, 3) uint8 of `values` on the diverging scale, ±`limit` at its ends (beyond: clipped)."""
    scaled = np.clip(np.nan_to_num(values / limit), -1.0, 1.0)
    return _palette()[np.rint((scaled + 1.0) * 127).astype(np.intp)]


# --------------------------------------------------------------------------------------------------------------------
# Drawing


@functools.cache
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


@dataclass
class _Geometry:
    """Where things go in one picture."""

    tensor: PromptTensor
    column_px: int
    gaps: tuple[int, ...]  # column index before which a part gap sits
    heat_left: int = MARGIN + LABEL_WIDTH
    title_height: int = 40
    axis_height: int = 30
    chunk_tops: list[int] = field(default_factory=list)

    @property
    def columns(self) -> int:
        return int(self.tensor.context.shape[1])

    @property
    def heat_width(self) -> int:
        return self.columns * self.column_px + PART_GAP * len(self.gaps)

    def x_of(self, column: int) -> int:
        return self.heat_left + column * self.column_px + PART_GAP * sum(1 for g in self.gaps if g <= column)

    def y_of(self, row: int) -> int:
        return self.chunk_tops[row // COLUMNS_PER_CHUNK] + (row % COLUMNS_PER_CHUNK) * ROW_PX


def _geometry(t: PromptTensor) -> _Geometry:
    width = int(t.context.shape[1])
    column_px = max(1, min(MAX_COLUMN_PX, COLUMN_TARGET // max(width, 1)))
    gaps, edge = [], 0
    for part in t.parts[:-1]:
        edge += part.width
        gaps.append(edge)
    g = _Geometry(t, column_px, tuple(gaps))
    top = MARGIN + g.title_height + g.axis_height
    chunks = -(-int(t.context.shape[0]) // COLUMNS_PER_CHUNK)
    for _ in range(chunks):
        g.chunk_tops.append(top + CHUNK_BAND)
        top += CHUNK_BAND + COLUMNS_PER_CHUNK * ROW_PX
    return g


def _heat_pixels(values: np.ndarray, g: _Geometry, limit: float, height: int) -> np.ndarray:
    """The rows' colours, `height` px per row and `g.column_px` per column, with the part gaps put in."""
    rgb = colours(values, limit).repeat(height, axis=0).repeat(g.column_px, axis=1)
    if not g.gaps:
        return rgb
    pieces, start = [], 0
    for gap in g.gaps:
        pieces += [rgb[:, start * g.column_px : gap * g.column_px], np.empty((rgb.shape[0], PART_GAP, 3), np.uint8)]
        pieces[-1][:] = _GAP
        start = gap
    pieces.append(rgb[:, start * g.column_px :])
    return np.concatenate(pieces, axis=1)


def render(
    tensors: Sequence[PromptTensor], settings: PromptViewSettings, *, limit: float | None = None
) -> list[MapImage]:
    """One picture per tensor, all on one colour scale (`limit`, or the settings' percentile over `tensors`)."""
    if limit is None:
        limit = shared_limit(tensors, settings.percentile)
    return [MapImage(t.key, draw(t, limit, settings.percentile, len(tensors)), t.label) for t in tensors]


def draw(t: PromptTensor, limit: float, percentile: float, shared_with: int = 1) -> Image.Image:
    """The picture of one prompt tensor on the scale ±`limit`."""
    g = _geometry(t)
    tokens = int(t.context.shape[0])
    pooled = t.pooled if t.pooled is not None and t.pooled.numel() <= g.columns else None
    bottom = g.chunk_tops[-1] + COLUMNS_PER_CHUNK * ROW_PX
    pooled_top = bottom + CHUNK_BAND
    if pooled is not None:
        bottom = pooled_top + 2 * ROW_PX
    legend_top = bottom + 12
    width = max(MIN_WIDTH, g.heat_left + g.heat_width + MARGIN)
    height = legend_top + 58
    canvas = np.empty((height, width, 3), np.uint8)
    canvas[:] = _PAPER
    values = t.context.numpy()
    for c, top in enumerate(g.chunk_tops):
        rows = values[c * COLUMNS_PER_CHUNK : (c + 1) * COLUMNS_PER_CHUNK]
        pixels = _heat_pixels(rows, g, limit, ROW_PX)
        canvas[top : top + pixels.shape[0], g.heat_left : g.heat_left + pixels.shape[1]] = pixels
    if pooled is not None:
        start = g.columns - pooled.numel()  # under the last encoder's columns, whose pooled vector it is
        x0, x1 = g.x_of(start), g.x_of(start) + pooled.numel() * g.column_px
        pixels_pooled = colours(pooled.numpy()[None], limit).repeat(2 * ROW_PX, axis=0).repeat(g.column_px, axis=1)
        canvas[pooled_top : pooled_top + 2 * ROW_PX, x0:x1] = pixels_pooled
    bar = colours(np.linspace(-limit, limit, BAR_WIDTH)[None], limit).repeat(10, axis=0)
    canvas[legend_top + 14 : legend_top + 24, g.heat_left : g.heat_left + BAR_WIDTH] = bar
    image = Image.fromarray(canvas, "RGB")
    pen = ImageDraw.Draw(image)
    _heading(pen, g, width)
    _axis(pen, g)
    _row_labels(pen, g, tokens)
    _chunk_captions(pen, g)
    if pooled is not None:
        part = t.parts[-1].name if t.parts else "text encoder"
        caption = f"pooled vector ({part}, {pooled.numel()} values)"
        pen.text((MARGIN, pooled_top - CHUNK_BAND + 2), caption, fill=_INK, font=_font(10))
        pen.text((MARGIN, pooled_top + 4), "pooled", fill=_MUTED, font=_font(9))
    _legend(pen, g, legend_top, limit, percentile, shared_with, values)
    return image


def _heading(pen: ImageDraw.ImageDraw, g: _Geometry, width: int) -> None:
    t = g.tensor
    tokens, columns = t.context.shape
    chunks = len(g.chunk_tops)
    facts = [f"{tokens} x {columns}", f"{chunks} chunk{'s' if chunks > 1 else ''}"]
    head = " · ".join(filter(None, [f"Prompt tensor: {t.title}", *facts, t.steps]))
    pen.text((MARGIN, MARGIN), head, fill=_INK, font=_font(13))
    text = " ".join(t.text.split()) or "(empty)"
    font = _font(10)
    room = width - 2 * MARGIN
    shown = f'"{text}"'
    while font.getlength(shown) > room and len(text) > 1:
        text = text[: max(1, int(len(text) * room / font.getlength(shown)) - 4)]
        shown = f'"{text}..."'
    pen.text((MARGIN, MARGIN + 19), shown, fill=_MUTED, font=font)


def _tick_step(column_px: int) -> int:
    for step in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024):
        if step * column_px >= 56:
            return step
    return 2048


def _axis(pen: ImageDraw.ImageDraw, g: _Geometry) -> None:
    """Encoder halves (when there are several) and column ticks above the rows."""
    top = MARGIN + g.title_height
    font = _font(9)
    if g.tensor.parts:
        start = 0
        for part in g.tensor.parts:
            x0, x1 = g.x_of(start), g.x_of(start + part.width - 1) + g.column_px
            text = f"{part.name} · {part.width} columns"
            pen.line([(x0, top + 10), (x1 - 1, top + 10)], fill=_MUTED)
            pen.text(((x0 + x1 - font.getlength(text)) / 2, top - 1), text, fill=_INK, font=font)
            start += part.width
    else:
        pen.text((g.heat_left, top - 1), "columns: the text encoder's output channels", fill=_MUTED, font=font)
    axis_y = g.chunk_tops[0] - CHUNK_BAND - 2
    step = _tick_step(g.column_px)
    for column in range(0, g.columns, step):
        x = g.x_of(column)
        pen.line([(x, axis_y - 4), (x, axis_y)], fill=_INK)
        pen.text((x + 2, axis_y - 13), str(column), fill=_INK, font=font)
    last = g.x_of(g.columns - 1) + g.column_px - 1
    pen.line([(last, axis_y - 4), (last, axis_y)], fill=_INK)
    pen.text((MARGIN, axis_y - 13), "row · token", fill=_MUTED, font=font)


def _row_labels(pen: ImageDraw.ImageDraw, g: _Geometry, tokens: int) -> None:
    font = _font(9)
    right = g.heat_left - 6
    rows = g.tensor.rows
    i = 0
    while i < tokens:
        row = rows[i]
        y = g.y_of(i) - 2
        if row.kind == "pad":
            end = i
            while end + 1 < tokens and rows[end + 1].kind == "pad" and rows[end + 1].chunk == row.chunk:
                end += 1
            y0, y1 = g.y_of(i), g.y_of(end) + ROW_PX - 1
            pen.line([(right, y0), (right, y1)], fill=_MUTED)
            middle = (y0 + y1) // 2 - 6
            label = f"padding x{end - i + 1} (rows {i}-{end})"
            pen.text((right - 4 - font.getlength(label), middle), label, fill=_MUTED, font=font)
            i = end + 1
            continue
        pen.text((MARGIN, y), f"{row.position:>4}", fill=_MUTED, font=font)
        text, colour = _row_text(row)
        pen.text((MARGIN + 30, y), text, fill=colour, font=font)
        if row.kind in ("text", "embedding") and row.weight != 1.0:
            weight = f"x{row.weight:.2f}"
            pen.text((right - font.getlength(weight), y), weight, fill=_WEIGHTED, font=font)
        i += 1


def row_label(row: TokenRow) -> str:
    """A row's label as drawn beside it: 'red x1.30', '<style:0>', 'BOS (start)' (padding runs get one label)."""
    text, _colour = _row_text(row)
    weighted = row.kind in ("text", "embedding") and row.weight != 1.0
    return f"{text} x{row.weight:.2f}" if weighted else text


def _row_text(row: TokenRow) -> tuple[str, tuple[int, int, int]]:
    if row.kind == "start":
        return "BOS (start)", _MUTED
    if row.kind == "end":
        return "EOS (end)", _MUTED
    if row.kind == "embedding":
        return row.text[:26], _EMBEDDING
    return (row.text or "·")[:22], _INK


def _chunk_captions(pen: ImageDraw.ImageDraw, g: _Geometry) -> None:
    font = _font(10)
    notes = g.tensor.chunk_notes
    for c, top in enumerate(g.chunk_tops):
        first, last = c * COLUMNS_PER_CHUNK, (c + 1) * COLUMNS_PER_CHUNK - 1
        note = notes[c] if c < len(notes) else ""
        text = f"chunk {c + 1} · rows {first}-{last}" + (f" · {note}" if note else "")
        pen.text((MARGIN, top - CHUNK_BAND + 1), text, fill=_INK, font=font)


def _legend(
    pen: ImageDraw.ImageDraw,
    g: _Geometry,
    top: int,
    limit: float,
    percentile: float,
    shared_with: int,
    values: np.ndarray,
) -> None:
    font = _font(10)
    x = g.heat_left
    pen.text((MARGIN, top + 12), "colour scale", fill=_INK, font=font)
    pen.text((x, top), f"-{limit:.3g}", fill=_INK, font=font)
    pen.text((x + BAR_WIDTH // 2 - 3, top), "0", fill=_INK, font=font)
    pen.text((x + BAR_WIDTH - font.getlength(f"+{limit:.3g}"), top), f"+{limit:.3g}", fill=_INK, font=font)
    over = f"{shared_with} prompt tensors of this job" if shared_with > 1 else "this prompt tensor"
    rule = f"ends at +/-{limit:.3g} = the {percentile:g}th percentile of |value| over {over}; larger values are clipped"
    pen.text((MARGIN, top + 28), rule, fill=_MUTED, font=_font(9))
    stats = (
        f"this tensor: min {values.min():.3g}, max {values.max():.3g}, mean {values.mean():.3g}, std {values.std():.3g}"
    )
    pen.text((MARGIN, top + 41), stats, fill=_MUTED, font=_font(9))
