"""What a hostile or careless text does to the parsers, folders and pasted infotext (issue 10's review findings).

Every field the user types has a length limit with a message naming the field, every parser reads its text in
linear time, folders never surface a raw OSError/RuntimeError, and pasted infotext never raises. The long-input
tests print how long each input took (run with `-rA` or `-s` to see it); they assert on results, never on time.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lib_dumpunet.errors import DumpUnetError
from lib_dumpunet.expr import MAX_LENGTH, compile_expression
from lib_dumpunet.layer_prompt import MAX_PROMPT_LENGTH, parse_layer_prompt, replace_blocks
from lib_dumpunet.paths import MAX_COMPONENT_BYTES, MAX_FOLDER_LENGTH, resolve_folder
from lib_dumpunet.settings import FIELDS, from_mapping, get, text_limit
from lib_dumpunet.specs import MAX_POINTS_LENGTH, MAX_SPEC_LENGTH, parse_layers, parse_points, parse_steps
from lib_dumpunet.webui import infotext

SD = (*(f"IN{i:02d}" for i in range(12)), "M00", *(f"OUT{i:02d}" for i in range(12)))
MEGABYTE = 1 << 20


def _timed(record_property, label: str, call, text: str):
    """Run `call(text)`; print and record how long it took. Returns the result or the DumpUnetError raised."""
    start = time.perf_counter()
    try:
        result = call(text)
    except DumpUnetError as err:
        result = err
    seconds = time.perf_counter() - start
    record_property(f"{label} ({len(text):,} chars) seconds", round(seconds, 6))
    print(f"{label}: {len(text):,} characters in {seconds * 1000:.2f} ms")
    return result


# --- finding 1: query points, and a length limit on every field ------------------------------------------------------


def test_the_reported_query_points_are_refused_by_length(record_property):
    err = _timed(record_property, "parse_points", parse_points, "1" * 20000 + "a")
    assert isinstance(err, DumpUnetError)
    assert "Query points is 20,001 characters long" in str(err)
    assert f"at most {MAX_POINTS_LENGTH:,}" in str(err)


@pytest.mark.parametrize("digits", [20_000, 100_000, MEGABYTE])
def test_query_points_parse_in_linear_time_without_the_limit(record_property, digits):
    text = "1" * digits + "a"
    err = _timed(record_property, "parse_points (no limit)", lambda t: parse_points(t, max_length=None), text)
    assert isinstance(err, DumpUnetError)
    assert "at most 32 characters" in str(err)


def test_long_point_lists_stop_at_256_points(record_property):
    assert len(parse_points("0.5,0.5; " * 256)) == 256
    text = "0.5,0.5; " * (MEGABYTE // 9)
    err = _timed(record_property, "parse_points list", lambda t: parse_points(t, max_length=None), text)
    assert isinstance(err, DumpUnetError)
    assert "at most 256 points" in str(err)


@pytest.mark.parametrize(
    ("call", "limit", "field"),
    [
        (lambda t: parse_layers(t, SD), MAX_SPEC_LENGTH, "Layers"),
        (lambda t: parse_steps(t), MAX_SPEC_LENGTH, "Image saving steps"),
        (lambda t: parse_points(t), MAX_POINTS_LENGTH, "Query points"),
        (lambda t: parse_layer_prompt(t, SD), MAX_PROMPT_LENGTH, "Prompt"),
        (lambda t: replace_blocks("(~: IN00: a :~)", t, SD), MAX_SPEC_LENGTH, "X/Y/Z values"),
        (lambda t: compile_expression(t, field="H"), MAX_LENGTH, "H"),
    ],
    ids=["layers", "steps", "points", "prompt", "xyz-blocks", "expression"],
)
def test_every_parser_refuses_a_text_over_its_limit_naming_the_field(record_property, call, limit, field):
    text = "1" * (limit + 1)
    err = _timed(record_property, f"{field} over its limit", call, text)
    assert isinstance(err, DumpUnetError)
    assert str(err).startswith(f"[Dump U-Net] {field}")
    assert f"{limit:,}" in str(err)


def test_every_text_setting_has_a_limit_naming_it():
    for f in FIELDS:
        if f.type is not str:
            continue
        limit = text_limit(f.path)
        assert get(from_mapping({f.path: "x" * limit}), f.path) == "x" * limit
        with pytest.raises(DumpUnetError, match=rf"setting '{f.path}' is {limit + 1:,} characters long"):
            from_mapping({f.path: "x" * (limit + 1)})


def test_a_megabyte_to_every_setting_is_refused_quickly(record_property):
    for f in FIELDS:
        if f.type is str:
            err = _timed(record_property, f.path, lambda t, p=f.path: from_mapping({p: t}), "x" * MEGABYTE)
            assert isinstance(err, DumpUnetError)


def test_error_messages_do_not_repeat_a_huge_word():
    for text in ("IN" + "0" * 5000 + "x", "A" * 900 + "00", "OUT11" + " " * 900 + "-IN00"):
        with pytest.raises(DumpUnetError) as info:
            parse_layers(text, SD)
        assert len(str(info.value)) < 400


# --- fuzzing: long inputs built from short hostile pieces -------------------------------------------------------------

_pieces = st.text(st.sampled_from(list("0123456789.,;x×*-+() INOUTMa_:~\\\n\t")), min_size=1, max_size=12)
_tails = st.text(max_size=4)


def _long(piece: str, tail: str, size: int = 100_000) -> str:
    return piece * (size // len(piece) + 1) + tail


_PARSERS = {
    "layers": lambda t: parse_layers(t, SD, max_length=None),
    "steps": lambda t: parse_steps(t, max_length=None),
    "points": lambda t: parse_points(t, max_length=None),
    "prompt": lambda t: parse_layer_prompt(t, SD, max_length=None),
    "prompt-construct": lambda t: parse_layer_prompt(f"a (~: IN00-OUT11: {t} :~)", SD, max_length=None),
    "layer-span": lambda t: parse_layer_prompt(f"(~: {t}: x :~)", SD, max_length=None),
}


@pytest.mark.parametrize("parser", sorted(_PARSERS))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(piece=_pieces, tail=_tails)
def test_long_inputs_fuzz(record_property, parser, piece, tail):
    """Over 100 kB of a repeated piece: only the project's error or a result, never another exception."""
    text = _long(piece, tail)
    result = _timed(record_property, parser, _PARSERS[parser], text)
    assert result is not None


