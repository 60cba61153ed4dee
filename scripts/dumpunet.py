"""Dump U-Net for AUTOMATIC1111's stable-diffusion-webui: see inside the U-Net.

Two scripts share one engine (lib_dumpunet.webui): "Dump U-Net features" in the txt2img/img2img Script dropdown,
and the always-visible "Dump U-Net" section for use beside other scripts (X/Y/Z plot) and over the API; the "VXA"
tab (cross-attention heat maps of an uploaded image) registers itself, and the "Embedding Estimate" tab is added
as a UI tab. This file
only registers them and the callbacks; `lib_dumpunet` is imported here, at load time, while the webui has this
extension's folder on sys.path.
"""

from __future__ import annotations

import modules.scripts as scripts
from modules import script_callbacks

from lib_dumpunet.errors import DumpUnetError
from lib_dumpunet.webui import entry, estimate_tab, vxa_tab
from lib_dumpunet.webui.xyz import register_axes


class DumpUnetScript(scripts.Script):
    """The Script-dropdown entry: runs the job itself (twice for difference maps)."""

    def title(self):
        return entry.SCRIPT_TITLE

    def show(self, is_img2img):
        entry.watch_size(self, is_img2img)
        return True

    def ui(self, is_img2img):
        return entry.script_ui(self, is_img2img)

    def run(self, p, *args):
        return entry.run(p, args)


class DumpUnetSection(scripts.Script):
    """The always-visible entry; it also receives the processing callbacks for the dropdown script's runs."""

    def title(self):
        return entry.SECTION_TITLE

    def show(self, is_img2img):
        entry.watch_size(self, is_img2img)
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        return entry.section_ui(self, is_img2img)

    def before_process(self, p, *args):
        try:
            section = entry.section_settings(args)
        except DumpUnetError as err:
            entry.ENGINE.before_process(p, None, error=err)
        else:
            entry.ENGINE.before_process(p, section)

    def process(self, p, *args):
        entry.ENGINE.process(p)

    def process_batch(self, p, *args, batch_number=0, **kwargs):
        entry.ENGINE.process_batch(p, batch_number)

    def postprocess_batch(self, p, *args, images=(), batch_number=0, **kwargs):
        entry.ENGINE.postprocess_batch(p, batch_number, len(images))

    def postprocess(self, p, processed, *args):
        entry.ENGINE.postprocess(p, processed)


script_callbacks.on_cfg_denoiser(entry.ENGINE.on_cfg_denoiser)
script_callbacks.on_cfg_denoised(entry.ENGINE.on_cfg_denoised)
script_callbacks.on_cfg_after_cfg(entry.ENGINE.on_cfg_after_cfg)
script_callbacks.on_image_saved(entry.ENGINE.on_image_saved)
script_callbacks.on_before_ui(register_axes)
script_callbacks.on_script_unloaded(entry.ENGINE.reset)
script_callbacks.on_ui_tabs(estimate_tab.on_ui_tabs)
vxa_tab.register()  # the VXA tab and its API routes
