"""Word heat maps: where each chosen word of the prompt went in the image just generated.

During sampling, `WordHeatRecorder` taps the chosen cross-attention (attn2) modules at the chosen steps with the
library's Q*K recomputation (`lib_dumpunet.attention`): per layer, the heads are averaged (or their maximum taken),
the map of every context column is brought once to the latent's own grid (bilinear) and added to a running sum per
image row and step. Only that sum (columns × latent grid) leaves the device, one tensor per row and step, filed in
the probe's `Capture` under the kind "words" and the row's branch and AND sub-prompt.

After sampling, `find_words` reads what the user typed (the token inspector's pick grammar: words, phrases,
quoted words, columns) against the token table of every AND sub-prompt, so one word may sit in several cond rows,
past column 75 (a second chunk), after a BREAK or inside an emphasis. `word_heats` sums, per word, its columns of
every row it sits in, per step and over the chosen steps, from the final pass (the hires-fix pass when there is
one). `render_words` stretches each sum to [0, 1] (min–max), brings it to the image's size and draws it over the
image with VXA's overlay (`lib_dumpunet.overlay`): one picture per word, a strip of all words side by side, and,
when asked, a small strip per word with one map per step.

Every user mistake (a word that is in none of the job's prompts — `require_words` —, a layer without
cross-attention, a bad step spec or opacity) raises `DumpUnetError` when the settings are checked against the model,
before generation. A word that only some prompts of the job have (wildcards, a batch of different prompts) is not a
mistake: `find_words(strict=False)` gives it no rows in the others, and those images get no map for it but a place in
the strip saying it is "not in this prompt".
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cache
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from PIL import Image, ImageDraw, ImageFont

from lib_dumpunet.attention import CrossAttentionRecorder, _Tap
from lib_dumpunet.capture import Capture, Key
from lib_dumpunet.errors import DumpUnetError, SpecError
from lib_dumpunet.hooks import HookSet
from lib_dumpunet.layout import AttentionInfo, UNetLayout
from lib_dumpunet.overlay import COLORMAPS, MODES, Colormap, Mode, min_max, overlay, resize_heat
from lib_dumpunet.render import MapImage
from lib_dumpunet.sampling import Branch, SamplingTracker
from lib_dumpunet.specs import StepSelection, parse_layers, parse_steps
from lib_dumpunet.tokens import PickItem, TokenTable, pick_items
from lib_dumpunet.vxa import HEAD_MODES, HeadMode

__all__ = [
    "HEAT_KIND",
    "HeatPlan",
    "HeatmapSettings",
    "WordColumns",
    "WordHeat",
    "WordHeatRecorder",
    "find_words",
    "map_images",
    "render_words",
    "require_words",
    "word_heats",
]

log = logging.getLogger(__name__)

HEAT_KIND = "words"
HEAT_PLACE = "attn2"
WORDS_FIELD = "Word heat maps › Words"
NEGATIVE_FIELD = "Word heat maps › Negative words"
LAYERS_FIELD = "Word heat maps › Layers"
STEPS_FIELD = "Word heat maps › Steps"
ALL = "all"
STEP_TILE = 96  # longest side of one map in the per-step strip
MAX_BLANK_WORDS = 16  # a blank Words field maps at most this many words of the prompt
NOT_IN_PROMPT = "not in this prompt"  # what the strip says of a word another prompt of the job has


# --------------------------------------------------------------------------------------------------------------------
# Settings


@dataclass(frozen=True)
class HeatmapSettings:
    """The word heat maps' controls. Defaults that work: every attn2 layer, every step, a jet overlay. The image's
    infotext holds those that differ from these defaults with the job's other settings (`heatmap.words: cat, hat`,
    see `lib_dumpunet.webui.infotext`)."""

    enabled: bool = False
    words: str = ""  # words of the prompt, as the token inspector picks them; blank: every word (at most 16)
    negative_words: str = ""  # words of the negative prompt (records the uncond rows too); blank: none
    layers: str = ALL  # "all", or blocks in the layer grammar ("IN04-M00, OUT03"); blocks without attn2 are skipped
    steps: str = ""  # step grammar; blank: every step
    per_step: bool = False  # also a small strip per word, one map per recorded step
    heads: HeadMode = "mean"
    output: Mode = "colour"
    opacity: float = 0.5
    colormap: Colormap = "jet"

    def checked(self) -> HeatmapSettings:
        """These settings with numbers as numbers, or a `DumpUnetError` naming the first bad value."""
        for name, value, allowed in (
            ("Output mode", self.output, MODES),
            ("Heads", self.heads, HEAD_MODES),
            ("Colour map", self.colormap, COLORMAPS),
        ):
            if value not in allowed:
                msg = f"Word heat maps › {name} must be one of {', '.join(allowed)}, not {value!r}"
                raise DumpUnetError(msg)
        opacity = float(self.opacity)
        if not 0.0 <= opacity <= 1.0:
            msg = f"Word heat maps › Opacity must be between 0 and 1, not {self.opacity}"
            raise DumpUnetError(msg)
        return replace(self, opacity=opacity)

    def plan(self, layout: UNetLayout, job_steps: int | None = None) -> HeatPlan:
        """The layers and steps to record on this model, checked (see `HeatPlan`)."""
        s = self.checked()
        layers = _layers(s.layers, layout)
        steps = parse_steps(s.steps, field=STEPS_FIELD)
        beyond = steps.first_beyond(job_steps) if job_steps is not None else None
        if beyond is not None:
            msg = f"{STEPS_FIELD}: step {beyond} is beyond the {job_steps} steps this job samples"
            raise DumpUnetError(msg)
        return HeatPlan(s, tuple(layers), steps)


def _layers(text: str, layout: UNetLayout) -> list[AttentionInfo]:
    cross = layout.attentions(layout.names, "attn2")
    if not cross:
        msg = "this U-Net has no cross-attention layers, so no word can be mapped"
        raise DumpUnetError(msg)
    if text.strip().lower() in (ALL, ""):
        return cross
    blocks = set(parse_layers(text, layout.names, field=LAYERS_FIELD))
    chosen = [a for a in cross if a.block in blocks]
    if not chosen:
        with_cross = ", ".join(dict.fromkeys(a.block for a in cross))
        msg = f"{LAYERS_FIELD}: none of {', '.join(sorted(blocks))} has cross-attention; choose among {with_cross}"
        raise DumpUnetError(msg)
    return chosen


@dataclass(frozen=True)
class HeatPlan:
    """Checked settings with the cross-attention modules and the steps they name on the loaded model."""

    settings: HeatmapSettings
    layers: tuple[AttentionInfo, ...]
    steps: StepSelection
    tab: str = "Word heat maps"  # how notes name it ("Word heat maps steps [4] were never reached")

    def recorder(self) -> WordHeatRecorder:
        s = self.settings
        return WordHeatRecorder(self.layers, self.steps, heads=s.heads, uncond=bool(s.negative_words.strip()))


# --------------------------------------------------------------------------------------------------------------------
# Recording


class WordHeatRecorder(CrossAttentionRecorder):
    """Q*K of chosen attn2 modules, heads aggregated, each layer brought once to the latent grid and summed.

    Files one tensor (context columns, latent h, latent w) per image row and step under
    Key(image, pass, step, "attn2", "words", branch, sub). The sums of a step stay on the U-Net's device until the
    next step (or `flush`) and then go to the capture in one copy each."""

    def __init__(
        self,
        layers: Sequence[AttentionInfo],
        steps: StepSelection,
        *,
        heads: HeadMode = "mean",
        uncond: bool = False,
    ) -> None:
        super().__init__(sorted({a.block for a in layers}), steps, ("qk",), uncond=uncond)
        self.labels = {a.label for a in layers}
        self.heads = heads
        self._latent: tuple[int, int] | None = None
        self._open: dict[Key, torch.Tensor] = {}
        self._capture: Capture | None = None

    def attach(self, hooks: HookSet, layout: UNetLayout, tracker: SamplingTracker, capture: Capture) -> None:
        self._capture = capture
        hooks.pre(layout.unet, self._on_unet, with_kwargs=True)
        for info in layout.attentions(self.blocks, self.attn_kind):
            if info.label in self.labels:
                module = layout.attention_module(info)
                scale = float(getattr(module, "scale", info.dim_head**-0.5))
                self._tap(hooks, layout.unet, module, _Tap(info, scale), tracker, capture)
        hooks.add(_Finally(self.flush))

    def _on_unet(self, _module, args: tuple, kwargs: dict[str, Any]) -> None:
        x = args[0] if args else kwargs["x"] if "x" in kwargs else kwargs["sample"]  # ldm/sgm, diffusers
        self._latent = (int(x.shape[-2]), int(x.shape[-1]))

    def store(self, capture, call, idx, place, kind, batch) -> None:
        # batch: (rows, heads, columns, h, w) of one layer
        maps = batch.amax(dim=1) if self.heads == "max" else batch.mean(dim=1)
        if self._latent is not None and tuple(maps.shape[-2:]) != self._latent:
            maps = F.interpolate(maps, size=self._latent, mode="bilinear", align_corners=False)  # as resize_heat
        step = call.step
        if any((k.pass_index, k.step) != (step.pass_index, step.step) for k in self._open):
            self.flush()
        for j, i in enumerate(idx):
            row = call.rows[i]
            key = Key(row.image, step.pass_index, step.step, HEAT_PLACE, HEAT_KIND, row.branch, row.sub)
            if key in self._open:
                self._open[key] += maps[j]
            else:
                self._open[key] = maps[j].clone()

    def flush(self) -> None:
        """Move the open step's sums to the capture."""
        opened, self._open = self._open, {}
        if self._capture is not None:
            for key, tensor in opened.items():
                self._capture.store([key], tensor[None])


