"""Word heat-map quality on the demo model: mIoU of thresholded word maps against the shapes in the generated images.

    python tests/benchmarks/bench_heatmap_miou.py [--scenes 50] [--set final|tune]   the figure (~18 min, busy CPU)
    python tests/benchmarks/bench_heatmap_miou.py --study [--scenes 25]               the choices (~30 min)

DAAM's protocol on the shapes world (`lib_dumpunet.world`): each scene's caption is generated on the demo model
(`demo/model`, 30 steps of its DDIM scheduler, guidance 3, as its model card's figures, seed = scene index) with word
heat maps recorded by the library's own job (`lib_dumpunet.heatmap`: the webui's and `dumpunet heatmap`'s path). Each
shape word and colour word of the caption gets its map at the image's size, min–max normalised to [0, 1] and
thresholded at 0.4; its IoU is taken against the mask of the object(s) the word names in the *generated* image, as
the world's analyser finds them (`lib_dumpunet.world.analyse.match`: a shape word needs its object found in its
colour and shape, a colour word in its colour; a word two objects share gets the union). A word whose object the
analyser does not find is left out and counted. Baselines: a uniform map (every pixel hot: IoU = the mask's share)
and a centred Gaussian (σ = a quarter of the side, so the disc above 0.4 has a radius of a third of the side).

Two disjoint sets of scenes, none of them trained on (training drew from world seeds 1234–1236, the model card's
evaluation from 2024): "tune" (seed 4041) for `--study`, which compares the choices that could matter — layers,
steps, heads, the final upsampling, a per-cell share over the scored words — and "final" (seed 5051), which
gives the reported figure: with the settings' defaults, and with the one choice the study made on the tune set.
Each set holds the same number of scenes from the world's "train" split (only colour × shape pairs seen in
training) and its "held_out" split (every scene has a pair never seen). Not a test: it prints Markdown tables.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from lib_dumpunet.heatmap import WordColumns, WordHeat, word_heats  # noqa: E402
from lib_dumpunet.overlay import min_max  # noqa: E402
from lib_dumpunet.world import COLOURS, SHAPES, Scene, scene_at  # noqa: E402
from lib_dumpunet.world.analyse import Analysis, analyse, match  # noqa: E402

THRESHOLD = 0.4
TARGET = 0.5
SETS = {"tune": 4041, "final": 5051}
SPLITS = ("train", "held_out")
STEPS, GUIDANCE = 30, 3.0
KINDS = ("shape", "colour")


# --------------------------------------------------------------------------------------------------------------------
# The measure


def iou(heat: np.ndarray, mask: np.ndarray, threshold: float = THRESHOLD) -> float:
    """Intersection over union of `heat >= threshold` and `mask` (1 when both are empty)."""
    hot = heat >= threshold
    union = np.logical_or(hot, mask).sum()
    return float(np.logical_and(hot, mask).sum() / union) if union else 1.0


def centre_map(side: int) -> np.ndarray:
    """The centre baseline: a Gaussian bump in the middle of the image, min–max normalised."""
    centres = (np.arange(side, dtype=np.float32) + 0.5) / side - 0.5
    r2 = centres[:, None] ** 2 + centres[None, :] ** 2
    return min_max(np.exp(-r2 / (2 * 0.25**2)))


@dataclass(frozen=True)
class WordTruth:
    """A caption word that names objects, its kind, and their mask in the generated image (None: not found)."""

    word: str
    kind: str  # "shape" or "colour"
    mask: np.ndarray | None


def word_truths(scene: Scene, analysis: Analysis) -> list[WordTruth]:
    """The scene's shape and colour words with the masks of what they name in the analysed image."""
    found = match(scene, analysis)
    out = []
    for kind, names in (("shape", SHAPES), ("colour", tuple(COLOURS))):
        for word in names:
            named = [(obj, f) for obj, f in zip(scene.objects, found, strict=True) if word in obj.words]
            if not named:
                continue
            ok = all(f is not None and (kind == "colour" or f.shape == obj.shape) for obj, f in named)
            mask = np.logical_or.reduce([f.mask for _, f in named]) if ok else None  # type: ignore[union-attr]
            out.append(WordTruth(word, kind, mask))
    return out


