"""The fake webui (tests/fakewebui) behaves like webui v1.10.1 where the extension depends on it.

Real ldm U-Nets and real (tiny) CLIP text encoders run through the fake's CFG denoiser and k-diffusion loops; the
tests check the row layout of every U-Net call, the call order of script callbacks, prompt handling, saving, and that
a session leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import unets
from fakewebui.fixture import FAKEWEBUI_ROOT, webui
from PIL import Image

RECORDER = '''
"""A test extension: an AlwaysVisible recorder, a dropdown script, a gated failing script, an X/Y/Z axis."""
import sys

import gradio as gr
import modules.scripts as scripts
from modules import script_callbacks
from modules.ui_components import InputAccordion

LOAD_INFO = {"basedir": scripts.basedir(), "on_path": scripts.basedir() in sys.path, "name": __name__}
EVENTS = []

METHODS = ["setup", "before_process", "process", "before_process_batch", "after_extra_networks_activate",
           "process_batch", "process_before_every_sampling", "before_hr", "post_sample", "postprocess_batch",
           "postprocess_batch_list", "postprocess_image", "postprocess_maskoverlay",
           "postprocess_image_after_composite", "postprocess"]


def _recorder(name):
    def method(self, p, *args, **kwargs):
        self.calls.append((name, args[-2:], getattr(p, "is_hr_pass", False), getattr(p, "recorder_text", None)))
    return method


class Recorder(scripts.Script):
    def __init__(self):
        self.calls = []

    def title(self):
        return "Recorder"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        with InputAccordion(True, label="Recorder", elem_id=self.elem_id("enabled")) as enabled:
            text = gr.Textbox(value="hello", label="Text", elem_id=self.elem_id("text"))
        self.infotext_fields = [(text, "Recorder text")]
        return [enabled, text]


class Dropdown(scripts.Script):
    def __init__(self):
        self.calls = []

    def title(self):
        return "Dropdown recorder"

    def ui(self, is_img2img):
        return [gr.Number(value=3, label="N")]

    def run(self, p, n):
        from modules import processing
        self.calls.append(("run", n))
        return processing.process_images(p)


class Breaker(scripts.Script):
    def title(self):
        return "Breaker"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def process(self, p, *args):
        if getattr(p, "break_process", False):
            raise ValueError("broken on purpose")


for _name in METHODS:
    setattr(Recorder, _name, _recorder(_name))
    setattr(Dropdown, _name, _recorder(_name))


def add_axis():
    EVENTS.append("before_ui")
    xyz = next(x.module for x in scripts.scripts_data if x.script_class.__module__ == "xyz_grid.py")
    if not any(x.label == "Recorder text" for x in xyz.axis_options):
        xyz.axis_options.append(xyz.AxisOption("Recorder text", str, xyz.apply_field("recorder_text")))


script_callbacks.on_model_loaded(lambda sd_model: EVENTS.append("model_loaded"))
script_callbacks.on_ui_settings(lambda: EVENTS.append("ui_settings"))
script_callbacks.on_before_ui(add_axis)
script_callbacks.on_app_started(lambda demo, app: EVENTS.append("app_started"))
script_callbacks.on_script_unloaded(lambda: EVENTS.append("script_unloaded"))
'''

LONG_PROMPT = ", ".join(f"word{i} red" for i in range(25))  # 99 tokens: two chunks


@pytest.fixture(scope="module")
def extension_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ext") / "sd-webui-recorder"
    (root / "scripts").mkdir(parents=True)
    (root / "scripts" / "recorder.py").write_text(RECORDER, "utf-8")
    return root


@pytest.fixture(scope="class")
def sd1(extension_dir):
    with webui(unets.SD1, extensions=[extension_dir]) as w:
        yield w


@pytest.fixture(autouse=True)
def _restore(request):
    """Settings, state, callbacks and recorder logs of a shared session go back to how the test found them."""
    if "sd1" not in request.fixturenames:
        yield
        return
    w = request.getfixturevalue("sd1")
    data = dict(w.shared.opts.data)
    callbacks = {k: list(v) for k, v in w.script_callbacks.callback_map.items()}
    yield
    w.shared.opts.data.clear()
    w.shared.opts.data.update(data)
    for k, v in callbacks.items():
        w.script_callbacks.callback_map[k][:] = v
    w.shared.state.interrupted = w.shared.state.skipped = False
    for runner in (w.scripts.scripts_txt2img, w.scripts.scripts_img2img):
        for script in runner.scripts:
            if hasattr(script, "calls"):
                script.calls.clear()


@contextlib.contextmanager
def unet_calls(w):
    """Every U-Net call: (rows, context tokens, x, context) as the webui passes them (context as a keyword)."""
    calls = []

    def hook(_module, args, kwargs):
        calls.append((args[0].shape[0], kwargs["context"].shape[1], args[0].clone(), kwargs["context"].clone()))

    handle = w.unet.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield calls
    finally:
        handle.remove()


@contextlib.contextmanager
def denoiser_calls(w):
    """Every CFG denoiser call, seen from an on_cfg_denoiser callback."""
    calls = []

    def on_denoiser(params):
        d = params.denoiser
        calls.append(
            {
                "rows": params.x.shape[0],
                "cond": params.text_cond,
                "uncond": params.text_uncond,
                "step": d.step,
                "total_steps": d.total_steps,
                "steps": d.steps,
                "hr": d.p.is_hr_pass,
                "shape": tuple(params.x.shape[-2:]),
            }
        )

    w.script_callbacks.on_cfg_denoiser(on_denoiser)
    try:
        yield calls
    finally:
        w.script_callbacks.remove_callbacks_for_function(on_denoiser)


def pixels(processed) -> list[np.ndarray]:
    return [np.asarray(im) for im in processed.images]


def recorder(w, is_img2img=False):
    return next(s for s in w.runner(is_img2img).scripts if s.title() == "Recorder")


# --------------------------------------------------------------------------------------------------------------------
# generation with the real U-Net


def test_sdxl_txt2img_is_deterministic_across_sessions():
    runs = []
    for _ in range(2):
        with webui(unets.SDXL) as w, unet_calls(w) as calls:
            processed = w.run(w.txt2img(seed=3, width=64, height=96, negative_prompt="blurry"))
            runs.append(pixels(processed))
            assert w.sd_model.is_sdxl
            assert {c[1] for c in calls} == {77}
            assert all(c[3].shape[-1] == unets.SDXL.context_dim for c in calls)
    assert runs[0][0].shape == (96, 64, 3)
    assert np.array_equal(runs[0][0], runs[1][0])


def test_sdxl_calls_the_unet_with_keywords_and_a_2816_vector():
    with webui(unets.SDXL, build_ui=False) as w:
        seen = []

        def hook(_module, args, kwargs):
            seen.append((len(args), sorted(kwargs), kwargs["y"].shape))

        handle = w.unet.register_forward_pre_hook(hook, with_kwargs=True)
        try:
            w.run(w.txt2img(batch_size=2))
        finally:
            handle.remove()
        cond = w.sd_model.get_learned_conditioning(w.prompt_parser.SdConditioning(["a cat"], width=64, height=64))
        uncond = w.sd_model.get_learned_conditioning(
            w.prompt_parser.SdConditioning([""], width=64, height=64, is_negative_prompt=True)
        )

    assert seen and all(s == (1, ["context", "timesteps", "y"], (4, 2816)) for s in seen)
    assert cond["crossattn"].shape == (1, 77, 128) and cond["vector"].shape == (1, 2816)
    assert torch.count_nonzero(uncond["crossattn"]) == 0  # an empty negative prompt is zeroed for SDXL
    assert torch.count_nonzero(cond["vector"][:, :64]) > 0


# --------------------------------------------------------------------------------------------------------------------
# scripts and callbacks


def test_reload_ui_unloads_and_reloads_scripts(extension_dir):
    with webui(unets.SD1, extensions=[extension_dir]) as w:
        old = next(x.module for x in w.scripts.scripts_data if x.module.__name__ == "recorder.py")
        w.reload_ui()
        new = next(x.module for x in w.scripts.scripts_data if x.module.__name__ == "recorder.py")
        axes = [x.label for x in w.xyz_module().axis_options]

    assert old.EVENTS[-1] == "script_unloaded"
    assert new is not old and new.EVENTS == ["ui_settings", "before_ui", "app_started"]
    assert axes.count("Recorder text") == 1


# --------------------------------------------------------------------------------------------------------------------
# session hygiene


def test_a_session_leaves_nothing_behind():
    import gradio as gr
    from ldm.modules.diffusionmodules import openaimodel

    path, th = list(sys.path), openaimodel.th
    dropdown_parent = gr.Dropdown.get_expected_parent
    with webui(unets.SD1, build_ui=False) as w:
        patched = openaimodel.th
        data_dir = w.data_dir
        assert "modules.shared" in sys.modules and str(FAKEWEBUI_ROOT) in sys.path
        assert w.shared.opts.batch_cond_uncond is True and w.shared.opts.samples_format == "png"
        w.shared.opts.batch_cond_uncond = False

    assert patched is not th and openaimodel.th is th
    assert gr.Dropdown.get_expected_parent is dropdown_parent
    assert not any(m == "modules" or m.startswith("modules.") for m in sys.modules)
    assert sys.path == path and not data_dir.exists()
    with webui(unets.SD1, build_ui=False) as w:
        assert w.shared.opts.batch_cond_uncond is True  # fresh defaults


def test_v1_10_1_defaults_and_option_api():
    with webui(unets.SD2, build_ui=False) as w:
        opts, state = w.shared.opts, w.shared.state
        defaults = {
            k: opts.data[k]
            for k in (
                "batch_cond_uncond",
                "pad_cond_uncond",
                "pad_cond_uncond_v0",
                "skip_early_cond",
                "s_min_uncond",
                "s_min_uncond_all",
                "samples_format",
                "samples_save",
                "save_images_add_number",
                "samples_filename_pattern",
                "outdir_samples",
                "enable_pnginfo",
                "return_grid",
                "grid_save",
                "CLIP_stop_at_last_layers",
                "emphasis",
                "comma_padding_backtrack",
                "live_preview_content",
                "save_incomplete_images",
                "persistent_cond_cache",
            )
        }
        changed = []
        info = w.shared.OptionInfo(3, "Fake", onchange=lambda: changed.append(opts.fake_option))
        opts.add_option("fake_option", info)
        set_result = opts.set("fake_option", 4)
        model = w.sd_model

    assert defaults == {
        "batch_cond_uncond": True,
        "pad_cond_uncond": False,
        "pad_cond_uncond_v0": False,
        "skip_early_cond": 0.0,
        "s_min_uncond": 0.0,
        "s_min_uncond_all": False,
        "samples_format": "png",
        "samples_save": True,
        "save_images_add_number": True,
        "samples_filename_pattern": "",
        "outdir_samples": "",
        "enable_pnginfo": True,
        "return_grid": True,
        "grid_save": True,
        "CLIP_stop_at_last_layers": 1,
        "emphasis": "Original",
        "comma_padding_backtrack": 20,
        "live_preview_content": "Prompt",
        "save_incomplete_images": False,
        "persistent_cond_cache": True,
    }
    assert set_result is True and changed == [4]
    assert state.job_count == 0 and not state.interrupted
    assert model.is_sd2 and not model.is_sd1 and model.cond_stage_model.id_pad == 0
    assert model.cond_stage_model_empty_prompt.shape == (1, 77, unets.SD2.context_dim)
    assert model.sd_checkpoint_info.title.startswith("tiny-sd2.safetensors [")


def test_readme_lists_every_fake_module():
    readme = (FAKEWEBUI_ROOT / "README.md").read_text("utf-8")
    files = sorted(
        p.relative_to(FAKEWEBUI_ROOT).as_posix()
        for p in FAKEWEBUI_ROOT.rglob("*.py")
        if "__pycache__" not in p.parts and p.name != "__init__.py"
    )
    missing = [f for f in files if f"`{f}`" not in readme and f"`{f.removeprefix('modules/')}`" not in readme]
    assert not missing, textwrap.shorten(f"README.md does not describe {missing}", 300)


class TestSharedSD1Session:
    """One SD1 session with the recorder extension, shared by these tests (settings restored after each)."""

    def test_sd1_txt2img_is_deterministic(self, sd1):
        first = pixels(sd1.run(sd1.txt2img(seed=7)))
        again = pixels(sd1.run(sd1.txt2img(seed=7)))
        other = pixels(sd1.run(sd1.txt2img(seed=8)))

        assert first[0].shape == (64, 64, 3)
        assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
        assert not np.array_equal(first[0], other[0])

    def test_and_prompts_add_cond_rows_before_uncond_rows(self, sd1):
        with denoiser_calls(sd1) as dcalls, unet_calls(sd1) as ucalls:
            sd1.run(
                sd1.txt2img(prompt=["a red cat AND a blue dog", "a green bird"], negative_prompt="ugly", batch_size=2)
            )

        assert [c["rows"] for c in dcalls] == [5, 5]  # 3 cond rows (2 + 1) then 2 uncond rows
        assert [c[0] for c in ucalls] == [5, 5]  # batch_cond_uncond: one U-Net call per step
        _, _, x, context = ucalls[0]
        cond, uncond = dcalls[0]["cond"], dcalls[0]["uncond"]
        assert torch.equal(context[:3], cond) and torch.equal(context[3:], uncond)
        assert torch.equal(x[0], x[1]) and torch.equal(x[0], x[3])  # image 0's two sub-prompts, then its uncond row
        assert torch.equal(x[2], x[4]) and not torch.equal(x[0], x[2])
        encoder = sd1.sd_model.cond_stage_model
        with torch.no_grad():
            expected = encoder(["a red cat", " a blue dog", "a green bird"])  # AND's split keeps a leading space
        assert torch.allclose(cond, expected, atol=1e-5)

    def test_batch_cond_uncond_off_sends_consecutive_slices(self, sd1):
        sd1.shared.opts.batch_cond_uncond = False
        with denoiser_calls(sd1) as dcalls, unet_calls(sd1) as ucalls:
            sd1.run(sd1.txt2img(prompt=["a AND b", "c"], batch_size=2))

        assert [c["rows"] for c in dcalls] == [5, 5]
        assert [c[0] for c in ucalls] == [2, 2, 1, 2, 2, 1]
        assert torch.equal(torch.cat([c[3] for c in ucalls[:3]]), torch.cat([dcalls[0]["cond"], dcalls[0]["uncond"]]))

    def test_long_prompt_and_empty_negative_go_in_separate_calls(self, sd1):
        with denoiser_calls(sd1) as dcalls, unet_calls(sd1) as ucalls:
            processed = sd1.run(sd1.txt2img(prompt=LONG_PROMPT, negative_prompt="", batch_size=2))

        assert dcalls[0]["cond"].shape[1] == 154 and dcalls[0]["uncond"].shape[1] == 77
        assert [(c[0], c[1]) for c in ucalls] == [(2, 154), (2, 77)] * 2
        assert len(processed.images) == 3  # grid + 2

    def test_pad_cond_uncond_joins_the_calls_again(self, sd1):
        sd1.shared.opts.pad_cond_uncond = True
        with unet_calls(sd1) as ucalls:
            processed = sd1.run(sd1.txt2img(prompt=LONG_PROMPT))

        assert [(c[0], c[1]) for c in ucalls] == [(2, 154)] * 2
        assert "Pad conds: True" in processed.infotexts[0]

    def test_skip_early_cond_drops_the_uncond_rows(self, sd1):
        sd1.shared.opts.skip_early_cond = 0.5
        with denoiser_calls(sd1) as dcalls, unet_calls(sd1) as ucalls:
            processed = sd1.run(sd1.txt2img(steps=4))

        assert [c["step"] for c in dcalls] == [0, 1, 2, 3]
        assert [c[0] for c in ucalls] == [1, 1, 1, 2]  # step/total <= 0.5 for steps 0, 1, 2
        assert "Skip Early CFG: 0.5" in processed.infotexts[0]

    def test_heun_makes_two_denoiser_calls_per_step_but_the_last(self, sd1):
        states = []

        def on_denoiser(params):
            states.append((params.sampling_step, params.total_sampling_steps))

        sd1.script_callbacks.on_cfg_denoiser(on_denoiser)
        with denoiser_calls(sd1) as dcalls:
            p = sd1.txt2img(sampler_name="Heun", steps=3)
            sd1.run(p)

        assert [c["step"] for c in dcalls] == [0, 1, 2, 3, 4]
        assert {c["total_steps"] for c in dcalls} == {6} and {c["steps"] for c in dcalls} == {3}
        assert p.step_multiplier == 2
        # state.sampling_step lags: callback_state sets it after the first model call of each step
        assert states == [(0, 3), (0, 3), (0, 3), (1, 3), (1, 3)]

    def test_hires_fix_runs_a_second_pass_flagged_is_hr_pass(self, sd1):
        with denoiser_calls(sd1) as dcalls:
            p = sd1.txt2img(enable_hr=True, hr_scale=2.0, hr_second_pass_steps=3, steps=2)
            processed = sd1.run(p)

        assert [(c["hr"], c["step"], c["shape"]) for c in dcalls] == [
            (False, 0, (8, 8)),
            (False, 1, (8, 8)),
            (True, 0, (16, 16)),
            (True, 1, (16, 16)),
            (True, 2, (16, 16)),
        ]
        assert processed.images[0].size == (128, 128)
        assert p.is_hr_pass is False
        assert "Hires upscale: 2.0" in processed.infotexts[0] and "Hires steps: 3" in processed.infotexts[0]

    def test_interrupt_returns_the_last_latent_and_stops_the_batch_loop(self, sd1):
        state = sd1.shared.state

        def on_denoiser(params):
            if params.denoiser.step == 1:
                state.interrupt()

        sd1.script_callbacks.on_cfg_denoiser(on_denoiser)
        with denoiser_calls(sd1) as dcalls:
            processed = sd1.run(sd1.txt2img(steps=4, n_iter=2, seed=4242))

        assert [c["step"] for c in dcalls] == [0, 1]  # the call after the interrupt raises InterruptedException
        assert len(processed.images) == 1  # the second batch never started (and no grid for one image)
        assert state.interrupted is True
        assert not list(Path(sd1.shared.opts.outdir_txt2img_samples).rglob("*-4242.png"))  # incomplete: not saved

    def test_skip_aborts_only_the_current_batch(self, sd1):
        state = sd1.shared.state
        seen = []

        def on_denoiser(params):
            seen.append(params.denoiser.p.iteration)
            if params.denoiser.p.iteration == 0 and params.denoiser.step == 0:
                state.skip()

        sd1.script_callbacks.on_cfg_denoiser(on_denoiser)
        processed = sd1.run(sd1.txt2img(steps=3, n_iter=2))

        assert seen == [0, 1, 1, 1]
        assert len(processed.images) == 3  # grid + one image per batch
        assert state.skipped is False

    def test_an_exception_in_sampling_propagates_and_skips_postprocess(self, sd1):
        def boom(_module, _args):
            raise RuntimeError("U-Net failure")

        handle = sd1.unet.register_forward_pre_hook(boom)
        try:
            with pytest.raises(RuntimeError, match="U-Net failure"):
                sd1.run(sd1.txt2img())
        finally:
            handle.remove()

        names = [c[0] for c in recorder(sd1).calls]
        assert "process" in names and "process_before_every_sampling" in names
        assert "post_sample" not in names and "postprocess" not in names

    def test_scripts_load_like_the_webui(self, sd1, extension_dir):
        data = {Path(x.path).name: x for x in sd1.scripts.scripts_data}
        module = data["recorder.py"].module

        assert module.__name__ == "recorder.py" and "recorder.py" not in sys.modules
        assert {"basedir": str(extension_dir.resolve()), "on_path": True, "name": "recorder.py"} == module.LOAD_INFO
        assert str(extension_dir.resolve()) not in sys.path and sd1.scripts.basedir() == str(FAKEWEBUI_ROOT)
        assert sd1.xyz_module().__name__ == "xyz_grid.py"
        assert module.EVENTS[:4] == ["model_loaded", "ui_settings", "before_ui", "app_started"]
        titles = [s.title() for s in sd1.runner().alwayson_scripts]
        assert titles == ["Recorder", "Breaker"]
        assert [s.title() for s in sd1.runner().selectable_scripts] == ["X/Y/Z plot", "Dropdown recorder"]

    def test_processing_callbacks_reach_alwayson_scripts_in_v1_10_order(self, sd1):
        sd1.run(sd1.txt2img(enable_hr=True, steps=2))

        calls = recorder(sd1).calls
        assert [c[0] for c in calls] == [
            "setup",
            "before_process",
            "process",
            "before_process_batch",
            "after_extra_networks_activate",
            "process_batch",
            "process_before_every_sampling",
            "after_extra_networks_activate",
            "before_hr",
            "process_before_every_sampling",
            "post_sample",
            "postprocess_batch",
            "postprocess_batch_list",
            "postprocess_image",
            "postprocess_maskoverlay",
            "postprocess_image_after_composite",
            "postprocess",
        ]
        assert all(c[1] == (True, "hello") for c in calls)  # the script's own ui() values
        assert [c[0] for c in calls if c[2]] == [
            "after_extra_networks_activate",
            "before_hr",
            "process_before_every_sampling",
        ]  # p.is_hr_pass
        dropdown = next(s for s in sd1.runner().scripts if s.title() == "Dropdown recorder")
        assert dropdown.calls == []  # processing callbacks never reach a dropdown script

    def test_a_selected_dropdown_script_runs_instead_of_process_images(self, sd1):
        runner = sd1.runner()
        args = sd1.api_script_args(
            runner,
            script_name="Dropdown recorder",
            script_args=[5],
            alwayson_scripts={"Recorder": {"args": [True, "from api"]}},
        )
        processed = sd1.run(sd1.txt2img(script_args=args))

        dropdown = next(s for s in runner.scripts if s.title() == "Dropdown recorder")
        assert dropdown.calls == [("run", 5)]
        assert len(processed.images) == 1
        assert recorder(sd1).calls[-1][:2] == ("postprocess", (True, "from api"))

    def test_script_errors_are_reported_and_swallowed(self, sd1):
        p = sd1.txt2img()
        p.break_process = True
        before = len(sd1.errors.reported)
        processed = sd1.run(p)

        assert len(processed.images) == 1
        assert any("Error running process" in m and "recorder.py" in m for m in sd1.errors.reported[before:])

    def test_callback_errors_are_reported_and_swallowed(self, sd1):
        def bad(params):
            raise ValueError("bad callback")

        sd1.script_callbacks.on_cfg_after_cfg(bad)
        before = len(sd1.errors.reported)
        processed = sd1.run(sd1.txt2img())

        assert len(processed.images) == 1
        assert sum("cfg_after_cfg_callback" in m for m in sd1.errors.reported[before:]) == 2

    def test_remove_callbacks_for_function(self, sd1):
        hits = []

        def on_denoiser(params):
            hits.append(1)

        sd1.script_callbacks.on_cfg_denoiser(on_denoiser, name="test")
        names = [c.name for c in sd1.script_callbacks.callback_map["callbacks_cfg_denoiser"]]
        sd1.script_callbacks.remove_callbacks_for_function(on_denoiser)
        sd1.run(sd1.txt2img())

        assert names[-1] == "base/test_fakewebui.py/cfg_denoiser/test"
        assert hits == []

    def test_input_accordion_is_a_checkbox_whose_value_is_the_flag(self, sd1):
        script = recorder(sd1)
        enabled = script.controls[0]

        assert isinstance(enabled, sd1.ui_components.InputAccordion)
        assert enabled.value is True and enabled.get_block_name() == "checkbox"
        assert enabled.accordion.open is True and enabled.elem_id == "script_txt2img_recorder_enabled-checkbox"
        assert script.args_to - script.args_from == 2 and script.name == "recorder"

    def test_set_named_arg_and_infotext_paste(self, sd1):
        runner = sd1.runner()
        args = sd1.default_script_args(runner)
        changed = runner.set_named_arg(tuple(args), "recorder", "script_txt2img_recorder_text", "changed")
        paste = sd1.infotext_utils.connect_paste(
            None, sd1.infotext_utils.paste_fields["txt2img"]["fields"], None, None, "txt2img"
        )
        fields = sd1.infotext_utils.paste_fields["txt2img"]["fields"]
        updates = paste('a cat\nSteps: 2, Sampler: Euler, Recorder text: "pasted, quoted"')
        by_component = dict(zip([f[0] for f in fields], updates, strict=True))

        script = recorder(sd1)
        assert changed[script.args_from + 1] == "changed" and args[script.args_from + 1] == "hello"
        assert by_component[script.controls[1]]["value"] == "pasted, quoted"

    def test_xyz_axis_runs_each_value_on_a_copy_of_p(self, sd1):
        p = sd1.txt2img()
        processed = sd1.xyz_plot(p, "Recorder text", "one, two, three", include_lone_images=True)

        process_calls = [c for c in recorder(sd1).calls if c[0] == "process"]
        assert [c[3] for c in process_calls] == ["one", "two", "three"]
        assert not hasattr(p, "recorder_text")
        assert len(processed.images) == 4 and processed.images[0].size == (192, 64)
        assert "X Type: Recorder text" in processed.infotexts[0]

    def test_tokenizer_splits_long_prompts_into_77_id_chunks(self, sd1):
        model = sd1.sd_model.cond_stage_model
        chunks, token_count = model.tokenize_line(LONG_PROMPT)
        tokenizer = model.wrapped.tokenizer

        assert len(chunks) == 2 and all(len(c.tokens) == 77 for c in chunks)
        assert all(c.tokens[0] == model.id_start == 49406 and c.tokens[-1] == model.id_end == 49407 for c in chunks)
        assert model.chunk_length == 75 and 75 < token_count <= 150
        ids = [t for c in chunks for t in c.tokens[1:-1] if t != model.id_end]
        assert ids == model.tokenize([LONG_PROMPT])[0]  # nothing lost or reordered across chunks
        # CLIP's pre-tokenizer splits digits from letters
        assert tokenizer.convert_ids_to_tokens(chunks[0].tokens[1:4]) == ["word</w>", "0</w>", "red</w>"]
        # the first chunk was cut after a comma (comma_padding_backtrack), so the second starts with a word
        assert tokenizer.convert_ids_to_tokens(chunks[1].tokens[1:2]) == ["word</w>"]

    def test_emphasis_and_break(self, sd1):
        model = sd1.sd_model.cond_stage_model
        chunks, _ = model.tokenize_line("a (cat:1.5) BREAK [dog]")
        tokens = model.wrapped.tokenizer.convert_ids_to_tokens(chunks[0].tokens[1:3])

        assert len(chunks) == 2
        assert tokens == ["a</w>", "cat</w>"] and chunks[0].multipliers[1:3] == [1.0, 1.5]
        assert chunks[1].multipliers[1] == pytest.approx(1 / 1.1)
        with torch.no_grad():
            plain, emphasised = model(["a cat"]), model(["a (cat:1.5)"])
        assert plain.shape == (1, 77, 64) and not torch.equal(plain, emphasised)

    def test_a_textual_inversion_word_stands_for_its_vectors(self, sd1):
        model, db = sd1.sd_model.cond_stage_model, sd1.sd_hijack.model_hijack.embedding_db
        red_cat = model.encode_embedding_init_text("red cat", 2)  # the token vectors of "red" and "cat"
        embedding = sd1.textual_inversion.textual_inversion.Embedding(red_cat, "zq")
        embedding.vectors, embedding.shape = 2, 64  # as the webui's loader sets them
        db.register_embedding(embedding, sd1.sd_model)
        try:
            chunks, count = model.tokenize_line("a zq photo")
            with torch.no_grad():
                replaced, spelled_out = model(["a zq photo"]), model(["a red cat photo"])
        finally:
            db.register_embedding_by_name(None, sd1.sd_model, "zq")

        assert chunks[0].tokens[2:4] == [0, 0] and [fix.offset for fix in chunks[0].fixes] == [1] and count == 4
        assert torch.allclose(replaced, spelled_out, atol=1e-6) and "zq" not in db.word_embeddings

    def test_embedding_files_load_by_file_name_and_width(self, sd1):
        from safetensors.torch import save_file

        folder = Path(sd1.shared.cmd_opts.embeddings_dir) / "sub"
        folder.mkdir(parents=True, exist_ok=True)
        torch.save({"string_to_param": {"*": torch.randn(2, 64)}, "name": "inside", "step": 7}, folder / "ptword.pt")
        save_file({"emb_params": torch.randn(3, 64)}, str(folder / "stword.safetensors"))
        save_file({"emb_params": torch.randn(1, 32)}, str(folder / "narrow.safetensors"))  # not this model's width
        db = sd1.sd_hijack.model_hijack.embedding_db
        try:
            db.load_textual_inversion_embeddings(force_reload=True)
            loaded = {name: (e.vectors, e.shape, e.step) for name, e in db.word_embeddings.items()}
            skipped = list(db.skipped_embeddings)
            infotext = sd1.run(sd1.txt2img(prompt="a ptword cat")).infotexts[0]
        finally:
            for file in folder.iterdir():
                file.unlink()
            db.load_textual_inversion_embeddings(force_reload=True)

        assert loaded == {"ptword": (2, 64, 7), "stword": (3, 64, None)} and skipped == ["narrow"]
        assert 'TI hashes: "ptword: ' in infotext and not db.word_embeddings

    def test_prompt_schedules_and_alternation(self, sd1):
        schedules = sd1.prompt_parser.get_learned_conditioning_prompt_schedules
        assert schedules(["a [b:c:0.5] d"], 10)[0] == [[5, "a b d"], [10, "a c d"]]
        assert schedules(["a [b:3]"], 10)[0] == [[3, "a "], [10, "a b"]]
        assert schedules(["a [b::3]"], 10)[0] == [[3, "a b"], [10, "a "]]
        assert schedules(["[x|y]"], 3)[0] == [[1, "x"], [2, "y"], [3, "x"]]
        assert schedules(["a (b:1.2) [c] [unbalanced"], 10)[0] == [[10, "a (b:1.2) [c] [unbalanced"]]
        # v1.10.1's lark grammar: stray top-level brackets are text, '|' outside a bracket is unreadable
        assert schedules(["((a][:b:c [d:3]"], 10)[0] == [[3, "((a][:b:c "], [10, "((a][:b:c d"]]
        assert schedules(["a | [b:3]"], 10)[0] == [[10, "a | [b:3]"]]
        assert schedules(["[fe|]male"], 3)[0] == [[1, "female"], [2, "male"], [3, "female"]]
        # hires pass (10 + 10 steps): integers count from the first pass's end, fractions from 1.0
        assert schedules(["a [b:1.5] c", "a [b:15] c"], 10, 10) == [[[5, "a  c"], [10, "a b c"]]] * 2
        assert sd1.prompt_parser.parse_prompt_attention(r"\(a\) (b:1.5) BREAK [c") == [
            ["(a) ", 1.0],
            ["b", 1.5],
            ["", 1.0],
            ["BREAK", -1],
            ["", 1.0],
            ["c", 1 / 1.1],
        ]
        assert sd1.prompt_parser.parse_prompt_attention("an (important) word") == [
            ["an ", 1.0],
            ["important", 1.1],
            [" word", 1.0],
        ]

    def test_prompt_editing_switches_cond_at_the_denoiser_step(self, sd1):
        with denoiser_calls(sd1) as dcalls:
            sd1.run(sd1.txt2img(prompt="a [cat:dog:2] photo", steps=4))

        conds = [c["cond"] for c in dcalls]
        # schedule [[2, "a cat photo"], [4, "a dog photo"]] read at denoiser steps 0..3: "cat" while step <= 2
        assert torch.equal(conds[0], conds[1]) and torch.equal(conds[1], conds[2])
        assert not torch.equal(conds[2], conds[3])

    def test_each_distinct_prompt_is_encoded_once(self, sd1):
        model = sd1.sd_model
        model.encoded_texts.clear()
        model.text_encoder_calls = 0
        sd1.run(sd1.txt2img(prompt="a unique cat", negative_prompt="a unique blur", batch_size=2, n_iter=2))
        first = list(model.encoded_texts)
        sd1.run(sd1.txt2img(prompt="a unique cat", negative_prompt="a unique blur", batch_size=2, seed=9))

        assert first == ["a unique blur", "a unique cat"] and model.text_encoder_calls == 2  # uc first, then c
        assert model.encoded_texts == first  # persistent cond cache: same prompts, nothing re-encoded

    def test_extra_network_tags_are_stripped_before_encoding(self, sd1):
        model = sd1.sd_model
        model.encoded_texts.clear()
        p = sd1.txt2img(prompt="a cat <lora:foo:0.5>")
        recorder_script = recorder(sd1)
        sd1.run(p)
        seen = [c for c in recorder_script.calls if c[0] in ("before_process_batch", "process_batch")]

        assert "a cat" in model.encoded_texts and not any("<lora" in t for t in model.encoded_texts)
        assert len(seen) == 2 and p.all_prompts == ["a cat <lora:foo:0.5>"]

    def test_save_image_names_numbers_and_pnginfo(self, sd1, tmp_path):
        images, opts = sd1.images, sd1.shared.opts
        seen = []
        sd1.script_callbacks.on_before_image_saved(lambda params: seen.append(("before", Path(params.filename).name)))
        sd1.script_callbacks.on_image_saved(lambda params: seen.append(("after", Path(params.filename).name)))
        img = Image.new("RGB", (8, 8), (10, 20, 30))

        first, txt = images.save_image(img, str(tmp_path), "", 1234, "a cat", "png", info="params here", suffix="-IN04")
        second, _ = images.save_image(img, str(tmp_path), "", 1234, "a cat", "png", info="x", suffix="-IN04")
        opts.save_to_dirs = False
        third, _ = images.save_image(img, str(tmp_path / "flat"), "", 1234, "a cat", "png", info="x")

        assert Path(first).name == "00000-1234-IN04.png" and Path(first).parent.parent == tmp_path  # [date] folder
        assert Path(second).name == "00001-1234-IN04.png" and txt is None
        assert Path(third).name == "00000-1234-a cat.png" and Path(third).parent == tmp_path / "flat"
        assert Image.open(first).info["parameters"] == "params here"
        assert seen[:2] == [("before", "00000-1234-IN04.png"), ("after", "00000-1234-IN04.png")]
        assert images.get_next_sequence_number(str(Path(first).parent), "") == 2

    def test_generated_images_are_saved_with_their_infotext(self, sd1):
        p = sd1.txt2img(seed=42, prompt="saved cat")
        processed = sd1.run(p)
        files = sorted(Path(p.outpath_samples).rglob("*-42.png"))

        assert files and Image.open(files[-1]).info["parameters"] == processed.infotexts[0]
        assert processed.infotexts[0].startswith("saved cat\nSteps: 2, Sampler: Euler")

    def test_infotext_extra_params_plain_list_and_callable(self, sd1):
        p = sd1.txt2img(batch_size=2, prompt=["first", "second"])
        p.extra_generation_params.update(
            {"Plain": "a, b", "Per image": ["x", "y"], "Called": lambda p, index, **kw: f"#{index}", "Omitted": None}
        )
        processed = sd1.run(p)
        parsed = [sd1.infotext_utils.parse_generation_parameters(t) for t in processed.infotexts]

        assert processed.index_of_first_image == 1 and len(processed.infotexts) == 3
        assert [d["Prompt"] for d in parsed] == ["first", "first", "second"]
        assert [d["Per image"] for d in parsed[1:]] == ["x", "y"] and [d["Called"] for d in parsed[1:]] == ["#0", "#1"]
        assert parsed[1]["Plain"] == "a, b" and "Omitted" not in parsed[1]
        assert parsed[1]["Size-1"] == "64" and parsed[1]["Seed"] == str(processed.all_seeds[0])
        assert sd1.infotext_utils.quote("a, b") == '"a, b"' and sd1.infotext_utils.quote("ab") == "ab"
        assert sd1.generation_parameters_copypaste.quote is sd1.infotext_utils.quote

    def test_img2img_runs_int_denoising_times_steps_plus_one(self, sd1):
        with denoiser_calls(sd1) as dcalls:
            processed = sd1.run(
                sd1.img2img([Image.new("RGB", (64, 64), (200, 40, 40))], steps=6, denoising_strength=0.5)
            )

        assert len(dcalls) == 4  # t_enc = int(0.5 * 6) = 3, sampled for t_enc + 1 steps
        assert "Denoising strength: 0.5" in processed.infotexts[0]
        assert [c[0] for c in recorder(sd1, is_img2img=True).calls][:3] == ["setup", "before_process", "process"]

    def test_xyz_values_and_infotext_lines_parse_as_in_v1_10(self, sd1):
        xyz, parse = sd1.xyz_module(), sd1.infotext_utils.parse_generation_parameters
        ints, floats = xyz.AxisOption("n", int, xyz.do_nothing), xyz.AxisOption("f", float, xyz.do_nothing)
        order = xyz.AxisOption("o", xyz.str_permutations, xyz.apply_order)

        # the end of an int range is reached counting up (`9-5 (-2)` stops before 5, as in the webui)
        assert xyz.axis_values(None, ints, "1-3, 10-16 (+3), 0-8 [3], 7, 9-5 (-2)", None, True) == [
            *[1, 2, 3, 10, 13, 16, 0, 4, 8, 7, 9, 7]
        ]
        assert xyz.axis_values(None, floats, "0.5-1.5 (+0.5), 2.25", None, True) == [0.5, 1.0, 1.5, 2.25]
        assert xyz.axis_values(None, order, "a, b", None, True) == [("a", "b"), ("b", "a")]
        with pytest.raises(ValueError, match="invalid literal"):
            xyz.axis_values(None, ints, "1-" * 50_000 + "x", None, True)  # 100 kB, read in linear time
        parsed = parse('a cat\nNegative prompt: a dog\nSteps: 2, Size: 64x96, Note: "a, \\"b\\": c", X: 1')
        assert (parsed["Prompt"], parsed["Negative prompt"], parsed["Steps"]) == ("a cat", "a dog", "2")
        assert (parsed["Size-1"], parsed["Size-2"], parsed["Note"]) == ("64", "96", 'a, "b": c')
        assert "X" not in parsed and parsed["Clip skip"] == "1"  # one-letter keys are not keys; absent = default
        huge = "[" * 500_000 + "\nSteps: " + "-" * 500_000 + ", Seed: 1, Size: 8x8"
        assert parse(huge)["Prompt"] == "[" * 500_000  # a megabyte pastes without error
