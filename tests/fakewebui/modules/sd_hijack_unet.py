"""Mirror of modules/sd_hijack_unet.py, the part that matters here: `th`, a stand-in for torch inside ldm's U-Net
module whose `cat` first resizes the upsampled tensor to its skip tensor (nearest), so image sizes that are multiples
of 8 but not of 64 work. Installed while the fake webui is active (`apply()`), removed by the fixture (`undo()`)."""

import torch
from ldm.modules.diffusionmodules import openaimodel


class TorchHijackForUnet:
    """This is torch, but with cat that resizes tensors to appropriate dimensions if they do not match"""

    def __getattr__(self, item):
        if item == "cat":
            return self.cat

        if hasattr(torch, item):
            return getattr(torch, item)

        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{item}'")

    def cat(self, tensors, *args, **kwargs):
        if len(tensors) == 2:
            a, b = tensors
            if a.shape[-2:] != b.shape[-2:]:
                a = torch.nn.functional.interpolate(a, b.shape[-2:], mode="nearest")

            tensors = (a, b)

        return torch.cat(tensors, *args, **kwargs)


th = TorchHijackForUnet()
_original_th = None


def apply():
    global _original_th
    if openaimodel.th is not th:
        _original_th = openaimodel.th
        openaimodel.th = th


def undo():
    global _original_th
    if openaimodel.th is th and _original_th is not None:
        openaimodel.th = _original_th
        _original_th = None
