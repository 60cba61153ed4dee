from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lib_dumpunet.errors import DumpUnetError, SpecError
from lib_dumpunet.layer_prompt import parse_layer_prompt

SD = (*(f"IN{i:02d}" for i in range(12)), "M00", *(f"OUT{i:02d}" for i in range(12)))
XL = (*(f"IN{i:02d}" for i in range(9)), "M00", *(f"OUT{i:02d}" for i in range(9)))


def blocks_of(text: str, names=SD) -> dict[str, str]:
    return parse_layer_prompt(text, names).per_block(names)


# --- the original README's examples ---------------------------------------------------------------------------------


def test_readme_notation_example_keeps_spaces_verbatim():
    expanded = blocks_of("a (~: IN00-OUT11: cute ; M00: excellent :~) girl")
    assert expanded["M00"] == "a  excellent  girl"
    assert {v for k, v in expanded.items() if k != "M00"} == {"a  cute  girl"}


def test_readme_example_1():
    expanded = blocks_of("(~: IN00: A ; IN01: B :~)")
    assert expanded["IN00"] == " A "
    assert expanded["IN01"] == " B "
    assert {expanded[n] for n in SD[2:]} == {""}


def test_readme_example_2():
    expanded = blocks_of("(~: IN00: A ; IN01: B ; IN02: C :~)")
    assert [expanded[n] for n in ("IN00", "IN01", "IN02", "IN03")] == [" A ", " B ", " C ", ""]


def test_readme_example_3_underscore_fills_the_rest():
    expanded = blocks_of("(~: IN00: A ; IN01: B ; IN02: C ; _ : D :~)")
    assert [expanded[n] for n in ("IN00", "IN01", "IN02")] == [" A ", " B ", " C "]
    assert {expanded[n] for n in SD[3:]} == {"D "}  # whitespace after `_ :` is dropped, as in the original


def test_readme_example_4():
    expanded = blocks_of("(~: IN00,IN01: A ; M00 : B :~)")
    assert expanded["IN00"] == expanded["IN01"] == " A "
    assert expanded["M00"] == " B "
    assert expanded["IN02"] == ""


def test_readme_example_5_later_pairs_win():
    expanded = blocks_of("(~: IN00-OUT11: A ; M00 : B :~)")
    assert expanded["M00"] == " B "
    assert {expanded[n] for n in SD if n != "M00"} == {" A "}


# --- the original's defects, fixed ---------------------------------------------------------------------------------


def test_several_constructs_expand_independently():
    expanded = blocks_of("a (~:IN00:x:~) b (~:M00:y:~) c")
    assert expanded["IN00"] == "a x b  c"
    assert expanded["M00"] == "a  b y c"
    assert expanded["OUT11"] == "a  b  c"
    assert parse_layer_prompt("a (~:IN00:x:~) b (~:M00:y:~) c", SD).erase() == "a  b  c"


def test_strides_work_in_block_specs():
    expanded = blocks_of("(~: IN00-OUT11(+2): x :~)")
    assert [n for n, v in expanded.items() if v] == [
        "IN00", "IN02", "IN04", "IN06", "IN08", "IN10", "M00", "OUT01", "OUT03", "OUT05", "OUT07", "OUT09", "OUT11",
    ]  # fmt: skip


def test_backwards_range_is_an_error_not_a_single_block():
    with pytest.raises(SpecError, match="runs backwards"):
        parse_layer_prompt("(~: OUT11-IN00: x :~)", SD)


def test_escapes():
    expanded = blocks_of(r"(~: M00: a\;b \\ c \(d\) :~)")
    assert expanded["M00"] == r" a;b \ c \(d\) "  # \; and \\ are escapes; \( is left for the webui


def test_content_may_hold_colons_emphasis_schedules_and_newlines():
    expanded = blocks_of("x (~: M00: (cat:1.2), [dog:fox:0.5]\nBREAK owl; _: z :~)")
    assert expanded["M00"] == "x  (cat:1.2), [dog:fox:0.5]\nBREAK owl"
    assert expanded["IN00"] == "x z "


