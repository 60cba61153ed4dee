"""Mirror of modules/generation_parameters_copypaste.py: the pre-1.8 name of infotext_utils, kept as an alias."""

from modules.infotext_utils import *  # noqa: F403
from modules.infotext_utils import quote, unquote  # noqa: F401
