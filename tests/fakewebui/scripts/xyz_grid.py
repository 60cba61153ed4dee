"""Mirror of scripts/xyz_grid.py (the webui's built-in X/Y/Z plot), loaded by `modules.scripts.load_scripts` as the
module "xyz_grid.py". Keeps `AxisOption` & co., the `axis_options` list (the axes that make sense without extra
models), value parsing with ranges, `draw_xyz_grid` and `Script.run` with v1.10.1's arguments; the UI has the same
components in the same order, without the swap/fill buttons' JavaScript."""

import csv
import random
import re
from collections import namedtuple
from copy import copy
from io import StringIO
from itertools import chain, permutations

import gradio as gr
import modules.scripts as scripts
import modules.shared as shared
import numpy as np
from modules import errors, images, processing, sd_models, sd_samplers, sd_samplers_kdiffusion
from modules.processing import Processed, StableDiffusionProcessingTxt2Img, process_images
from modules.shared import opts, state
from modules.ui_components import ToolButton
from PIL import Image

fill_values_symbol = "\U0001f4d2"  # 📒

AxisInfo = namedtuple("AxisInfo", ["axis", "values"])


def apply_field(field):
    def fun(p, x, xs):
        setattr(p, field, x)

    return fun


def apply_prompt(p, x, xs):
    if xs[0] not in p.prompt and xs[0] not in p.negative_prompt:
        raise RuntimeError(f"Prompt S/R did not find {xs[0]} in prompt or negative prompt.")

    p.prompt = p.prompt.replace(xs[0], x)
    p.negative_prompt = p.negative_prompt.replace(xs[0], x)


def apply_order(p, x, xs):
    token_order = []

    # Initially grab the tokens from the prompt, so they can be replaced in order of earliest seen
    for token in x:
        token_order.append((p.prompt.find(token), token))

    token_order.sort(key=lambda t: t[0])

    prompt_parts = []

    # Split the prompt up, taking out the tokens
    for _, token in token_order:
        n = p.prompt.find(token)
        prompt_parts.append(p.prompt[0:n])
        p.prompt = p.prompt[n + len(token) :]

    # Rebuild the prompt with the tokens in the order we want
    prompt_tmp = ""
    for idx, part in enumerate(prompt_parts):
        prompt_tmp += part
        prompt_tmp += x[idx]
    p.prompt = prompt_tmp + p.prompt


def confirm_samplers(p, xs):
    for x in xs:
        if x.lower() not in sd_samplers.samplers_map:
            raise RuntimeError(f"Unknown sampler: {x}")


def confirm_checkpoints(p, xs):
    for x in xs:
        if sd_models.get_closet_checkpoint_match(x) is None:
            raise RuntimeError(f"Unknown checkpoint: {x}")


def apply_clip_skip(p, x, xs):
    opts.data["CLIP_stop_at_last_layers"] = x


def apply_styles(p, x: str, _):
    p.styles.extend(x.split(","))


def apply_override(field, boolean: bool = False):
    def fun(p, x, xs):
        if boolean:
            x = x.lower() == "true"
        p.override_settings[field] = x

    return fun


def boolean_choice(reverse: bool = False):
    def choice():
        return ["False", "True"] if reverse else ["True", "False"]

    return choice


def format_value_add_label(p, opt, x):
    if type(x) is float:
        x = round(x, 8)

    return f"{opt.label}: {x}"


def format_value(p, opt, x):
    if type(x) is float:
        x = round(x, 8)
    return x


def format_value_join_list(p, opt, x):
    return ", ".join(x)


def do_nothing(p, x, xs):
    pass


def format_nothing(p, opt, x):
    return ""


def str_permutations(x):
    """dummy function for specifying it in AxisOption's type when you want to get a list of permutations"""
    return x


def list_to_csv_string(data_list):
    with StringIO() as o:
        csv.writer(o).writerow(data_list)
        return o.getvalue().strip()


