"""Mirror of modules/sd_unet.py, reduced: no replacement U-Nets (`SdUnet`) are ever active in the fake."""

current_unet_option = None
current_unet = None
original_forward = None


def list_unets():
    pass


def get_unet_option(option=None):
    return None


def apply_unet(option=None):
    pass
