"""Tests for convvol.output: the --scale rules (to_unit) and the bit depths (quantize)."""

from __future__ import annotations

import numpy as np
import pytest

import convvol
from convvol.scaling import SCALES, quantize, to_pixels, to_unit


def column(*values: float) -> np.ndarray:
    """A 1×N×1 float32 volume holding ``values``."""
    return np.array(values, dtype=np.float32).reshape(1, -1, 1)


# --- to_unit ----------------------------------------------------------------------------


def test_scales_are_the_documented_four() -> None:
    assert set(SCALES) == {"clip", "abs", "minmax", "signed"}


def test_clip_is_the_default() -> None:
    volume = column(-2.0, -0.5, 0.0, 0.25, 0.999, 1.0, 1.5)
    np.testing.assert_array_equal(to_unit(volume), to_unit(volume, "clip"))


def test_clip() -> None:
    unit = to_unit(column(-2.0, -0.5, 0.0, 0.25, 0.999, 1.0, 1.5), "clip")
    np.testing.assert_allclose(unit.ravel(), [0, 0, 0, 0.25, 0.999, 1, 1], rtol=0, atol=1e-7)


def test_abs() -> None:
    unit = to_unit(column(-2.0, -0.5, -0.25, 0.0, 0.25, 1.5), "abs")
    np.testing.assert_allclose(unit.ravel(), [1, 0.5, 0.25, 0, 0.25, 1], rtol=0, atol=1e-7)


def test_signed() -> None:
    unit = to_unit(column(-3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 3.0), "signed")
    np.testing.assert_allclose(unit.ravel(), [0, 0, 0.25, 0.5, 0.75, 1, 1], rtol=0, atol=1e-7)


def test_minmax_stretches_each_channel_on_its_own() -> None:
    volume = np.stack(
        [
            np.arange(6, dtype=np.float32).reshape(2, 3),  # 0..5
            np.arange(6, dtype=np.float32).reshape(2, 3) * -3 + 100,  # 100..85, reversed
            np.linspace(-1e-3, 1e-3, 6, dtype=np.float32).reshape(2, 3),  # tiny range
        ],
        axis=2,
    )
    unit = to_unit(volume, "minmax")
    expected = np.linspace(0, 1, 6).reshape(2, 3)
    np.testing.assert_allclose(unit[:, :, 0], expected, atol=1e-6)
    np.testing.assert_allclose(unit[:, :, 1], expected[::-1, ::-1], atol=1e-6)
    np.testing.assert_allclose(unit[:, :, 2], expected, atol=1e-4)
    for channel in range(3):
        assert unit[:, :, channel].min() == 0.0
        assert unit[:, :, channel].max() == pytest.approx(1.0, abs=1e-6)


def test_minmax_of_negative_values() -> None:
    unit = to_unit(column(-10.0, -7.5, -5.0), "minmax")
    np.testing.assert_allclose(unit.ravel(), [0, 0.5, 1], atol=1e-7)


@pytest.mark.parametrize("value", [0.0, 0.5, 7.0, -3.0])
def test_minmax_flat_channel_becomes_zero(value: float) -> None:
    volume = np.zeros((3, 4, 2), np.float32)
    volume[:, :, 0] = value  # flat
    volume[:, :, 1] = np.arange(12).reshape(3, 4)  # not flat
    unit = to_unit(volume, "minmax")
    assert np.all(unit[:, :, 0] == 0.0)
    assert unit[:, :, 1].min() == 0.0
    assert unit[:, :, 1].max() == pytest.approx(1.0)
    assert np.all(np.isfinite(unit))


def test_minmax_single_pixel_is_zero() -> None:
    assert to_unit(np.full((1, 1, 3), 42.0, np.float32), "minmax").tolist() == [[[0.0] * 3]]


@pytest.mark.parametrize("scale", ["clip", "abs"])
def test_nan_becomes_zero(scale: str) -> None:
    unit = to_unit(column(np.nan, 0.5, np.nan), scale)
    assert not np.isnan(unit).any()
    np.testing.assert_allclose(unit.ravel(), [0.0, 0.5, 0.0])


@pytest.mark.parametrize("scale", sorted(SCALES))
def test_nan_never_survives(scale: str) -> None:
    volume = np.full((2, 2, 2), np.nan, np.float32)
    volume[0, 0, 0] = 1.0
    unit = to_unit(volume, scale)
    assert np.all(np.isfinite(unit))
    assert unit.min() >= 0.0
    assert unit.max() <= 1.0