def csv_string_to_list_strip(data_str):
    return list(map(str.strip, chain.from_iterable(csv.reader(StringIO(data_str), skipinitialspace=True))))


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
        self.label = label
        self.type = type
        self.apply = apply
        self.format_value = format_value
        self.confirm = confirm
        self.cost = cost
        self.prepare = prepare
        self.choices = choices


class AxisOptionImg2Img(AxisOption):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.is_img2img = True


class AxisOptionTxt2Img(AxisOption):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.is_img2img = False


axis_options = [
    AxisOption("Nothing", str, do_nothing, format_value=format_nothing),
    AxisOption("Seed", int, apply_field("seed")),
    AxisOption("Var. seed", int, apply_field("subseed")),
    AxisOption("Var. strength", float, apply_field("subseed_strength")),
    AxisOption("Steps", int, apply_field("steps")),
    AxisOptionTxt2Img("Hires steps", int, apply_field("hr_second_pass_steps")),
    AxisOption("CFG Scale", float, apply_field("cfg_scale")),
    AxisOptionImg2Img("Image CFG Scale", float, apply_field("image_cfg_scale")),
    AxisOption("Prompt S/R", str, apply_prompt, format_value=format_value),
    AxisOption("Prompt order", str_permutations, apply_order, format_value=format_value_join_list),
    AxisOptionTxt2Img(
        "Sampler",
        str,
        apply_field("sampler_name"),
        format_value=format_value,
        confirm=confirm_samplers,
        choices=lambda: [x.name for x in sd_samplers.samplers if x.name not in opts.hide_samplers],
    ),
    AxisOptionTxt2Img(
        "Hires sampler",
        str,
        apply_field("hr_sampler_name"),
        confirm=confirm_samplers,
        choices=lambda: [x.name for x in sd_samplers.samplers_for_img2img if x.name not in opts.hide_samplers],
    ),
    AxisOptionImg2Img(
        "Sampler",
        str,
        apply_field("sampler_name"),
        format_value=format_value,
        confirm=confirm_samplers,
        choices=lambda: [x.name for x in sd_samplers.samplers_for_img2img if x.name not in opts.hide_samplers],
    ),
    AxisOption("Negative Guidance minimum sigma", float, apply_field("s_min_uncond")),
    AxisOption("Sigma Churn", float, apply_field("s_churn")),
    AxisOption("Sigma min", float, apply_field("s_tmin")),
    AxisOption("Sigma max", float, apply_field("s_tmax")),
    AxisOption("Sigma noise", float, apply_field("s_noise")),
    AxisOption(
        "Schedule type",
        str,
        apply_field("scheduler"),
        choices=lambda: list(sd_samplers_kdiffusion.k_diffusion_scheduler),
    ),
    AxisOption("Schedule min sigma", float, apply_override("sigma_min")),
    AxisOption("Schedule max sigma", float, apply_override("sigma_max")),
    AxisOption("Schedule rho", float, apply_override("rho")),
    AxisOption("Eta", float, apply_field("eta")),
    AxisOption("Clip skip", int, apply_clip_skip),
    AxisOption("Denoising", float, apply_field("denoising_strength")),
    AxisOption("Initial noise multiplier", float, apply_field("initial_noise_multiplier")),
    AxisOption("Extra noise", float, apply_override("img2img_extra_noise")),
    AxisOptionTxt2Img(
        "Hires upscaler",
        str,
        apply_field("hr_upscaler"),
        choices=lambda: [*shared.latent_upscale_modes, *[x.name for x in shared.sd_upscalers]],
    ),
    AxisOption("Styles", str, apply_styles, choices=lambda: list(shared.prompt_styles.styles)),
    AxisOption(
        "Always discard next-to-last sigma",
        str,
        apply_override("always_discard_next_to_last_sigma", boolean=True),
        choices=boolean_choice(reverse=True),
    ),
    AxisOption(
        "SGM noise multiplier",
        str,
        apply_override("sgm_noise_multiplier", boolean=True),
        choices=boolean_choice(reverse=True),
    ),
    AxisOption("RNG source", str, apply_override("randn_source"), choices=lambda: ["GPU", "CPU", "NV"]),
]


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
    hor_texts = [[images.GridAnnotation(x)] for x in x_labels]
    ver_texts = [[images.GridAnnotation(y)] for y in y_labels]
    title_texts = [[images.GridAnnotation(z)] for z in z_labels]

    list_size = len(xs) * len(ys) * len(zs)

    processed_result = None

    state.job_count = list_size * p.n_iter

    def process_cell(x, y, z, ix, iy, iz):
        nonlocal processed_result

        def index(ix, iy, iz):
            return ix + iy * len(xs) + iz * len(xs) * len(ys)

        state.job = f"{index(ix, iy, iz) + 1} out of {list_size}"

        processed: Processed = cell(x, y, z, ix, iy, iz)

        if processed_result is None:
            # Use our first processed result object as a template container to hold our full results
            processed_result = copy(processed)
            processed_result.images = [None] * list_size
            processed_result.all_prompts = [None] * list_size
            processed_result.all_seeds = [None] * list_size
            processed_result.infotexts = [None] * list_size
            processed_result.index_of_first_image = 1

        idx = index(ix, iy, iz)
        if processed.images:
            # Non-empty list indicates some degree of success.
            processed_result.images[idx] = processed.images[0]
            processed_result.all_prompts[idx] = processed.prompt
            processed_result.all_seeds[idx] = processed.seed
            processed_result.infotexts[idx] = processed.infotexts[0]
        else:
            cell_mode = "P"
            cell_size = (processed_result.width, processed_result.height)
            if processed_result.images[0] is not None:
                cell_mode = processed_result.images[0].mode
                # This corrects size in case of batches:
                cell_size = processed_result.images[0].size
            processed_result.images[idx] = Image.new(cell_mode, cell_size)

    axes = {"x": (xs, 0), "y": (ys, 1), "z": (zs, 2)}
    third = ({"x", "y", "z"} - {first_axes_processed, second_axes_processed}).pop()
    order = [first_axes_processed, second_axes_processed, third]
    for i0, v0 in enumerate(axes[order[0]][0]):
        for i1, v1 in enumerate(axes[order[1]][0]):
            for i2, v2 in enumerate(axes[order[2]][0]):
                by_axis = {order[0]: (v0, i0), order[1]: (v1, i1), order[2]: (v2, i2)}
                (x, ix), (y, iy), (z, iz) = by_axis["x"], by_axis["y"], by_axis["z"]
                process_cell(x, y, z, ix, iy, iz)

    if not processed_result:
        print("Unexpected error: Processing could not begin, you may need to refresh the tab or restart the service.")
        return Processed(p, [])
    if not any(processed_result.images):
        print("Unexpected error: draw_xyz_grid failed to return even a single processed image")
        return Processed(p, [])

    z_count = len(zs)

    for i in range(z_count):
        start_index = (i * len(xs) * len(ys)) + i
        end_index = start_index + len(xs) * len(ys)
        grid = images.image_grid(processed_result.images[start_index:end_index], rows=len(ys))
        if draw_legend:
            grid_max_w, grid_max_h = map(
                max, zip(*(img.size for img in processed_result.images[start_index:end_index]), strict=True)
            )
            grid = images.draw_grid_annotations(grid, grid_max_w, grid_max_h, hor_texts, ver_texts, margin_size)
        processed_result.images.insert(i, grid)
        processed_result.all_prompts.insert(i, processed_result.all_prompts[start_index])
        processed_result.all_seeds.insert(i, processed_result.all_seeds[start_index])
        processed_result.infotexts.insert(i, processed_result.infotexts[start_index])

    z_grid = images.image_grid(processed_result.images[:z_count], rows=1)
    z_sub_grid_max_w, z_sub_grid_max_h = map(
        max, zip(*(img.size for img in processed_result.images[:z_count]), strict=True)
    )
    if draw_legend:
        z_grid = images.draw_grid_annotations(
            z_grid, z_sub_grid_max_w, z_sub_grid_max_h, title_texts, [[images.GridAnnotation()]]
        )
    processed_result.images.insert(0, z_grid)
    processed_result.infotexts.insert(0, processed_result.infotexts[0])

    return processed_result


