"""Stand-in for webui v1.10.1 `modules/images.py`: grids, resizing and `save_image`.

`save_image` keeps the webui's naming contract: a `[date]` sub-folder (`opts.directories_filename_pattern`) when
`opts.save_to_dirs`, a 5-digit sequence number (4 after a basename) taken past the highest one in the folder, then
`-` and the file pattern (`[seed]` when saving to sub-folders, else `[seed]-[prompt_spaces]`) and the suffix; the
infotext goes into a PNG text chunk (`parameters`), and into a `.txt` with `opts.save_txt`; the before/after
image-saved callbacks fire around the write. JPEG and WebP are written without EXIF (piexif is not installed).
Grid labels are not drawn: `draw_grid_annotations` only adds the margins the labels would take.
"""

from __future__ import annotations

import datetime
import hashlib
import math
import os
import re
import string
from typing import Any

from modules import errors, script_callbacks, shared
from modules.shared import opts
from PIL import Image, ImageColor, PngImagePlugin

LANCZOS = Image.Resampling.LANCZOS
NEAREST = Image.Resampling.NEAREST


# ---------------------------------------------------------------------------------------------------------------------
# grids


def _grid_rows(count: int, batch_size: int) -> int:
    if opts.n_rows > 0:
        return opts.n_rows
    if opts.n_rows == 0:
        return batch_size
    if not opts.grid_prevent_empty_spots:
        return round(math.sqrt(count))
    return next(r for r in range(math.isqrt(count), 0, -1) if count % r == 0)


