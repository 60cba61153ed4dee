"""Mirror of modules/sd_vae.py, reduced: the fake model's VAE is built in and never swapped."""

vae_dict = {}
unspecified = object()
loaded_vae_file = None
base_vae = None
checkpoint_info = None


def get_loaded_vae_name():
    return None


def get_loaded_vae_hash():
    return None


def reload_vae_weights(sd_model=None, vae_file=unspecified):
    from modules import shared

    return sd_model or shared.sd_model
