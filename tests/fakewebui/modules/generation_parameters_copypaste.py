"""Test double of webui `modules/generation_parameters_copypaste.py`: the name infotext_utils had before v1.8, which
v1.10.1 keeps for old extensions by re-exporting everything from it."""

from modules.infotext_utils import *  # noqa: F403
