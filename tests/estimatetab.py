"""Helpers for the Embedding Estimate tab tests in the fake webui: the tab's values by field, and its button."""

from __future__ import annotations

from pathlib import Path


def tab_module():
    from lib_dumpunet.webui import estimate_tab

    return estimate_tab


def values(**changes):
    tab = tab_module()
    base = {"prompt": "a (red:1.4) cat", "name": "estcat", "tokens": 3, "vectors_from": "tokens", "iterations": 60,
            "learning_rate": 0.01}  # fmt: skip
    settings = {**tab.est.EstimateSettings().__dict__, **base, **changes}
    return [settings[name] for name in tab.FIELD_ORDER]


def run_button(*args):
    """What the Estimate button calls: the job wrapped by the webui's queue (errors come back as HTML)."""
    tab = tab_module()
    wrapped = tab.call_queue.wrap_gradio_gpu_call(tab.estimate_job, extra_outputs=[None])
    return wrapped("task(test)", *args)


def embeddings_dir(w):
    return Path(w.shared.cmd_opts.embeddings_dir)
