from __future__ import annotations

import pytest

from lib_dumpunet.errors import PREFIX, DumpUnetError, SpecError, caret_excerpt


def test_message_carries_the_prefix():
    assert str(DumpUnetError("Layers is empty")) == f"{PREFIX} Layers is empty"


def test_caret_sits_under_the_offending_text():
    err = SpecError("Layers", "IN00-IN12", 5, "unknown block", length=4)
    lines = str(err).splitlines()
    assert lines[-2].strip() == "IN00-IN12"
    assert lines[-1].index("^") == lines[-2].index("IN12")
    assert lines[-1].strip() == "^~~~"
    assert err.column == 6


def test_multiline_text_reports_the_line():
    text = "a girl,\n(~: IN99: x :~)"
    err = SpecError("Prompt", text, text.index("IN99"), "unknown block", length=4)
    assert (err.line, err.column) == (2, 5)
    assert "line 2, position 5" in str(err)
    assert str(err).splitlines()[-2].strip() == "(~: IN99: x :~)"


def test_long_lines_are_cut_around_the_position():
    text = "x" * 200 + "BAD" + "y" * 200
    _, column, excerpt, caret = caret_excerpt(text, 200, 3)
    assert column == 201
    assert excerpt.startswith("…") and excerpt.endswith("…")
    assert len(excerpt) < 80
    assert excerpt[caret.index("^") : caret.index("^") + 3] == "BAD"


@pytest.mark.parametrize("position", [-5, 0, 3, 99])
def test_positions_outside_the_text_are_clamped(position):
    err = SpecError("Steps", "abc", position, "bad")
    assert 0 <= err.position <= 3
    assert "^" in str(err)


def test_tabs_do_not_misalign_the_caret():
    _, _, excerpt, caret = caret_excerpt("\tIN12", 1, 4)
    assert excerpt[caret.index("^")] == "I"


def test_a_long_culprit_is_cut_to_the_window():
    text = "IN" + "0" * 5000 + "x"
    err = SpecError("Layers", text, 0, "too long", length=len(text))
    *_, excerpt, caret = str(err).splitlines()
    assert len(excerpt) < 100
    assert len(caret) <= len(excerpt)
