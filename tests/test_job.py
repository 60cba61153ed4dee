from __future__ import annotations

from pathlib import Path

import pytest
import torch
import unets
from jobdriver import ToyHost, sample

from lib_dumpunet.capture import Key
from lib_dumpunet.dump import read_dump
from lib_dumpunet.errors import DumpUnetError
from lib_dumpunet.job import Job, difference_maps, make_plan
from lib_dumpunet.layout import UNetLayout
from lib_dumpunet.settings import from_mapping


def plan_for(layout, tmp_path: Path, job_steps: int = 3, shared: bool = False, **settings):
    return make_plan(from_mapping(settings), layout, job_steps=job_steps, dump_base=tmp_path, shared=shared)


@pytest.fixture
def layout(sd1_unet):
    return UNetLayout(sd1_unet)


@pytest.fixture
def host():
    return ToyHost(unets.SD1.context_dim)


# --- planning: every mistake before generation --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"features.enabled": True}, "U-Net features › Layers is empty"),
        ({"features.enabled": True, "features.layers": "IN00", "features.steps": "4"}, "step 4 is beyond the 3"),
        ({"features.enabled": True, "features.layers": "IN99"}, "'IN99' is not a block"),
        ({"attention.enabled": True, "attention.layers": "IN04"}, "tick at least one output"),
        (
            {"attention.enabled": True, "attention.layers": "IN00", "attention.outputs": ["Q*K"]},
            "no.*attention|has attention",
        ),
        ({"features.enabled": True, "features.layers": "IN00", "features.colors.h": "__import__('os')"}, "H"),
        ({"layer_prompt.enabled": True, "layer_prompt.diff": True}, "Layer Prompt › Layers is empty"),
        (
            {
                "attention.enabled": True,
                "attention.layers": "IN01",
                "attention.self_attention": True,
                "attention.query_points": "0x0",
            },
            "grid",
        ),
    ],
)
def test_mistakes_are_caught_when_planning(layout, tmp_path, settings, message):
    with pytest.raises(DumpUnetError, match=message):
        plan_for(layout, tmp_path, **settings)


def test_dump_folders_stay_inside_the_outputs_when_shared(layout, tmp_path):
    settings = {"features.enabled": True, "features.layers": "IN00", "features.dump.enabled": True}
    with pytest.raises(DumpUnetError, match="shared"):
        plan_for(layout, tmp_path, shared=True, **settings, **{"features.dump.folder": "/etc"})
    with pytest.raises(DumpUnetError, match="shared"):
        plan_for(layout, tmp_path, shared=True, **settings, **{"features.dump.folder": "../escape"})
    inside = plan_for(layout, tmp_path, shared=True, **settings, **{"features.dump.folder": "mine"})
    assert inside.features.dump_folder == tmp_path.resolve() / "mine"
    outside = plan_for(layout, tmp_path, shared=False, **settings, **{"features.dump.folder": str(tmp_path.parent)})
    assert outside.features.dump_folder == tmp_path.parent.resolve()


# --- a run -------------------------------------------------------------------------------------------------------


def test_capture_never_changes_the_result(sd1_unet, layout, host, tmp_path):
    plan = plan_for(
        layout,
        tmp_path,
        **{"features.enabled": True, "features.layers": "IN00-OUT11"},
        **{"attention.enabled": True, "attention.layers": "IN00-OUT11", "attention.outputs": ["K", "Q*K", "V*Q*K"]},
        **{"attention.self_attention": True},
    )
    plain = sample(sd1_unet, None, host, ["a cat", "a dog"], ["", "blurry"], steps=2)
    with Job(plan, layout, host) as job:
        probed = sample(sd1_unet, job, host, ["a cat", "a dog"], ["", "blurry"], steps=2)
    assert torch.equal(plain, probed)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in sd1_unet.modules())


def test_maps_come_per_image_in_the_original_order(sd1_unet, layout, host, tmp_path):
    plan = plan_for(
        layout,
        tmp_path,
        **{"features.enabled": True, "features.layers": "OUT11, IN00", "features.steps": "1-2"},
        **{"attention.enabled": True, "attention.layers": "IN04", "attention.outputs": ["Q*K", "K"]},
        **{"attention.steps": "2"},
    )
    with Job(plan, layout, host) as job:
        sample(sd1_unet, job, host, ["a cat", "a dog AND a bird"], ["", ""], steps=2, first_image=4)
    assert job.capture.images() == [4, 5]
    first = [m.label for m in job.take_maps(4)]
    assert first == [
        "IN00, step 1, U-Net features",
        "OUT11, step 1, U-Net features",
        "IN00, step 2, U-Net features",
        "OUT11, step 2, U-Net features",
        "IN04.attn2, step 2, K",
        "IN04.attn2, step 2, Q*K",
    ]
    assert job.capture.images() == [5], "memory of image 4 is given back"
    second = [m.label for m in job.take_maps(5)]
    assert "IN04.attn2, step 2, Q*K, AND 2" in second, "each AND sub-prompt row has its own maps"
    assert len(job.capture) == 0