class _Finally:
    """A stand-in for a hook handle: the hook set "removes" it last-in-first-out, which runs `fn` once at cleanup
    (before the taps are removed), so the last step's sums reach the capture however sampling ended."""

    def __init__(self, fn) -> None:
        self.fn = fn

    def remove(self) -> None:
        fn, self.fn = self.fn, None
        if fn is not None:
            fn()


# --------------------------------------------------------------------------------------------------------------------
# Words → columns


@dataclass(frozen=True)
class WordColumns:
    """Where one typed item sits in one image's prompt: per row (branch, AND sub-prompt), the context columns of its
    tokens. No rows: the item is not in this prompt (another prompt of the job has it), so it gets no map here."""

    label: str
    rows: tuple[tuple[tuple[Branch, int], tuple[int, ...]], ...]
    branch: Branch = "cond"

    @property
    def found(self) -> bool:
        return bool(self.rows)


def find_words(
    text: str,
    tables: Sequence[TokenTable],
    *,
    branch: Branch = "cond",
    field: str = WORDS_FIELD,
    strict: bool = True,
) -> list[WordColumns]:
    """The items of `text` (pick grammar) located in the token tables of one prompt's AND sub-prompts (for the
    negative prompt: its one table, `branch="uncond"`); an item is mapped in every sub-prompt where it is found.
    `strict`: an item that names nothing in any sub-prompt raises its `SpecError`; otherwise it comes back without
    rows. A blank `text` maps each word of the prompt that has a letter or digit (at most `MAX_BLANK_WORDS`)."""
    if not tables:
        msg = f"{field}: there is no prompt to find words in"
        raise DumpUnetError(msg)
    if not text.strip():
        return _every_word(tables, branch)
    out: list[WordColumns] = []
    for item in pick_items(text, field=field):
        rows, error = _locate(item, text, tables, branch, field)
        if error is not None and strict:
            raise error
        out.append(WordColumns(item.label, rows, branch))
    return out


