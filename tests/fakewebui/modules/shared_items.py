"""Mirror of modules/shared_items.py: the module class that makes `shared.sd_model` a property."""

import sys


class Shared(sys.modules["modules.shared"].__class__):
    """`shared.sd_model` reads and writes `sd_models.model_data`, as in the webui (reading it may load a model)."""

    sd_model_val = None

    @property
    def sd_model(self):
        import modules.sd_models

        return modules.sd_models.model_data.get_sd_model()

    @sd_model.setter
    def sd_model(self, value):
        import modules.sd_models

        modules.sd_models.model_data.set_sd_model(value)
