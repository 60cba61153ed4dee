from __future__ import annotations

import colorsys
import dataclasses
import itertools
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from lib_dumpunet.colorize import (
    AVERAGES,
    LABELS,
    METHODS,
    NORMALIZE,
    SPACES,
    TRANSFORMS,
    Colorizer,
    ColorSettings,
    average_map,
    hls_to_rgb,
)
from lib_dumpunet.errors import DumpUnetError, SpecError


def colorizer(**changes) -> Colorizer:
    return Colorizer.from_settings(ColorSettings(**changes))


def maps(*rows) -> np.ndarray:
    """One (1, 1, w) map per row of values."""
    return np.array([[row] for row in rows], dtype=np.float32)


def pixel_rule(value) -> np.ndarray:
    """The original's uint8(clip(value·256, 0, 255)) in float32, as it computed it."""
    return np.clip(np.asarray(value, dtype=np.float32) * np.float32(256), 0, 255).astype(np.uint8)


def colorsys_pixel(v: float) -> np.ndarray:
    """The default Custom/HSL colour of v, via the standard library."""
    return pixel_rule(colorsys.hls_to_rgb((2 + v) / 3, 0.5, 1.0))


# --- the settings record -------------------------------------------------------------------------------------------


def test_defaults_are_the_originals():
    s = ColorSettings()
    assert (s.method, s.transform, s.space, s.normalize) == ("Custom", "Auto [0,1]", "HSL", "tile")
    assert (s.clamp_min, s.clamp_max, s.gain, s.offset) == (-1.0, 1.0, 1.0, 0.0)
    assert (s.r, s.g, s.b, s.h, s.s, s.l) == ("abs(v)", "abs(v)", "abs(v)", "(2+v)/3", "1.0", "0.5")


def test_choices_are_exported_for_the_ui():
    assert METHODS == ("White/Black", "Red/Blue", "Custom")
    assert TRANSFORMS == ("Auto [0,1]", "Auto [-1,1]", "Linear", "Sigmoid")
    assert SPACES == ("RGB", "HSL")
    assert NORMALIZE == ("tile", "block")
    assert AVERAGES == ("sum", "1-norm", "2-norm")
    assert set(LABELS) == {f.name for f in dataclasses.fields(ColorSettings)}


def test_settings_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        ColorSettings().gain = 2.0  # type: ignore[misc]


# --- checking ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"method": "Blue"}, "Colorize method: unknown choice 'Blue'"),
        ({"transform": "Log"}, "Value transform: unknown choice 'Log'"),
        ({"space": "HSV"}, "Color space: unknown choice 'HSV'"),
        ({"normalize": "global"}, "Normalization: unknown choice 'global'"),
        ({"clamp_min": 1.0, "clamp_max": 1.0}, "Clamp min. (1) must be smaller than Clamp max. (1)"),
        ({"clamp_min": 2.0, "clamp_max": -1.0}, "Clamp min. (2) must be smaller than Clamp max. (-1)"),
        ({"gain": 0.0}, "gain must be greater than 0"),
        ({"gain": -1.0}, "gain must be greater than 0"),
        ({"gain": float("inf")}, "gain: expected a finite number"),
        ({"offset": float("nan")}, "offset X: expected a finite number"),
        ({"clamp_min": "-1"}, "Clamp min.: expected a number"),
        ({"clamp_max": True}, "Clamp max.: expected a number"),
        ({"h": "v[0]"}, "H: indexing"),
        ({"s": ""}, "S: the expression is empty"),
        ({"l": "clip(v)"}, "L: clip() takes 3 arguments"),
        ({"space": "RGB", "g": "__import__('os')"}, "G: unknown function '__import__'"),
    ],
)
def test_bad_settings_are_refused_naming_the_control(changes, message):
    with pytest.raises(DumpUnetError) as info:
        Colorizer.from_settings(ColorSettings(**changes), field_prefix="U-Net features: ")
    assert f"U-Net features: {message}" in str(info.value)


def test_expression_errors_carry_the_prefixed_field_and_a_caret():
    with pytest.raises(SpecError) as info:
        Colorizer.from_settings(ColorSettings(h="(2+v)/3 + x"), field_prefix="Attention ")
    assert info.value.field == "Attention H"
    assert info.value.position == len("(2+v)/3 + ")