def require_words(
    text: str,
    prompts: Sequence[Sequence[TokenTable]],
    *,
    field: str = WORDS_FIELD,
) -> None:
    """Refuse, before generation, an item of `text` that names nothing in any prompt of the job (`prompts`: each
    prompt's sub-prompt tables). An item found in some prompts only is fine: the others get a note instead of a map."""
    if not prompts:
        msg = f"{field}: there is no prompt to find words in"
        raise DumpUnetError(msg)
    unfound = pick_items(text, field=field)
    first_error: dict[int, SpecError] = {}
    for tables in prompts:
        still = []
        for item in unfound:
            _, error = _locate(item, text, tables, "cond", field)
            if error is not None:
                first_error.setdefault(item.start, error)
                still.append(item)
        unfound = still
        if not unfound:
            return
    error = first_error[unfound[0].start]
    if len(prompts) == 1:
        raise error
    reason = f"{error.reason} — and it is in none of the job's {len(prompts)} prompts"
    raise SpecError(field, text, error.position, reason, error.length)


def _locate(
    item: PickItem, text: str, tables: Sequence[TokenTable], branch: Branch, field: str
) -> tuple[tuple[tuple[tuple[Branch, int], tuple[int, ...]], ...], SpecError | None]:
    """The item's rows in these tables, and (when it is in none) the first table's reason as a `SpecError`."""
    rows: list[tuple[tuple[Branch, int], tuple[int, ...]]] = []
    error: SpecError | None = None
    for sub, table in enumerate(tables):
        try:
            columns = table.lookup(item, text, field=field)
        except SpecError as e:
            error = error or e
            continue
        if columns:
            rows.append(((branch, sub), columns))
    if rows:
        return tuple(rows), None
    return (), error or SpecError(field, text, item.start, "names no token", item.length)


