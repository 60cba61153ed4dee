"""Test double of the webui's built-in X/Y/Z plot (v1.10.1 `scripts/xyz_grid.py`), loaded as module "xyz_grid.py".

Extensions register axes by appending `AxisOption(label, type, apply, format_value, confirm, cost, choices,
prepare)` to the module-level `axis_options` before the UI is built. A run turns each axis' text into values (commas
as in CSV; for int and float axes `1-5`, `1-9 (+2)` and `1-9 [3]` ranges; `prepare` replaces all of that), lets
`confirm` veto them, then renders every cell as `process_images` of a shallow copy of `p` that each axis' `apply`
has changed, keeps each cell's first image and infotext, and tiles them into one grid per Z value and a grid of those.
`Script.run` takes v1.10.1's 18 arguments in v1.10.1's order, so API callers can address them by position.
"""

from __future__ import annotations

import csv
import io
import itertools
import random
import re
from copy import copy
from typing import Any, NamedTuple

import gradio as gr
import modules.scripts as scripts
import numpy as np
from modules import errors, images, processing, sd_samplers, shared
from modules.processing import Processed, process_images
from modules.shared import opts, state
from modules.ui_components import ToolButton
from PIL import Image


class AxisInfo(NamedTuple):
    axis: Any
    values: list


# -- what an axis does to p ------------------------------------------------------------------------------------------


def apply_field(field):
    """An `apply` that stores the cell's value as `p.<field>`."""

    def store(p, x, xs):
        setattr(p, field, x)

    return store


def apply_override(field, boolean: bool = False):
    """An `apply` that puts the value into `p.override_settings[field]` ("true"/"false" text when boolean)."""

    def override(p, x, xs):
        p.override_settings[field] = str(x).lower() == "true" if boolean else x

    return override


def apply_prompt(p, x, xs):
    """Prompt S/R: the axis' first value is searched for and replaced by the cell's value in both prompts."""
    needle = xs[0]
    if needle not in p.prompt and needle not in p.negative_prompt:
        raise RuntimeError(f"Prompt S/R did not find {needle} in prompt or negative prompt.")
    p.prompt, p.negative_prompt = p.prompt.replace(needle, x), p.negative_prompt.replace(needle, x)


def apply_order(p, x, xs):
    """Prompt order: the listed words keep their slots in the prompt but appear in the cell's order."""
    slots = sorted((p.prompt.find(word), word) for word in x)
    pieces, rest = [], p.prompt
    for _, word in slots:
        at = rest.find(word)
        pieces.append(rest[:at])
        rest = rest[at + len(word) :]
    p.prompt = "".join(piece + word for piece, word in zip(pieces, x, strict=False)) + rest


def apply_clip_skip(p, x, xs):
    opts.data["CLIP_stop_at_last_layers"] = x


def apply_styles(p, x, xs):
    p.styles.extend(x.split(","))


def do_nothing(p, x, xs):
    pass


def confirm_samplers(p, xs):
    unknown = [x for x in xs if sd_samplers.find_sampler_config(x) is None]
    if unknown:
        raise RuntimeError(f"Unknown sampler: {unknown[0]}")


def boolean_choice(reverse: bool = False):
    return lambda: ["False", "True"] if reverse else ["True", "False"]


# -- how a value is labelled -----------------------------------------------------------------------------------------


def _tidy(x):
    return round(x, 8) if isinstance(x, float) else x


def format_value_add_label(p, opt, x):
    return f"{opt.label}: {_tidy(x)}"


def format_value(p, opt, x):
    return _tidy(x)


def format_value_join_list(p, opt, x):
    return ", ".join(x)


def format_nothing(p, opt, x):
    return ""


def str_permutations(x):
    """Marker type: the axis' values are every ordering of the listed words."""
    return x


def list_to_csv_string(data_list):
    out = io.StringIO()
    csv.writer(out).writerow(data_list)
    return out.getvalue().strip()


def csv_string_to_list_strip(data_str):
    rows = csv.reader(io.StringIO(data_str), skipinitialspace=True)
    return [item.strip() for row in rows for item in row]


