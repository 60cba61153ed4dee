"""The library's one emphasis parser (`lib_dumpunet.emphasis`) against the test double's `parse_prompt_attention`
(written to v1.10.1's behaviour), its exact and its linear-time paths against each other, and hostile prompts."""

from __future__ import annotations

import math

import pytest
import unets
from fakewebui.fixture import webui
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from lib_dumpunet import emphasis
from lib_dumpunet.emphasis import parse_emphasis

PIECES = ["a", "b", " ", ":", ".", "1", "2", "-", "(", ")", "[", "]", "\\", "BREAK", ",", ":1.2)", "(x:0.5)", ":0)"]
prompts = st.lists(st.sampled_from(PIECES), max_size=30).map("".join)


@pytest.fixture(scope="module")
def attention():
    with webui(unets.SD1, build_ui=False) as w:
        yield w.prompt_parser.parse_prompt_attention


@settings(max_examples=400, deadline=None)
@given(prompts)
def test_the_same_runs_and_weights_as_the_webui(attention, prompt):
    try:
        expected = attention(prompt)
    except ValueError:  # a weight like "1.2.3": the webui stops with an error; we keep it as text
        assume(False)
    assert [[f.text, f.weight] for f in parse_emphasis(prompt)] == expected  # weights equal bit for bit


@settings(max_examples=300, deadline=None)
@given(prompts)
def test_the_linear_time_path_gives_the_same_runs(prompt):
    exact = parse_emphasis(prompt)
    saved, emphasis.EXACT_WORK = emphasis.EXACT_WORK, -1
    try:
        by_logs = parse_emphasis(prompt)
    finally:
        emphasis.EXACT_WORK = saved
    assert [f.text for f in by_logs] == [f.text for f in exact]
    assert [f.weight for f in by_logs] == pytest.approx([f.weight for f in exact], rel=1e-9)


def test_nested_brackets_multiply_in_the_webuis_order():
    assert parse_emphasis("((((a))))")[0].weight == 1.1 * 1.1 * 1.1 * 1.1
    assert parse_emphasis("([a:0.3)]")[0].weight == 0.3 * (1 / 1.1)


def test_break_inside_brackets_is_a_weighted_word_not_a_break():
    assert [f.is_break for f in parse_emphasis("a BREAK b")] == [False, True, False]
    inside = parse_emphasis("(a BREAK b)")
    assert [f.text for f in inside] == ["a", "BREAK", "b"]
    assert inside[1].weight == pytest.approx(-1.1) and not inside[1].is_break


@pytest.mark.parametrize(
    ("prompt", "runs", "last_weight", "letters"),
    [
        # every bracket left open: run k weighs 1.1 ** k until that overflows (k > 7447), then the rest is one inf run
        ("(a" * 50_000, 7_448, math.inf, 50_000),
        ("a)" * 200_000, 1, 1.0, 400_000),  # closers with nothing open: one run of text, joined once
        ("[" * 100_000 + "x", 1, 0.0, 1),  # (1/1.1) ** 100000 underflows to 0
        ("(a:1.2" * 3_000, 3_000, 1.1**3_000, 15_000),  # past the exact budget: weights from logarithms
    ],
)
def test_hostile_prompts_are_read_whole(prompt, runs, last_weight, letters):
    fragments = parse_emphasis(prompt)
    assert len(fragments) == runs
    assert fragments[-1].weight == pytest.approx(last_weight, rel=1e-9) or fragments[-1].weight == last_weight
    assert sum(len(f.text) for f in fragments) == letters