def test_only_the_expressions_in_use_are_checked():
    # Hidden text boxes cannot be fixed by the user, so they do not stop a run.
    assert colorizer(space="HSL", r="v[0]").mode == "RGB"
    assert colorizer(space="RGB", h="v[0]").mode == "RGB"
    assert colorizer(method="Red/Blue", h="v[0]", r="v[0]").mode == "RGB"
    assert colorizer(method="White/Black", h="v[0]").mode == "L"


# --- value transforms (reference/dumpunet-spec.md §4.2) -----------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "low", "high", "x", "v"),
    [
        # 2·((clamp(x, lo, hi) − lo)/(hi − lo) − 0.5) for Red/Blue and Custom
        ("Red/Blue", 0.0, 1.0, 0.5, 0.0),
        ("Red/Blue", 0.0, 1.0, -1.0, -1.0),
        ("Red/Blue", 0.0, 1.0, 1.0, 1.0),
        ("Red/Blue", 0.0, 1.0, 7.0, 1.0),
        ("Custom", -2.0, 2.0, 0.0, 0.0),
        ("Custom", -2.0, 2.0, 1.0, 0.5),
        ("Custom", -1.0, 1.0, -0.25, -0.25),
        # (|clamp(x)| − X)/(Y − X) for White/Black
        ("White/Black", -1.0, 1.0, -0.5, 0.5),
        ("White/Black", -1.0, 1.0, 0.5, 0.5),
        ("White/Black", -1.0, 1.0, -3.0, 1.0),
        ("White/Black", -1.0, 1.0, 0.0, 0.0),
        ("White/Black", -2.0, 1.0, -1.0, 0.5),  # Y = max(|lo|, |hi|) = 2, X = 0: signs differ
        ("White/Black", -2.0, -1.0, -2.0, 1.0),  # both negative: X = 1, Y = 2, reversed
        ("White/Black", -2.0, -1.0, -1.0, 0.0),
        ("White/Black", -2.0, -1.0, -1.5, 0.5),
        ("White/Black", -2.0, -1.0, 0.0, 0.0),  # clamped to −1 first
        ("White/Black", 1.0, 3.0, 2.0, 0.5),  # both positive: X = 1, Y = 3
        ("White/Black", 0.0, 2.0, 1.0, 0.5),  # sign(0) differs from sign(2): X = 0
    ],
)
def test_linear(method, low, high, x, v):
    c = colorizer(method=method, transform="Linear", clamp_min=low, clamp_max=high)
    assert c.transform(maps([x]))[0, 0, 0] == pytest.approx(v, abs=1e-6)


@pytest.mark.parametrize(("gain", "offset"), [(1.0, 0.0), (2.0, 0.5), (0.1, -3.0), (10.0, 0.0)])
@pytest.mark.parametrize("x", [-5.0, -1.0, -0.1, 0.0, 0.3, 2.0])
def test_sigmoid(gain, offset, x):
    s = 1 / (1 + np.exp(-gain * (x + offset)))
    signed = colorizer(method="Custom", transform="Sigmoid", gain=gain, offset=offset).transform(maps([x]))
    absolute = colorizer(method="White/Black", transform="Sigmoid", gain=gain, offset=offset).transform(maps([x]))
    assert signed[0, 0, 0] == pytest.approx(2 * (s - 0.5), abs=1e-6)
    assert absolute[0, 0, 0] == pytest.approx(2 * abs(s - 0.5), abs=1e-6)


def test_sigmoid_at_zero_is_black_in_white_black():
    c = colorizer(method="White/Black", transform="Sigmoid")
    assert c.transform(maps([0.0]))[0, 0, 0] == 0.0
    assert c(maps([0.0, 100.0, -100.0]))[0, 0].tolist() == [0, 255, 255]


@pytest.mark.parametrize("method", METHODS)
def test_auto(method):
    x = maps([1.0, 2.0, 3.0], [-4.0, 0.0, 4.0])
    np.testing.assert_allclose(colorizer(method=method).transform(x)[:, 0], [[0, 0.5, 1], [0, 0.5, 1]])
    symmetric = colorizer(method=method, transform="Auto [-1,1]").transform(x)[:, 0]
    np.testing.assert_allclose(symmetric, [[-1, 0, 1], [-1, 0, 1]])


