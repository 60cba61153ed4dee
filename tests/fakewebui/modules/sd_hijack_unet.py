"""Mirror of modules/sd_hijack_unet.py, the part that matters here: `th`, a stand-in for torch inside ldm's U-Net
module whose `cat` first resizes the upsampled tensor to its skip tensor (nearest), so image sizes that are multiples
of 8 but not of 64 work. Installed while the fake webui is active (`apply()`), removed by the fixture (`undo()`)."""

from ldm.modules.diffusionmodules import openaimodel
from unets import TorchHijackForUnet  # the one implementation, shared with tests that call the U-Net directly

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
