"""Mirror of modules/devices.py on a CPU-only, fp32 machine (as the webui runs with --use-cpu all --no-half)."""

import contextlib

import torch

cpu = torch.device("cpu")
device = device_interrogate = device_gfpgan = device_esrgan = device_codeformer = cpu
dtype = torch.float32
dtype_vae = torch.float32
dtype_unet = torch.float32
dtype_inference = torch.float32
unet_needs_upcast = False
fp8 = False


def get_optimal_device():
    return cpu


def get_optimal_device_name():
    return "cpu"


def cond_cast_unet(input):
    return input.to(dtype_unet) if unet_needs_upcast else input


def cond_cast_float(input):
    return input.float() if unet_needs_upcast else input


def torch_gc():
    pass


def torch_npu_set_device():
    pass


def autocast(disable=False):
    """CUDA autocast in the real webui; fp32 on CPU never autocasts."""
    return contextlib.nullcontext()


def without_autocast(disable=False):
    return contextlib.nullcontext()


class NansException(Exception):
    pass


def test_for_nans(x, where):
    from modules import shared

    if shared.cmd_opts.disable_nan_check:
        return
    if not torch.isnan(x[(0,) * len(x.shape)]):
        return
    raise NansException(f"A tensor with NaNs was produced in {where}.")