@pytest.mark.parametrize("transform", ["Auto [0,1]", "Auto [-1,1]"])
def test_auto_leaves_constant_maps_as_they_are(transform):
    x = maps([0.3, 0.3], [5.0, 5.0], [-2.0, -2.0], [0.0, 0.0])
    c = colorizer(method="White/Black", transform=transform)
    np.testing.assert_array_equal(c.transform(x), x)
    # …and then v is clipped into [-1, 1] and coloured: 0.3 → 76, 5 → 1 → 255, negatives and 0 → black.
    assert c(x)[:, 0, 0].tolist() == [76, 255, 0, 0]


def test_tile_and_block_normalisation_differ_as_expected():
    x = maps([0.0, 0.5, 1.0], [0.0, 1.0, 2.0])
    tile = colorizer(method="White/Black", normalize="tile")
    block = colorizer(method="White/Black", normalize="block")
    # Each map on its own min/max: both look the same.
    assert tile(x)[:, 0].tolist() == [[0, 128, 255], [0, 128, 255]]
    # One min/max for the canvas: the first map is half as bright as the second.
    assert block(x)[:, 0].tolist() == [[0, 64, 128], [0, 128, 255]]
    np.testing.assert_allclose(block.transform(x)[:, 0], [[0, 0.25, 0.5], [0, 0.5, 1]])


@pytest.mark.parametrize("normalize", NORMALIZE)
@pytest.mark.parametrize("transform", TRANSFORMS)
def test_many_maps_are_coloured_as_each_alone_or_as_one_block(normalize, transform):
    # More maps than one internal chunk holds, so chunk boundaries and per-map statistics are exercised.
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((40, 64, 64)) * rng.uniform(0.1, 5, (40, 1, 1))).astype(np.float32)
    c = colorizer(method="White/Black", transform=transform, normalize=normalize)
    whole = c(x)
    if normalize == "tile" or not transform.startswith("Auto"):  # Linear and Sigmoid use no statistics
        separately = np.concatenate([c(x[i : i + 1]) for i in range(len(x))])
        np.testing.assert_array_equal(whole, separately)
    else:
        lo, hi = x.min(), x.max()
        v = (x - lo) / (hi - lo)
        v = v if transform == "Auto [0,1]" else 2 * (v - 0.5)
        assert np.abs(whole.astype(int) - pixel_rule(v).astype(int)).max() <= 1


# --- pixels and colour methods (§4.1, §4.3) ------------------------------------------------------------------------


def test_pixel_rule_truncates_like_the_original():
    c = colorizer(method="White/Black", transform="Linear")  # v = |x| for x in [-1, 1]
    x = maps([0.0, 0.25, 0.5, 0.7, 0.999, 1.0, -0.5, 1 / 256, 0.0039])
    assert c(x)[0, 0].tolist() == [0, 64, 128, 179, 255, 255, 128, 1, 0]


@given(hnp.arrays(np.float32, (3, 5, 7), elements=st.floats(-1.5, 1.5, width=32)))
def test_white_black_and_red_blue_are_exactly_the_original_formulas(x):
    v = colorizer(method="Red/Blue", transform="Linear").transform(x)
    grey = colorizer(method="White/Black", transform="Linear")(x)
    np.testing.assert_array_equal(grey, pixel_rule(np.abs(np.clip(x, -1, 1))))
    red_blue = colorizer(method="Red/Blue", transform="Linear")(x)
    np.testing.assert_array_equal(red_blue[..., 0], pixel_rule(np.maximum(v, 0)))
    np.testing.assert_array_equal(red_blue[..., 1], 0)
    np.testing.assert_array_equal(red_blue[..., 2], pixel_rule(np.maximum(-v, 0)))


def test_red_blue_signs():
    c = colorizer(method="Red/Blue", transform="Linear")
    assert c(maps([0.5, -0.5, 0.0, 1.0, -1.0]))[0, 0].tolist() == [
        [128, 0, 0],
        [0, 0, 128],
        [0, 0, 0],
        [255, 0, 0],
        [0, 0, 255],
    ]
    # With Auto [0,1] every value is ≥ 0, so everything is red (or black at the minimum).
    auto = colorizer(method="Red/Blue")(maps([-3.0, -1.0, 2.0]))
    assert (auto[..., 2] == 0).all()
    assert auto[0, 0, :, 0].tolist() == [0, 102, 255]  # (−1 + 3)/5 = 0.4 → 102


