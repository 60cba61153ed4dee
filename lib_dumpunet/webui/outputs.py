"""Delivering maps: into the gallery after their image, and to disk next to it.

Gallery: each generated image is followed by its maps, in the original's order; every map gets its image's prompt,
seed and infotext (plus a "Dump U-Net map" entry naming block, step and kind), and the `all_*` lists of the
`Processed` are lengthened in step, so per-image metadata stays flat and right for any batch count and size.

Disk ("Save generated images"): through the webui's own `images.save_image`. A map is named after its image's file
(same number and seed) with a suffix such as `-dumpunet-unet-IN04-005`; where the image itself was not saved, the
webui's file-name pattern and numbering are used with that suffix.

Image modes: maps are rendered as palette images ("P"), which the webui PNG-encodes (gallery files, API answers,
saved files) several times faster than RGB. Where the webui's image format is not PNG — PIL cannot write P as JPEG
and the webui's savers do not convert it — and where the webui would also re-save a big map as a JPEG copy, maps are
handed over as RGB (`deliverable`). Gallery maps smaller than the display minimum are enlarged first (`for_gallery`);
saved files keep the maps' own size.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from modules import images, infotext_utils, shared
from PIL import Image

from lib_dumpunet.render import MapImage, enlarge

__all__ = [
    "MAP_KEY",
    "deliverable",
    "for_gallery",
    "for_saving",
    "image_positions",
    "images_after_each",
    "insert_maps",
    "map_first",
    "merge_difference",
    "save_maps",
]

MAP_KEY = "Dump U-Net map"


def palette_format() -> bool:
    """True when the webui writes its images as PNG, which keeps palette images as they are."""
    return str(getattr(shared.opts, "samples_format", "png") or "png").lower().lstrip(".") == "png"


def _jpeg_copy_possible(image: Image.Image) -> bool:
    """True when `images.save_image` may also write a downscaled JPEG copy of `image` ("Save copy of large images as
    JPG"): always for a map over the side limit; for others only if the PNG is over the size limit, which palette
    maps do not reach below the side limit (a byte per pixel before compression: 16 MP for 4 MB)."""
    opts = shared.opts
    if not getattr(opts, "export_for_4chan", False):
        return False
    side = float(getattr(opts, "target_side_length", 4000) or 4000)
    megabytes = float(getattr(opts, "img_downscale_threshold", 4.0) or 4.0)
    return max(image.size) > side or image.width * image.height > 0.9 * megabytes * 1024 * 1024


def deliverable(image: Image.Image) -> Image.Image:
    """`image` in a mode the webui can write in its image format: palette images stay palette images for PNG, and
    become RGB for JPEG and WebP or where the webui would make a JPEG copy of them."""
    if image.mode != "P" or (palette_format() and not _jpeg_copy_possible(image)):
        return image
    return image.convert("RGB")


def for_saving(maps: Mapping[int, Sequence[MapImage]]) -> dict[int, list[MapImage]]:
    """The maps as they are written to disk: each in a mode the webui's format takes."""
    return {i: [dataclasses.replace(m, image=deliverable(m.image)) for m in ms] for i, ms in maps.items()}


def for_gallery(maps: Mapping[int, Sequence[MapImage]], display_min: int) -> dict[int, list[MapImage]]:
    """The maps as the gallery (and the API) gets them: tiny ones enlarged to `display_min`, each in a mode the
    webui's format takes."""
    return {
        i: [dataclasses.replace(m, image=deliverable(enlarge(m.image, display_min))) for m in ms]
        for i, ms in maps.items()
    }


def map_infotext(owner: str, m: MapImage) -> str:
    return f"{owner}, {MAP_KEY}: {infotext_utils.quote(m.label)}"


def images_after_each(p: Any) -> int:
    """How many images the webui shows after each generated image of `p`: an inpainting's mask and its masked
    composite, where the settings ask to return them (they get no infotext of their own)."""
    if getattr(p, "mask_for_overlay", None) is None:
        return 0
    return int(bool(shared.opts.return_mask)) + int(bool(shared.opts.return_mask_composite))


def image_positions(processed: Any, generated: int, extras: int = 0) -> list[int]:
    """Where the job's first `generated` images are in the gallery, each followed by `extras` images of its own."""
    first, step = processed.index_of_first_image, 1 + extras
    return [at for at in range(first, first + generated * step, step) if at < len(processed.images)]


def insert_maps(
    processed: Any, maps: Mapping[int, Sequence[MapImage]], positions: Sequence[int], extras: int = 0
) -> None:
    """Put each image's maps right after it and the `extras` images the webui shows with it; `positions[i]` is where
    image i of the job is in the gallery (`image_positions`)."""
    first, step = processed.index_of_first_image, 1 + extras
    gallery, infos = list(processed.images[:first]), list(processed.infotexts[:first])
    parallel = {
        name: list(getattr(processed, name))
        for name in ("all_prompts", "all_negative_prompts", "all_seeds", "all_subseeds")
        if getattr(processed, name, None) is not None
    }
    grown: dict[str, list] = {name: [] for name in parallel}
    for index, at in enumerate(positions):
        owner_info = processed.infotexts[first + index] if first + index < len(processed.infotexts) else ""
        extra = list(maps.get(index, ()))
        gallery += [*processed.images[at : at + step], *(m.image for m in extra)]
        infos += [owner_info, *(map_infotext(owner_info, m) for m in extra)]
        for name, values in parallel.items():
            if index < len(values):
                grown[name] += [values[index]] * (1 + len(extra))
    done = len(positions)
    gallery += processed.images[first + done * step :]
    infos += processed.infotexts[first + done :]
    processed.images, processed.infotexts = gallery, infos
    for name, values in grown.items():
        setattr(processed, name, values + parallel[name][done:])


def map_first(processed: Any, maps: Sequence[MapImage]) -> None:
    """Put the first averaged map, scaled to the image, in front of everything: what X/Y/Z shows in a cell."""
    first = processed.index_of_first_image
    averaged = next((m for m in maps if m.averaged), None)
    if averaged is None or first >= len(processed.images):
        return
    size = processed.images[first].size
    processed.images.insert(0, averaged.image.convert("RGB").resize(size, Image.Resampling.NEAREST))
    processed.infotexts.insert(0, map_infotext(processed.infotexts[first], averaged))
    processed.index_of_first_image = first + 1


def save_maps(
    p: Any,
    maps: Mapping[int, Sequence[MapImage]],
    saved_as: Mapping[int, str],
    infotexts: Mapping[int, str],
    folder: Path | None,
) -> list[str]:
    """Save every map; `saved_as[image]` is the file its image was saved to, if it was. Returns the files."""
    files = []
    extension = shared.opts.samples_format
    for index, image_maps in maps.items():
        image_file = saved_as.get(index)
        seed = p.all_seeds[index] if index < len(p.all_seeds) else None
        prompt = p.all_prompts[index] if index < len(p.all_prompts) else ""
        for m in image_maps:
            info = map_infotext(infotexts.get(index, ""), m)
            if image_file is not None:
                target = str(folder if folder is not None else Path(image_file).parent)
                stem = Path(image_file).stem
                fullfn, _ = images.save_image(
                    m.image, target, "", seed, prompt, extension, info=info, p=p,
                    forced_filename=f"{stem}{m.file_suffix}", save_to_dirs=False,
                )  # fmt: skip
            else:
                target = str(folder) if folder is not None else p.outpath_samples
                fullfn, _ = images.save_image(
                    m.image, target, "", seed, prompt, extension, info=info, p=p, suffix=m.file_suffix
                )
            files.append(fullfn)
    return files


def merge_difference(base: Any, lp: Any, diffs: Mapping[int, Sequence[MapImage]], p: Any, owners: Mapping[int, str]):
    """One gallery for a difference-map job: both runs' grids, both runs' images with their maps, then the
    difference maps image by image. Metadata lists stay flat and aligned with the images after the grids."""
    bf, lf = base.index_of_first_image, lp.index_of_first_image
    order = sorted(diffs)
    diff_maps = [(i, m) for i in order for m in diffs[i]]
    images = [*base.images[:bf], *lp.images[:lf], *base.images[bf:], *lp.images[lf:], *(m.image for _, m in diff_maps)]
    infos = [*base.infotexts[:bf], *lp.infotexts[:lf], *base.infotexts[bf:], *lp.infotexts[lf:]]
    infos += [map_infotext(owners.get(i, ""), m) for i, m in diff_maps]
    for name in ("all_prompts", "all_negative_prompts", "all_seeds", "all_subseeds"):
        per_image = getattr(p, name, None) or []
        owners_values = [per_image[i] if i < len(per_image) else None for i, _ in diff_maps]
        setattr(lp, name, [*getattr(base, name), *getattr(lp, name), *owners_values])
    lp.images, lp.infotexts, lp.index_of_first_image = images, infos, bf + lf
    lp.comments = "\n".join(c for c in (base.comments, lp.comments) if c)
    return lp