# --------------------------------------------------------------------------------------------------------------------
# Ways to turn recorded sums into a map


Post = Callable[[dict[str, torch.Tensor], str, int], np.ndarray]  # raw totals per word, the word, side → [0, 1]


def product(raws: dict[str, torch.Tensor], word: str, side: int) -> np.ndarray:
    """What the extension draws: `WordHeat.heat` (bilinear to the image, min–max)."""
    return min_max(F.interpolate(raws[word].float()[None, None], size=(side, side), mode="bilinear")[0, 0])


def bicubic(raws: dict[str, torch.Tensor], word: str, side: int) -> np.ndarray:
    """As DAAM: bicubic to the image, negative undershoot clamped, min–max."""
    up = F.interpolate(raws[word].float()[None, None], size=(side, side), mode="bicubic", align_corners=False)
    return min_max(up[0, 0].clamp(min=0))


def share(raws: dict[str, torch.Tensor], word: str, side: int) -> np.ndarray:
    """Per latent cell, the word's share of the attention of all the words scored in its caption (its colour and
    shape words; as DAAM's `normalize` over a prompt's words), then as shown."""
    total = torch.stack(list(raws.values())).sum(dim=0).clamp(min=1e-12)
    return product({word: raws[word] / total}, word, side)


@dataclass(frozen=True)
class Variant:
    """One way of making the maps: recorder settings (`heatmap.*`) and what is done with the sums."""

    name: str
    settings: dict[str, str] = field(default_factory=dict)
    post: Post = product


FINEST = "IN01-IN02,OUT09-OUT11"  # the demo U-Net's attn2 layers on the latent's own 8×8 grid
DEFAULT = Variant("default: all attn2, all steps, heads mean")
# Chosen on the "tune" set (see --study), then measured on the "final" set: only the layers at the latent's own
# resolution, and the later half of the steps.
TUNED = Variant(f"finest layers ({FINEST}), later steps (16-30)", {"layers": FINEST, "steps": "16-30"})


def study_variants(steps: int) -> list[Variant]:
    half = steps // 2
    record = {
        "finest layers only (8×8: IN01-IN02, OUT09-OUT11)": {"layers": FINEST},
        "8×8 and 4×4 layers (no 2×2, no 1×1 M00)": {"layers": "IN01-IN05,OUT06-OUT11"},
        "up blocks only (OUT03-OUT11)": {"layers": "OUT00-OUT11"},
        "down blocks only (IN01-IN08)": {"layers": "IN00-IN11"},
        f"later steps ({half + 1}-{steps})": {"steps": f"{half + 1}-{steps}"},
        f"earlier steps (1-{half})": {"steps": f"1-{half}"},
        "heads max": {"heads": "max"},
        "finest layers, heads max": {"layers": FINEST, "heads": "max"},
    }
    out = [DEFAULT, *(Variant(name, s) for name, s in record.items())]
    out += [Variant(TUNED.name, TUNED.settings)]
    out += [Variant("default, bicubic final upsampling", {}, bicubic)]
    out += [Variant("default, each cell's share over the scored words", {}, share)]
    return out


# --------------------------------------------------------------------------------------------------------------------
# Generation with the recorder attached


@dataclass
class Generated:
    scene: Scene
    split: str
    image: np.ndarray
    heats: dict[str, dict[str, torch.Tensor]]  # per recorder settings key: raw totals per word