def image_grid(imgs, batch_size=1, rows=None):
    """Images in rows × cols cells as large as the largest image, each centred in its cell."""
    rows = min(rows if rows is not None else _grid_rows(len(imgs), batch_size), len(imgs))
    params = script_callbacks.ImageGridLoopParams(imgs, math.ceil(len(imgs) / rows), rows)
    script_callbacks.image_grid_callback(params)

    cell_w = max(img.width for img in imgs)
    cell_h = max(img.height for img in imgs)
    background = ImageColor.getcolor(opts.grid_background_color, "RGB")
    grid = Image.new("RGB", (params.cols * cell_w, params.rows * cell_h), background)
    for index, img in enumerate(params.imgs):
        row, col = divmod(index, params.cols)
        grid.paste(img, (col * cell_w + (cell_w - img.width) // 2, row * cell_h + (cell_h - img.height) // 2))
    return grid


class GridAnnotation:
    def __init__(self, text="", is_active=True):
        self.text = text
        self.is_active = is_active
        self.size = None


def _has_text(annotations) -> bool:
    return any(line.text for lines in annotations for line in lines)


def draw_grid_annotations(im, width, height, hor_texts, ver_texts, margin=0):
    """Cells of width × height moved apart by `margin`, with room above for column labels (a quarter of a cell)
    and on the left for row labels (three quarters), where there are any; the labels themselves are not drawn."""
    left = width * 3 // 4 if _has_text(ver_texts) else 0
    top = height // 4 if _has_text(hor_texts) else 0
    cols, rows = im.width // width, im.height // height
    out = Image.new("RGB", (left + im.width + margin * (cols - 1), top + im.height + margin * (rows - 1)), "white")
    for row in range(rows):
        for col in range(cols):
            cell = im.crop((col * width, row * height, (col + 1) * width, (row + 1) * height))
            out.paste(cell, (left + col * (width + margin), top + row * (height + margin)))
    return out


# ---------------------------------------------------------------------------------------------------------------------
# resizing


def _scaled(im, width: int, height: int, cover: bool) -> tuple[int, int]:
    """`im`'s size scaled, aspect kept, to cover width × height (`cover`) or to fit inside it."""
    target_wider = width * im.height > im.width * height
    if target_wider == cover:
        return width, im.height * width // im.width
    return im.width * height // im.height, height


def _stretch_edges(canvas, resized, x: int, y: int) -> None:
    """Fill the bands around `resized` (pasted at x, y) by stretching its outermost rows or columns."""
    w, h = resized.size
    if y > 0:
        canvas.paste(resized.crop((0, 0, w, 1)).resize((w, y)), (x, 0))
        bottom = canvas.height - y - h
        canvas.paste(resized.crop((0, h - 1, w, h)).resize((w, bottom)), (x, y + h))
    if x > 0:
        canvas.paste(resized.crop((0, 0, 1, h)).resize((x, h)), (0, y))
        right = canvas.width - x - w
        canvas.paste(resized.crop((w - 1, 0, w, h)).resize((right, h)), (x + w, y))


def resize_image(resize_mode, im, width, height, upscaler_name=None):
    """0 (or 3): stretch to width × height; 1: scale to cover, crop the middle; 2: scale to fit, fill the rest
    from the edges. Always LANCZOS: the fake has no upscalers."""
    if resize_mode not in (1, 2):
        return im.resize((width, height), resample=LANCZOS)
    resized = im.resize(_scaled(im, width, height, cover=resize_mode == 1), resample=LANCZOS)
    canvas = Image.new("RGB", (width, height))
    x, y = (width - resized.width) // 2, (height - resized.height) // 2
    canvas.paste(resized, (x, y))
    if resize_mode == 2:
        _stretch_edges(canvas, resized, x, y)
    return canvas


def flatten(img, bgcolor):
    """An RGB image: transparency composited over `bgcolor` ("#rrggbb")."""
    if img.mode == "RGBA":
        backdrop = Image.new("RGBA", img.size, bgcolor)
        backdrop.paste(img, (0, 0), img)
        img = backdrop
    return img.convert("RGB")


# ---------------------------------------------------------------------------------------------------------------------
# file names

NOTHING_AND_SKIP_PREVIOUS_TEXT = object()  # a pattern that drops itself and the text just before it
_UNSAFE = str.maketrans(dict.fromkeys('#<>:"/\\|?*\n\r\t', "_"))
_NOT_WORDS = re.compile(rf"[\s{re.escape(string.punctuation)}]+")
_PATTERN = re.compile(r"\[([^\[\]]+)\]")
_PATTERN_ARGS = re.compile(r"<([^<>]*)>")


def sanitize_filename_part(text, replace_spaces=True):
    if text is None:
        return None
    if replace_spaces:
        text = text.replace(" ", "_")
    text = text.translate(_UNSAFE).lstrip(" ")[: shared.cmd_opts.filenames_max_length]
    return text.rstrip(" .")


class FilenameGenerator:
    """Expands `[name]` / `[name<arg>]` patterns (the common ones of the webui's set); unknown names stay as
    they are."""

    default_time_format = "%Y%m%d%H%M%S"

    def __init__(self, p, seed, prompt, image, zip=False, basename=""):
        self.p = p
        self.seed = seed
        self.prompt = prompt
        self.image = image
        self.zip = zip
        self.basename = basename

    def _batch(self, value: Any, single: bool) -> Any:
        return NOTHING_AND_SKIP_PREVIOUS_TEXT if single or self.zip else value

    def value(self, name: str, args: list[str]) -> Any:
        p, arg = self.p, (args[0] if args and args[0] else None)
        now = datetime.datetime.now()
        values = {
            "seed": lambda: "" if self.seed is None else self.seed,
            "steps": lambda: p and p.steps,
            "cfg": lambda: p and p.cfg_scale,
            "width": lambda: self.image.width,
            "height": lambda: self.image.height,
            "sampler": lambda: p and sanitize_filename_part(p.sampler_name, replace_spaces=False),
            "prompt": lambda: sanitize_filename_part(self.prompt),
            "prompt_spaces": lambda: sanitize_filename_part(self.prompt, replace_spaces=False),
            "prompt_words": self.prompt_words,
            "prompt_hash": lambda: hashlib.sha256((self.prompt or "").encode()).hexdigest()[: int(arg or 8)],
            "date": lambda: now.strftime("%Y-%m-%d"),
            "datetime": lambda: self.datetime(*args),
            "batch_number": lambda: self._batch(p.batch_index + 1, p.batch_size == 1),
            "generation_number": lambda: self._batch(
                p.iteration * p.batch_size + p.batch_index + 1, p.n_iter == 1 and p.batch_size == 1
            ),
            "none": lambda: "",
        }
        return values[name]() if name in values else None

    def prompt_words(self):
        words = [word for word in _NOT_WORDS.split(self.prompt or "") if word] or ["empty"]
        return sanitize_filename_part(" ".join(words[: opts.directories_max_prompt_words]), replace_spaces=False)

    def datetime(self, *args):
        fmt = args[0] if args and args[0] else self.default_time_format
        now = datetime.datetime.now()
        try:
            text = now.strftime(fmt)
        except (ValueError, TypeError):
            text = now.strftime(self.default_time_format)
        return sanitize_filename_part(text, replace_spaces=False)

    def apply(self, x):
        pieces = _PATTERN.split(x)  # text, pattern, text, pattern, …, text
        out = []
        for text, pattern in zip(pieces[0::2], [*pieces[1::2], None], strict=True):
            if pattern is None:
                out.append(text)
                continue
            name = pattern.split("<", 1)[0]
            try:
                value = self.value(name.lower(), _PATTERN_ARGS.findall(pattern[len(name) :]))
            except Exception:  # the webui reports a pattern that fails and keeps it literally
                errors.report(f"Error adding [{pattern}] to filename", exc_info=True)
                value = None
            if value is NOTHING_AND_SKIP_PREVIOUS_TEXT:
                continue
            out.append(f"{text}[{pattern}]" if value is None else f"{text}{value}")
        return "".join(out)


def get_next_sequence_number(path, basename):
    """One past the highest sequence number among the files in `path` (named `basename-NNNN…` when a basename is
    given, `NNNNN…` otherwise); 0 in a folder without any."""
    prefix = f"{basename}-" if basename else ""
    highest = -1
    for name in os.listdir(path):
        if not name.startswith(prefix):
            continue
        first = os.path.splitext(name[len(prefix) :])[0].split("-", 1)[0]
        if first.isdigit():
            highest = max(highest, int(first))
    return highest + 1


# ---------------------------------------------------------------------------------------------------------------------
# saving


def save_image_with_geninfo(
    image, geninfo, filename, extension=None, existing_pnginfo=None, pnginfo_section_name="parameters"
):
    """Write `image` to `filename` in the format of `extension` (default: the file's); PNG carries `geninfo` and
    `existing_pnginfo` as text chunks when `opts.enable_pnginfo`."""
    extension = (extension or os.path.splitext(filename)[1]).lower()
    image_format = Image.registered_extensions()[extension]
    if extension == ".png":
        chunks = None
        if opts.enable_pnginfo:
            chunks = PngImagePlugin.PngInfo()
            for key, value in {**(existing_pnginfo or {}), pnginfo_section_name: geninfo}.items():
                chunks.add_text(key, str(value))  # as in the webui, no infotext is written as "None"
        image.save(filename, format=image_format, pnginfo=chunks)
        return
    if image.mode == "RGBA" and extension in (".jpg", ".jpeg", ".webp"):
        image = image.convert("RGB")
    image.save(filename, format=image_format, quality=opts.jpeg_quality, lossless=opts.webp_lossless)


def _numbered_name(path: str, basename: str, decoration: str, extension: str) -> str:
    start = get_next_sequence_number(path, basename)
    for number in range(start, start + 500):
        stem = f"{basename}-{number:04}" if basename else f"{number:05}"
        candidate = os.path.join(path, f"{stem}{decoration}.{extension}")
        if not os.path.exists(candidate):
            break
    return candidate


def _file_pattern(p, seed, short_filename: bool) -> str:
    if short_filename or seed is None:
        return ""
    chosen = p.override_settings.get("samples_filename_pattern") if hasattr(p, "override_settings") else None
    if chosen is None:
        chosen = opts.samples_filename_pattern or ("[seed]" if opts.save_to_dirs else "[seed]-[prompt_spaces]")
    return chosen


def _fit_name(filename: str) -> str:
    """Shorten the file name (not the folder) to what the file system takes, leaving room for ".tmp"."""
    folder, name = os.path.split(filename)
    stem, extension = os.path.splitext(name)
    limit = (os.statvfs(folder).f_namemax if hasattr(os, "statvfs") else 255) - max(4, len(extension.encode()))
    return os.path.join(folder, stem.encode()[:limit].decode(errors="ignore") + extension)


def _write(image, info, params, section: str) -> str:
    """Write through a temporary file; with `save_images_replace_action` other than "Replace", an existing file
    is kept and the new one gets a `-N` suffix. Returns the path without its extension."""
    stem, extension = os.path.splitext(params.filename)
    temporary = f"{stem}.tmp"
    save_image_with_geninfo(image, info, temporary, extension, params.pnginfo, section)
    final_stem = stem
    if opts.save_images_replace_action != "Replace":
        n = 0
        while os.path.exists(final_stem + extension):
            n += 1
            final_stem = f"{stem}-{n}"
    os.replace(temporary, final_stem + extension)
    return final_stem


def save_image(
    image,
    path,
    basename,
    seed=None,
    prompt=None,
    extension="png",
    info=None,
    short_filename=False,
    no_prompt=False,
    grid=False,
    pnginfo_section_name="parameters",
    p=None,
    existing_info=None,
    forced_filename=None,
    suffix="",
    save_to_dirs=None,
):
    """Save `image` under `path` as the webui names it. Returns (file, its .txt file or None)."""
    namegen = FilenameGenerator(p, seed, prompt, image, basename=basename)
    if save_to_dirs is None:
        save_to_dirs = opts.grid_save_to_dirs if grid else (opts.save_to_dirs and not no_prompt)
    if save_to_dirs:
        folder = namegen.apply(opts.directories_filename_pattern or "[prompt_words]")
        path = os.path.join(path, folder.lstrip(" ").rstrip("\\ /"))
    os.makedirs(path, exist_ok=True)

    if forced_filename is not None:
        fullfn = os.path.join(path, f"{forced_filename}.{extension}")
    else:
        decoration = namegen.apply(_file_pattern(p, seed, short_filename)) + suffix
        if opts.save_images_add_number or not decoration:
            fullfn = _numbered_name(path, basename, f"-{decoration}" if decoration else "", extension)
        else:
            fullfn = os.path.join(path, f"{decoration}.{extension}")

    pnginfo = {} if not existing_info else existing_info
    if info is not None:
        pnginfo[pnginfo_section_name] = info
    params = script_callbacks.ImageSaveParams(image, p, fullfn, pnginfo)
    script_callbacks.before_image_saved_callback(params)
    info = params.pnginfo.get(pnginfo_section_name)
    params.filename = _fit_name(params.filename)

    stem = _write(params.image, info, params, pnginfo_section_name)
    fullfn = stem + os.path.splitext(params.filename)[1]
    params.image.already_saved_as = fullfn

    txt_fullfn = None
    if opts.save_txt and info is not None:
        txt_fullfn = f"{stem}.txt"
        with open(txt_fullfn, "w", encoding="utf-8") as txt:
            txt.write(f"{info}\n")

    script_callbacks.image_saved_callback(params)
    return fullfn, txt_fullfn


def read_info_from_image(image):
    """(the infotext of the PNG `parameters` chunk or None, the image's other info items)."""
    items = dict(image.info or {})
    return items.pop("parameters", None), items