_HAS_ALNUM = re.compile(r"\w")


def _every_word(tables: Sequence[TokenTable], branch: Branch) -> list[WordColumns]:
    found: dict[str, list[tuple[tuple[Branch, int], list[int]]]] = {}
    for sub, table in enumerate(tables):
        for word in table.words:
            if not word.key or not _HAS_ALNUM.search(word.text):
                continue
            if word.key not in found and len(found) >= MAX_BLANK_WORDS:
                continue
            rows = found.setdefault(word.key, [])
            if rows and rows[-1][0] == (branch, sub):
                rows[-1][1].extend(word.positions)
            else:
                rows.append(((branch, sub), list(word.positions)))
    return [
        WordColumns(key, tuple((row, tuple(sorted(cols))) for row, cols in rows), branch) for key, rows in found.items()
    ]


# --------------------------------------------------------------------------------------------------------------------
# Sums → heat maps


@dataclass(frozen=True)
class WordHeat:
    """One word's attention, on the latent grid of the final pass: over the chosen steps, and per step. Raw sums
    (not normalised); `heat` gives the [0, 1] map at an image's size."""

    word: WordColumns
    pass_index: int
    total: torch.Tensor | None  # (h, w); None when the word is not in this image's prompt
    steps: tuple[tuple[int, torch.Tensor], ...]  # (step, (h, w)) in step order

    @property
    def found(self) -> bool:
        return self.total is not None

    @property
    def label(self) -> str:
        return self.word.label if self.word.branch == "cond" else f"{self.word.label} (negative)"

    def heat(self, height: int, width: int, raw: torch.Tensor | None = None) -> np.ndarray:
        """(height, width) float32 in [0, 1]: bilinear to the image's size, then min–max."""
        total = self.total if raw is None else raw
        if total is None:
            msg = f"{self.label!r} is not in this prompt, so it has no map"
            raise DumpUnetError(msg)
        return min_max(resize_heat(total, height, width))


def word_heats(
    captured: Capture | Mapping[Key, torch.Tensor],
    image: int,
    words: Sequence[WordColumns],
    *,
    pass_index: int | None = None,
) -> list[WordHeat]:
    """The heat of each word in one image, from what `WordHeatRecorder` captured (a `Capture`, or the dictionary
    `Capture.take_image` returns). `pass_index` None takes the last pass recorded: the hires-fix pass when there
    was one, so the maps fit the final image. A word without rows (not in this image's prompt) gets no map."""
    keys = [k for k in captured if k.kind == HEAT_KIND and k.image == image]
    if not keys:
        msg = f"no word heat was recorded for image {image}: were its steps sampled?"
        raise DumpUnetError(msg)
    chosen = max(k.pass_index for k in keys) if pass_index is None else pass_index
    by_step: dict[int, dict[tuple[Branch, int], torch.Tensor]] = {}
    for k in keys:
        if k.pass_index == chosen:
            by_step.setdefault(k.step, {})[(k.branch, k.sub)] = captured[k]
    out: list[WordHeat] = []
    for word in words:
        if not word.found:
            out.append(WordHeat(word, chosen, None, ()))
            continue
        steps: list[tuple[int, torch.Tensor]] = []
        for step in sorted(by_step):
            rows = by_step[step]
            parts = [rows[row][list(cols)].float().sum(dim=0) for row, cols in word.rows if row in rows]
            if parts:
                steps.append((step, torch.stack(parts).sum(dim=0)))
        if not steps:
            msg = f"no heat was recorded for {word.label!r}: its rows were not recorded (negative words need uncond)"
            raise DumpUnetError(msg)
        total = torch.stack([m for _, m in steps]).sum(dim=0)
        out.append(WordHeat(word, chosen, total, tuple(steps)))
    return out


# --------------------------------------------------------------------------------------------------------------------
# Pictures


@dataclass(frozen=True)
class WordPicture:
    """One picture for the gallery: what it shows and the pixels."""

    label: str
    image: np.ndarray  # (H, W, 3) uint8
    kind: str  # "word", "strip" or "steps"