@pytest.mark.parametrize("v", [0.0, 0.1, 0.25, 0.3, 0.5, 0.6, 0.75, 0.9, 1.0])
def test_default_custom_hsl_matches_colorsys(v):
    # Auto [0,1] on a map holding 0 and 1 leaves v as it is.
    pixels = colorizer()(maps([0.0, v, 1.0]))[0, 0, 1]
    assert np.abs(pixels.astype(int) - colorsys_pixel(v).astype(int)).max() <= 1


def test_default_hues_run_from_blue_through_magenta_to_red():
    pixels = colorizer()(maps([0.0, 0.5, 1.0]))[0, 0]
    assert pixels.tolist() == [[0, 0, 255], [255, 0, 255], [255, 0, 0]]


def test_recommended_sigmoid_colours_negative_green_zero_blue_positive_red():
    pixels = colorizer(transform="Sigmoid")(maps([-20.0, 0.0, 20.0]))[0, 0]
    assert pixels.argmax(axis=-1).tolist() == [1, 2, 0]


@given(hnp.arrays(np.float32, (2, 4, 6), elements=st.floats(-1, 1, width=32)))
@settings(max_examples=50)
def test_custom_colours_are_tabulated_within_one_level(x):
    c = colorizer(transform="Linear", space="RGB", r="v", g="-v * 0.7", b="where(v > 0.2, 1, v * v)")
    v = np.clip(x, -1, 1)
    expected = np.stack([pixel_rule(v), pixel_rule(-v * 0.7), pixel_rule(np.where(v > 0.2, 1, v * v))], axis=-1)
    assert np.abs(c(x).astype(int) - expected.astype(int)).max() <= 1


@given(
    st.floats(-3, 3, allow_nan=False),
    st.floats(-0.5, 1.5, allow_nan=False),
    st.one_of(st.just(0.0), st.floats(-0.5, 1.5, allow_nan=False)),
)
def test_hls_to_rgb_agrees_with_colorsys(h, l, s):  # noqa: E741
    expected = colorsys.hls_to_rgb(h, l, s)
    got = hls_to_rgb(np.array([h]), np.array([l]), np.array([s]))
    assert [float(c[0]) for c in got] == pytest.approx(expected, abs=1e-12)


def test_hls_to_rgb_broadcasts():
    r, g, b = hls_to_rgb(np.linspace(0, 1, 5), 0.5, np.array([[1.0], [0.0]]))
    assert r.shape == g.shape == b.shape == (2, 5)
    np.testing.assert_array_equal(r[1], 0.5)  # no saturation: grey at lightness 0.5


# --- NaN, infinities, shapes, inputs -------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "transform", "normalize"), list(itertools.product(METHODS, TRANSFORMS, NORMALIZE)))
def test_nan_is_black_and_never_raises_or_warns(method, transform, normalize):
    nan = np.nan
    x = maps([0.0, nan, 1.0, 0.5], [nan, nan, nan, nan], [nan, 2.0, 2.0, nan])
    c = colorizer(method=method, transform=transform, normalize=normalize)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = c(x)
    black = np.isnan(x)
    assert (out[black] == 0).all()
    if method == "White/Black" and transform == "Auto [0,1]" and normalize == "tile":
        # The first map is scaled on its numbers only (nanmin/nanmax): 0 → 0, 1 → 255, 0.5 → 128.
        assert out[0, 0].tolist() == [0, 0, 255, 128]


@pytest.mark.parametrize(("method", "transform"), list(itertools.product(METHODS, TRANSFORMS)))
def test_infinities_do_not_raise(method, transform):
    x = maps([0.0, np.inf, 1.0], [-np.inf, 0.0, 1.0], [np.inf, np.inf, np.inf])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = colorizer(method=method, transform=transform)(x)
    assert out.shape[:3] == x.shape


