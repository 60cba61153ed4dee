from __future__ import annotations

import torch
import unets

from lib_dumpunet.block_prompts import BlockPrompts, ScheduledCond, at_step, pad_tokens
from lib_dumpunet.capture import FeatureRecorder
from lib_dumpunet.hooks import HookSet
from lib_dumpunet.layer_prompt import block_texts, parse_layer_prompt
from lib_dumpunet.layout import UNetLayout
from lib_dumpunet.probe import Probe
from lib_dumpunet.sampling import Row, cfg_rows
from lib_dumpunet.specs import ALL_STEPS

COND, UNCOND = "cond", "uncond"


def encoding(tokens: int, seed: int, width: int = unets.SD1.context_dim) -> torch.Tensor:
    return torch.randn(tokens, width, generator=torch.Generator().manual_seed(seed))


def block_outputs(unet, x, t, context, attachments=(), rows=None):
    """Every block's output for one call, optionally under a probe with `attachments`."""
    layout = UNetLayout(unet)
    recorder = FeatureRecorder(layout.names, ALL_STEPS, uncond=True)
    with torch.no_grad(), Probe(unet, [*attachments, recorder], layout=layout) as probe:
        probe.tracker.denoiser_call(pass_index=0, step=1, schedule_step=0, rows=rows or cfg_rows([1], 0))
        out = unet(x, t, context=context)
    return out, {k.place: probe.capture[k] for k in probe.capture if k.image == 0 and k.branch == COND}


def test_every_block_given_the_same_text_is_bit_identical_to_a_plain_run(sd1_unet):
    x, t, _ = unets.inputs(unets.SD1, 64, 64)
    plain_enc, erased_enc = encoding(77, 1), encoding(77, 2)
    names = UNetLayout(sd1_unet).names
    switch = BlockPrompts(
        texts={Row(0, COND): dict.fromkeys(names, "T")},
        schedules={(0, "T"): (ScheduledCond(20, plain_enc),)},
    )
    with torch.no_grad():
        plain = sd1_unet(x, t, context=plain_enc[None])
    switched, _ = block_outputs(sd1_unet, x, t, erased_enc[None], [switch])
    assert torch.equal(plain, switched)


def test_changing_only_m00_leaves_the_input_blocks_untouched(sd1_unet):
    x, t, _ = unets.inputs(unets.SD1, 64, 64)
    plain_enc, other = encoding(77, 1), encoding(77, 3)
    names = UNetLayout(sd1_unet).names
    texts = dict.fromkeys(names, "T") | {"M00": "U"}
    switch = BlockPrompts(
        texts={Row(0, COND): texts},
        schedules={(0, "T"): (ScheduledCond(20, plain_enc),), (0, "U"): (ScheduledCond(20, other),)},
    )
    _, plain = block_outputs(sd1_unet, x, t, plain_enc[None])
    _, switched = block_outputs(sd1_unet, x, t, plain_enc[None], [switch])
    for name in names[:12]:
        assert torch.equal(plain[name], switched[name]), name
    for name in names[12:]:
        assert not torch.equal(plain[name], switched[name]), name


def test_rows_get_their_own_image_and_branch_texts(sd1_unet):
    x, t, _ = unets.inputs(unets.SD1, 64, 64, batch=4)  # rows: cond 0, cond 1, uncond 0, uncond 1
    base = torch.stack([encoding(77, 10 + i) for i in range(4)])
    red, neg = encoding(77, 20), encoding(77, 21)
    switch = BlockPrompts(
        texts={Row(1, COND): {"M00": "red"}, Row(0, UNCOND): {"M00": "neg"}},
        schedules={(0, "red"): (ScheduledCond(20, red),), (0, "neg"): (ScheduledCond(20, neg),)},
    )
    seen = []
    attn2 = sd1_unet.middle_block[1].transformer_blocks[0].attn2
    with HookSet() as spy:
        spy.pre(attn2, lambda _m, _a, kwargs: seen.append(kwargs["context"].clone()), with_kwargs=True)
        block_outputs(sd1_unet, x, t, base, [switch], rows=cfg_rows([1, 1], 2))
    used = seen[0]
    assert torch.equal(used[0], base[0])
    assert torch.equal(used[1], red)
    assert torch.equal(used[2], neg)
    assert torch.equal(used[3], base[3])


