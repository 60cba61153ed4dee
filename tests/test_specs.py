from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lib_dumpunet.errors import DumpUnetError, SpecError
from lib_dumpunet.specs import (
    ALL_STEPS,
    StepSelection,
    describe_names,
    format_steps,
    parse_layers,
    parse_points,
    parse_steps,
)

SD = (*(f"IN{i:02d}" for i in range(12)), "M00", *(f"OUT{i:02d}" for i in range(12)))
XL = (*(f"IN{i:02d}" for i in range(9)), "M00", *(f"OUT{i:02d}" for i in range(9)))


# --- layers: the original's meaning -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("IN00", ("IN00",)),
        ("IN00,IN01", ("IN00", "IN01")),
        ("IN00-IN02", ("IN00", "IN01", "IN02")),
        ("IN11-OUT00", ("IN11", "M00", "OUT00")),  # IN11, M00 and OUT00 are neighbours
        ("OUT03, IN05", ("IN05", "OUT03")),  # U-Net order, not typing order
        ("IN00-IN03,IN02-IN04", ("IN00", "IN01", "IN02", "IN03", "IN04")),  # deduplicated
        ("IN00-IN05(3)", ("IN00", "IN03")),  # the plus sign is optional
        (" IN00 - IN05 ( + 2 ) ", ("IN00", "IN02", "IN04")),  # whitespace anywhere
        ("IN00,", ("IN00",)),  # a trailing comma is harmless
        ("IN00,,IN01", ("IN00", "IN01")),
        ("in04, out11, m00", ("IN04", "M00", "OUT11")),  # any case
        ("IN4-IN005", ("IN04", "IN05")),  # leading zeros or none
        ("IN00-OUT11(+100)", ("IN00",)),
    ],
)
def test_layer_specs(text, expected):
    assert parse_layers(text, SD) == expected


def test_stride_over_the_whole_unet():
    assert parse_layers("IN00-OUT11(+2)", SD) == (
        "IN00", "IN02", "IN04", "IN06", "IN08", "IN10", "M00",
        "OUT01", "OUT03", "OUT05", "OUT07", "OUT09", "OUT11",
    )  # fmt: skip


def test_sdxl_names_are_contiguous_too():
    assert parse_layers("IN07-OUT01", XL) == ("IN07", "IN08", "M00", "OUT00", "OUT01")


# --- layers: the original's defects, now errors with a caret ----------------------------------------------------------


def _error(text: str, names=SD) -> SpecError:
    with pytest.raises(SpecError) as info:
        parse_layers(text, names)
    return info.value


def _under_caret(err: SpecError) -> str:
    *_, excerpt, caret = str(err).splitlines()
    start = caret.index("^")
    return excerpt[start : start + len(caret.strip())].strip()


def test_name_missing_from_an_sdxl_model_is_named():
    err = _error("IN05-IN12", XL)
    assert "'IN12'" in err.reason
    assert "IN00–IN08, M00, OUT00–OUT08" in err.reason
    assert _under_caret(err) == "IN12"


def test_backwards_range_is_an_error_naming_it():
    err = _error("OUT11-IN00")
    assert "OUT11-IN00" in err.reason
    assert _under_caret(err) == "OUT11-IN00"


@pytest.mark.parametrize(
    ("text", "culprit"),
    [
        ("IN00, ,IN01", ""),  # a blank item
        ("IN12", "IN12"),
        ("M01", "M01"),
        ("IN00-IN03(+0)", "0"),
        ("IN00-IN03(+02", "("),
        ("IN00(+2)", "("),
        ("IN00 IN01", "I"),
        ("FOO00", "FOO00"),
        ("IN", "I"),
        ("IN00-", ""),
        ("-IN00", "-"),
        ("IN00-IN03(-2)", "-"),
        ("IN00-IN03(+2)x", "x"),
    ],
)
def test_layer_errors_point_at_the_culprit(text, culprit):
    err = _error(text)
    assert _under_caret(err) == culprit


def test_empty_layers_field_is_a_clear_error():
    for text in ("", "   ", ",", ",,"):
        with pytest.raises(DumpUnetError, match="Layers is empty"):
            parse_layers(text, SD)


def test_describe_names():
    assert describe_names(SD) == "IN00–IN11, M00, OUT00–OUT11"


# --- steps --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "total", "expected"),
    [
        ("5", 20, (5,)),
        ("5,10", 20, (5, 10)),
        ("5-10", 20, (5, 6, 7, 8, 9, 10)),
        ("5-10(+2)", 20, (5, 7, 9)),
        ("1,5-20(+5)", 20, (1, 5, 10, 15, 20)),
        ("+3", 20, (3,)),
        ("1-3,2-4", 20, (1, 2, 3, 4)),
        ("05, 010", 20, (5, 10)),  # leading zeros parse
        ("5-10(+02)", 20, (5, 7, 9)),
        ("15-30", 20, tuple(range(15, 21))),  # steps beyond the run are simply absent
        ("", 4, (1, 2, 3, 4)),
        ("  ", 4, (1, 2, 3, 4)),
    ],
)
def test_step_specs(text, total, expected):
    assert parse_steps(text).resolve(total) == expected


