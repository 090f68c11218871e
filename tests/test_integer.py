"""Integer pixels through integer taps (engine/integer.py): exact, and the float path's pixels."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from convvol import bank_from_document, builtin_kernel, load_bank
from convvol.engine.integer import integer_plan
from convvol.pipeline import plan_stack, render_layers, render_plans, run_plans
from convvol.scaling import to_pixels
from convvol.settings import Settings

INTEGER_KERNELS = ["sharpen", "emboss", "laplacian", "sobel_x", "prewitt_y", "scharr_x"]
SCIPY_MODES = {"reflect": "mirror", "symmetric": "reflect", "edge": "nearest", "wrap": "wrap"}


def depthwise(kernel: str | list, **defaults: object):
    document: dict = {"filters": [{"name": "k", "kernel": kernel, "depthwise": True}]}
    if defaults:
        document["defaults"] = defaults
    return bank_from_document(document, name="k")


def stored_pixels(dtype=np.uint8, shape=(41, 37, 3), seed=0) -> np.ndarray:
    """Random pixels with the extremes in them (where clipping and overflow would show)."""
    top = np.iinfo(dtype).max
    pixels = np.random.default_rng(seed).integers(0, top + 1, shape, dtype=dtype)
    pixels[:5] = top
    pixels[-5:] = 0
    pixels[10:14, ::2] = top
    return pixels


def float_path(stored, banks, *, scale="clip", depth=8, **settings):
    """The pixels of the float path: float32 volumes, then to_pixels."""
    layers = plan_stack(stored.shape, banks, Settings(**settings))
    divisor = float(np.iinfo(stored.dtype).max)
    return to_pixels(run_plans(stored, layers, divisor=divisor), scale, depth)


def integer_path(stored, banks, *, scale="clip", depth=8, threads=None, **settings):
    layers = plan_stack(stored.shape, banks, Settings(**settings))
    divisor = float(np.iinfo(stored.dtype).max)
    assert integer_plan(layers[-1], stored, divisor, scale) is not None  # this path is tested
    return render_plans(stored, layers, scale=scale, depth=depth, divisor=divisor,
                        threads=threads)  # fmt: skip


def exact(stored: np.ndarray, kernel: np.ndarray, mode: str) -> np.ndarray:
    """The exact integer correlation per channel (scipy, int64), before scaling."""
    wide = stored.astype(np.int64)
    return np.stack(
        [ndimage.correlate(wide[:, :, c], kernel.astype(np.int64), mode=mode)
         for c in range(stored.shape[2])],
        axis=2,
    )  # fmt: skip


@pytest.mark.parametrize("name", INTEGER_KERNELS)
@pytest.mark.parametrize("border", ["reflect", "symmetric", "edge", "wrap", "constant"])
def test_integer_kernels_give_the_float_paths_pixels(name, border):
    stored = stored_pixels()
    bank = depthwise(name)
    expected = float_path(stored, [bank], border=border)
    np.testing.assert_array_equal(integer_path(stored, [bank], border=border), expected)


@pytest.mark.parametrize("name", ["sharpen", "emboss", "laplacian"])
@pytest.mark.parametrize("border", sorted(SCIPY_MODES))
def test_integer_path_equals_an_exact_integer_correlation(name, border):
    stored = stored_pixels(seed=1)
    kernel = builtin_kernel(name)
    expected = np.clip(exact(stored, kernel, SCIPY_MODES[border]), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(integer_path(stored, [depthwise(name)], border=border), expected)


@pytest.mark.parametrize(("scale", "activation"), [
    ("clip", "none"), ("clip", "relu"), ("clip", "abs"), ("abs", "none"), ("abs", "relu"),
])  # fmt: skip
@pytest.mark.parametrize("depth", [8, 16])
def test_scales_activations_and_depths_match_the_float_path(scale, activation, depth):
    stored = stored_pixels(seed=2)
    bank = depthwise("laplacian")
    expected = float_path(stored, [bank], scale=scale, depth=depth, activation=activation)
    result = integer_path(stored, [bank], scale=scale, depth=depth, activation=activation)
    assert result.dtype == expected.dtype
    np.testing.assert_array_equal(result, expected)


@pytest.mark.parametrize("depth", [8, 16])
def test_sixteen_bit_pixels_are_exact(depth):
    stored = stored_pixels(np.uint16, seed=3)
    kernel = builtin_kernel("sharpen")
    result = integer_path(stored, [depthwise("sharpen")], depth=depth)
    sums = np.clip(exact(stored, kernel, "mirror"), 0, 65535)
    expected = sums if depth == 16 else (sums + 128) // 257  # rint(s / 257): no ties
    np.testing.assert_array_equal(result, expected)
    np.testing.assert_array_equal(result, float_path(stored, [depthwise("sharpen")], depth=depth))


def test_sums_too_large_for_int16_use_int32_and_stay_exact():
    stored = stored_pixels(seed=4)
    kernel = [[0, -90, 0], [-90, 400, -90], [0, -90, 0]]  # 255 · 760 > 32767
    layers = plan_stack(stored.shape, [depthwise(kernel)], Settings())
    plan = integer_plan(layers[0], stored, 255.0, "clip")
    assert plan is not None
    assert plan.sums == np.int32
    expected = np.clip(exact(stored, np.array(kernel), "mirror"), 0, 255)
    result = render_plans(stored, layers, divisor=255.0)
    np.testing.assert_array_equal(result, expected)


def test_filters_that_each_read_another_channel_and_dilation():
    stored = stored_pixels(seed=5)
    bank = bank_from_document({"filters": [
        {"name": "a", "channels": {"b": "sobel_x"}},
        {"name": "b", "channels": {"r": "laplacian"}},
    ]}, name="t")  # fmt: skip
    for dilation in (1, 2):
        expected = float_path(stored, [bank], dilation=dilation)
        np.testing.assert_array_equal(integer_path(stored, [bank], dilation=dilation), expected)


def test_results_do_not_depend_on_threads_or_bands():
    stored = stored_pixels(shape=(301, 53, 3), seed=6)
    bank = depthwise("emboss")
    one = integer_path(stored, [bank], threads=1)
    np.testing.assert_array_equal(integer_path(stored, [bank], threads=2), one)
    np.testing.assert_array_equal(one, float_path(stored, [bank]))


def test_render_layers_takes_the_integer_path_for_stored_pixels():
    stored = stored_pixels(seed=7)
    rendered = render_layers(stored, [load_bank("sharpen")], divisor=255.0)
    np.testing.assert_array_equal(rendered.pixels, float_path(stored, [load_bank("sharpen")]))


def plan_for(stored, bank, scale="clip", divisor=None, **settings):
    layers = plan_stack(stored.shape, [bank], Settings(**settings))
    divisor = float(np.iinfo(stored.dtype).max) if divisor is None else divisor
    return integer_plan(layers[0], stored, divisor, scale)


@pytest.mark.parametrize(("case", "settings"), [
    ("fractional weights", {}),
    ("stride", {"stride": 2}),
    ("scale signed", {}),
    ("scale minmax", {}),
    ("constant border between levels", {"border": "constant", "cval": 0.5}),
])  # fmt: skip
def test_integer_path_is_refused_where_it_would_not_be_exact(case, settings):
    stored = stored_pixels()
    bank = depthwise("box" if case == "fractional weights" else "sharpen")
    scale = case.split()[1] if case.startswith("scale") else "clip"
    assert plan_for(stored, bank, scale, **settings) is None


def test_integer_path_is_refused_for_floats_odd_divisors_bias_and_mixed_channels():
    stored = stored_pixels()
    sharpen = depthwise("sharpen")
    assert plan_for(stored.astype(np.float32), sharpen, divisor=255.0) is None
    assert plan_for(stored, sharpen, divisor=1.0) is None  # --channels keep of raw values
    biased = bank_from_document(
        {"filters": [{"name": "k", "kernel": "sharpen", "depthwise": True, "bias": 0.1}]},
        name="b",
    )
    assert plan_for(stored, biased) is None
    assert plan_for(stored, load_bank("edges")) is None  # filters reading several channels


def test_a_constant_border_on_a_whole_level_is_exact():
    stored = stored_pixels(seed=8)
    settings = {"border": "constant", "cval": 1.0}
    expected = float_path(stored, [depthwise("sharpen")], **settings)
    np.testing.assert_array_equal(integer_path(stored, [depthwise("sharpen")], **settings),
                                  expected)  # fmt: skip


@pytest.mark.parametrize("kernel", [[[1, -1], [2, 0]], [[1, 2, -3, 1]]])  # even sizes
@pytest.mark.parametrize("padding", ["same", "valid", "full", 3])
def test_even_kernels_and_every_padding_match_the_float_path(kernel, padding):
    stored = stored_pixels(shape=(33, 29, 3), seed=9)
    bank = depthwise(kernel)
    expected = float_path(stored, [bank], padding=padding, border="wrap")
    np.testing.assert_array_equal(integer_path(stored, [bank], padding=padding, border="wrap"),
                                  expected)  # fmt: skip


def test_grey_and_strided_pixels_as_readers_give_them():
    rgba = stored_pixels(shape=(20, 21, 4), seed=10)
    view = rgba[:, :, :3]  # RGBA read as RGB: a view, not contiguous
    bank = depthwise("sharpen")
    expected = float_path(np.ascontiguousarray(view), [bank])
    np.testing.assert_array_equal(integer_path(view, [bank]), expected)
    grey = rgba[:, :, :1]
    np.testing.assert_array_equal(integer_path(grey, [bank]), float_path(grey.copy(), [bank]))