@pytest.mark.parametrize(
    ("scale", "value", "expected"),
    [
        ("clip", np.inf, 1.0),
        ("clip", -np.inf, 0.0),
        ("abs", np.inf, 1.0),
        ("abs", -np.inf, 1.0),  # |−inf| = inf, clipped to 1
        ("signed", np.inf, 1.0),
        ("signed", -np.inf, 0.0),  # 0.5 + (−inf)/2 = −inf, clipped to 0
    ],
)
def test_infinities_follow_the_formula(scale: str, value: float, expected: float) -> None:
    """±inf are floats like any other: the documented formula, then the clip."""
    assert to_unit(column(value, 0.0), scale)[0, 0, 0] == expected


@pytest.mark.parametrize("scale", sorted(SCALES))
def test_to_unit_returns_new_float32_array_in_range(scale: str) -> None:
    rng = np.random.default_rng(7)
    volume = (rng.standard_normal((5, 6, 3)) * 4).astype(np.float32)
    before = volume.copy()
    unit = to_unit(volume, scale)
    assert unit.dtype == np.float32
    assert unit.shape == volume.shape
    assert unit.min() >= 0.0
    assert unit.max() <= 1.0
    assert not np.shares_memory(unit, volume)
    np.testing.assert_array_equal(volume, before)  # the input is not modified


@pytest.mark.parametrize("dtype", [np.float64, np.int32, np.uint8, np.bool_])
def test_to_unit_accepts_other_dtypes(dtype: type) -> None:
    volume = np.array([[[0], [1], [2]]]).astype(dtype)
    unit = to_unit(volume)
    assert unit.dtype == np.float32
    assert unit.ravel().tolist() == [0.0, 1.0, 1.0]


def test_unknown_scale_raises_parameter_error_with_hint() -> None:
    with pytest.raises(convvol.ParameterError) as caught:
        to_unit(column(0.0), "minmx")
    error = caught.value
    assert error.exit_code == 2
    assert "minmx" in str(error)
    assert error.hint is not None
    assert "did you mean" in error.hint
    assert "minmax" in error.hint


@pytest.mark.parametrize("misspelt", ["clp", "sigend", "singed", "minmaxx", "abss"])
def test_close_misspellings_get_a_suggestion(misspelt: str) -> None:
    with pytest.raises(convvol.ParameterError) as caught:
        to_unit(column(0.0), misspelt)
    assert caught.value.hint is not None
    assert "did you mean" in caught.value.hint


def test_unrelated_scale_name_is_still_a_parameter_error() -> None:
    with pytest.raises(convvol.ParameterError, match="scale"):
        to_unit(column(0.0), "zzzzzzzz")


# --- quantize ---------------------------------------------------------------------------


def test_quantize_8_bit() -> None:
    unit = np.array([0.0, 1 / 255, 0.5, 254 / 255, 1.0], np.float32)
    pixels = quantize(unit, 8)
    assert pixels.dtype == np.uint8
    assert pixels.tolist() == [0, 1, 128, 254, 255]


def test_quantize_16_bit() -> None:
    unit = np.array([0.0, 1 / 65535, 0.25, 0.5, 1.0], np.float64)
    pixels = quantize(unit, 16)
    assert pixels.dtype == np.uint16
    assert pixels.tolist() == [0, 1, 16384, 32768, 65535]


def test_quantize_default_depth_is_8() -> None:
    assert quantize(np.array([1.0])).dtype == np.uint8


@pytest.mark.parametrize(("depth", "top"), [(8, 255), (16, 65535)])
def test_quantize_rounds_to_nearest(depth: int, top: int) -> None:
    levels = np.arange(top + 1, dtype=np.float64)
    below = (levels - 0.4) / top  # rounds up to the level
    above = (levels + 0.4) / top  # rounds down to the level
    np.testing.assert_array_equal(quantize(np.clip(below, 0, 1), depth)[1:], levels[1:])
    np.testing.assert_array_equal(quantize(np.clip(above, 0, 1), depth)[:-1], levels[:-1])


@pytest.mark.parametrize("depth", [1, 4, 12, 32, 0])
def test_quantize_unknown_depth(depth: int) -> None:
    with pytest.raises(convvol.ParameterError, match="8 or 16"):
        quantize(np.zeros(3), depth)


def test_quantize_keeps_shape() -> None:
    assert quantize(np.zeros((4, 5, 3)), 16).shape == (4, 5, 3)


def test_to_pixels_is_scale_then_quantize() -> None:
    volume = column(-1.0, -0.5, 0.0, 0.5, 1.0)
    assert to_pixels(volume, "signed", 8).ravel().tolist() == [0, 64, 128, 191, 255]
    assert to_pixels(volume, "abs", 16).ravel().tolist() == [65535, 32768, 0, 32768, 65535]
    assert to_pixels(volume).ravel().tolist() == [0, 0, 0, 128, 255]
