"""Writes the demo model as an ldm checkpoint the webui can list: `<name>.safetensors`, `<name>.yaml` beside it,
and `<name>-clip/` (the text encoder's config and the CLIP tokenizer, which the yaml's text encoder reads).

    python demo/to_ldm.py /path/to/webui/models/Stable-diffusion/dumpunet-demo

The weights are the diffusers folder's (`demo/model/`), renamed to the ldm layout the webui's SD1 config builds:
`model.diffusion_model.*` (input_blocks / middle_block / output_blocks), `first_stage_model.*` (encoder.down … /
decoder.up …) and `cond_stage_model.transformer.*`. The yaml says v-prediction, the VAE's scaling factor and the
small widths. The yaml names the tokenizer folder by its absolute path, so move all three together and rerun if
they move. `--check` rebuilds ldm's U-Net and VAE modules from the yaml's settings, loads the renamed weights
strictly and compares their outputs with diffusers' on random inputs.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

DEMO = Path(__file__).resolve().parent
log = logging.getLogger("demo.to_ldm")

_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _rename_resnet(rest: str, table: dict[str, str]) -> str:
    head, _, tail = rest.partition(".")
    return f"{table.get(head, head)}.{tail}"


def unet_key(key: str, attention_up_blocks: set[int]) -> str:
    """ldm UNetModel name of a diffusers UNet2DConditionModel (SD1 layout, two layers per block) parameter."""
    fixed = {
        "time_embedding.linear_1.": "time_embed.0.",
        "time_embedding.linear_2.": "time_embed.2.",
        "conv_in.": "input_blocks.0.0.",
        "conv_norm_out.": "out.0.",
        "conv_out.": "out.2.",
    }
    for old, new in fixed.items():
        if key.startswith(old):
            return new + key[len(old) :]
    if m := re.match(r"down_blocks\.(\d)\.(resnets|attentions)\.(\d)\.(.*)", key):
        block = 3 * int(m[1]) + int(m[3]) + 1
        if m[2] == "resnets":
            return f"input_blocks.{block}.0.{_rename_resnet(m[4], _RESNET)}"
        return f"input_blocks.{block}.1.{m[4]}"
    if m := re.match(r"down_blocks\.(\d)\.downsamplers\.0\.conv\.(.*)", key):
        return f"input_blocks.{3 * int(m[1]) + 3}.0.op.{m[2]}"
    if m := re.match(r"mid_block\.resnets\.(\d)\.(.*)", key):
        return f"middle_block.{2 * int(m[1])}.{_rename_resnet(m[2], _RESNET)}"
    if m := re.match(r"mid_block\.attentions\.0\.(.*)", key):
        return f"middle_block.1.{m[1]}"
    if m := re.match(r"up_blocks\.(\d)\.(resnets|attentions)\.(\d)\.(.*)", key):
        block = 3 * int(m[1]) + int(m[3])
        if m[2] == "resnets":
            return f"output_blocks.{block}.0.{_rename_resnet(m[4], _RESNET)}"
        return f"output_blocks.{block}.1.{m[4]}"
    if m := re.match(r"up_blocks\.(\d)\.upsamplers\.0\.conv\.(.*)", key):
        index = 2 if int(m[1]) in attention_up_blocks else 1
        return f"output_blocks.{3 * int(m[1]) + 2}.{index}.conv.{m[2]}"
    raise KeyError(f"no ldm name for U-Net parameter {key}")


def vae_key(key: str, levels: int) -> str:
    """ldm AutoencoderKL name of a diffusers AutoencoderKL parameter."""
    vae_resnet = {"conv_shortcut": "nin_shortcut"}
    if m := re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d)\.(.*)", key):
        return f"{m[1]}.mid.block_{int(m[2]) + 1}.{_rename_resnet(m[3], vae_resnet)}"
    if m := re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.*)", key):
        for old, new in _VAE_ATTENTION.items():
            if m[2].startswith(old + "."):
                return f"{m[1]}.mid.attn_1.{new}{m[2][len(old) :]}"
    if m := re.match(r"encoder\.down_blocks\.(\d)\.resnets\.(\d)\.(.*)", key):
        return f"encoder.down.{m[1]}.block.{m[2]}.{_rename_resnet(m[3], vae_resnet)}"
    if m := re.match(r"encoder\.down_blocks\.(\d)\.downsamplers\.0\.conv\.(.*)", key):
        return f"encoder.down.{m[1]}.downsample.conv.{m[2]}"
    if m := re.match(r"decoder\.up_blocks\.(\d)\.resnets\.(\d)\.(.*)", key):
        return f"decoder.up.{levels - 1 - int(m[1])}.block.{m[2]}.{_rename_resnet(m[3], vae_resnet)}"
    if m := re.match(r"decoder\.up_blocks\.(\d)\.upsamplers\.0\.conv\.(.*)", key):
        return f"decoder.up.{levels - 1 - int(m[1])}.upsample.conv.{m[2]}"
    if m := re.match(r"(encoder|decoder)\.conv_norm_out\.(.*)", key):
        return f"{m[1]}.norm_out.{m[2]}"
    if re.match(r"(encoder\.|decoder\.)?(conv_in|conv_out|quant_conv|post_quant_conv)\.", key):
        return key
    raise KeyError(f"no ldm name for VAE parameter {key}")


def _renamed(weights: dict[str, torch.Tensor], rename: Callable[[str], str]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in weights.items():
        new = rename(key)
        # ldm's VAE attention uses 1×1 convolutions where diffusers uses linear layers.
        if ".mid.attn_1." in new and new.endswith("weight") and value.ndim == 2:
            value = value[:, :, None, None]
        out[new] = value.float().contiguous()
    return out


def ldm_state_dict(model: Path) -> dict[str, torch.Tensor]:
    unet_config = json.loads((model / "unet" / "config.json").read_text("utf-8"))
    vae_config = json.loads((model / "vae" / "config.json").read_text("utf-8"))
    attention_up = {i for i, kind in enumerate(unet_config["up_block_types"]) if "CrossAttn" in kind}
    levels = len(vae_config["block_out_channels"])
    unet = _renamed(
        load_file(model / "unet" / "diffusion_pytorch_model.safetensors"), lambda k: unet_key(k, attention_up)
    )
    vae = _renamed(load_file(model / "vae" / "diffusion_pytorch_model.safetensors"), lambda k: vae_key(k, levels))
    text = load_file(model / "text_encoder" / "model.safetensors")
    state = {f"model.diffusion_model.{k}": v for k, v in unet.items()}
    state |= {f"first_stage_model.{k}": v for k, v in vae.items()}
    state |= {f"cond_stage_model.transformer.{k}": v.float().contiguous() for k, v in text.items()}
    return state


def ldm_settings(model: Path) -> dict:
    """The yaml's model section: ldm's names for the diffusers folder's configuration."""
    unet = json.loads((model / "unet" / "config.json").read_text("utf-8"))
    vae = json.loads((model / "vae" / "config.json").read_text("utf-8"))
    sched = json.loads((model / "scheduler" / "scheduler_config.json").read_text("utf-8"))
    widths = unet["block_out_channels"]
    heads = unet["attention_head_dim"]
    attention_levels = [2**i for i, kind in enumerate(unet["down_block_types"]) if "CrossAttn" in kind]
    vae_widths = vae["block_out_channels"]
    return {
        "target": "ldm.models.diffusion.ddpm.LatentDiffusion",
        "params": {
            "linear_start": sched["beta_start"],
            "linear_end": sched["beta_end"],
            "num_timesteps_cond": 1,
            "log_every_t": 200,
            "timesteps": sched["num_train_timesteps"],
            "first_stage_key": "jpg",
            "cond_stage_key": "txt",
            "image_size": unet["sample_size"],
            "channels": unet["in_channels"],
            "cond_stage_trainable": False,
            "conditioning_key": "crossattn",
            "monitor": "val/loss_simple_ema",
            "scale_factor": vae["scaling_factor"],
            "use_ema": False,
            "parameterization": "v" if sched["prediction_type"] == "v_prediction" else "eps",
            "unet_config": {
                "target": "ldm.modules.diffusionmodules.openaimodel.UNetModel",
                "params": {
                    "image_size": unet["sample_size"],
                    "in_channels": unet["in_channels"],
                    "out_channels": unet["out_channels"],
                    "model_channels": widths[0],
                    "attention_resolutions": attention_levels[::-1],
                    "num_res_blocks": unet["layers_per_block"],
                    "channel_mult": [w // widths[0] for w in widths],
                    "num_heads": heads,
                    "use_spatial_transformer": True,
                    "transformer_depth": 1,
                    "context_dim": unet["cross_attention_dim"],
                    "use_checkpoint": False,
                    "legacy": False,
                },
            },
            "first_stage_config": {
                "target": "ldm.models.autoencoder.AutoencoderKL",
                "params": {
                    "embed_dim": vae["latent_channels"],
                    "monitor": "val/rec_loss",
                    "ddconfig": {
                        "double_z": True,
                        "z_channels": vae["latent_channels"],
                        "resolution": vae["sample_size"],
                        "in_channels": vae["in_channels"],
                        "out_ch": vae["out_channels"],
                        "ch": vae_widths[0],
                        "ch_mult": [w // vae_widths[0] for w in vae_widths],
                        "num_res_blocks": vae["layers_per_block"],
                        "attn_resolutions": [],
                        "dropout": 0.0,
                    },
                    "lossconfig": {"target": "torch.nn.Identity"},
                },
            },
        },
    }


def _yaml(value: object, indent: int = 0) -> str:
    """A small YAML writer for nested dicts of scalars and flat lists (what the config needs; no dependency)."""
    pad = "  " * indent
    lines = []
    for key, item in value.items():  # type: ignore[attr-defined]
        if isinstance(item, dict):
            lines.append(f"{pad}{key}:")
            lines.append(_yaml(item, indent + 1))
        elif isinstance(item, list):
            lines.append(f"{pad}{key}: [{', '.join(json.dumps(v) for v in item)}]")
        else:
            lines.append(f"{pad}{key}: {json.dumps(item)}")
    return "\n".join(lines)


def write(model: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    clip = target.parent / f"{target.name}-clip"
    if clip.exists():
        shutil.rmtree(clip)
    shutil.copytree(model / "tokenizer", clip)
    shutil.copy(model / "text_encoder" / "config.json", clip / "config.json")
    save_file(ldm_state_dict(model), target.with_suffix(".safetensors"))
    settings = ldm_settings(model)
    settings["params"]["cond_stage_config"] = {
        "target": "ldm.modules.encoders.modules.FrozenCLIPEmbedder",
        "params": {"version": str(clip.resolve())},
    }
    target.with_suffix(".yaml").write_text(_yaml({"model": settings}) + "\n", "utf-8")
    log.info("wrote %s(.safetensors, .yaml) and %s", target, clip)


def check(model: Path, clip: Path | None) -> None:
    """ldm's own U-Net and VAE modules, built from the yaml settings with the renamed weights, give diffusers'
    outputs; so does a CLIPTextModel built from the `-clip` folder's config (as the webui builds it, weights from
    the checkpoint), and that folder's tokenizer gives the same ids."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from ldm.modules.diffusionmodules.model import Decoder, Encoder
    from ldm.modules.diffusionmodules.openaimodel import UNetModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    state = ldm_state_dict(model)
    params = ldm_settings(model)["params"]
    ldm_unet = UNetModel(**params["unet_config"]["params"]).eval()
    ldm_unet.load_state_dict(
        {k[len("model.diffusion_model.") :]: v for k, v in state.items() if k.startswith("model.diffusion_model.")}
    )
    ddconfig = params["first_stage_config"]["params"]["ddconfig"]
    encoder, decoder = Encoder(**ddconfig).eval(), Decoder(**ddconfig).eval()
    vae_state = {k[len("first_stage_model.") :]: v for k, v in state.items() if k.startswith("first_stage_model.")}
    encoder.load_state_dict({k[8:]: v for k, v in vae_state.items() if k.startswith("encoder.")})
    decoder.load_state_dict({k[8:]: v for k, v in vae_state.items() if k.startswith("decoder.")})
    unet = UNet2DConditionModel.from_pretrained(str(model), subfolder="unet", local_files_only=True).eval()
    vae = AutoencoderKL.from_pretrained(str(model), subfolder="vae", local_files_only=True).eval()
    g = torch.Generator().manual_seed(0)
    side = unet.config.sample_size
    x = torch.randn(2, 4, side, side, generator=g)
    t = torch.tensor([10, 700])
    context = torch.randn(2, 77, unet.config.cross_attention_dim, generator=g)
    image = torch.rand(2, 3, 8 * side, 8 * side, generator=g) * 2 - 1
    with torch.no_grad():
        unet_gap = (ldm_unet(x, timesteps=t, context=context) - unet(x, t, context).sample).abs().max()
        decoded_gap = (decoder(x) - vae.decoder(x)).abs().max()
        encoded_gap = (encoder(image) - vae.encoder(image)).abs().max()
    text_gap = torch.tensor(0.0)
    if clip is not None:
        prompt = "a small red circle and a large blue square on a white background"
        ids = CLIPTokenizer.from_pretrained(str(clip), local_files_only=True)(prompt, return_tensors="pt").input_ids
        reference = CLIPTokenizer.from_pretrained(str(model), subfolder="tokenizer", local_files_only=True)
        if ids.tolist() != reference(prompt, return_tensors="pt").input_ids.tolist():
            raise SystemExit("the -clip folder's tokenizer differs from the model's")
        rebuilt = CLIPTextModel(CLIPTextConfig.from_pretrained(str(clip), local_files_only=True)).eval()
        prefix = "cond_stage_model.transformer."
        rebuilt.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})
        shipped = CLIPTextModel.from_pretrained(str(model), subfolder="text_encoder", local_files_only=True).eval()
        with torch.no_grad():
            text_gap = (rebuilt(ids).last_hidden_state - shipped(ids).last_hidden_state).abs().max()
    gaps = (unet_gap, decoded_gap, encoded_gap, text_gap)
    log.info("largest differences: U-Net %.2e, VAE decoder %.2e, VAE encoder %.2e, text encoder %.2e", *gaps)
    if max(gaps) > 1e-4:
        raise SystemExit("ldm modules disagree with diffusers")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", type=Path, nargs="?", help="checkpoint path without suffix")
    parser.add_argument("--model", type=Path, default=DEMO / "model")
    parser.add_argument("--check", action="store_true", help="compare ldm's modules with diffusers'")
    args = parser.parse_args()
    if args.target is not None:
        write(args.model, args.target)
    if args.check:
        check(args.model, None if args.target is None else args.target.parent / f"{args.target.name}-clip")


if __name__ == "__main__":
    main()