@pytest.mark.parametrize("parser", sorted(_PARSERS))
def test_a_megabyte_of_each_hostile_piece(record_property, parser):
    for piece in ("1", "IN0", "0.", "1,", "(~:", "a;", "\\;", "IN00-", "(+", " ", ":"):
        result = _timed(record_property, f"{parser} {piece!r}", _PARSERS[parser], _long(piece, "a", MEGABYTE))
        assert result is not None


_EXPRESSION_PIECES = ["-", "(", "v+", "9**", "sin(", "[", "1", "not ", "v<", "abs(v)*", "~", "lambda:"]


@pytest.mark.parametrize("piece", _EXPRESSION_PIECES)
def test_expressions_at_their_length_limit(record_property, piece):
    text = (piece * MAX_LENGTH)[: MAX_LENGTH - 1] + "v"
    result = _timed(record_property, f"expression {piece!r}", lambda t: compile_expression(t, field="H"), text)
    assert isinstance(result, DumpUnetError) or result(np.zeros(2)).shape == (2,)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(piece=st.text(st.sampled_from(list("v+-*/()0123456789.<>=!,abcdefghijklmnopqrstuvwxyz _[]")), min_size=1))
def test_expression_fuzz_near_the_limit(record_property, piece):
    text = (piece * (MAX_LENGTH // len(piece) + 1))[:MAX_LENGTH]
    result = _timed(record_property, "expression", lambda t: compile_expression(t, field="H"), text)
    assert isinstance(result, DumpUnetError) or callable(result)


# --- finding 2 and 4: folders ---------------------------------------------------------------------------------------


def test_a_name_over_255_bytes_is_the_projects_error(tmp_path):
    with pytest.raises(DumpUnetError, match=r"Output path: the name .* is 300 bytes long") as info:
        resolve_folder("a" * 300, base=tmp_path, default="d", shared=False, field="Output path")
    assert str(MAX_COMPONENT_BYTES) in str(info.value)
    with pytest.raises(DumpUnetError, match="Save path: the name"):  # bytes, not characters: 100 × 3 bytes
        resolve_folder("ok/" + "語" * 100, base=tmp_path, default="d", shared=True, field="Save path")


def test_a_symlink_loop_is_the_projects_error(tmp_path):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    with pytest.raises(DumpUnetError, match=r"^\[Dump U-Net\] Output path: 'a/x' cannot be used as a folder"):
        resolve_folder("a/x", base=tmp_path, default="d", shared=False, field="Output path")


def test_a_folder_text_over_its_limit_is_refused(tmp_path):
    text = "a/" * MAX_FOLDER_LENGTH
    with pytest.raises(DumpUnetError, match=f"Save path is {len(text):,} characters long"):
        resolve_folder(text, base=tmp_path, default="d", shared=False, field="Save path")


@pytest.mark.parametrize("text", ["~", "~/dumps", "~root/dumps", " ~/x"])
def test_a_leading_tilde_is_refused_with_a_reason(tmp_path, text):
    with pytest.raises(DumpUnetError, match="not expanded to a home folder"):
        resolve_folder(text, base=tmp_path, default="d", shared=False, field="Output path")
    assert not (tmp_path / "~").exists()


def test_a_tilde_inside_a_name_is_an_ordinary_character(tmp_path):
    assert (
        resolve_folder("runs/a~b", base=tmp_path, default="d", shared=True, field="Output path")
        == Path(tmp_path / "runs" / "a~b").resolve()
    )


# --- finding 3: pasted infotext ---------------------------------------------------------------------------------------

_GETTERS = dict(zip(["switch", *(f.path for f in FIELDS)], infotext.PASTE_NAMES, strict=True))


@pytest.mark.parametrize(
    "raw",
    [
        "[" * 100_000,
        "{" * 100_000,
        '{"a":' * 50_000,
        "[1, 2]",
        "not json",
        '"a string"',
        "x" * (infotext.MAX_INFOTEXT_LENGTH + 1),
        12,
        ["a"],
    ],
    ids=["brackets", "braces", "nested-keys", "a-list", "text", "json-string", "too-long", "number", "a-list-object"],
)
def test_unreadable_infotext_changes_nothing_and_never_raises(record_property, raw):
    params = {infotext.INFOTEXT_KEY: raw}
    assert infotext.restored(params) is None
    values = {name: get(params) for name, get in _GETTERS.items()}
    assert values == dict.fromkeys(_GETTERS)  # None: every input, the switch too, is left as it is


def test_a_setting_that_cannot_be_read_is_left_alone_and_the_rest_pasted():
    raw = '{"features.enabled": true, "features.layers": 5, "features.colors.gain": "high", "nonsense": 1}'
    params = {infotext.INFOTEXT_KEY: raw}
    assert _GETTERS["switch"](params) is True
    assert _GETTERS["features.enabled"](params) is True
    assert _GETTERS["features.layers"](params) is None
    assert _GETTERS["features.colors.gain"](params) is None
    assert _GETTERS["attention.enabled"](params) is False  # absent: the image left it at its default
    assert infotext.restored(params) == {"features.enabled": True}


def test_a_pasted_setting_over_its_limit_is_left_alone():
    params = {infotext.INFOTEXT_KEY: '{"features.layers": "' + "I" * (MAX_SPEC_LENGTH + 1) + '"}'}
    assert _GETTERS["features.layers"](params) is None