def test_longer_block_texts_pad_the_other_rows_with_empty_chunks(sd1_unet):
    x, t, _ = unets.inputs(unets.SD1, 64, 64, batch=2)
    base = torch.stack([encoding(77, 1), encoding(77, 2)])
    long_enc, empty = encoding(154, 3), encoding(77, 4)
    switch = BlockPrompts(
        texts={Row(0, COND): {"IN04": "long"}},
        schedules={(0, "long"): (ScheduledCond(20, long_enc),)},
        empty_chunk=empty,
    )
    seen = []
    attn2 = sd1_unet.input_blocks[4][1].transformer_blocks[0].attn2
    with HookSet() as spy:
        spy.pre(attn2, lambda _m, _a, kwargs: seen.append(kwargs["context"].clone()), with_kwargs=True)
        block_outputs(sd1_unet, x, t, base, [switch], rows=cfg_rows([1], 1))
    assert seen[0].shape == (2, 154, unets.SD1.context_dim)
    assert torch.equal(seen[0][0], long_enc)
    assert torch.equal(seen[0][1, :77], base[1])
    assert torch.equal(seen[0][1, 77:], empty)


def test_schedules_follow_the_webui_rule():
    a, b = torch.zeros(1, 1), torch.ones(1, 1)
    schedule = (ScheduledCond(2, a), ScheduledCond(10, b))
    assert [at_step(schedule, s).item() for s in (0, 1, 2, 3, 10, 11)] == [0, 0, 0, 1, 1, 1]


def test_pad_tokens_without_an_empty_chunk_repeats_the_last_vector():
    cond = torch.arange(6.0).reshape(3, 2)
    padded = pad_tokens(cond, 5, None)
    assert padded[3:].tolist() == [[4.0, 5.0], [4.0, 5.0]]
    assert pad_tokens(cond, 3, None) is cond


def test_switch_reads_and_writes_context_given_as_keyword(sd1_unet):
    red = encoding(77, 5)
    switch = BlockPrompts(texts={Row(0, COND): {"IN01": "red"}}, schedules={(0, "red"): (ScheduledCond(9, red),)})
    layout = UNetLayout(sd1_unet)
    with Probe(sd1_unet, [switch], layout=layout) as probe:
        probe.tracker.denoiser_call(pass_index=0, step=1, schedule_step=0, rows=cfg_rows([1], 0))
        block = layout.module("IN01")
        h = torch.randn(1, 32, 8, 8)
        emb = torch.randn(1, 128)
        with torch.no_grad():
            probe.tracker.unet_call(1)
            by_keyword = block(h, emb, context=encoding(77, 6)[None])
            positional = block(h, emb, red[None])
    assert torch.equal(by_keyword, positional)


def test_block_texts_from_a_layer_prompt_with_and():
    names = ("IN00", "M00", "OUT00")
    lp = parse_layer_prompt("a (~: M00: red :~) cat AND a dog :1.2", names)

    def split(prompt: str) -> list[str]:  # the webui's AND split, weights dropped
        return [p.rsplit(":", 1)[0] if ":1.2" in p else p for p in prompt.split(" AND ")]

    assert block_texts(lp, names, split) == [{"M00": "a  red  cat"}, {}]
    assert block_texts(parse_layer_prompt("plain", names), names) == [{}]


def test_hooks_are_removed_and_the_unet_is_untouched(sd1_unet):
    x, t, kwargs = unets.inputs(unets.SD1, 64, 64)
    switch = BlockPrompts(
        texts={Row(0, COND): {"M00": "x"}}, schedules={(0, "x"): (ScheduledCond(9, encoding(77, 7)),)}
    )
    block_outputs(sd1_unet, x, t, kwargs["context"], [switch])
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in sd1_unet.modules())