def test_sdxl_names():
    expanded = blocks_of("(~: IN07-OUT01: x :~)", XL)
    assert [n for n, v in expanded.items() if v] == ["IN07", "IN08", "M00", "OUT00", "OUT01"]
    with pytest.raises(SpecError, match="'IN10' is not a block"):
        parse_layer_prompt("(~: IN10: x :~)", XL)


def test_a_prompt_without_constructs_is_unchanged():
    lp = parse_layer_prompt("just (a cat:1.2) AND a dog", SD)
    assert not lp
    assert lp.erase() == lp.expand("M00") == "just (a cat:1.2) AND a dog"


def test_and_outside_constructs_is_kept():
    lp = parse_layer_prompt("a (~: M00: red :~) cat AND a dog", SD)
    assert lp.expand("M00") == "a  red  cat AND a dog"


@pytest.mark.parametrize(
    ("text", "culprit", "reason"),
    [
        ("a (~: IN99: x :~)", "IN99", "not a block"),
        ("a (~: in00 x :~)", "in00 x ", "expected 'BLOCKS: text'"),
        ("a (~: IN00: x ;; :~)", ";", "expected 'BLOCKS: text'"),
        ("a (~: IN00,_: x :~)", "_", "expected a block name"),
        ("a (~: IN00: x", "(~:", "never closed"),
        ("a (~::~)", "(~::~)", "empty"),
        ("a (~: IN00: x AND y :~)", "AND", "AND cannot be inside"),
        ("a (~: IN00: (~: M00: y :~)", "(~:", "nested"),
        ("a (~: ,: x :~)", ",", "name at least one block"),
        ("a (~: IN00(+2): x :~)", "(", "needs a range"),
    ],
)
def test_syntax_errors_point_at_the_culprit(text, culprit, reason):
    with pytest.raises(SpecError, match=reason) as info:
        parse_layer_prompt(text, SD, field="Negative prompt")
    err = info.value
    assert err.field == "Negative prompt"
    assert text[err.position : err.position + len(culprit)] == culprit


def test_errors_report_the_line():
    with pytest.raises(SpecError) as info:
        parse_layer_prompt("first line,\nsecond (~: IN00: a ; OUT12: b :~)", SD)
    assert "line 2" in str(info.value)
    assert info.value.line == 2


# --- fuzzing: only the project's error, and expansions that keep the text outside constructs ---------------------

_alphabet = st.sampled_from([*"(~:)_;,-+ \n\\abAND", "IN00", "M00", "OUT11", "IN12", "(~:", ":~)", "AND", "(+2)"])
_prompts = st.one_of(
    st.lists(_alphabet, max_size=30).map("".join),
    st.text(max_size=60),
    st.builds(
        lambda pre, spec, content, post: f"{pre}(~:{spec}:{content}:~){post}",
        st.text(max_size=8),
        st.sampled_from(["IN00", "M00", "_", "IN00-OUT11(+3)", "OUT11-IN00", "IN05,M00", "", " x "]),
        st.text(st.sampled_from("ab ;\\:,()"), max_size=12),
        st.text(max_size=8),
    ),
)


@settings(max_examples=10_000, deadline=None)
@given(_prompts)
def test_layer_prompt_fuzz(text):
    try:
        lp = parse_layer_prompt(text, SD)
    except DumpUnetError:
        return
    erased = lp.erase()
    assert "(~:" not in erased or not lp
    for name in ("IN00", "M00", "OUT11"):
        expanded = lp.expand(name)
        assert isinstance(expanded, str)
        # the text outside the constructs is kept in order
        outside = [
            lp.text[a:b]
            for a, b in zip(
                [0, *[c.end for c in lp.constructs]], [c.start for c in lp.constructs] + [len(text)], strict=True
            )
        ]
        pos = 0
        for piece in outside:
            found = expanded.find(piece, pos)
            assert found >= 0
            pos = found + len(piece)


def test_replace_blocks_rewrites_every_named_pair_for_xyz():
    from lib_dumpunet.layer_prompt import replace_blocks

    text = "a (~: IN00-OUT11 : cute; M00: x; _: y :~) (~:IN01:z:~)"
    assert replace_blocks(text, "OUT03", SD) == "a (~: OUT03: cute; OUT03: x; _: y :~) (~:OUT03:z:~)"
    with pytest.raises(SpecError, match="X/Y/Z values"):
        replace_blocks(text, "IN99", SD)
