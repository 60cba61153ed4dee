"""Mirror of modules/images.py, reduced to grids, the filename generator, `get_next_sequence_number` and
`save_image` (PNG text chunks, JPEG/WebP without EXIF: piexif is not a test dependency)."""

from __future__ import annotations

import datetime
import hashlib
import math
import os
import re
import string
from collections import namedtuple

from modules import errors, script_callbacks, shared
from modules.shared import opts
from PIL import Image, ImageColor, PngImagePlugin

LANCZOS = Image.Resampling.LANCZOS if hasattr(Image, "Resampling") else Image.LANCZOS
NEAREST = Image.Resampling.NEAREST if hasattr(Image, "Resampling") else Image.NEAREST


def image_grid(imgs, batch_size=1, rows=None):
    if rows is None:
        if opts.n_rows > 0:
            rows = opts.n_rows
        elif opts.n_rows == 0:
            rows = batch_size
        elif opts.grid_prevent_empty_spots:
            rows = math.floor(math.sqrt(len(imgs)))
            while len(imgs) % rows != 0:
                rows -= 1
        else:
            rows = math.sqrt(len(imgs))
            rows = round(rows)
    if rows > len(imgs):
        rows = len(imgs)

    cols = math.ceil(len(imgs) / rows)

    params = script_callbacks.ImageGridLoopParams(imgs, cols, rows)
    script_callbacks.image_grid_callback(params)

    w, h = map(max, zip(*(img.size for img in imgs), strict=True))
    grid_background_color = ImageColor.getcolor(opts.grid_background_color, "RGB")
    grid = Image.new("RGB", size=(params.cols * w, params.rows * h), color=grid_background_color)

    for i, img in enumerate(params.imgs):
        img_w, img_h = img.size
        w_offset, h_offset = 0 if img_w == w else (w - img_w) // 2, 0 if img_h == h else (h - img_h) // 2
        grid.paste(img, box=(i % params.cols * w + w_offset, i // params.cols * h + h_offset))

    return grid


Grid = namedtuple("Grid", ["tiles", "tile_w", "tile_h", "image_w", "image_h", "overlap"])


class GridAnnotation:
    def __init__(self, text="", is_active=True):
        self.text = text
        self.is_active = is_active
        self.size = None


def draw_grid_annotations(im, width, height, hor_texts, ver_texts, margin=0):
    """The real one draws the labels with a TrueType font; the fake adds the same margins, without text."""
    pad_left = 0 if sum([sum([len(line.text) for line in lines]) for lines in ver_texts]) == 0 else width * 3 // 4
    pad_top = 0 if sum([sum([len(line.text) for line in lines]) for lines in hor_texts]) == 0 else height // 4
    cols = im.width // width
    rows = im.height // height
    result = Image.new(
        "RGB", (im.width + pad_left + margin * (cols - 1), im.height + pad_top + margin * (rows - 1)), "white"
    )
    for row in range(rows):
        for col in range(cols):
            cell = im.crop((width * col, height * row, width * (col + 1), height * (row + 1)))
            result.paste(cell, (pad_left + (width + margin) * col, pad_top + (height + margin) * row))
    return result


def resize_image(resize_mode, im, width, height, upscaler_name=None):
    """resize_mode 0: just resize, 1: crop and resize, 2: resize and fill (only LANCZOS, no upscalers)"""
    if resize_mode == 0:
        return im.resize((width, height), resample=LANCZOS)

    ratio = width / height
    src_ratio = im.width / im.height
    if resize_mode == 1:
        src_w = width if ratio > src_ratio else im.width * height // im.height
        src_h = height if ratio <= src_ratio else im.height * width // im.width
        resized = im.resize((src_w, src_h), resample=LANCZOS)
        res = Image.new("RGB", (width, height))
        res.paste(resized, box=(width // 2 - src_w // 2, height // 2 - src_h // 2))
        return res

    src_w = width if ratio < src_ratio else im.width * height // im.height
    src_h = height if ratio >= src_ratio else im.height * width // im.width
    resized = im.resize((src_w, src_h), resample=LANCZOS)
    res = Image.new("RGB", (width, height))
    res.paste(resized, box=(width // 2 - src_w // 2, height // 2 - src_h // 2))
    return res


def flatten(img, bgcolor):
    """replaces transparency with bgcolor (example: "#ffffff"), returning an RGB mode image with no transparency"""
    if img.mode == "RGBA":
        background = Image.new("RGBA", img.size, bgcolor)
        background.paste(img, mask=img)
        img = background

    return img.convert("RGB")


invalid_filename_chars = '#<>:"/\\|?*\n\r\t'
invalid_filename_prefix = " "
invalid_filename_postfix = " ."
re_nonletters = re.compile(r"[\s" + string.punctuation + "]+")
re_pattern = re.compile(r"(.*?)(?:\[([^\[\]]+)\]|$)")
re_pattern_arg = re.compile(r"(.*)<([^>]*)>$")
max_filename_part_length = shared.cmd_opts.filenames_max_length
NOTHING_AND_SKIP_PREVIOUS_TEXT = object()


def sanitize_filename_part(text, replace_spaces=True):
    if text is None:
        return None

    if replace_spaces:
        text = text.replace(" ", "_")

    text = text.translate({ord(x): "_" for x in invalid_filename_chars})
    text = text.lstrip(invalid_filename_prefix)[:max_filename_part_length]
    text = text.rstrip(invalid_filename_postfix)
    return text


class FilenameGenerator:
    replacements = {
        "basename": lambda self: self.basename or "img",
        "seed": lambda self: self.seed if self.seed is not None else "",
        "seed_first": lambda self: self.seed if self.p.batch_size == 1 else self.p.all_seeds[0],
        "seed_last": lambda self: NOTHING_AND_SKIP_PREVIOUS_TEXT if self.p.batch_size == 1 else self.p.all_seeds[-1],
        "steps": lambda self: self.p and self.p.steps,
        "cfg": lambda self: self.p and self.p.cfg_scale,
        "width": lambda self: self.image.width,
        "height": lambda self: self.image.height,
        "styles": lambda self: (
            self.p
            and sanitize_filename_part(
                ", ".join([style for style in self.p.styles if style != "None"]) or "None", replace_spaces=False
            )
        ),
        "sampler": lambda self: self.p and sanitize_filename_part(self.p.sampler_name, replace_spaces=False),
        "model_hash": lambda self: getattr(self.p, "sd_model_hash", shared.sd_model.sd_model_hash),
        "model_name": lambda self: sanitize_filename_part(
            shared.sd_model.sd_checkpoint_info.name_for_extra, replace_spaces=False
        ),
        "date": lambda self: datetime.datetime.now().strftime("%Y-%m-%d"),
        "datetime": lambda self, *args: self.datetime(*args),
        "job_timestamp": lambda self: getattr(self.p, "job_timestamp", shared.state.job_timestamp),
        "prompt_hash": lambda self, *args: self.string_hash(self.prompt, *args),
        "negative_prompt_hash": lambda self, *args: self.string_hash(self.p.negative_prompt, *args),
        "full_prompt_hash": lambda self, *args: self.string_hash(f"{self.p.prompt} {self.p.negative_prompt}", *args),
        "prompt": lambda self: sanitize_filename_part(self.prompt),
        "prompt_no_styles": lambda self: sanitize_filename_part(self.prompt, replace_spaces=False),
        "prompt_spaces": lambda self: sanitize_filename_part(self.prompt, replace_spaces=False),
        "prompt_words": lambda self: self.prompt_words(),
        "batch_number": lambda self: (
            NOTHING_AND_SKIP_PREVIOUS_TEXT if self.p.batch_size == 1 or self.zip else self.p.batch_index + 1
        ),
        "batch_size": lambda self: self.p.batch_size,
        "generation_number": lambda self: (
            NOTHING_AND_SKIP_PREVIOUS_TEXT
            if (self.p.n_iter == 1 and self.p.batch_size == 1) or self.zip
            else self.p.iteration * self.p.batch_size + self.p.batch_index + 1
        ),
        "clip_skip": lambda self: opts.data["CLIP_stop_at_last_layers"],
        "denoising": lambda self: (
            self.p.denoising_strength if self.p and self.p.denoising_strength else NOTHING_AND_SKIP_PREVIOUS_TEXT
        ),
        "user": lambda self: self.p.user,
        "none": lambda self: "",  # Overrides the default, so you can get just the sequence number
        "image_hash": lambda self, *args: self.image_hash(*args),
    }
    default_time_format = "%Y%m%d%H%M%S"

    def __init__(self, p, seed, prompt, image, zip=False, basename=""):
        self.p = p
        self.seed = seed
        self.prompt = prompt
        self.image = image
        self.zip = zip
        self.basename = basename

    def prompt_words(self):
        words = [x for x in re_nonletters.split(self.prompt or "") if x]
        if len(words) == 0:
            words = ["empty"]
        return sanitize_filename_part(" ".join(words[0 : opts.directories_max_prompt_words]), replace_spaces=False)

    def datetime(self, *args):
        time_datetime = datetime.datetime.now()

        time_format = args[0] if (args and args[0] != "") else self.default_time_format
        try:
            formatted_time = time_datetime.strftime(time_format)
        except (ValueError, TypeError):
            formatted_time = time_datetime.strftime(self.default_time_format)

        return sanitize_filename_part(formatted_time, replace_spaces=False)

    def image_hash(self, *args):
        length = int(args[0]) if (args and args[0] != "") else None
        return hashlib.sha256(self.image.tobytes()).hexdigest()[0:length]

    def string_hash(self, text, *args):
        length = int(args[0]) if (args and args[0] != "") else 8
        return hashlib.sha256(text.encode()).hexdigest()[0:length]

    def apply(self, x):
        res = ""

        for m in re_pattern.finditer(x):
            text, pattern = m.groups()

            if pattern is None:
                res += text
                continue

            pattern_args = []
            while True:
                m = re_pattern_arg.match(pattern)
                if m is None:
                    break

                pattern, arg = m.groups()
                pattern_args.insert(0, arg)

            fun = self.replacements.get(pattern.lower())
            if fun is not None:
                try:
                    replacement = fun(self, *pattern_args)
                except Exception:
                    replacement = None
                    errors.report(f"Error adding [{pattern}] to filename", exc_info=True)

                if replacement == NOTHING_AND_SKIP_PREVIOUS_TEXT:
                    continue
                if replacement is not None:
                    res += text + str(replacement)
                    continue

            res += f"{text}[{pattern}]"

        return res


def get_next_sequence_number(path, basename):
    """Determines and returns the next sequence number to use when saving an image in the specified directory.

    The sequence starts at 0."""
    result = -1
    if basename != "":
        basename = f"{basename}-"

    prefix_length = len(basename)
    for p in os.listdir(path):
        if p.startswith(basename):
            parts = os.path.splitext(p[prefix_length:])[0].split("-")  # the sequence number is the first element
            try:
                result = max(int(parts[0]), result)
            except ValueError:
                pass

    return result + 1


def save_image_with_geninfo(
    image, geninfo, filename, extension=None, existing_pnginfo=None, pnginfo_section_name="parameters"
):
    """Saves image to filename, including geninfo as text information for generation info (PNG only here)."""
    if extension is None:
        extension = os.path.splitext(filename)[1]

    image_format = Image.registered_extensions()[extension]

    if extension.lower() == ".png":
        existing_pnginfo = existing_pnginfo or {}
        if opts.enable_pnginfo:
            existing_pnginfo[pnginfo_section_name] = geninfo
            pnginfo_data = PngImagePlugin.PngInfo()
            for k, v in (existing_pnginfo or {}).items():
                pnginfo_data.add_text(k, str(v))
        else:
            pnginfo_data = None

        image.save(filename, format=image_format, quality=opts.jpeg_quality, pnginfo=pnginfo_data)

    elif extension.lower() in (".jpg", ".jpeg", ".webp"):
        if image.mode == "RGBA":
            image = image.convert("RGB")

        image.save(filename, format=image_format, quality=opts.jpeg_quality, lossless=opts.webp_lossless)
    else:
        image.save(filename, format=image_format, quality=opts.jpeg_quality)


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
    """Save an image. Returns (fullfn, txt_fullfn): the full path of the saved image, and of the infotext file if
    one was written (opts.save_txt), else None."""
    namegen = FilenameGenerator(p, seed, prompt, image, basename=basename)

    if save_to_dirs is None:
        save_to_dirs = (grid and opts.grid_save_to_dirs) or (not grid and opts.save_to_dirs and not no_prompt)

    if save_to_dirs:
        dirname = namegen.apply(opts.directories_filename_pattern or "[prompt_words]").lstrip(" ").rstrip("\\ /")
        path = os.path.join(path, dirname)

    os.makedirs(path, exist_ok=True)

    if forced_filename is None:
        if short_filename or seed is None:
            file_decoration = ""
        elif hasattr(p, "override_settings"):
            file_decoration = p.override_settings.get("samples_filename_pattern")
        else:
            file_decoration = None

        if file_decoration is None:
            default_pattern = "[seed]" if opts.save_to_dirs else "[seed]-[prompt_spaces]"
            file_decoration = opts.samples_filename_pattern or default_pattern

        file_decoration = namegen.apply(file_decoration) + suffix

        add_number = opts.save_images_add_number or file_decoration == ""

        if file_decoration != "" and add_number:
            file_decoration = f"-{file_decoration}"

        if add_number:
            basecount = get_next_sequence_number(path, basename)
            fullfn = None
            for i in range(500):
                fn = f"{basecount + i:05}" if basename == "" else f"{basename}-{basecount + i:04}"
                fullfn = os.path.join(path, f"{fn}{file_decoration}.{extension}")
                if not os.path.exists(fullfn):
                    break
        else:
            fullfn = os.path.join(path, f"{file_decoration}.{extension}")
    else:
        fullfn = os.path.join(path, f"{forced_filename}.{extension}")

    pnginfo = existing_info or {}
    if info is not None:
        pnginfo[pnginfo_section_name] = info

    params = script_callbacks.ImageSaveParams(image, p, fullfn, pnginfo)
    script_callbacks.before_image_saved_callback(params)

    image = params.image
    fullfn = params.filename
    info = params.pnginfo.get(pnginfo_section_name, None)

    def _atomically_save_image(image_to_save, filename_without_extension, extension):
        """save image with .tmp extension to avoid race condition when another process detects new image"""
        temp_file_path = f"{filename_without_extension}.tmp"

        save_image_with_geninfo(
            image_to_save,
            info,
            temp_file_path,
            extension,
            existing_pnginfo=params.pnginfo,
            pnginfo_section_name=pnginfo_section_name,
        )

        filename = filename_without_extension + extension
        without_extension = filename_without_extension
        if shared.opts.save_images_replace_action != "Replace":
            n = 0
            while os.path.exists(filename):
                n += 1
                without_extension = f"{filename_without_extension}-{n}"
                filename = without_extension + extension
        os.replace(temp_file_path, filename)
        return without_extension

    fullfn_without_extension, extension = os.path.splitext(params.filename)
    if hasattr(os, "statvfs"):
        max_name_len = os.statvfs(path).f_namemax
        fullfn_without_extension = fullfn_without_extension[: max_name_len - max(4, len(extension))]
        params.filename = fullfn_without_extension + extension
        fullfn = params.filename

    fullfn_without_extension = _atomically_save_image(image, fullfn_without_extension, extension)
    fullfn = fullfn_without_extension + extension
    image.already_saved_as = fullfn

    if opts.save_txt and info is not None:
        txt_fullfn = f"{fullfn_without_extension}.txt"
        with open(txt_fullfn, "w", encoding="utf8") as file:
            file.write(f"{info}\n")
    else:
        txt_fullfn = None

    script_callbacks.image_saved_callback(params)

    return fullfn, txt_fullfn


def read_info_from_image(image: Image.Image) -> tuple[str | None, dict]:
    items = (image.info or {}).copy()

    geninfo = items.pop("parameters", None)

    return geninfo, items