def test_output_shapes_and_types():
    x = np.random.default_rng(0).standard_normal((5, 3, 4)).astype(np.float32)
    grey = colorizer(method="White/Black")
    assert grey.mode == "L"
    assert grey(x).shape == (5, 3, 4)
    assert grey(x).dtype == np.uint8
    for c in (colorizer(), colorizer(method="Red/Blue")):
        assert c.mode == "RGB"
        out = c(x)
        assert out.shape == (5, 3, 4, 3)
        assert out.dtype == np.uint8
        assert out.flags.c_contiguous
    assert colorizer()(np.zeros((0, 3, 4), np.float32)).shape == (0, 3, 4, 3)
    assert grey(np.zeros((0, 3, 4), np.float32)).shape == (0, 3, 4)


@pytest.mark.parametrize("shape", [(3, 4), (1, 2, 3, 4), ()])
def test_maps_must_be_a_stack_of_2d_maps(shape):
    with pytest.raises(ValueError, match=r"\(N, h, w\)"):
        colorizer()(np.zeros(shape, np.float32))


@pytest.mark.parametrize("transform", TRANSFORMS)
def test_torch_and_numpy_give_the_same_image_and_inputs_are_not_modified(transform):
    x = np.random.default_rng(1).standard_normal((4, 8, 8)).astype(np.float32)
    before = x.copy()
    tensor = torch.from_numpy(x.copy())
    c = colorizer(transform=transform)
    np.testing.assert_array_equal(c(x), c(tensor))
    np.testing.assert_array_equal(c.transform(x), c.transform(tensor))
    np.testing.assert_array_equal(x, before)
    np.testing.assert_array_equal(tensor.numpy(), before)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_other_tensor_dtypes_are_accepted(dtype):
    x = torch.linspace(-1, 1, 16, dtype=dtype).reshape(1, 4, 4)
    out = colorizer(method="White/Black")(x)
    assert out[0, 0, 0] == 0
    assert out[0, -1, -1] == 255


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(METHODS),
    st.sampled_from(TRANSFORMS),
    st.sampled_from(NORMALIZE),
    hnp.arrays(np.float32, hnp.array_shapes(min_dims=3, max_dims=3, max_side=6), elements=st.floats(width=32)),
)
def test_any_values_give_an_image(method, transform, normalize, x):
    c = colorizer(method=method, transform=transform, normalize=normalize)
    out = c(x)
    assert out.dtype == np.uint8
    assert out.shape == (x.shape if method == "White/Black" else (*x.shape, 3))
    assert (out[np.isnan(x)] == 0).all()


# --- averaged map (§4.5) -------------------------------------------------------------------------------------------


def test_average_map_matches_the_originals_three_meanings():
    x = np.array([[[1.0, -2.0]], [[3.0, 2.0]], [[-1.0, 0.0]]], dtype=np.float32)  # (C=3, 1, 2)
    np.testing.assert_allclose(average_map(x, "sum"), [[1.0, 0.0]])  # the mean, despite the name
    np.testing.assert_allclose(average_map(x, "1-norm"), [[5 / 3, 4 / 3]])
    np.testing.assert_allclose(average_map(x, "2-norm"), [[np.sqrt(11) / 3, np.sqrt(8) / 3]])  # not RMS
    assert average_map(torch.from_numpy(x), "sum").dtype == np.float32
    assert average_map(x, "2-norm").shape == (1, 2)


def test_average_map_refuses_unknown_kinds():
    with pytest.raises(DumpUnetError, match="unknown choice 'mean'"):
        average_map(np.zeros((2, 2, 2), np.float32), "mean")  # type: ignore[arg-type]


def test_indexed_pixels_are_grey_levels_or_palette_indices():
    x = np.linspace(-2, 2, 60, dtype=np.float32).reshape(1, 6, 10)
    grey = colorizer(method="White/Black")
    assert grey.image_mode == "L"
    assert (grey.indexed(x) == grey(x)).all()
    assert grey.max_palette_error == 0
    hsl = colorizer()
    assert hsl.image_mode == "P"
    shown = hsl.palette[hsl.indexed(x)].astype(int)
    assert np.abs(shown - hsl(x).astype(int)).max() <= hsl.max_palette_error <= 2
    assert colorizer(method="Red/Blue").max_palette_error <= 1
