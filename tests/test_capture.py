from __future__ import annotations

import pytest
import torch
import unets

from lib_dumpunet.capture import Capture, FeatureRecorder, Key
from lib_dumpunet.hooks import HookSet
from lib_dumpunet.layout import UNetLayout
from lib_dumpunet.probe import Probe
from lib_dumpunet.sampling import Row, SamplingTracker, cfg_rows
from lib_dumpunet.specs import ALL_STEPS, parse_steps

# --- row bookkeeping ----------------------------------------------------------------------------------------------


def test_cfg_rows_put_every_cond_row_before_the_uncond_rows():
    rows = cfg_rows([2, 1], uncond=2, image_offset=4)
    assert rows == (
        Row(4, "cond", 0),
        Row(4, "cond", 1),  # image 4 has two AND sub-prompts
        Row(5, "cond", 0),
        Row(4, "uncond"),
        Row(5, "uncond"),
    )


def test_consecutive_unet_calls_take_consecutive_slices():
    tracker = SamplingTracker()
    tracker.denoiser_call(pass_index=0, step=1, schedule_step=0, rows=cfg_rows([1, 1], 2))
    first = tracker.unet_call(2)
    second = tracker.unet_call(2)
    assert [r.branch for r in first.rows] == ["cond", "cond"]
    assert [(r.image, r.branch) for r in second.rows] == [(0, "uncond"), (1, "uncond")]
    assert tracker.unet_call(1).rows == (None,), "rows beyond the denoiser call are not attributed"


def test_skipped_uncond_rows_simply_never_arrive():
    tracker = SamplingTracker()
    tracker.denoiser_call(pass_index=0, step=3, schedule_step=2, rows=cfg_rows([1, 1], 2))
    call = tracker.unet_call(2)  # the webui dropped the uncond rows
    assert call.indices() == [0, 1]
    assert call.indices(uncond=True) == [0, 1]
    tracker.denoiser_call(pass_index=0, step=4, schedule_step=3, rows=cfg_rows([1, 1], 2))
    assert tracker.unet_call(4).rows[0] == Row(0, "cond"), "a new denoiser call starts at its first row"


def test_only_the_first_evaluation_of_a_step_is_marked():
    tracker = SamplingTracker()
    rows = cfg_rows([1], 1)
    heun = [(1, 0), (1, 1), (2, 2), (2, 3), (3, 4)]  # (sampler step, denoiser call) of a second-order sampler
    marks = [tracker.denoiser_call(pass_index=0, step=s, schedule_step=c, rows=rows).first_eval for s, c in heun]
    assert marks == [True, False, True, False, True]
    assert tracker.denoiser_call(pass_index=1, step=3, schedule_step=0, rows=rows).first_eval, "hires is a new pass"
    tracker.begin_batch()
    assert tracker.denoiser_call(pass_index=1, step=3, schedule_step=0, rows=rows).first_eval, "a new batch restarts"


def test_unet_calls_outside_sampling_are_ignored():
    tracker = SamplingTracker()
    assert tracker.unet_call(2) is None
    assert tracker.current is None


# --- capture through the real U-Net -------------------------------------------------------------------------------


def _all_hooks(module: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in module.modules())


def _reference_outputs(unet, layout, x, t, kwargs) -> dict[str, torch.Tensor]:
    seen = {}
    with HookSet() as hooks:
        for name in layout.names:
            hooks.forward(layout.module(name), lambda _m, _a, out, name=name: seen.__setitem__(name, out.clone()))
        with torch.no_grad():
            unet(x, t, **kwargs)
    return seen


@pytest.mark.parametrize("flavour", unets.FLAVOURS, ids=lambda f: f.name)
def test_capture_leaves_the_output_bit_identical(unet_for, flavour):
    unet = unet_for(flavour)
    x, t, kwargs = unets.inputs(flavour, 64, 96, batch=2)  # 96 is not a multiple of 64: the skips get resized
    layout = UNetLayout(unet)
    with torch.no_grad(), unets.webui_skip_resize():
        plain = unet(x, t, **kwargs)
        with Probe(unet, [FeatureRecorder(layout.names, ALL_STEPS)], layout=layout) as probe:
            probe.tracker.denoiser_call(pass_index=0, step=1, schedule_step=0, rows=cfg_rows([1], 1))
            probed = unet(x, t, **kwargs)
    assert torch.equal(plain, probed)
    assert len(probe.capture) == len(layout.names)
    assert _all_hooks(unet) == 0


