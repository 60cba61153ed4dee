from __future__ import annotations

import pytest

from lib_dumpunet.colorize import ColorSettings
from lib_dumpunet.errors import DumpUnetError
from lib_dumpunet.settings import (
    FIELDS,
    JobSettings,
    changed_values,
    from_mapping,
    from_values,
    get,
)


def test_fields_follow_the_original_tab_order_with_defaults():
    paths = [f.path for f in FIELDS]
    assert paths[:4] == ["features.enabled", "features.layers", "features.steps", "features.average"]
    assert paths.index("features.colors.method") < paths.index("attention.enabled")
    assert paths.index("attention.enabled") < paths.index("layer_prompt.enabled") < paths.index("output.save_images")
    assert len(paths) == len(set(paths))
    defaults = from_values([])
    assert defaults == JobSettings()
    assert not defaults.active
    assert defaults.features.colors == ColorSettings()
    assert get(defaults, "attention.colors.h") == "(2+v)/3"
    assert get(defaults, "features.average") == "disable"


def test_values_in_field_order_round_trip():
    values = [f.default for f in FIELDS]
    values[[f.path for f in FIELDS].index("features.layers")] = "IN00-OUT11"
    values[[f.path for f in FIELDS].index("attention.outputs")] = ["V*Q*K", "K"]
    settings = from_values(values)
    assert settings.features.layers == "IN00-OUT11"
    assert settings.attention.outputs == ("K", "V*Q*K"), "kept in the canonical order"
    assert changed_values(settings) == {"features.layers": "IN00-OUT11", "attention.outputs": ["K", "V*Q*K"]}


def test_a_mapping_by_path_or_nested():
    flat = from_mapping({"features.enabled": True, "features.colors.gain": 2})
    nested = from_mapping({"features": {"enabled": True, "colors": {"gain": 2.0}}})
    assert flat == nested
    assert flat.features.colors.gain == 2.0
    assert from_values([{"layer_prompt.enabled": True}]).layer_prompt.enabled


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"features.enabled": "yes"}, "true or false"),
        ({"features.average": "mean"}, "one of"),
        ({"features.colors.gain": float("nan")}, "finite number"),
        ({"features.colors.gain": True}, "finite number"),
        ({"attention.outputs": ["Q*K", "QK"]}, "some of"),
        ({"features.layers": 5}, "text"),
        ({"features.colours": {"h": "v"}}, "unknown settings"),
        ({"nonsense": 1}, "unknown settings"),
    ],
)
def test_bad_values_name_the_setting(data, message):
    with pytest.raises(DumpUnetError, match=message):
        from_mapping(data)


def test_too_many_values_are_refused():
    with pytest.raises(DumpUnetError, match="at most"):
        from_values([None] * (len(FIELDS) + 1))


def test_outputs_may_come_as_comma_text_from_the_api():
    assert from_mapping({"attention.outputs": "Q*K, K"}).attention.outputs == ("K", "Q*K")


@pytest.mark.parametrize(("value", "expected"), [(0, 0), (512, 512), (384.0, 384)])
def test_whole_number_settings_take_integral_values(value, expected):
    assert from_mapping({"output.display_min": value}).output.display_min == expected


@pytest.mark.parametrize("value", [-1, 4097, 12.5, True, "256", float("inf")])
def test_whole_number_settings_refuse_anything_else(value):
    with pytest.raises(DumpUnetError, match=r"'output\.display_min' must be a whole number from 0 to 4096"):
        from_mapping({"output.display_min": value})
