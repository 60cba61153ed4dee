"""Test double of webui v1.10.1 `modules/shared_items.py`, the part that matters here: `Shared`, the class that
`modules.shared` takes on so that `shared.sd_model` is a property over `sd_models.model_data`."""

from __future__ import annotations

import types


class Shared(types.ModuleType):
    @property
    def sd_model(self):
        """The loaded model; reading it loads one when none is (`model_data.get_sd_model`)."""
        from modules import sd_models

        return sd_models.model_data.get_sd_model()

    @sd_model.setter
    def sd_model(self, value):
        from modules import sd_models

        sd_models.model_data.set_sd_model(value)
