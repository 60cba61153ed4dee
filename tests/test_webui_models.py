"""The extension on the SD2 and SDXL layouts in the fake webui: names and shapes come from the loaded model."""

from __future__ import annotations

import pytest
import unets
from webuihelp import features, hooks_on, map_labels, section_args, session

from lib_dumpunet.errors import DumpUnetError


@pytest.mark.parametrize("flavour", [unets.SD2, unets.SDXL], ids=lambda f: f.name)
def test_sd2_and_sdxl_models(flavour):
    with session(flavour) as w:
        settings = features("IN00-OUT08", **{"features.steps": "1"})
        settings |= {"attention.enabled": True, "attention.layers": "M00", "attention.outputs": ["Q*K"]}
        settings |= {"attention.steps": "1"}
        processed = w.run(w.txt2img(section_args(w, settings)))
        labels = [label for label in map_labels(w, processed) if label]
        depth = 10 if flavour is unets.SDXL else 1
        blocks = 19 if flavour is unets.SDXL else 22  # IN00-OUT08: all of SDXL; on SD2 IN00-IN11, M00, OUT00-OUT08
        assert len(labels) == blocks + depth
        assert ("M00.attn2.9, step 1, Q*K" in labels) == (flavour is unets.SDXL)
        assert hooks_on(w.unet) == 0
        if flavour is unets.SDXL:
            with pytest.raises(DumpUnetError, match="'OUT11' is not a block of this model"):
                w.run(w.txt2img(section_args(w, features("OUT11"))))
            assert hooks_on(w.unet) == 0