class AxisOption:
    def __init__(
        self,
        label,
        type,
        apply,
        format_value=format_value_add_label,
        confirm=None,
        cost=0.0,
        choices=None,
        prepare=None,
    ):
        self.label, self.type, self.apply, self.format_value = label, type, apply, format_value
        self.confirm, self.cost, self.choices, self.prepare = confirm, cost, choices, prepare


class AxisOptionImg2Img(AxisOption):
    is_img2img = True


class AxisOptionTxt2Img(AxisOption):
    is_img2img = False


def _sampler_names():
    return [s.name for s in sd_samplers.samplers]


# (label, value type, field of p it sets, tab or None for both)
_FIELD_AXES = (
    ("Seed", int, "seed", None),
    ("Var. seed", int, "subseed", None),
    ("Var. strength", float, "subseed_strength", None),
    ("Steps", int, "steps", None),
    ("Hires steps", int, "hr_second_pass_steps", "txt2img"),
    ("CFG Scale", float, "cfg_scale", None),
    ("Schedule type", str, "scheduler", None),
    ("Eta", float, "eta", None),
    ("Denoising", float, "denoising_strength", None),
)
_AXIS_CLASS = {None: AxisOption, "txt2img": AxisOptionTxt2Img, "img2img": AxisOptionImg2Img}

axis_options = [
    AxisOption("Nothing", str, do_nothing, format_value=format_nothing),
    *(_AXIS_CLASS[tab](label, kind, apply_field(field)) for label, kind, field, tab in _FIELD_AXES),
    AxisOption("Prompt S/R", str, apply_prompt, format_value=format_value),
    AxisOption("Prompt order", str_permutations, apply_order, format_value=format_value_join_list),
    *(
        cls("Sampler", str, apply_field("sampler_name"), format_value, confirm_samplers, 0, _sampler_names)
        for cls in (AxisOptionTxt2Img, AxisOptionImg2Img)
    ),
    AxisOption("Clip skip", int, apply_clip_skip),
    AxisOption("Styles", str, apply_styles, choices=lambda: list(shared.prompt_styles.styles)),
    AxisOption("RNG source", str, apply_override("randn_source"), choices=lambda: ["GPU", "CPU", "NV"]),
]


# -- values ----------------------------------------------------------------------------------------------------------

_NUMBER = r"[+-]?\d+(?:\.\d*)?"
_SPAN = re.compile(rf"({_NUMBER})-({_NUMBER})(?:\(([+-]\d+(?:\.\d*)?)\)|\[(\d+)\])?")


def _expand(item: str, kind: type) -> list:
    """`a-b` (inclusive), `a-b (+s)` (step s), `a-b [n]` (n evenly spaced values); anything else is one value."""
    found = _SPAN.fullmatch(re.sub(r"\s+", "", item))
    if found is None:
        return [item]
    first, last, step, count = found.groups()
    if count is not None:
        spaced = np.linspace(float(first), float(last), int(count)).tolist()
        return [int(v) for v in spaced] if kind is int else spaced
    if kind is int:
        return list(range(int(first), int(last) + 1, int(step or 1)))
    stride = float(step or 1)
    return np.arange(float(first), float(last) + stride, stride).tolist()


def axis_values(p, opt: AxisOption, text: str, picked: list | None, csv_mode: bool) -> list:
    """The values of one axis, converted by its type and confirmed."""
    if opt.label == "Nothing":
        return [0]
    from_dropdown = opt.choices is not None and not csv_mode
    if from_dropdown or opt.prepare is None:
        raw = list(picked or []) if from_dropdown else csv_string_to_list_strip(text or "")
    else:
        raw = list(opt.prepare(text))
    if opt.type in (int, float):
        raw = [v for item in raw if str(item).strip() for v in _expand(str(item), opt.type)]
    elif opt.type is str_permutations:
        raw = list(itertools.permutations(raw))
    values = [opt.type(v) for v in raw]
    if opt.confirm:
        opt.confirm(p, values)
    return values