def render_words(image: np.ndarray, heats: Sequence[WordHeat], settings: HeatmapSettings) -> list[WordPicture]:
    """One picture per word over `image` ((H, W, 3) uint8, the generated image), then the strip of all words, then
    (if `settings.per_step`) a per-step strip per word. A word that is not in this image's prompt gets no picture;
    its place in the strip (drawn then even for one word) is the image dimmed, saying "not in this prompt"."""
    s = settings.checked()
    height, width = image.shape[:2]

    def draw(heat: np.ndarray, base: np.ndarray = image) -> np.ndarray:
        return overlay(base, heat, s.output, opacity=s.opacity, cmap=s.colormap)

    faces = [draw(h.heat(height, width)) if h.found else _note(image, NOT_IN_PROMPT) for h in heats]
    pictures = [WordPicture(h.label, face, "word") for h, face in zip(heats, faces, strict=True) if h.found]
    missing = [h.label for h in heats if not h.found]
    if len(heats) > 1 or missing:
        strip = _strip(faces, [h.label for h in heats])
        label = "words: " + ", ".join(h.label for h in heats)
        if missing:
            label += f" ({', '.join(missing)}: {NOT_IN_PROMPT})"
        pictures.append(WordPicture(label, strip, "strip"))
    if s.per_step:
        small = _thumbnail(image)
        th, tw = small.shape[:2]
        for h in (h for h in heats if h.found):
            tiles = [draw(h.heat(th, tw, raw), small) for _, raw in h.steps]
            labels = [str(step) for step, _ in h.steps]
            pictures.append(WordPicture(f"{h.label} per step", _strip(tiles, labels), "steps"))
    return pictures


_UNSAFE = re.compile(r"[^\w-]+")


def map_images(image: int, heats: Sequence[WordHeat], pictures: Sequence[WordPicture]) -> list[MapImage]:
    """`render_words`' pictures of job image `image` as gallery maps, with the labels and file names the webui and
    the command line both use: `<image>-dumpunet-heat-<word>-<last step>.png`, `…-heat-words-…` for the strip."""
    pass_index = heats[0].pass_index if heats else 0
    last = max((step for h in heats for step, _ in h.steps), default=0)
    out = []
    for pic in pictures:
        place = _UNSAFE.sub("_", "words" if pic.kind == "strip" else pic.label).strip("_") or "word"
        key = Key(image, pass_index, last, place, "heat")
        label = "heat maps: " + pic.label.removeprefix("words: ") if pic.kind == "strip" else f"heat map: {pic.label}"
        out.append(MapImage(key, Image.fromarray(pic.image), label))
    return out


def _note(image: np.ndarray, text: str) -> np.ndarray:
    """`image` dimmed to a third, with `text` written across its middle (wrapped at spaces to fit its width)."""
    canvas = Image.fromarray(image // 3)
    font, pen = _font(), ImageDraw.Draw(canvas)
    lines: list[str] = []
    for word in text.split():
        if lines and font.getlength(f"{lines[-1]} {word}") <= image.shape[1] - 4:
            lines[-1] += f" {word}"
        else:
            lines.append(word)
    line = int(font.getbbox("Ag")[3]) + 2
    top = max(0, (image.shape[0] - line * len(lines)) // 2)
    for i, text_line in enumerate(lines):
        fitted = _fit(text_line, image.shape[1], font)
        x = max(0, (image.shape[1] - int(font.getlength(fitted))) // 2)
        pen.text((x, top + i * line), fitted, fill=(255, 255, 255), font=font)
    return np.asarray(canvas)


def _thumbnail(image: np.ndarray) -> np.ndarray:
    height, width = image.shape[:2]
    scale = min(1.0, STEP_TILE / max(height, width))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if size == (width, height):
        return image
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))


@cache
def _font() -> ImageFont.ImageFont:
    return ImageFont.load_default()


def _strip(tiles: Sequence[np.ndarray], labels: Sequence[str], gap: int = 2) -> np.ndarray:
    """Tiles of one size side by side on black, a gap between them, each with its label written below."""
    h, w = tiles[0].shape[:2]
    font = _font()
    line = int(font.getbbox("Ag")[3]) + 4
    canvas = Image.new("RGB", (len(tiles) * w + (len(tiles) - 1) * gap, h + line), (0, 0, 0))
    pen = ImageDraw.Draw(canvas)
    for i, (tile, label) in enumerate(zip(tiles, labels, strict=True)):
        x = i * (w + gap)
        canvas.paste(Image.fromarray(tile), (x, 0))
        text = _fit(label, w, font)
        pen.text((x + max(0, (w - int(font.getlength(text))) // 2), h + 2), text, fill=(255, 255, 255), font=font)
    return np.asarray(canvas)


def _fit(text: str, width: int, font: ImageFont.ImageFont) -> str:
    """`text`, cut with an ellipsis until it fits in `width` pixels."""
    if font.getlength(text) <= width:
        return text
    while text and font.getlength(text + "…") > width:
        text = text[:-1]
    return text + "…" if text else ""
