"""Start and stop the fake webui around a test: `with webui(unets.SD1) as w: ...`.

On entry, in the webui's own startup order: `tests/fakewebui` goes first on sys.path and a fresh data directory is
made; the fake `modules` package is imported (v1.10.1 default settings, fresh `shared.state`, empty callback
registry); the given extension folders are registered and `scripts.load_scripts()` loads the built-in
`scripts/xyz_grid.py` and each extension's `scripts/*.py` as the webui does; a tiny checkpoint of the flavour is
loaded as `shared.sd_model` (on_model_loaded fires); on_ui_settings fires; and (unless `build_ui=False`) the txt2img and
img2img UIs are built in real gradio Blocks (on_before_ui, each script's `ui()`, args_from/args_to, paste fields),
then on_app_started fires with the Blocks and a FastAPI app.

On exit everything imported from `modules`, from the fake webui, and from the repository during the session is
dropped from sys.modules (so `lib_dumpunet.webui` is re-imported against the next session's fresh `modules`),
sys.path and the environment are restored, the U-Net skip-resize patch and ui_components' gradio patch are undone,
and the data directory is removed.
Sessions cannot be nested.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import ClassVar

import pytest
import unets

FAKEWEBUI_ROOT = Path(__file__).resolve().parent
REPO_ROOT = FAKEWEBUI_ROOT.parent.parent
_KEEP = (FAKEWEBUI_ROOT / "fixture.py", FAKEWEBUI_ROOT / "tiny_model.py", FAKEWEBUI_ROOT / "__init__.py")


class FakeWebui:
    """A running fake webui. `w.<name>` is the fake `modules.<name>` (e.g. `w.shared`, `w.processing`)."""

    def __init__(self, flavour: unets.Flavour, data_dir: Path, checkpoint_info) -> None:
        self.flavour = flavour
        self.data_dir = data_dir
        self.checkpoint_info = checkpoint_info
        self.demo = None
        self.app = None

    def __getattr__(self, name: str) -> ModuleType:
        if name.startswith("_"):
            raise AttributeError(name)
        return importlib.import_module(f"modules.{name}")

    # -- the model ------------------------------------------------------------------------------------------------

    @property
    def sd_model(self):
        return self.shared.sd_model

    @property
    def unet(self):
        """The real ldm U-Net the sampler calls: `shared.sd_model.model.diffusion_model`."""
        return self.shared.sd_model.model.diffusion_model

    # -- UI and scripts -------------------------------------------------------------------------------------------

    def create_ui(self):
        """What webui.py and ui.create_ui do for scripts: on_before_ui, then for each tab initialize_scripts and
        setup_ui inside gradio Blocks, paste fields registered; then on_app_started(demo, app)."""
        import gradio as gr
        from fastapi import FastAPI

        scripts, script_callbacks, infotext_utils = self.scripts, self.script_callbacks, self.infotext_utils
        infotext_utils.reset()
        script_callbacks.before_ui_callback()
        with gr.Blocks(analytics_enabled=False) as demo:
            for tabname, runner in (("txt2img", scripts.scripts_txt2img), ("img2img", scripts.scripts_img2img)):
                scripts.scripts_current = runner
                runner.initialize_scripts(is_img2img=tabname == "img2img")
                with gr.Tab(tabname):
                    runner.prepare_ui()
                    # the main UI's size sliders (modules/ui.py), built before the scripts in the default layout
                    for name in ("width", "height"):
                        gr.Slider(
                            minimum=64, maximum=2048, step=8, label=name.title(), value=512, elem_id=f"{tabname}_{name}"
                        )
                    runner.setup_ui()
                infotext_utils.add_paste_fields(tabname, None, list(runner.infotext_fields))
        self.demo, self.app = demo, FastAPI()
        script_callbacks.app_started_callback(self.demo, self.app)
        return demo

    def reload_ui(self):
        """The "Reload UI" button: on_before_reload, on_script_unloaded (reverse order), scripts re-executed (the
        callback registry is cleared first), UI rebuilt. The model stays loaded, as in the webui."""
        self.script_callbacks.app_reload_callback()
        self.script_callbacks.script_unloaded_callback()
        self.scripts.load_scripts()
        self.script_callbacks.ui_settings_callback()
        return self.create_ui()

    def runner(self, is_img2img: bool = False):
        return self.scripts.scripts_img2img if is_img2img else self.scripts.scripts_txt2img

    def default_script_args(self, runner) -> list:
        """Every script's `ui()` defaults at its args_from..args_to, 0 (= "None") for the dropdown at index 0 — what
        the API's init_default_script_args builds (ui() is called again inside a throwaway gr.Blocks)."""
        import gradio as gr

        last_arg_index = max([1, *(script.args_to or 1 for script in runner.scripts)])
        script_args = [None] * last_arg_index
        script_args[0] = 0
        with gr.Blocks():
            for script in runner.scripts:
                controls = script.ui(script.is_img2img)
                if controls:
                    script_args[script.args_from : script.args_to] = [elem.value for elem in controls]
        return script_args

    def api_script_args(
        self,
        runner,
        alwayson_scripts: Mapping[str, Mapping] | None = None,
        script_name: str | None = None,
        script_args: Sequence = (),
    ) -> list:
        """`p.script_args` as the API's init_script_args builds it: defaults; a dropdown script by title, its
        `script_args` replacing its whole args_from..args_to slice; then `alwayson_scripts={"<title>": {"args":
        [...]}}` written positionally from each always-on script's args_from."""
        args = self.default_script_args(runner)

        def find(title):
            for script in runner.scripts:
                if script.title().lower() == title.lower():
                    return script
            raise KeyError(f"script not found: {title}")

        if script_name:
            script = find(script_name)
            if script.alwayson:
                raise ValueError(f"{script_name} is an always-on script")
            args[0] = runner.selectable_scripts.index(script) + 1
            # the whole slice is replaced: shorter script_args shift the arguments of the scripts after this one
            args[script.args_from : script.args_to] = list(script_args)
        for title, request in (alwayson_scripts or {}).items():
            script = find(title)
            if not script.alwayson:
                raise ValueError(f"{title} is not an always-on script")
            values = list(request.get("args", []))[: script.args_to - script.args_from]
            args[script.args_from : script.args_from + len(values)] = values
        return args

    def xyz_module(self):
        """The X/Y/Z plot script's module, found the way extensions find it."""
        return next(x.module for x in self.scripts.scripts_data if x.script_class.__module__ == "xyz_grid.py")

    # -- generation -----------------------------------------------------------------------------------------------

    _TEST_DEFAULTS: ClassVar[dict] = {
        "prompt": "a photo of a cat",
        "negative_prompt": "",
        "seed": 1,
        "sampler_name": "Euler",
        "scheduler": "Automatic",
        "steps": 2,
        "cfg_scale": 7.0,
        "width": 64,
        "height": 64,
    }

    def txt2img(self, script_args: Sequence | None = None, **fields):
        """A `StableDiffusionProcessingTxt2Img` set up as modules/txt2img.py does (outpaths from settings, the
        txt2img ScriptRunner, `script_args` — defaults if None — assigned last, which fires scripts' `setup`).
        Fields not given get small test defaults (64×64, 2 Euler steps, seed 1), not the webui's 512×512/20 steps."""
        opts = self.shared.opts
        p = self.processing.StableDiffusionProcessingTxt2Img(
            outpath_samples=opts.outdir_samples or opts.outdir_txt2img_samples,
            outpath_grids=opts.outdir_grids or opts.outdir_txt2img_grids,
            **{**self._TEST_DEFAULTS, **fields},
        )
        runner = self.scripts.scripts_txt2img
        p.scripts = runner
        p.script_args = tuple(self.default_script_args(runner) if script_args is None else script_args)
        return p

    def img2img(self, init_images, script_args: Sequence | None = None, **fields):
        """A `StableDiffusionProcessingImg2Img` set up as modules/img2img.py does, with the img2img ScriptRunner."""
        opts = self.shared.opts
        p = self.processing.StableDiffusionProcessingImg2Img(
            outpath_samples=opts.outdir_samples or opts.outdir_img2img_samples,
            outpath_grids=opts.outdir_grids or opts.outdir_img2img_grids,
            init_images=list(init_images),
            **{**self._TEST_DEFAULTS, **fields},
        )
        runner = self.scripts.scripts_img2img
        p.scripts = runner
        p.script_args = tuple(self.default_script_args(runner) if script_args is None else script_args)
        return p

    def run(self, p):
        """What clicking Generate does (modules/txt2img.py txt2img / img2img.py): state.begin(), the selected dropdown
        script's run() or process_images(p), inside `closing(p)`, then state.end(). Exceptions propagate (the UI
        wrapper would report them); state.end() is then skipped, as in the webui."""
        state = self.shared.state
        state.begin(job="fakewebui")
        with contextlib.closing(p):
            processed = p.scripts.run(p, *p.script_args) if p.scripts is not None else None
            if processed is None:
                processed = self.processing.process_images(p)
        self.shared.total_tqdm.clear()
        state.end()
        return processed

    def xyz_plot(self, p, x_label: str, x_values: str, *, draw_legend: bool = False, include_lone_images: bool = False):
        """Run the X/Y/Z plot script on `p` along one axis (text values, "csv mode"), as its `run()` is called when
        it is the selected script: each cell is `copy(p)` + `AxisOption.apply` + `process_images`."""
        runner = p.scripts
        script = next(s for s in runner.selectable_scripts if s.title() == "X/Y/Z plot")
        labels = [opt.label for opt in script.current_axis_options]
        return script.run(
            p,
            labels.index(x_label),
            x_values,
            [],
            0,
            "",
            [],
            0,
            "",
            [],
            draw_legend,
            include_lone_images,
            False,
            False,
            False,
            False,
            False,
            0,
            True,
        )


