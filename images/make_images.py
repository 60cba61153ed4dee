"""Make the README's pictures with Dump U-Net's own code: `python images/make_images.py` (after the test setup).

No model weights can be downloaded where this project is built, so the pictures come from the full-size SD1.5 U-Net
layout (Stability-AI's `ldm` class, `v1-inference.yaml`) with random weights, fed one latent drawn by hand — a disc
and a bar on a gradient — and a random prompt embedding. The layouts, sizes, colours and labels are exactly what the
extension produces for a real checkpoint; what the maps show is only the drawn shapes passing through random layers.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from benchmarks.sd15 import CONTEXT_DIM, build_sd15  # noqa: E402

from lib_dumpunet.attention import CrossAttentionRecorder, SelfAttentionRecorder  # noqa: E402
from lib_dumpunet.capture import FeatureRecorder, Key  # noqa: E402
from lib_dumpunet.colorize import Colorizer, ColorSettings  # noqa: E402
from lib_dumpunet.probe import Probe  # noqa: E402
from lib_dumpunet.render import render  # noqa: E402
from lib_dumpunet.sampling import cfg_rows  # noqa: E402
from lib_dumpunet.specs import ALL_STEPS, parse_points  # noqa: E402

WORDS = ["a", "red", "disc", "beside", "a", "blue", "bar"]


def drawn_latent(size: int = 64) -> torch.Tensor:
    y, x = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    disc = (((x + 0.35) ** 2 + (y + 0.1) ** 2) < 0.12).float()
    bar = ((x - 0.45).abs() < 0.12).float() * ((y.abs()) < 0.6).float()
    return torch.stack([disc * 2 - 0.5, bar * 2 - 0.5, x, y])[None]


def main() -> None:
    torch.manual_seed(0)
    unet = build_sd15()
    points = parse_points("0.3,0.45; 0.72,0.5; 0.5,0.9")
    recorders = [
        FeatureRecorder(["IN00", "IN05", "OUT11"], ALL_STEPS),
        CrossAttentionRecorder(["IN07"], ALL_STEPS, ("qk",)),
        SelfAttentionRecorder(["IN01"], ALL_STEPS, points),
    ]
    context = torch.randn(1, 77, CONTEXT_DIM, generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), Probe(unet, recorders) as probe:
        probe.tracker.denoiser_call(pass_index=0, step=1, schedule_step=0, rows=cfg_rows([1], 0))
        unet(drawn_latent(), torch.tensor([400.0]), context=context)
    capture = probe.capture

    default = Colorizer.from_settings(ColorSettings())
    sigmoid = Colorizer.from_settings(ColorSettings(transform="Sigmoid"))
    grey = Colorizer.from_settings(ColorSettings(method="White/Black", transform="Sigmoid"))
    attention = Colorizer.from_settings(ColorSettings(h="(2-2*v)/3"))
    tokens = ["BOS", *WORDS, "EOS", *["pad"] * (76 - len(WORDS) - 1)]

    def picture(place: str, kind: str, colorizer: Colorizer, index: int = 0, **options):
        key = Key(0, 0, 1, place, kind)
        return render(key, capture[key], colorizer, **options)[index]

    outputs = {
        "readme-features-OUT11.png": picture("OUT11", "features", sigmoid),
        "readme-features-OUT11-gray.png": picture("OUT11", "features", grey),
        "readme-features-IN05.png": picture("IN05", "features", default),
        "readme-features-IN00-average.png": picture("IN00", "features", default, average="sum"),
        "readme-attention-qk-IN07.png": picture("IN07.attn2", "qk", attention, tokens=tokens),
        "readme-self-attention-IN01.png": picture("IN01.attn1", "self", attention, average="sum", points=points),
    }
    for name, m in outputs.items():
        m.image.save(HERE / name)
        print(f"{name}: {m.image.size[0]}×{m.image.size[1]}  ({m.label})")


if __name__ == "__main__":
    main()
