"""Test double of webui v1.10.1 `modules/devices.py` for a CPU-only, full-precision webui (as with
`--use-cpu all --no-half`): every device is the CPU, every dtype float32, autocast never engages, and the NaN check
looks at one element of the tensor, as the webui's does."""

from __future__ import annotations

import contextlib

import torch

cpu = torch.device("cpu")
device = device_interrogate = device_gfpgan = device_esrgan = device_codeformer = cpu
dtype = dtype_vae = dtype_unet = dtype_inference = torch.float32
unet_needs_upcast = False  # fp32 U-Net: no upcasting around sampling
fp8 = False


def get_optimal_device_name():
    return cpu.type


def get_optimal_device():
    return cpu


def cond_cast_unet(input):
    """Cast to the U-Net's dtype only when it needs upcasting (never here)."""
    return input.to(dtype_unet) if unet_needs_upcast else input


def cond_cast_float(input):
    return input.float() if unet_needs_upcast else input


def torch_gc():
    """Frees CUDA/MPS caches in the webui; the CPU has none."""


def torch_npu_set_device():
    """Ascend NPUs only."""


def autocast(disable=False):
    return contextlib.nullcontext()


def without_autocast(disable=False):
    return contextlib.nullcontext()


class NansException(Exception):
    pass


def test_for_nans(x, where):
    """Raises NansException when the first element of `x` is NaN (unless --disable-nan-check)."""
    from modules import shared

    first = x.reshape(-1)[:1]
    if not shared.cmd_opts.disable_nan_check and bool(torch.isnan(first).any()):
        raise NansException(f"A tensor with all NaNs was produced in {where}.")
