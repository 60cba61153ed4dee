"""The `dumpunet` command: Dump U-Net's jobs on a local diffusers model, written as PNGs, dumps and a page.

    dumpunet demo                                   the main job on the project's demo model, then open the page
    dumpunet features -p "a cat" --layers IN04-OUT03 --map-steps 5,10
    dumpunet attention -p "a cat" --outputs "Q*K,V*Q*K" --self-attention --query-points 4x4
    dumpunet layer-prompt -p "a (~: IN00-IN11: red ; _: blue :~) circle" --diff
    dumpunet heatmap -p "a red circle and a blue square" --words "circle, blue square" --per-step
    dumpunet vxa photo.png -p "a red hat, a long neck" --tokens "hat, neck"
    dumpunet estimate --name neg -p "x" -n "(bad quality:1.4), lowres" --target negative --mode unet

Every command takes the generation options (prompt, seed, steps, size, sampler …), `--model` (any local diffusers
SD1/SD2/SDXL folder; the repository's demo model by default) and `--out` (default ./dumpunet-out). The tab options
mirror the webui's controls and grammars; `--set PATH=VALUE` reaches any other setting by its path (as in the API,
e.g. `features.colors.method=Sigmoid`). Mistakes stop the command before generation with the webui's message
(caret line included) and exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lib_dumpunet.cli import estimate, heatmap, vxa
from lib_dumpunet.errors import DumpUnetError
from lib_dumpunet.settings import AVERAGE_CHOICES, FIELDS, JobSettings, from_mapping

__all__ = ["DEFAULT_MODEL", "DEMO_PROMPT", "build_parser", "main"]

log = logging.getLogger(__name__)

DEFAULT_MODEL = Path(__file__).resolve().parents[2] / "demo" / "model"
DEMO_PROMPT = "a large red circle and a small blue square on a white background"
EXIT_USAGE = 2
_FIELD_TYPES = {f.path: f.type for f in FIELDS}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit status 2, as argparse does but with our prefix
        self.exit(EXIT_USAGE, f"dumpunet: error: {message} (see dumpunet {self.prog.split()[-1]} --help)\n")


def _common(p: argparse.ArgumentParser, *, demo: bool = False) -> None:
    g = p.add_argument_group("model and output")
    g.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="diffusers SD1/SD2/SDXL folder (default: demo)")
    g.add_argument("--out", type=Path, default=Path("dumpunet-out"), help="output folder (default: %(default)s)")
    g.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda (default: %(default)s)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g = p.add_argument_group("generation")
    g.add_argument("-p", "--prompt", default=DEMO_PROMPT if demo else None, required=not demo)
    g.add_argument("-n", "--negative", default="", help="negative prompt")
    g.add_argument("--seed", type=int, default=1)
    g.add_argument("--steps", type=int, default=20, help="sampler steps (default: %(default)s)")
    g.add_argument("--cfg-scale", type=float, default=7.0)
    g.add_argument("--width", type=int, help="default: the model's native size")
    g.add_argument("--height", type=int, help="default: the model's native size")
    g.add_argument("--batch-size", type=int, default=1)
    g.add_argument("--batch-count", type=int, default=1)
    g.add_argument("--sampler", help="euler, euler-a, ddim, dpm++2m, heun, pndm (default: the model's scheduler)")
    g = p.add_argument_group("settings (tab 'Settings' of the webui)")
    g.add_argument("--uncond", action="store_true", help="also capture the negative prompt's rows")
    g.add_argument("--fp16", action="store_true", help="keep captured tensors as fp16")
    g.add_argument("--debug", action="store_true", help="log what Dump U-Net does to stderr")
    g.add_argument("--set", action="append", default=[], metavar="PATH=VALUE", help="any setting by its path")


def _tab(p: argparse.ArgumentParser, *, layers_help: str) -> None:
    g = p.add_argument_group("maps")
    g.add_argument("--layers", help=layers_help)
    g.add_argument("--map-steps", default="", help="steps to draw maps at, e.g. 5,10-20(+5) (default: every step)")
    g.add_argument("--average", choices=AVERAGE_CHOICES, default="disable", help="also draw the averaged map")
    g.add_argument("--dump", action="store_true", help="write the captured tensors (see --dump-format)")
    g.add_argument("--dump-format", choices=("npy", "legacy"), default="npy")
    g.add_argument("--dump-path", default="", help="dump folder, relative to --out (default: dumpunet)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="dumpunet", description=__doc__.split("\n\n")[0] if __doc__ else None)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    demo = commands.add_parser("demo", help="features and cross-attention of every block on the demo model")
    _common(demo, demo=True)
    features = commands.add_parser("features", help="U-Net features: block outputs as channel grids")
    _common(features)
    _tab(features, layers_help="blocks (IN04,M00,OUT00-OUT03) and the views latent, x0, cfg (default: every block)")
    attention = commands.add_parser("attention", help="cross-attention K, Q*K, V*Q*K and self-attention maps")
    _common(attention)
    _tab(attention, layers_help="blocks whose attention to draw (default: every block with attention)")
    g = attention.add_argument_group("attention")
    g.add_argument("--outputs", default="Q*K", help="comma list of K, Q*K, V*Q*K, or '' (default: %(default)s)")
    g.add_argument("--self-attention", action="store_true", help="draw where the query points look")
    g.add_argument("--query-points", default="4x4", help="4x4 (a grid) or 'x,y; x,y' fractions")
    g.add_argument("--no-token-labels", action="store_true", help="no token names under Q*K columns")
    g.add_argument(
        "--prompt-tensor",
        action="store_true",
        help="also draw the conditioning the U-Net reads (77 rows a chunk x the encoder's width), tokens labelled",
    )
    layer = commands.add_parser("layer-prompt", help="per-block prompts (~: BLOCKS: text ; … :~) and difference maps")
    _common(layer)
    _tab(layer, layers_help="blocks for difference maps (with --diff; default: every block)")
    layer.add_argument("--diff", action="store_true", help="difference of features with and without the prompts")
    heatmap.add_parser(commands, _common)
    vxa.add_parser(commands, DEFAULT_MODEL)
    estimate.add_parser(commands, DEFAULT_MODEL)
    return parser


def _converted(path: str, text: str) -> Any:
    kind = _FIELD_TYPES.get(path)
    if kind is bool:
        if text.lower() not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
            msg = f"--set {path}={text}: give true or false"
            raise DumpUnetError(msg)
        return text.lower() in ("true", "1", "yes", "on")
    if kind is float:
        try:
            return float(text)
        except ValueError:
            msg = f"--set {path}={text}: give a number"
            raise DumpUnetError(msg) from None
    return text


def _overrides(pairs: Sequence[str]) -> dict[str, Any]:
    out = {}
    for pair in pairs:
        path, sep, value = pair.partition("=")
        if not sep:
            msg = f"--set {pair}: write PATH=VALUE, e.g. features.colors.method=Sigmoid"
            raise DumpUnetError(msg)
        out[path.strip()] = _converted(path.strip(), value)
    return out


def _maps_tab(args: argparse.Namespace, names: Sequence[str]) -> dict[str, Any]:
    return {
        "enabled": True,
        "layers": args.layers if args.layers is not None else f"{names[0]}-{names[-1]}",
        "steps": args.map_steps,
        "average": args.average,
        "dump": {"enabled": args.dump, "format": args.dump_format, "folder": args.dump_path},
    }


def job_settings(args: argparse.Namespace, names: Sequence[str]) -> JobSettings:
    """The webui settings record the command's options stand for; `names` are the model's block names."""
    data: dict[str, Any] = {}
    every = f"{names[0]}-{names[-1]}"
    if args.command == "demo":
        steps = ",".join(str(s) for s in sorted({max(1, args.steps * q // 4) for q in range(5)}))
        data["features"] = {"enabled": True, "layers": every, "steps": steps, "average": "sum"}
        data["attention"] = {"enabled": True, "layers": every, "steps": steps, "outputs": ["Q*K"], "average": "sum"}
    elif args.command == "features":
        data["features"] = _maps_tab(args, names)
    elif args.command == "attention":
        data["attention"] = _maps_tab(args, names) | {
            "outputs": [o.strip() for o in args.outputs.split(",") if o.strip()],
            "self_attention": args.self_attention,
            "query_points": args.query_points,
            "token_labels": not args.no_token_labels,
        }
        if args.prompt_tensor:
            data["prompt_tensor"] = {"enabled": True}
    elif args.command == "heatmap":
        data["heatmap"] = heatmap.section(args)
    else:
        data["layer_prompt"] = _maps_tab(args, names) | {"diff": args.diff}
    data["output"] = {"uncond": args.uncond, "fp16": args.fp16, "debug": args.debug}
    flat = _flatten(data) | _overrides(args.set)
    return from_mapping(flat)


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out |= _flatten(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.debug:
        logging.basicConfig(level=logging.WARNING, format="[Dump U-Net] %(name)s: %(message)s")
        logging.getLogger("lib_dumpunet").setLevel(logging.DEBUG)
    try:
        if args.command == "vxa":
            run_command = vxa.run_command
        elif args.command == "estimate":
            run_command = estimate.run_command
        elif args.command == "heatmap":
            run_command = heatmap.run_command
        else:
            from lib_dumpunet.cli.job import run_command  # imports torch and diffusers: only once the options parse
    except ImportError as err:
        sys.stderr.write(f"dumpunet: error: {err}; install the extra: pip install 'sd-webui-dumpunet[cli]'\n")
        return 1
    started = time.monotonic()
    try:
        page = run_command(args, "dumpunet " + shlex.join(argv))
    except DumpUnetError as err:
        sys.stderr.write(f"dumpunet: error: {err.message}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        sys.stderr.write("dumpunet: interrupted\n")
        return 130
    sys.stdout.write(f"wrote {page} ({time.monotonic() - started:.0f} s)\n")
    return 0
