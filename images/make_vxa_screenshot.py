"""Screenshot of the VXA tab for the README: `python images/make_vxa_screenshot.py` → images/vxa-tab.png.

The tab is built by the extension's own code (`lib_dumpunet.webui.vxa_tab.build`) inside the test suite's fake webui,
served by gradio on localhost and photographed by headless Chromium. The picture it shows is a real VXA result:
a shapes-world scene (`lib_dumpunet.world`) run through `lib_dumpunet.vxa` on the project's demo model
(`demo/model`, via the diffusers front-end) when it is present, else on the fake webui's tiny random model.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / "tests"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import unets  # noqa: E402
from fakewebui.fixture import webui  # noqa: E402

from lib_dumpunet.world import render, scene_at  # noqa: E402

OUT = ROOT / "images" / "vxa-tab.png"
PORT = 7869
SIDE = 256
TOKENS = "square"
SETTINGS = {"tokens": TOKENS, "t": 1.0, "layer": "IN04", "output": "colour"}  # IN04: best IoU on the demo


def scene_image() -> tuple[np.ndarray, str]:
    scene = scene_at(7, 14, "train")  # of the first 16 scenes, where IN04 maps a shape word best (IoU 0.44)
    return render(scene, SIDE).image, scene.caption


def demo_result(image: np.ndarray, caption: str):
    """VXA on the demo model, or None if it is not there."""
    model = ROOT / "demo" / "model"
    if not (model / "model_index.json").is_file():
        return None
    from lib_dumpunet.cli.vxa import DiffusersVxaHost
    from lib_dumpunet.diffusers.model import load_model
    from lib_dumpunet.vxa import VxaSettings, visualize

    host = DiffusersVxaHost(load_model(model))
    return visualize(host, image, VxaSettings(prompt=caption, size=64, **SETTINGS))


def main() -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if chromium is None:
        sys.exit("no chromium on PATH")
    image, caption = scene_image()
    with webui(unets.SD1, extensions=[ROOT]):
        from lib_dumpunet.vxa import VxaSettings
        from lib_dumpunet.webui import vxa_tab

        result = demo_result(image, caption)
        shown = (
            {"image": result.render(), "info": result.infotext(), "tokens": result.table.table()}
            if result is not None
            else vxa_tab.run(image, VxaSettings(prompt=caption, **SETTINGS))
        )
        tab, w = vxa_tab.build()
        values = {"prompt": caption, "tokens": TOKENS, "t": str(SETTINGS["t"]), "layer": SETTINGS["layer"]}
        for name, value in values.items():
            w[name].value = value
        w["output"].value = SETTINGS["output"]
        w["image"].value = w["image"].postprocess(image)
        w["output_image"].value = w["output_image"].postprocess(shown["image"])
        w["table"].value = w["table"].postprocess(shown["tokens"])
        model = "demo model" if result is not None else "fake webui's tiny random model"
        w["message"].value = vxa_tab._message(f"{shown['info']}\n({model})", error=False)
        tab.launch(server_name="127.0.0.1", server_port=PORT, prevent_thread_lock=True, quiet=True)
        try:
            time.sleep(2)
            subprocess.run(
                [
                    chromium,
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--hide-scrollbars",
                    f"--screenshot={OUT}",
                    "--window-size=1400,1250",
                    "--virtual-time-budget=20000",
                    f"http://127.0.0.1:{PORT}/",
                ],
                check=True,
                capture_output=True,
                timeout=180,
            )
        finally:
            tab.close()
    Image.open(OUT).convert("RGB").save(OUT, optimize=True)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