def _fill_random_seeds(opt: AxisOption, values: list) -> list:
    if opt.label not in ("Seed", "Var. seed"):
        return values
    return [random.randrange(4294967294) if v in (None, "", -1) else v for v in values]


# -- the grid --------------------------------------------------------------------------------------------------------


def _loop_order(costs: dict[str, float]) -> list[str]:
    """Axes from outermost to innermost loop: the costliest axis changes least often (z, y, x when equal)."""
    return sorted("zyx", key=lambda axis: -costs[axis])


def draw_xyz_grid(
    p,
    xs,
    ys,
    zs,
    x_labels,
    y_labels,
    z_labels,
    cell,
    draw_legend,
    include_lone_images,
    include_sub_grids,
    first_axes_processed,
    second_axes_processed,
    margin_size,
):
    """Render every cell (loops nested as asked), then one grid per Z value and a grid of those grids. Returns a
    Processed whose images are [grid of grids, grid per Z…, cells…]; index_of_first_image is 1."""
    counts = {"x": len(xs), "y": len(ys), "z": len(zs)}
    total = len(xs) * len(ys) * len(zs)
    state.job_count = total * p.n_iter
    last = next(a for a in "zyx" if a not in (first_axes_processed, second_axes_processed))
    order = [first_axes_processed, second_axes_processed, last]
    cells: list = [None] * total
    template = None
    for picks in itertools.product(*(range(counts[a]) for a in order)):
        at = dict(zip(order, picks, strict=True))
        ix, iy, iz = at["x"], at["y"], at["z"]
        slot = ix + len(xs) * (iy + len(ys) * iz)
        state.job = f"{slot + 1} out of {total}"
        result = cell(xs[ix], ys[iy], zs[iz], ix, iy, iz)
        template = result if template is None else template
        cells[slot] = result
    if template is None:
        return Processed(p, [])

    made = [c for c in cells if c.images]
    if not made:
        return Processed(p, [])
    blank_size, blank_mode = made[0].images[0].size, made[0].images[0].mode
    pictures = [c.images[0] if c.images else Image.new(blank_mode, blank_size) for c in cells]
    texts = [c.infotexts[0] if c.images else "" for c in cells]

    per_z = len(xs) * len(ys)
    sub_grids = []
    for iz in range(len(zs)):
        tiles = pictures[iz * per_z : (iz + 1) * per_z]
        grid = images.image_grid(tiles, rows=len(ys))
        if draw_legend:
            width, height = (max(sizes) for sizes in zip(*(t.size for t in tiles), strict=True))
            columns = [[images.GridAnnotation(label)] for label in x_labels]
            rows = [[images.GridAnnotation(label)] for label in y_labels]
            grid = images.draw_grid_annotations(grid, width, height, columns, rows, margin_size)
        sub_grids.append(grid)
    top = images.image_grid(sub_grids, rows=1)
    if draw_legend:
        width, height = (max(sizes) for sizes in zip(*(g.size for g in sub_grids), strict=True))
        titles = [[images.GridAnnotation(label)] for label in z_labels]
        top = images.draw_grid_annotations(top, width, height, titles, [[images.GridAnnotation()]])

    out = copy(template)
    firsts = [cells[iz * per_z] for iz in range(len(zs))]
    out.images = [top, *sub_grids, *pictures]
    out.infotexts = [texts[0], *(texts[iz * per_z] for iz in range(len(zs))), *texts]
    out.all_prompts = [c.prompt for c in [cells[0], *firsts, *cells]]
    out.all_seeds = [c.seed for c in [cells[0], *firsts, *cells]]
    out.index_of_first_image = 1
    return out


def _labels(p, opt: AxisOption, values: list) -> list:
    return [opt.format_value(p, opt, v) for v in values]