def _repo_file(module: ModuleType) -> bool:
    file = getattr(module, "__file__", None)
    if not file:
        return False
    path = Path(file).resolve()
    if path in _KEEP:
        return False
    venv = Path(sys.prefix).resolve()
    return (REPO_ROOT in path.parents) and (venv not in path.parents)


def _forget(module_names: set[str]) -> None:
    for name in sorted(module_names, key=len, reverse=True):
        sys.modules.pop(name, None)
        parent, _, child = name.rpartition(".")
        if parent and parent in sys.modules and getattr(sys.modules[parent], child, None) is not None:
            with contextlib.suppress(AttributeError):
                delattr(sys.modules[parent], child)


@contextlib.contextmanager
def webui(
    flavour: unets.Flavour = unets.SD1,
    *,
    seed: int = 0,
    extensions: Sequence[str | os.PathLike] = (),
    data_dir: str | os.PathLike | None = None,
    build_ui: bool = True,
) -> Iterator[FakeWebui]:
    """A fake webui v1.10.1 session with a tiny real model of `flavour` (weights from `seed`) and the given
    extension folders loaded (each holding `scripts/*.py`)."""
    if "modules" in sys.modules:
        raise RuntimeError("a fake webui session is already active (or another `modules` package is imported)")

    import gradio as gr

    saved_path = list(sys.path)
    saved_modules = set(sys.modules)
    saved_dropdown_parent = gr.Dropdown.__dict__.get("get_expected_parent")  # ui_components patches it
    saved_env = os.environ.get("FAKEWEBUI_DATA_DIR")
    own_dir = data_dir is None
    root = Path(tempfile.mkdtemp(prefix="fakewebui-")) if own_dir else Path(data_dir)
    os.environ["FAKEWEBUI_DATA_DIR"] = str(root)
    sys.path.insert(0, str(FAKEWEBUI_ROOT))
    sd_hijack_unet = gradio_extensions = None
    try:
        from fakewebui import tiny_model

        shared = importlib.import_module("modules.shared")
        extensions_module = importlib.import_module("modules.extensions")
        scripts = importlib.import_module("modules.scripts")
        sd_models = importlib.import_module("modules.sd_models")
        script_callbacks = importlib.import_module("modules.script_callbacks")
        sd_hijack_unet = importlib.import_module("modules.sd_hijack_unet")
        importlib.import_module("modules.processing")
        gradio_extensions = importlib.import_module("modules.gradio_extensions")
        gradio_extensions.install()

        for path in extensions:
            path = Path(path).resolve()
            extensions_module.extensions.append(extensions_module.Extension(path.name, str(path)))
        scripts.load_scripts()

        filename = str(Path(sd_models.model_path) / f"tiny-{flavour.name}.safetensors")
        sha256 = hashlib.sha256(f"{flavour.name}/{seed}".encode()).hexdigest()
        checkpoint_info = sd_models.CheckpointInfo(
            filename, builder=lambda: tiny_model.build(flavour, seed), sha256=sha256
        )
        checkpoint_info.register()
        sd_models.load_model(checkpoint_info)

        script_callbacks.ui_settings_callback()

        w = FakeWebui(flavour, root, checkpoint_info)
        if build_ui:
            w.create_ui()
        assert shared.sd_model is not None
        yield w
    finally:
        if sd_hijack_unet is not None:
            sd_hijack_unet.undo()
        if gradio_extensions is not None:
            gradio_extensions.undo()
        if saved_dropdown_parent is None:
            with contextlib.suppress(AttributeError):
                del gr.Dropdown.get_expected_parent
        else:
            gr.Dropdown.get_expected_parent = saved_dropdown_parent
        new = set(sys.modules) - saved_modules
        _forget(
            {name for name in new if name == "modules" or name.startswith("modules.") or _repo_file(sys.modules[name])}
        )
        sys.path[:] = saved_path
        if saved_env is None:
            os.environ.pop("FAKEWEBUI_DATA_DIR", None)
        else:
            os.environ["FAKEWEBUI_DATA_DIR"] = saved_env
        if own_dir:
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def fake_webui() -> Iterator[FakeWebui]:
    """A fake webui session with the tiny SD1 model and no extension."""
    with webui(unets.SD1) as w:
        yield w