def test_rows_are_filed_under_their_image_and_branch(sd1_unet):
    layout = UNetLayout(sd1_unet)
    # two images; image 0 has two AND sub-prompts → rows: c0.0, c0.1, c1, u0, u1
    x, t, kwargs = unets.inputs(unets.SD1, 64, 64, batch=5)
    reference = _reference_outputs(sd1_unet, layout, x, t, kwargs)
    recorder = FeatureRecorder(["IN04", "OUT11"], ALL_STEPS, uncond=True)
    with Probe(sd1_unet, [recorder], layout=layout) as probe:
        probe.tracker.denoiser_call(pass_index=0, step=1, schedule_step=0, rows=cfg_rows([2, 1], 2, image_offset=6))
        with torch.no_grad():
            sd1_unet(x[:3], t[:3], context=kwargs["context"][:3])  # cond rows in one call …
            sd1_unet(x[3:], t[3:], context=kwargs["context"][3:])  # … uncond rows in the next
    capture = probe.capture
    expected_rows = {(6, "cond", 0): 0, (6, "cond", 1): 1, (7, "cond", 0): 2, (6, "uncond", 0): 3, (7, "uncond", 0): 4}
    for (image, branch, sub), row in expected_rows.items():
        for block in ("IN04", "OUT11"):
            got = capture[Key(image, 0, 1, block, "features", branch, sub)]
            assert torch.allclose(got, reference[block][row], atol=1e-5), (image, branch, sub, block)
    assert capture.images() == [6, 7]


def test_only_selected_steps_and_cond_rows_are_kept(sd1_unet):
    layout = UNetLayout(sd1_unet)
    x, t, kwargs = unets.inputs(unets.SD1, 64, 64, batch=2)
    with Probe(sd1_unet, [FeatureRecorder(["M00"], parse_steps("2"))], layout=layout) as probe:
        for step in (1, 2, 2, 3):  # step 2 is evaluated twice, as a second-order sampler does
            probe.tracker.denoiser_call(pass_index=0, step=step, schedule_step=0, rows=cfg_rows([1], 1))
            with torch.no_grad():
                sd1_unet(x, t, **kwargs)
    assert probe.capture.keys() == [Key(0, 0, 2, "M00", "features")]


def test_hooks_are_gone_after_an_exception_mid_run(sd1_unet):
    x, t, kwargs = unets.inputs(unets.SD1, 64, 64)
    layout = UNetLayout(sd1_unet)

    def explode(_m, _a, _o):
        raise RuntimeError("boom")

    probe = Probe(sd1_unet, [FeatureRecorder(layout.names, ALL_STEPS)])

    def run() -> None:
        with probe:
            probe.hooks.forward(layout.module("M00"), explode)
            probe.tracker.denoiser_call(pass_index=0, step=1, schedule_step=0, rows=cfg_rows([1], 0))
            with torch.no_grad():
                sd1_unet(x, t, **kwargs)

    with pytest.raises(RuntimeError, match="boom"):
        run()
    assert _all_hooks(sd1_unet) == 0
    assert len(probe.capture) > 0, "what was captured before the failure is kept"


def test_close_all_removes_hooks_of_a_run_that_never_cleaned_up(sd1_unet):
    probe = Probe(sd1_unet, [FeatureRecorder(["IN00"], ALL_STEPS)]).__enter__()
    assert _all_hooks(sd1_unet) == 3
    assert HookSet.close_all() >= 1
    assert _all_hooks(sd1_unet) == 0
    probe.close()  # closing again is harmless
    assert _all_hooks(sd1_unet) == 0


def test_fp16_capture_and_take_image(sd1_unet):
    x, t, kwargs = unets.inputs(unets.SD1, 64, 64, batch=2)
    with Probe(sd1_unet, [FeatureRecorder(["IN01"], ALL_STEPS, dtype=torch.float16)]) as probe:
        probe.tracker.denoiser_call(pass_index=0, step=1, schedule_step=0, rows=cfg_rows([1, 1], 0))
        with torch.no_grad():
            sd1_unet(x, t, **kwargs)
    capture: Capture = probe.capture
    assert all(capture[k].dtype == torch.float16 for k in capture)
    first = capture.take_image(0)
    assert [k.image for k in first] == [0]
    assert capture.images() == [1]