def test_qk_maps_carry_token_labels(sd1_unet, layout, host, tmp_path):
    settings = {"attention.enabled": True, "attention.layers": "M00", "attention.outputs": ["Q*K"]}
    plan = plan_for(layout, tmp_path, **settings)
    bare = plan_for(layout, tmp_path, **settings, **{"attention.token_labels": False})
    heights = []
    for p in (plan, bare):
        with Job(p, layout, host) as job:
            sample(sd1_unet, job, host, ["a cat"], [""], steps=1)
        heights.append(job.take_maps(0)[0].image.height)
    assert heights[0] > heights[1] + 10


def test_layer_prompts_encode_each_distinct_text_once_per_job(sd1_unet, layout, host, tmp_path):
    plan = plan_for(layout, tmp_path, **{"layer_prompt.enabled": True})
    prompt = "a (~: IN00-OUT11: cute ; M00: excellent :~) girl"
    with Job(plan, layout, host) as job:
        for batch in range(2):  # batch count 2, batch size 2
            sample(sd1_unet, job, host, [prompt, prompt], ["", ""], steps=3, first_image=2 * batch)
    assert host.encoded == {("a  cute  girl", 0): 1, ("a  excellent  girl", 0): 1}


def test_the_same_text_in_every_block_is_a_plain_run(sd1_unet, layout, host, tmp_path):
    plan = plan_for(layout, tmp_path, **{"layer_prompt.enabled": True})
    plain = sample(sd1_unet, None, host, ["a red cat"], ["ugly"], steps=2)
    with Job(plan, layout, host) as job:
        switched = sample(sd1_unet, job, host, ["(~: IN00-OUT11: a red cat:~)"], ["ugly"], steps=2)
    assert torch.equal(plain, switched)


def test_difference_maps_for_every_image(sd1_unet, layout, host, tmp_path):
    plan = plan_for(
        layout,
        tmp_path,
        **{"layer_prompt.enabled": True, "layer_prompt.diff": True, "layer_prompt.layers": "IN11, M00, OUT00"},
        **{"layer_prompt.dump.enabled": True},
    )
    prompts = ["a (~: M00: red :~) cat", "a (~: M00: blue :~) dog", "plain owl"]
    jobs = {}
    for role in ("baseline", "layer_prompt"):
        with Job(plan, layout, host, role=role) as job:
            sample(sd1_unet, job, host, prompts, ["", "", ""], steps=2)
        jobs[role] = job
    diffs = difference_maps(jobs["baseline"], jobs["layer_prompt"])
    assert sorted(diffs) == [0, 1, 2]
    assert [m.label for m in diffs[0]] == [
        "IN11, step 1, difference",
        "M00, step 1, difference",
        "OUT00, step 1, difference",
        "IN11, step 2, difference",
        "M00, step 2, difference",
        "OUT00, step 2, difference",
    ]
    jobs["layer_prompt"].close()
    dump = read_dump(next(tmp_path.resolve().glob("dumpunet/*-diff")))
    by = {(e.image, e.step, e.place): dump.load(e) for e in dump}
    assert not by[(0, 1, "IN11")].any(), "blocks before M00 see the same prompt in both runs"
    assert by[(0, 1, "M00")].any()
    assert not by[(2, 1, "M00")].any(), "an image without constructs does not change"
    base, lp = jobs["baseline"].capture, jobs["layer_prompt"].capture
    k = Key(0, 0, 2, "OUT00", "diff-source")
    assert torch.equal(torch.from_numpy(by[(0, 2, "OUT00")]), lp[k] - base[k])


def test_dumps_of_features_and_attention(sd1_unet, layout, host, tmp_path):
    plan = plan_for(
        layout,
        tmp_path,
        **{"features.enabled": True, "features.layers": "IN04", "features.dump.enabled": True},
        **{"attention.enabled": True, "attention.layers": "IN04", "attention.outputs": ["Q*K"]},
        **{"attention.dump.enabled": True, "attention.dump.folder": "att"},
    )
    with Job(plan, layout, host) as job:
        sample(sd1_unet, job, host, ["a cat"], [""], steps=2)
        job.take_maps(0)
    features = read_dump(next((tmp_path / "dumpunet").glob("*-features")))
    attention = read_dump(next((tmp_path / "att").glob("*-attention")))
    assert sorted((e.step, e.place, e.kind) for e in features) == [(1, "IN04", "features"), (2, "IN04", "features")]
    assert {e.kind for e in attention} == {"qk"}
    assert features.entries[0].prompt == "a cat"
    assert features.entries[0].seed == 0


def test_steps_never_reached_are_reported(sd1_unet, layout, host, tmp_path):
    plan = plan_for(layout, tmp_path, job_steps=5, **{"features.enabled": True, "features.layers": "M00"})
    with Job(plan, layout, host) as job:
        sample(sd1_unet, job, host, ["a cat"], [""], steps=3)  # e.g. img2img ran fewer steps
    assert job.missing_steps(plan.features, 5) == [4, 5]