@pytest.mark.parametrize(
    ("text", "culprit"),
    [
        ("-3", "-"),
        ("0", "0"),
        ("10-5", "10-5"),
        ("a", "a"),
        ("5, ,6", ""),
        ("5(+2)", "("),
        ("5-10(+0)", "0"),
        ("1234567890", "1234567890"),
        ("5-", ""),
        ("5 6", "6"),
        ("٣", "٣"),  # a non-ASCII digit is not a number here
    ],
)
def test_step_errors_point_at_the_culprit(text, culprit):
    with pytest.raises(SpecError) as info:
        parse_steps(text)
    assert _under_caret(info.value) == culprit


def test_step_selection_membership_and_bounds():
    sel = parse_steps("3, 10-1000000(+7)")
    assert 3 in sel and 10 in sel and 17 in sel and 999_995 in sel and 999_996 not in sel
    assert 4 not in sel and 0 not in sel and "3" not in sel
    assert sel.first_beyond(20) == 24
    assert sel.first_beyond(10**7) is None
    assert parse_steps("5").first_beyond(20) is None
    assert ALL_STEPS.first_beyond(1) is None
    assert 12345 in ALL_STEPS and 0 not in ALL_STEPS


@pytest.mark.parametrize("text", ["5", "1,5-20(+5)", "3-4", "7-7", ""])
def test_steps_round_trip_through_format(text):
    sel = parse_steps(text)
    assert parse_steps(format_steps(sel)).resolve(50) == sel.resolve(50)


# --- query points ---------------------------------------------------------------------------------------------------


def test_points_as_a_grid_or_a_list():
    assert parse_points("2x1") == ((0.25, 0.5), (0.75, 0.5))
    assert len(parse_points("4x4")) == 16
    assert parse_points(" 3 ") == parse_points("3x3")
    assert parse_points("0.5,0.5; .25, 1;") == ((0.5, 0.5), (0.25, 1.0))


@pytest.mark.parametrize(
    ("text", "culprit"),
    [("0.5", "0.5"), ("a,b", "a"), ("2,0.5", "2"), ("0x3", "0"), ("17x1", "17"), ("0.5,0.5;;0.1,0.1", ";")],
)
def test_point_errors(text, culprit):
    with pytest.raises(SpecError) as info:
        parse_points(text)
    assert _under_caret(info.value).startswith(culprit)


# --- fuzzing: only the project's error, never another exception ---------------------------------------------------

_spec_alphabet = st.sampled_from(list("INOUTMinoutm0123456789-,()+ \t\n_:;٣²"))
_spec_text = st.one_of(
    st.text(_spec_alphabet, max_size=40),
    st.text(max_size=40),
    st.lists(
        st.one_of(
            st.sampled_from((*SD, "IN12", "M01", "OUT99", "in3")),
            st.builds(lambda a, b: f"{a}-{b}", st.sampled_from(SD), st.sampled_from(SD)),
            st.builds(lambda a, b, n: f"{a}-{b}({n})", st.sampled_from(SD), st.sampled_from(SD), st.integers(-3, 30)),
            st.integers(-5, 10**12).map(str),
        ),
        max_size=6,
    ).map(",".join),
)


@settings(max_examples=10_000, deadline=None)
@given(_spec_text)
def test_layer_grammar_fuzz(text):
    for names in (SD, XL):
        try:
            result = parse_layers(text, names)
        except DumpUnetError:
            continue
        assert result, "a successful parse selects at least one block"
        assert set(result) <= set(names)
        order = [names.index(n) for n in result]
        assert order == sorted(set(order))


@settings(max_examples=10_000, deadline=None)
@given(_spec_text)
def test_step_grammar_fuzz(text):
    try:
        selection = parse_steps(text)
    except DumpUnetError:
        return
    assert isinstance(selection, StepSelection)
    steps = selection.resolve(30)
    assert list(steps) == sorted(set(steps))
    assert all(1 <= s <= 30 for s in steps)


@settings(max_examples=2_000, deadline=None)
@given(st.text(st.sampled_from(list("0123456789.,; x×*-a")), max_size=20) | st.text(max_size=20))
def test_points_grammar_fuzz(text):
    try:
        points = parse_points(text)
    except DumpUnetError:
        return
    assert points
    assert all(0 <= x <= 1 and 0 <= y <= 1 for x, y in points)