class DemoRunner:
    """Generates one scene at a time on a diffusers model with word heat maps over every word of its caption."""

    def __init__(self, model_dir: Path, device: str, steps: int, guidance: float) -> None:
        from lib_dumpunet.diffusers.model import load_model

        self.model = load_model(model_dir, device=device)
        self.side = 8 * int(self.model.unet.config.sample_size)
        self.steps, self.guidance = steps, guidance

    def words(self, caption: str, names: Iterable[str]) -> list[WordColumns]:
        from lib_dumpunet.cli.heatmap import heat_words
        from lib_dumpunet.heatmap import HeatmapSettings

        listed = ", ".join(f'"{n}"' for n in names)
        return heat_words(self.model, caption, "", HeatmapSettings(words=listed))

    def generate(self, caption: str, seed: int, settings: dict[str, str], names: Sequence[str]):
        from lib_dumpunet.diffusers.generate import Generation
        from lib_dumpunet.diffusers.run import prepare, run
        from lib_dumpunet.settings import from_mapping

        gen = Generation(caption, seed=seed, steps=self.steps, cfg_scale=self.guidance, width=self.side,
                         height=self.side)  # fmt: skip
        job = from_mapping({"heatmap.enabled": True, **{f"heatmap.{k}": v for k, v in settings.items()}})
        plan = prepare(self.model, job, gen, dump_base=Path("unused"))
        (image,) = run(self.model, plan, gen).images
        heats: list[WordHeat] = word_heats(image.heat, image.index, self.words(caption, names))
        return np.asarray(image.image.convert("RGB")), {w: h.total for w, h in zip(names, heats, strict=True)}


def _key(settings: dict[str, str]) -> str:
    return repr(sorted(settings.items()))


def generate_set(
    runner: DemoRunner, seed: int, scenes: int, variants: Sequence[Variant], log: Callable[[str], None]
) -> list[Generated]:
    """`scenes` scenes of each split of world seed `seed`, each generated once per distinct recorder setting."""
    out = []
    settings = {_key(v.settings): v.settings for v in variants}
    for split in SPLITS:
        for index in range(scenes):
            scene = scene_at(seed, index, split)  # type: ignore[arg-type]
            names = sorted({w for obj in scene.objects for w in (obj.colour, obj.shape)})
            heats: dict[str, dict[str, torch.Tensor]] = {}
            image = None
            for key, s in settings.items():
                picture, heats[key] = runner.generate(scene.caption, index, s, names)
                if image is not None and not np.array_equal(image, picture):
                    raise RuntimeError("the recorder's settings changed the generated image")
                image = picture
            out.append(Generated(scene, split, image, heats))  # type: ignore[arg-type]
            log(f"  {split} {index + 1}/{scenes}: {scene.caption}")
    return out


# --------------------------------------------------------------------------------------------------------------------
# Scoring


@dataclass
class Tally:
    """IoUs of the words kept, and how many words were left out (object not found)."""

    ious: list[float] = field(default_factory=list)
    left_out: int = 0

    @property
    def mean(self) -> float:
        return statistics.mean(self.ious) if self.ious else float("nan")

    @property
    def spread(self) -> float:
        """Half the width of the mean's 95 % confidence interval (1.96 σ/√n)."""
        return 1.96 * statistics.stdev(self.ious) / len(self.ious) ** 0.5 if len(self.ious) > 1 else float("nan")


def score_set(generated: Sequence[Generated], variants: Sequence[Variant], side: int) -> dict:
    """Tallies keyed by (variant name or baseline, split, kind)."""
    tallies: dict[tuple[str, str, str], Tally] = {}
    centre = centre_map(side)
    images_left_out = 0
    for g in generated:
        truths = word_truths(g.scene, analyse(g.image))
        images_left_out += any(t.mask is None for t in truths)
        for t in truths:
            names = [v.name for v in variants] + ["uniform", "centre"]
            for name in names:
                tally = tallies.setdefault((name, g.split, t.kind), Tally())
                if t.mask is None:
                    tally.left_out += 1
                    continue
                if name == "uniform":
                    tally.ious.append(iou(np.ones((side, side), np.float32), t.mask))
                elif name == "centre":
                    tally.ious.append(iou(centre, t.mask))
                else:
                    v = next(v for v in variants if v.name == name)
                    tally.ious.append(iou(v.post(g.heats[_key(v.settings)], t.word, side), t.mask))
    return {"tallies": tallies, "images_left_out": images_left_out}