class SharedSettingsStackHelper:
    def __enter__(self):
        self.CLIP_stop_at_last_layers = opts.CLIP_stop_at_last_layers

    def __exit__(self, exc_type, exc_value, tb):
        sd_models.reload_model_weights()

        opts.data["CLIP_stop_at_last_layers"] = self.CLIP_stop_at_last_layers


re_range = re.compile(r"\s*([+-]?\s*\d+)\s*-\s*([+-]?\s*\d+)(?:\s*\(([+-]\d+)\s*\))?\s*")
_float = r"\s*([+-]?\s*\d+(?:.\d*)?)"
re_range_float = re.compile(_float + r"\s*-" + _float + r"(?:\s*\(([+-]\d+(?:.\d*)?)\s*\))?\s*")

re_range_count = re.compile(r"\s*([+-]?\s*\d+)\s*-\s*([+-]?\s*\d+)(?:\s*\[(\d+)\s*])?\s*")
re_range_count_float = re.compile(_float + r"\s*-" + _float + r"(?:\s*\[(\d+(?:.\d*)?)\s*])?\s*")


class Script(scripts.Script):
    def title(self):
        return "X/Y/Z plot"

    def ui(self, is_img2img):
        self.current_axis_options = [x for x in axis_options if type(x) is AxisOption or x.is_img2img == is_img2img]

        def axis_row(name, default):
            with gr.Row():
                axis_type = gr.Dropdown(
                    label=f"{name} type",
                    choices=[x.label for x in self.current_axis_options],
                    value=self.current_axis_options[default].label,
                    type="index",
                    elem_id=self.elem_id(f"{name.lower()}_type"),
                )
                axis_values = gr.Textbox(
                    label=f"{name} values", lines=1, elem_id=self.elem_id(f"{name.lower()}_values")
                )
                axis_values_dropdown = gr.Dropdown(
                    label=f"{name} values", visible=False, multiselect=True, interactive=True
                )
                ToolButton(value=fill_values_symbol, elem_id=f"xyz_grid_fill_{name.lower()}_tool_button", visible=False)
            return axis_type, axis_values, axis_values_dropdown

        with gr.Row(), gr.Column(scale=19):
            x_type, x_values, x_values_dropdown = axis_row("X", 1)
            y_type, y_values, y_values_dropdown = axis_row("Y", 0)
            z_type, z_values, z_values_dropdown = axis_row("Z", 0)

        with gr.Row(variant="compact", elem_id="axis_options"):
            with gr.Column():
                draw_legend = gr.Checkbox(label="Draw legend", value=True, elem_id=self.elem_id("draw_legend"))
                no_fixed_seeds = gr.Checkbox(
                    label="Keep -1 for seeds", value=False, elem_id=self.elem_id("no_fixed_seeds")
                )
                with gr.Row():
                    vary_seeds_x = gr.Checkbox(
                        label="Vary seeds for X", value=False, min_width=80, elem_id=self.elem_id("vary_seeds_x")
                    )
                    vary_seeds_y = gr.Checkbox(
                        label="Vary seeds for Y", value=False, min_width=80, elem_id=self.elem_id("vary_seeds_y")
                    )
                    vary_seeds_z = gr.Checkbox(
                        label="Vary seeds for Z", value=False, min_width=80, elem_id=self.elem_id("vary_seeds_z")
                    )
            with gr.Column():
                include_lone_images = gr.Checkbox(
                    label="Include Sub Images", value=False, elem_id=self.elem_id("include_lone_images")
                )
                include_sub_grids = gr.Checkbox(
                    label="Include Sub Grids", value=False, elem_id=self.elem_id("include_sub_grids")
                )
                csv_mode = gr.Checkbox(
                    label="Use text inputs instead of dropdowns", value=False, elem_id=self.elem_id("csv_mode")
                )
            with gr.Column():
                margin_size = gr.Slider(
                    label="Grid margins (px)",
                    minimum=0,
                    maximum=500,
                    value=0,
                    step=2,
                    elem_id=self.elem_id("margin_size"),
                )

        def get_dropdown_update_from_params(axis, params):
            val_key = f"{axis} Values"
            vals = params.get(val_key, "")
            valslist = csv_string_to_list_strip(vals)
            return gr.update(value=valslist)

        self.infotext_fields = (
            (x_type, "X Type"),
            (x_values, "X Values"),
            (x_values_dropdown, lambda params: get_dropdown_update_from_params("X", params)),
            (y_type, "Y Type"),
            (y_values, "Y Values"),
            (y_values_dropdown, lambda params: get_dropdown_update_from_params("Y", params)),
            (z_type, "Z Type"),
            (z_values, "Z Values"),
            (z_values_dropdown, lambda params: get_dropdown_update_from_params("Z", params)),
        )

        return [
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
        ]

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
        x_type, y_type, z_type = x_type or 0, y_type or 0, z_type or 0  # if axle type is None set to 0

        if not no_fixed_seeds:
            processing.fix_seed(p)

        if not opts.return_grid:
            p.batch_size = 1

        def process_axis(opt, vals, vals_dropdown):
            if opt.label == "Nothing":
                return [0]

            if opt.choices is not None and not csv_mode:
                valslist = vals_dropdown
            elif opt.prepare is not None:
                valslist = opt.prepare(vals)
            else:
                valslist = csv_string_to_list_strip(vals)

            if opt.type is int:
                valslist_ext = []

                for val in valslist:
                    if val.strip() == "":
                        continue
                    m = re_range.fullmatch(val)
                    mc = re_range_count.fullmatch(val)
                    if m is not None:
                        start = int(m.group(1))
                        end = int(m.group(2)) + 1
                        step = int(m.group(3)) if m.group(3) is not None else 1

                        valslist_ext += list(range(start, end, step))
                    elif mc is not None:
                        start = int(mc.group(1))
                        end = int(mc.group(2))
                        num = int(mc.group(3)) if mc.group(3) is not None else 1

                        valslist_ext += [int(x) for x in np.linspace(start=start, stop=end, num=num).tolist()]
                    else:
                        valslist_ext.append(val)

                valslist = valslist_ext
            elif opt.type is float:
                valslist_ext = []

                for val in valslist:
                    if val.strip() == "":
                        continue
                    m = re_range_float.fullmatch(val)
                    mc = re_range_count_float.fullmatch(val)
                    if m is not None:
                        start = float(m.group(1))
                        end = float(m.group(2))
                        step = float(m.group(3)) if m.group(3) is not None else 1

                        valslist_ext += np.arange(start, end + step, step).tolist()
                    elif mc is not None:
                        start = float(mc.group(1))
                        end = float(mc.group(2))
                        num = int(mc.group(3)) if mc.group(3) is not None else 1

                        valslist_ext += np.linspace(start=start, stop=end, num=num).tolist()
                    else:
                        valslist_ext.append(val)

                valslist = valslist_ext
            elif opt.type is str_permutations:
                valslist = list(permutations(valslist))

            valslist = [opt.type(x) for x in valslist]

            # Confirm options are valid before starting
            if opt.confirm:
                opt.confirm(p, valslist)

            return valslist

        x_opt = self.current_axis_options[x_type]
        if x_opt.choices is not None and not csv_mode:
            x_values = list_to_csv_string(x_values_dropdown)
        xs = process_axis(x_opt, x_values, x_values_dropdown)

        y_opt = self.current_axis_options[y_type]
        if y_opt.choices is not None and not csv_mode:
            y_values = list_to_csv_string(y_values_dropdown)
        ys = process_axis(y_opt, y_values, y_values_dropdown)

        z_opt = self.current_axis_options[z_type]
        if z_opt.choices is not None and not csv_mode:
            z_values = list_to_csv_string(z_values_dropdown)
        zs = process_axis(z_opt, z_values, z_values_dropdown)

        Image.MAX_IMAGE_PIXELS = None  # disable check in Pillow and rely on check below
        grid_mp = round(len(xs) * len(ys) * len(zs) * p.width * p.height / 1000000)
        assert grid_mp < opts.img_max_size_mp, (
            f"Error: Resulting grid would be too large ({grid_mp} MPixels) "
            f"(max configured size is {opts.img_max_size_mp} MPixels)"
        )

        def fix_axis_seeds(axis_opt, axis_list):
            if axis_opt.label in ["Seed", "Var. seed"]:
                return [
                    int(random.randrange(4294967294)) if val is None or val == "" or val == -1 else val
                    for val in axis_list
                ]
            return axis_list

        if not no_fixed_seeds:
            xs = fix_axis_seeds(x_opt, xs)
            ys = fix_axis_seeds(y_opt, ys)
            zs = fix_axis_seeds(z_opt, zs)

        if x_opt.label == "Steps":
            total_steps = sum(xs) * len(ys) * len(zs)
        elif y_opt.label == "Steps":
            total_steps = sum(ys) * len(xs) * len(zs)
        elif z_opt.label == "Steps":
            total_steps = sum(zs) * len(xs) * len(ys)
        else:
            total_steps = p.steps * len(xs) * len(ys) * len(zs)

        if isinstance(p, StableDiffusionProcessingTxt2Img) and p.enable_hr:
            if x_opt.label == "Hires steps":
                total_steps += sum(xs) * len(ys) * len(zs)
            elif y_opt.label == "Hires steps":
                total_steps += sum(ys) * len(xs) * len(zs)
            elif z_opt.label == "Hires steps":
                total_steps += sum(zs) * len(xs) * len(ys)
            elif p.hr_second_pass_steps:
                total_steps += p.hr_second_pass_steps * len(xs) * len(ys) * len(zs)
            else:
                total_steps *= 2

        total_steps *= p.n_iter

        shared.total_tqdm.updateTotal(total_steps)

        state.xyz_plot_x = AxisInfo(x_opt, xs)
        state.xyz_plot_y = AxisInfo(y_opt, ys)
        state.xyz_plot_z = AxisInfo(z_opt, zs)

        # If one of the axes is very slow to change between (like SD model checkpoint), then make sure it is in the
        # outer iteration of the nested `for` loop.
        first_axes_processed = "z"
        second_axes_processed = "y"
        if x_opt.cost > y_opt.cost and x_opt.cost > z_opt.cost:
            first_axes_processed = "x"
            second_axes_processed = "y" if y_opt.cost > z_opt.cost else "z"
        elif y_opt.cost > x_opt.cost and y_opt.cost > z_opt.cost:
            first_axes_processed = "y"
            second_axes_processed = "x" if x_opt.cost > z_opt.cost else "z"
        elif z_opt.cost > x_opt.cost and z_opt.cost > y_opt.cost:
            first_axes_processed = "z"
            second_axes_processed = "x" if x_opt.cost > y_opt.cost else "y"

        grid_infotext = [None] * (1 + len(zs))

        def cell(x, y, z, ix, iy, iz):
            if shared.state.interrupted or state.stopping_generation:
                return Processed(p, [], p.seed, "")

            pc = copy(p)
            pc.styles = pc.styles[:]
            x_opt.apply(pc, x, xs)
            y_opt.apply(pc, y, ys)
            z_opt.apply(pc, z, zs)

            xdim = len(xs) if vary_seeds_x else 1
            ydim = len(ys) if vary_seeds_y else 1

            if vary_seeds_x:
                pc.seed += ix
            if vary_seeds_y:
                pc.seed += iy * xdim
            if vary_seeds_z:
                pc.seed += iz * xdim * ydim

            try:
                res = process_images(pc)
            except Exception as e:
                errors.display(e, "generating image for xyz plot")

                res = Processed(p, [], p.seed, "")

            # Sets subgrid infotexts
            subgrid_index = 1 + iz
            if grid_infotext[subgrid_index] is None and ix == 0 and iy == 0:
                pc.extra_generation_params = copy(pc.extra_generation_params)
                pc.extra_generation_params["Script"] = self.title()

                if x_opt.label != "Nothing":
                    pc.extra_generation_params["X Type"] = x_opt.label
                    pc.extra_generation_params["X Values"] = x_values
                    if x_opt.label in ["Seed", "Var. seed"] and not no_fixed_seeds:
                        pc.extra_generation_params["Fixed X Values"] = ", ".join([str(x) for x in xs])

                if y_opt.label != "Nothing":
                    pc.extra_generation_params["Y Type"] = y_opt.label
                    pc.extra_generation_params["Y Values"] = y_values
                    if y_opt.label in ["Seed", "Var. seed"] and not no_fixed_seeds:
                        pc.extra_generation_params["Fixed Y Values"] = ", ".join([str(y) for y in ys])

                grid_infotext[subgrid_index] = processing.create_infotext(
                    pc, pc.all_prompts, pc.all_seeds, pc.all_subseeds
                )

            # Sets main grid infotext
            if grid_infotext[0] is None and ix == 0 and iy == 0 and iz == 0:
                pc.extra_generation_params = copy(pc.extra_generation_params)

                if z_opt.label != "Nothing":
                    pc.extra_generation_params["Z Type"] = z_opt.label
                    pc.extra_generation_params["Z Values"] = z_values
                    if z_opt.label in ["Seed", "Var. seed"] and not no_fixed_seeds:
                        pc.extra_generation_params["Fixed Z Values"] = ", ".join([str(z) for z in zs])

                grid_infotext[0] = processing.create_infotext(pc, pc.all_prompts, pc.all_seeds, pc.all_subseeds)

            return res

        with SharedSettingsStackHelper():
            processed = draw_xyz_grid(
                p,
                xs=xs,
                ys=ys,
                zs=zs,
                x_labels=[x_opt.format_value(p, x_opt, x) for x in xs],
                y_labels=[y_opt.format_value(p, y_opt, y) for y in ys],
                z_labels=[z_opt.format_value(p, z_opt, z) for z in zs],
                cell=cell,
                draw_legend=draw_legend,
                include_lone_images=include_lone_images,
                include_sub_grids=include_sub_grids,
                first_axes_processed=first_axes_processed,
                second_axes_processed=second_axes_processed,
                margin_size=margin_size,
            )

        if not processed.images:
            # It broke, no further handling needed.
            return processed

        z_count = len(zs)

        # Set the grid infotexts to the real ones with extra_generation_params (1 main grid + z_count sub-grids)
        processed.infotexts[: 1 + z_count] = grid_infotext[: 1 + z_count]

        if not include_lone_images:
            # Don't need sub-images anymore, drop from list:
            processed.images = processed.images[: z_count + 1]

        if opts.grid_save:
            # Auto-save main and sub-grids:
            grid_count = z_count + 1 if z_count > 1 else 1
            for g in range(grid_count):
                adj_g = g - 1 if g > 0 else g
                images.save_image(
                    processed.images[g],
                    p.outpath_grids,
                    "xyz_grid",
                    info=processed.infotexts[g],
                    extension=opts.grid_format,
                    prompt=processed.all_prompts[adj_g],
                    seed=processed.all_seeds[adj_g],
                    grid=True,
                    p=processed,
                )
                if not include_sub_grids:  # if not include_sub_grids then skip saving after the first grid
                    break

        if not include_sub_grids:
            # Done with sub-grids, drop all related information:
            for _ in range(z_count):
                del processed.images[1]
                del processed.all_prompts[1]
                del processed.all_seeds[1]
                del processed.infotexts[1]

        return processed