class Script(scripts.Script):
    def title(self):
        return "X/Y/Z plot"

    def ui(self, is_img2img):
        self.current_axis_options = [
            opt for opt in axis_options if getattr(opt, "is_img2img", is_img2img) == is_img2img
        ]
        labels = [opt.label for opt in self.current_axis_options]
        controls = []
        with gr.Row(), gr.Column(scale=19):
            for axis, default in (("X", 1), ("Y", 0), ("Z", 0)):
                with gr.Row():
                    kind = gr.Dropdown(
                        label=f"{axis} type",
                        choices=labels,
                        value=labels[default],
                        type="index",
                        elem_id=self.elem_id(f"{axis.lower()}_type"),
                    )
                    text = gr.Textbox(label=f"{axis} values", lines=1, elem_id=self.elem_id(f"{axis.lower()}_values"))
                    picked = gr.Dropdown(label=f"{axis} values", visible=False, multiselect=True, interactive=True)
                    ToolButton(value="\U0001f4d2", elem_id=f"xyz_grid_fill_{axis.lower()}_tool_button", visible=False)
                controls += [kind, text, picked]

        def box(label, key, **kw):
            return gr.Checkbox(label=label, value=kw.pop("value", False), elem_id=self.elem_id(key), **kw)

        with gr.Row(elem_id="axis_options", variant="compact"):
            with gr.Column():
                draw_legend = box("Draw legend", "draw_legend", value=True)
                no_fixed_seeds = box("Keep -1 for seeds", "no_fixed_seeds")
                with gr.Row():
                    vary = [box(f"Vary seeds for {a}", f"vary_seeds_{a.lower()}", min_width=80) for a in "XYZ"]
            with gr.Column():
                lone = box("Include Sub Images", "include_lone_images")
                sub_grids = box("Include Sub Grids", "include_sub_grids")
                csv_mode = box("Use text inputs instead of dropdowns", "csv_mode")
            with gr.Column():
                margin = gr.Slider(
                    label="Grid margins (px)",
                    minimum=0,
                    maximum=500,
                    value=0,
                    step=2,
                    elem_id=self.elem_id("margin_size"),
                )

        def picked_from(axis):
            return lambda params: gr.update(value=csv_string_to_list_strip(params.get(f"{axis} Values", "")))

        fields = []
        for i, axis in enumerate("XYZ"):
            kind, text, picked = controls[3 * i : 3 * i + 3]
            fields += [(kind, f"{axis} Type"), (text, f"{axis} Values"), (picked, picked_from(axis))]
        self.infotext_fields = tuple(fields)
        return [*controls, draw_legend, lone, sub_grids, no_fixed_seeds, *vary, margin, csv_mode]

    def run(
        self,
        p,
        x_type,
        x_values,
        x_values_dropdown,
        y_type,
        y_values,
        y_values_dropdown,
        z_type,
        z_values,
        z_values_dropdown,
        draw_legend,
        include_lone_images,
        include_sub_grids,
        no_fixed_seeds,
        vary_seeds_x,
        vary_seeds_y,
        vary_seeds_z,
        margin_size,
        csv_mode,
    ):
        if not no_fixed_seeds:
            processing.fix_seed(p)
        p.batch_size = p.batch_size if opts.return_grid else 1

        axes = {}
        for axis, kind, text, picked in (
            ("x", x_type, x_values, x_values_dropdown),
            ("y", y_type, y_values, y_values_dropdown),
            ("z", z_type, z_values, z_values_dropdown),
        ):
            opt = self.current_axis_options[kind or 0]
            text = text if csv_mode or opt.choices is None else list_to_csv_string(picked or [])
            found = axis_values(p, opt, text, picked, csv_mode)
            axes[axis] = (opt, text, found if no_fixed_seeds else _fill_random_seeds(opt, found))
        (x_opt, x_text, xs), (y_opt, y_text, ys), (z_opt, z_text, zs) = axes["x"], axes["y"], axes["z"]

        megapixels = round(len(xs) * len(ys) * len(zs) * p.width * p.height / 1_000_000)
        if megapixels >= opts.img_max_size_mp:
            raise RuntimeError(f"the X/Y/Z grid would have {megapixels} megapixels (limit {opts.img_max_size_mp})")

        per_cell = {opt.label: vals for opt, _, vals in axes.values()}
        steps = per_cell.get("Steps", [p.steps])
        shared.total_tqdm.updateTotal(sum(steps) * len(xs) * len(ys) * len(zs) // len(steps) * p.n_iter)
        state.xyz_plot_x, state.xyz_plot_y, state.xyz_plot_z = (
            AxisInfo(x_opt, xs),
            AxisInfo(y_opt, ys),
            AxisInfo(z_opt, zs),
        )
        order = _loop_order({"x": x_opt.cost, "y": y_opt.cost, "z": z_opt.cost})

        grid_texts: list[str | None] = [None] * (1 + len(zs))

        def grid_infotext(pc, iz):
            params = {"Script": self.title()}
            for opt, text, vals, name in ((x_opt, x_text, xs, "X"), (y_opt, y_text, ys, "Y")) + (
                ((z_opt, z_text, zs, "Z"),) if iz is None else ()
            ):
                if opt.label == "Nothing":
                    continue
                params[f"{name} Type"], params[f"{name} Values"] = opt.label, text
                if opt.label in ("Seed", "Var. seed") and not no_fixed_seeds:
                    params[f"Fixed {name} Values"] = ", ".join(str(v) for v in vals)
            pc.extra_generation_params = {**pc.extra_generation_params, **params}
            return processing.create_infotext(pc, pc.all_prompts, pc.all_seeds, pc.all_subseeds)

        def cell(x, y, z, ix, iy, iz):
            if state.interrupted or getattr(state, "stopping_generation", False):
                return Processed(p, [], seed=p.seed)
            pc = copy(p)
            pc.styles = list(pc.styles)
            x_opt.apply(pc, x, xs)
            y_opt.apply(pc, y, ys)
            z_opt.apply(pc, z, zs)
            pc.seed += (
                (ix if vary_seeds_x else 0)
                + (iy * (len(xs) if vary_seeds_x else 1) if vary_seeds_y else 0)
                + (iz * (len(xs) if vary_seeds_x else 1) * (len(ys) if vary_seeds_y else 1) if vary_seeds_z else 0)
            )
            try:
                result = process_images(pc)
            except Exception as e:
                errors.display(e, "generating image for xyz plot")
                return Processed(p, [], seed=p.seed)
            if ix == 0 and iy == 0 and result.images:
                grid_texts[1 + iz] = grid_infotext(pc, iz)
                if iz == 0:
                    grid_texts[0] = grid_infotext(pc, None)
            return result

        saved_clip_skip = opts.CLIP_stop_at_last_layers
        try:
            processed = draw_xyz_grid(
                p, xs, ys, zs, *(_labels(p, opt, vals) for opt, _, vals in axes.values()), cell, draw_legend,
                include_lone_images, include_sub_grids, order[0], order[1], margin_size,
            )  # fmt: skip
        finally:
            opts.data["CLIP_stop_at_last_layers"] = saved_clip_skip
        if processed.images:
            processed = self._finish(p, processed, grid_texts, len(zs), include_lone_images, include_sub_grids)
        return processed

    @staticmethod
    def _finish(p, processed, grid_texts, z_count, include_lone_images, include_sub_grids):
        """Grid infotexts in place, grids saved, then only what was asked for kept: the grid of grids, the grid per Z
        (include_sub_grids) and the cells (include_lone_images)."""
        grids = 1 + z_count
        processed.infotexts[:grids] = [t or "" for t in grid_texts]
        if opts.grid_save:
            to_save = range(grids if include_sub_grids and z_count > 1 else 1)
            for g in to_save:
                images.save_image(
                    processed.images[g],
                    p.outpath_grids,
                    "xyz_grid",
                    info=processed.infotexts[g],
                    extension=opts.grid_format,
                    prompt=processed.all_prompts[g],
                    seed=processed.all_seeds[g],
                    grid=True,
                    p=processed,
                )
        keep = [0]
        if include_sub_grids:
            keep += range(1, grids)
        if include_lone_images:
            keep += range(grids, len(processed.images))
        for name in ("images", "infotexts", "all_prompts", "all_seeds"):
            column = getattr(processed, name)
            setattr(processed, name, [column[i] for i in keep])
        return processed