def _merged(tallies: dict, name: str, splits: Sequence[str], kinds: Sequence[str]) -> Tally:
    out = Tally()
    for split in splits:
        for kind in kinds:
            t = tallies.get((name, split, kind))
            if t is not None:
                out.ious += t.ious
                out.left_out += t.left_out
    return out


def print_final(result: dict, scenes: int, seconds: float) -> None:
    tallies = result["tallies"]
    print(f"Word heat-map mIoU on the demo model (τ = {THRESHOLD}), set 'final' (world seed {SETS['final']}), "
          f"{scenes} scenes per split, {STEPS} DDIM steps, guidance {GUIDANCE:g}")  # fmt: skip
    print()
    print("| scenes | words | n | left out | mIoU, defaults | mIoU, tuned | uniform | centre | target ≥ 0.5 |")
    print("|---|---|---|---|---|---|---|---|---|")
    rows = [(("train",), "seen pairs"), (("held_out",), "held-out pairs"), (SPLITS, "all")]
    for splits, label in rows:
        for kinds in (("shape",), ("colour",), KINDS):
            ours, tuned, uni, cen = (_merged(tallies, v, splits, kinds) for v in (DEFAULT.name, TUNED.name, "uniform",
                                                                                  "centre"))  # fmt: skip
            kind = "shape + colour" if len(kinds) == 2 else kinds[0]
            met = " / ".join("met" if t.mean >= TARGET else "not met" for t in (ours, tuned))
            cells = [label, kind, str(len(ours.ious)), str(ours.left_out), f"**{ours.mean:.3f}** ± {ours.spread:.3f}",
                     f"{tuned.mean:.3f} ± {tuned.spread:.3f}", f"{uni.mean:.3f}", f"{cen.mean:.3f}", met]  # fmt: skip
            print("| " + " | ".join(cells) + " |")
    print(f"\nDefaults: every attn2 layer, every step, heads mean (HeatmapSettings()). Tuned: {TUNED.name}, chosen "
          f"on the 'tune' set. {result['images_left_out']} of {2 * scenes} images had a word whose object the "
          f"analyser did not find (those words are left out). ± is half the 95 % confidence interval of the mean "
          f"(1.96 σ/√n). {seconds:.0f} s.")  # fmt: skip


def print_study(result: dict, variants: Sequence[Variant], scenes: int, seconds: float) -> None:
    tallies = result["tallies"]
    print(f"Choices that could matter, set 'tune' (world seed {SETS['tune']}), {scenes} scenes per split "
          f"(seen + held-out pairs together), τ = {THRESHOLD}")  # fmt: skip
    print()
    print("| variant | shape words | colour words | both |")
    print("|---|---|---|---|")
    for name in [v.name for v in variants] + ["uniform", "centre"]:
        cells = [_merged(tallies, name, SPLITS, kinds).mean for kinds in (("shape",), ("colour",), KINDS)]
        print(f"| {name} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
    n = len(_merged(tallies, "uniform", SPLITS, KINDS).ious)
    print(f"\n{n} words scored; {seconds:.0f} s.")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / "demo" / "model")
    parser.add_argument("--scenes", type=int, help="scenes per split (default: 50, with --study 25)")
    parser.add_argument("--set", choices=tuple(SETS), default="final", dest="which")
    parser.add_argument("--study", action="store_true", help="compare the choices (on the 'tune' set by default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    which = "tune" if args.study and "--set" not in (argv or sys.argv) else args.which
    scenes = args.scenes or (25 if args.study else 50)

    def log(text: str) -> None:
        if not args.quiet:
            print(text, file=sys.stderr, flush=True)

    started = time.perf_counter()
    runner = DemoRunner(args.model, args.device, STEPS, GUIDANCE)
    variants = study_variants(STEPS) if args.study else [DEFAULT, TUNED]
    generated = generate_set(runner, SETS[which], scenes, variants, log)
    result = score_set(generated, variants, runner.side)
    seconds = time.perf_counter() - started
    if args.study:
        print_study(result, variants, scenes, seconds)
    else:
        print_final(result, scenes, seconds)


if __name__ == "__main__":
    main()
