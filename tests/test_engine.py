"""The convolution engine against its contract, an independent reference and two oracles.

``reference.reference_convolve`` is a float64, index-mapping reference that shares no code
with convvol; ``numpy.fft`` (wrap border) and ``scipy.ndimage.correlate`` are second,
unrelated oracles.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import convvol
from convvol import ParameterError, convolve
from reference import BORDERS, output_shape, reference_convolve, source_index

PADDINGS = ["same", "valid", "full", 0, 1, 2]
STRIDES = [1, 2, 3]
DILATIONS = [1, 2]
KERNELS = {  # id: (kh, kw)
    "1x1": (1, 1),
    "2x2": (2, 2),
    "3x3": (3, 3),
    "4x4": (4, 4),
    "5x5": (5, 5),
    "3x5": (3, 5),
    "2x3": (2, 3),
}
# Each geometry of the grid runs over these images; between them they cover every depth,
# one and several filters, with and without bias, and flip on and off.
IMAGES = [  # (height, width, channels, filters, with_bias, flip)
    (7, 11, 3, 4, True, False),
    (1, 1, 1, 1, False, True),
    (2, 9, 4, 4, False, True),
    (13, 6, 8, 1, True, False),
]
CVAL = -0.75  # not 0, so a constant border that ignored cval would show


def padding_id(padding: object) -> str:
    return f"pad{padding}" if isinstance(padding, int) else str(padding)


def random_case(rng, height, width, channels, filters, kh, kw, with_bias):
    """A float32 volume in [−1, 1), N×C×kh×kw normal weights and (maybe) a bias."""
    volume = rng.uniform(-1, 1, (height, width, channels)).astype(np.float32)
    weights = rng.normal(size=(filters, channels, kh, kw))
    bias = rng.normal(size=filters) if with_bias else None
    return volume, weights, bias


def assert_matches_reference(volume, weights, bias=None, **settings):
    """convolve agrees with the float64 reference to float32 accuracy, scaled by Σ|w|·max|v|."""
    got = convolve(volume, weights, bias, **settings)
    expected = reference_convolve(volume, weights, bias, **settings)
    assert got.dtype == np.float32
    assert got.shape == expected.shape
    magnitude = max(1.0, float(np.abs(volume).max()), abs(settings.get("cval", 0.0)))
    weight_sum = float(np.abs(weights).sum(axis=(1, 2, 3)).max())
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * weight_sum * magnitude)


def is_empty(height, width, kh, kw, **geometry) -> bool:
    out_h, out_w = output_shape(height, width, kh, kw, **geometry)
    return out_h < 1 or out_w < 1


# --- the reference's index mapping is numpy.pad's ---------------------------------------


@pytest.mark.parametrize("border", BORDERS)
def test_reference_index_mapping_agrees_with_numpy_pad(border):
    """Anchors "numpy.pad's meanings", including pads many times longer than the array."""
    for size in range(1, 7):
        line = np.arange(10, 10 + size, dtype=np.float64)
        for before, after in itertools.product(range(14), repeat=2):
            if border == "constant":
                padded = np.pad(line, (before, after), mode="constant", constant_values=-1.0)
            else:
                padded = np.pad(line, (before, after), mode=border)
            source, inside = source_index(np.arange(-before, size + after), size, border)
            mapped = np.where(inside, line[source], -1.0)
            np.testing.assert_array_equal(mapped, padded, err_msg=f"{size=} {before=} {after=}")


# --- the grid against the reference -------------------------------------------------------


@pytest.mark.parametrize("kernel", KERNELS.values(), ids=KERNELS.keys())
@pytest.mark.parametrize("dilation", DILATIONS, ids=lambda d: f"d{d}")
@pytest.mark.parametrize("stride", STRIDES, ids=lambda s: f"s{s}")
@pytest.mark.parametrize("padding", PADDINGS, ids=padding_id)
@pytest.mark.parametrize("border", BORDERS)
def test_matches_reference_over_the_geometry_grid(border, padding, stride, dilation, kernel):
    kh, kw = kernel
    rng = np.random.default_rng(20240611)
    geometry = {"padding": padding, "stride": stride, "dilation": dilation}
    for height, width, channels, filters, with_bias, flip in IMAGES:
        if is_empty(height, width, kh, kw, **geometry):
            continue  # must raise: see test_every_empty_output_of_the_grid_raises
        volume, weights, bias = random_case(
            rng, height, width, channels, filters, kh, kw, with_bias
        )
        assert_matches_reference(
            volume, weights, bias, border=border, cval=CVAL, flip=flip, **geometry
        )


@pytest.mark.parametrize("flip", [False, True], ids=["correlate", "flip"])
@pytest.mark.parametrize("with_bias", [False, True], ids=["no_bias", "bias"])
@pytest.mark.parametrize("filters", [1, 4], ids=lambda n: f"N{n}")
@pytest.mark.parametrize("channels", [1, 3, 4, 8], ids=lambda c: f"C{c}")
def test_matches_reference_for_every_depth_filter_count_bias_and_flip(
    channels, filters, with_bias, flip
):
    rng = np.random.default_rng(7)
    geometries = [
        {"padding": "same", "stride": 1, "dilation": 1},
        {"padding": "same", "stride": 2, "dilation": 2},
        {"padding": "full", "stride": 3, "dilation": 1},
        {"padding": 2, "stride": 1, "dilation": 2},
    ]
    for border, (kh, kw), geometry in itertools.product(BORDERS, KERNELS.values(), geometries):
        volume, weights, bias = random_case(rng, 5, 8, channels, filters, kh, kw, with_bias)
        assert_matches_reference(
            volume, weights, bias, border=border, cval=CVAL, flip=flip, **geometry
        )


@settings(max_examples=600, deadline=None, database=None, derandomize=True)
@given(
    height=st.integers(1, 12),
    width=st.integers(1, 12),
    channels=st.integers(1, 5),
    filters=st.integers(1, 3),
    kh=st.integers(1, 6),
    kw=st.integers(1, 6),
    padding=st.sampled_from(["same", "valid", "full", 0, 1, 2, 3, 7]),
    border=st.sampled_from(BORDERS),
    cval=st.floats(-3, 3),
    stride=st.integers(1, 4),
    dilation=st.integers(1, 3),
    flip=st.booleans(),
    with_bias=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_random_combinations_match_reference_or_raise(
    height, width, channels, filters, kh, kw, padding, border, cval, stride, dilation, flip,
    with_bias, seed,
):  # fmt: skip
    rng = np.random.default_rng(seed)
    volume, weights, bias = random_case(rng, height, width, channels, filters, kh, kw, with_bias)
    settings_ = {
        "padding": padding, "border": border, "cval": cval,
        "stride": stride, "dilation": dilation, "flip": flip,
    }  # fmt: skip
    if is_empty(height, width, kh, kw, padding=padding, stride=stride, dilation=dilation):
        with pytest.raises(ParameterError):
            convolve(volume, weights, bias, **settings_)
    else:
        assert_matches_reference(volume, weights, bias, **settings_)


@pytest.mark.parametrize("border", BORDERS)
@pytest.mark.parametrize("width", [1, 2])
def test_pads_larger_than_the_image_follow_numpy_pad(border, width):
    """A 7×7 kernel pads 3 on each side of a 1- or 2-pixel-wide image: numpy pads iteratively."""
    rng = np.random.default_rng(width)
    volume, weights, bias = random_case(rng, 5, width, 2, 3, 7, 7, True)
    assert_matches_reference(volume, weights, bias, border=border, cval=2.5)
    assert_matches_reference(volume, weights, bias, border=border, cval=2.5, padding="full")


# --- geometry --------------------------------------------------------------------------


def test_seed_example_valid_3x3x3_filter_on_6x6x3_volume():
    volume = np.ones((6, 6, 3), np.float32)
    out = convolve(volume, np.ones((1, 3, 3, 3)), padding="valid")
    assert out.shape == (4, 4, 1)
    np.testing.assert_array_equal(out, np.full((4, 4, 1), 27.0, np.float32))


def test_every_shape_of_the_grid_follows_the_size_formula_and_empty_outputs_raise():
    shapes = [(1, 1), (2, 9), (3, 3), (7, 11), (13, 6)]
    for (height, width), (kh, kw), padding, stride, dilation in itertools.product(
        shapes, KERNELS.values(), PADDINGS, STRIDES, [1, 2, 3]
    ):
        geometry = {"padding": padding, "stride": stride, "dilation": dilation}
        volume = np.zeros((height, width, 1), np.float32)
        weights = np.ones((1, 1, kh, kw))
        if is_empty(height, width, kh, kw, **geometry):
            with pytest.raises(ParameterError):
                convolve(volume, weights, **geometry)
        else:
            expected = (*output_shape(height, width, kh, kw, **geometry), 1)
            assert convolve(volume, weights, **geometry).shape == expected, geometry


@pytest.mark.parametrize(
    ("shape", "kernel", "geometry"),
    [
        ((1, 1), (3, 3), {"padding": "valid"}),
        ((2, 9), (3, 3), {"padding": "valid"}),
        ((7, 11), (1, 12), {"padding": "valid"}),
        ((4, 4), (3, 3), {"padding": 0, "dilation": 2}),
        ((1, 1), (5, 5), {"padding": 1}),
        ((6, 6), (3, 3), {"padding": "valid", "dilation": 4, "stride": 2}),
    ],
)
def test_empty_output_raises_parameter_error(shape, kernel, geometry):
    volume = np.zeros((*shape, 2), np.float32)
    with pytest.raises(ParameterError):
        convolve(volume, np.ones((1, 2, *kernel)), **geometry)


@pytest.mark.parametrize("stride", [1, 2, 3, 4])
@pytest.mark.parametrize("kernel", [(2, 2), (4, 4), (2, 4), (6, 2)], ids=str)
@pytest.mark.parametrize("shape", [(7, 11), (8, 8), (1, 5), (13, 6)], ids=str)
def test_same_padding_with_even_kernels_gives_ceil_of_size_over_stride(shape, kernel, stride):
    height, width = shape
    out = convolve(np.zeros((height, width, 1)), np.ones((3, 1, *kernel)), stride=stride)
    assert out.shape == (-(-height // stride), -(-width // stride), 3)


@pytest.mark.parametrize("border", BORDERS)
@pytest.mark.parametrize("kernel", [(2, 2), (3, 3), (4, 2), (5, 4)], ids=str)
def test_same_padding_with_stride_keeps_every_stride_th_output_from_the_first(border, kernel):
    rng = np.random.default_rng(3)
    volume, weights, bias = random_case(rng, 9, 10, 3, 2, *kernel, True)
    full = convolve(volume, weights, bias, border=border)
    for stride in (2, 3, 4):
        strided = convolve(volume, weights, bias, border=border, stride=stride)
        np.testing.assert_allclose(strided, full[::stride, ::stride], rtol=1e-6, atol=1e-6)


def test_even_kernel_same_padding_puts_the_extra_row_and_column_at_the_bottom_right():
    """With a 2×2 kernel nothing is padded above or left: out[y, x] = Σ W[i, j]·V[y+i, x+j]."""
    impulse = np.zeros((5, 5, 1), np.float32)
    impulse[2, 2] = 1
    weights = np.array([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 1, 2, 2)
    out = convolve(impulse, weights, border="constant")[..., 0]
    expected = np.zeros((5, 5), np.float32)
    expected[1:3, 1:3] = [[4, 3], [2, 1]]
    np.testing.assert_array_equal(out, expected)


def test_4x4_same_padding_pads_one_before_and_two_after():
    """Counting the real pixels under a 4×4 box on a zero-bordered image shows the split."""
    out = convolve(np.ones((5, 5, 1)), np.ones((1, 1, 4, 4)), border="constant")[..., 0]
    covered = np.array([3, 4, 4, 3, 2])  # rows y−1 .. y+2 that fall inside 0..4
    np.testing.assert_array_equal(out, np.outer(covered, covered))


def test_full_padding_of_an_impulse_shows_the_whole_rotated_kernel():
    impulse = np.zeros((1, 1, 1))
    impulse[0, 0, 0] = 1
    kernel = np.arange(6.0).reshape(1, 1, 2, 3)
    out = convolve(impulse, kernel, padding="full", border="constant")[..., 0]
    np.testing.assert_array_equal(out, kernel[0, 0, ::-1, ::-1])


# --- inputs and outputs ----------------------------------------------------------------


@pytest.mark.parametrize(
    "dtype", [np.float64, np.float32, np.float16, np.uint8, np.uint16, np.int16, np.int32, np.int64]
)
def test_any_real_input_dtype_gives_float32(dtype):
    rng = np.random.default_rng(0)
    volume = rng.integers(0, 100, (6, 7, 3)).astype(dtype)
    weights = rng.integers(-3, 4, (2, 3, 3, 3))
    out = convolve(volume, weights)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, reference_convolve(volume, weights), rtol=1e-6)


def test_uint8_input_does_not_overflow():
    volume = np.full((4, 4, 3), 255, np.uint8)
    out = convolve(volume, np.ones((1, 3, 3, 3), np.uint8))
    np.testing.assert_array_equal(out, np.full((4, 4, 1), 27 * 255, np.float32))


def test_height_by_width_input_is_one_channel():
    rng = np.random.default_rng(1)
    image = rng.uniform(size=(6, 9))
    weights = rng.normal(size=(2, 1, 3, 3))
    out = convolve(image, weights)
    assert out.shape == (6, 9, 2)
    np.testing.assert_array_equal(out, convolve(image[:, :, np.newaxis], weights))


def test_bias_is_added_per_output_channel():
    volume = np.zeros((3, 4, 2))
    out = convolve(volume, np.ones((3, 2, 3, 3)), [1.0, -2.0, 0.5])
    np.testing.assert_array_equal(out, np.broadcast_to([1.0, -2.0, 0.5], (3, 4, 3)))


def test_constant_border_uses_cval_and_defaults_to_zero():
    volume = np.ones((3, 3, 1))
    box = np.ones((1, 1, 3, 3))
    assert convolve(volume, box, border="constant")[0, 0, 0] == 4.0
    assert convolve(volume, box, border="constant", cval=10)[0, 0, 0] == 4.0 + 5 * 10.0


@pytest.mark.parametrize("border", ["reflect", "symmetric", "edge", "wrap"])
def test_cval_only_matters_for_the_constant_border(border):
    rng = np.random.default_rng(2)
    volume, weights, _ = random_case(rng, 5, 6, 2, 2, 3, 3, False)
    np.testing.assert_array_equal(
        convolve(volume, weights, border=border, cval=99.0),
        convolve(volume, weights, border=border),
    )


def test_default_border_is_reflect_and_default_padding_is_same():
    rng = np.random.default_rng(4)
    volume, weights, _ = random_case(rng, 6, 5, 3, 2, 3, 3, False)
    np.testing.assert_array_equal(
        convolve(volume, weights),
        convolve(volume, weights, padding="same", border="reflect", stride=1, dilation=1),
    )
    assert_matches_reference(volume, weights, padding="same", border="reflect")


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint8])
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_inputs_are_not_modified_and_the_output_is_a_new_array(dtype, padding):
    rng = np.random.default_rng(5)
    volume = rng.integers(0, 50, (5, 6, 3)).astype(dtype)
    weights = rng.normal(size=(3, 3, 1, 1))
    bias = np.array([1.0, 2.0, 3.0])
    before = (volume.copy(), weights.copy(), bias.copy())
    out = convolve(volume, weights, bias, padding=padding, flip=True)
    out += 1000
    for original, argument in zip(before, (volume, weights, bias), strict=True):
        np.testing.assert_array_equal(argument, original)
    assert not np.shares_memory(out, volume)


def test_non_contiguous_views_are_read_like_copies():
    rng = np.random.default_rng(14)
    base = rng.uniform(-1, 1, (12, 14, 6)).astype(np.float32)
    weights = rng.normal(size=(4, 3, 5, 3, 2)).transpose(0, 1, 3, 2, 4)[..., 0]  # a view
    volume = base[::-2, 1::2, ::2]  # reversed, strided rows and columns, every other channel
    assert not volume.flags.c_contiguous
    assert not weights.flags.c_contiguous
    np.testing.assert_array_equal(
        convolve(volume, weights, stride=2), convolve(volume.copy(), weights.copy(), stride=2)
    )
    assert_matches_reference(volume, weights, border="symmetric", padding="full")
    fortran = np.asfortranarray(volume)
    np.testing.assert_array_equal(convolve(fortran, weights), convolve(volume.copy(), weights))


VOLUME = np.zeros((5, 5, 3), np.float32)
WEIGHTS = np.ones((2, 3, 3, 3))


@pytest.mark.parametrize(
    ("volume", "weights", "kwargs"),
    [
        pytest.param(VOLUME, np.ones((3, 3, 3)), {}, id="weights-3d"),
        pytest.param(VOLUME, np.ones((1, 2, 3, 3, 3)), {}, id="weights-5d"),
        pytest.param(VOLUME, np.ones((2, 4, 3, 3)), {}, id="channel-mismatch"),
        pytest.param(VOLUME[:, :, :1], WEIGHTS, {}, id="channel-mismatch-one-channel"),
        pytest.param(np.zeros((2, 5, 5, 3)), WEIGHTS, {}, id="volume-4d"),
        pytest.param(np.zeros(5), np.ones((1, 1, 1, 1)), {}, id="volume-1d"),
        pytest.param(np.zeros((0, 5, 3)), WEIGHTS, {}, id="volume-empty"),
        pytest.param(VOLUME, np.ones((2, 3, 0, 3)), {}, id="weights-empty"),
        pytest.param(VOLUME, WEIGHTS, {"stride": 0}, id="stride-0"),
        pytest.param(VOLUME, WEIGHTS, {"stride": -2}, id="stride-negative"),
        pytest.param(VOLUME, WEIGHTS, {"stride": 1.5}, id="stride-float"),
        pytest.param(VOLUME, WEIGHTS, {"dilation": -1}, id="dilation-negative"),
        pytest.param(VOLUME, WEIGHTS, {"dilation": 0}, id="dilation-0"),
        pytest.param(VOLUME, WEIGHTS, {"border": "mirror"}, id="border-unknown"),
        pytest.param(VOLUME, WEIGHTS, {"border": "reflct"}, id="border-typo"),
        pytest.param(VOLUME, WEIGHTS, {"padding": "samee"}, id="padding-unknown"),
        pytest.param(VOLUME, WEIGHTS, {"padding": -1}, id="padding-negative"),
        pytest.param(VOLUME, WEIGHTS, {"padding": 1.5}, id="padding-float"),
        pytest.param(VOLUME, WEIGHTS, {"bias": [1.0, 2.0, 3.0]}, id="bias-too-long"),
        pytest.param(VOLUME, WEIGHTS, {"bias": [1.0]}, id="bias-too-short"),
    ],
)
def test_bad_arguments_raise_parameter_error(volume, weights, kwargs):
    with pytest.raises(ParameterError):
        convolve(volume, weights, **kwargs)


def test_a_misspelt_border_gets_a_did_you_mean_hint():
    with pytest.raises(ParameterError) as caught:
        convolve(VOLUME, WEIGHTS, border="reflct")
    assert "reflect" in (caught.value.hint or "")


def test_parameter_error_is_a_convvol_error():
    assert issubclass(ParameterError, convvol.ConvvolError)


# --- properties ------------------------------------------------------------------------


def identity_weights(channels, kh, kw):
    """C filters; filter c copies channel c through a kh×kw kernel with its 1 at the centre
    (for even sides, the centre's top-left)."""
    weights = np.zeros((channels, channels, kh, kw))
    for c in range(channels):
        weights[c, c, (kh - 1) // 2, (kw - 1) // 2] = 1.0
    return weights


# Every kernel shape at dilation 1; odd ones also dilated (an even kernel's centre tap
# is not at the centre of its dilated reach).
IDENTITY_CASES = [(kernel, 1) for kernel in KERNELS.values()] + [((3, 3), 2), ((5, 3), 3)]


@pytest.mark.parametrize("border", BORDERS)
@pytest.mark.parametrize(("kernel", "dilation"), IDENTITY_CASES, ids=str)
def test_identity_kernel_returns_the_input_exactly(border, kernel, dilation):
    rng = np.random.default_rng(6)
    volume = rng.uniform(-100, 100, (7, 11, 3)).astype(np.float32)
    weights = identity_weights(3, *kernel)
    out = convolve(volume, weights, border=border, dilation=dilation)
    np.testing.assert_array_equal(out, volume)
    strided = convolve(volume, weights, border=border, dilation=dilation, stride=2)
    np.testing.assert_array_equal(strided, volume[::2, ::2])


@pytest.mark.parametrize("dilation", [1, 2, 3])
@pytest.mark.parametrize("size", [(1, 1), (2, 2), (3, 3), (4, 4), (5, 5), (3, 5), (2, 3), (9, 9)])
def test_normalised_box_blur_keeps_the_mean_of_a_wrap_bordered_image(size, dilation):
    rng = np.random.default_rng(8)
    volume = rng.uniform(0, 1, (7, 11, 3)).astype(np.float32)
    kh, kw = size
    weights = np.zeros((3, 3, kh, kw))
    for c in range(3):
        weights[c, c] = 1.0 / (kh * kw)
    out = convolve(volume, weights, border="wrap", dilation=dilation)
    np.testing.assert_allclose(out.mean(axis=(0, 1)), volume.mean(axis=(0, 1)), rtol=1e-5)


@pytest.mark.parametrize("border", BORDERS)
def test_convolution_is_linear_in_the_weights(border):
    rng = np.random.default_rng(9)
    volume = rng.uniform(-1, 1, (8, 7, 3)).astype(np.float32)
    first, second = rng.normal(size=(2, 4, 3, 3, 5))
    a, b = 2.5, -0.75
    combined = convolve(volume, a * first + b * second, border=border, cval=0.5, stride=2)
    separate = a * convolve(volume, first, border=border, cval=0.5, stride=2) + b * convolve(
        volume, second, border=border, cval=0.5, stride=2
    )
    np.testing.assert_allclose(combined, separate, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("border", BORDERS)
@pytest.mark.parametrize("kernel", [(2, 2), (3, 3), (2, 3), (5, 4)], ids=str)
@pytest.mark.parametrize("padding", ["same", "valid", "full", 1])
def test_flip_equals_the_reference_with_rotated_weights(border, kernel, padding):
    """flip=True rotates each layer 180° in space; the channel axis is not flipped."""
    rng = np.random.default_rng(10)
    volume, weights, bias = random_case(rng, 6, 9, 3, 2, *kernel, True)
    rotated = weights[:, :, ::-1, ::-1]
    settings_ = {"border": border, "padding": padding, "cval": 1.5}
    flipped = convolve(volume, weights, bias, flip=True, **settings_)
    np.testing.assert_array_equal(flipped, convolve(volume, rotated.copy(), bias, **settings_))
    expected = reference_convolve(volume, rotated, bias, **settings_)
    np.testing.assert_allclose(flipped, expected, rtol=1e-5, atol=1e-4)


def test_flip_negates_an_antisymmetric_kernel():
    ramp = np.tile(np.arange(6.0), (4, 1))  # rises by 1 per column
    difference = np.array([[-1.0, 0.0, 1.0]]).reshape(1, 1, 1, 3)
    assert np.all(convolve(ramp, difference, padding="valid") == 2.0)
    assert np.all(convolve(ramp, difference, padding="valid", flip=True) == -2.0)


def circular_correlation_fft(volume, weights, dilation=1):
    """Same-padded, wrap-bordered cross-correlation computed in the frequency domain.

    Each tap W[n, c, i, j] reads the pixel offset by (i·d − top, j·d − left), modulo the image
    size; embed it at that offset in an image-sized kernel and multiply spectra.
    """
    height, width, _ = volume.shape
    filters, channels, kh, kw = weights.shape
    top, left = dilation * (kh - 1) // 2, dilation * (kw - 1) // 2
    embedded = np.zeros((filters, channels, height, width))
    for i, j in itertools.product(range(kh), range(kw)):
        embedded[:, :, (i * dilation - top) % height, (j * dilation - left) % width] += weights[
            :, :, i, j
        ]
    image_spectrum = np.fft.fft2(volume, axes=(0, 1))  # H×W×C
    kernel_spectrum = np.conj(np.fft.fft2(embedded, axes=(2, 3)))  # N×C×H×W
    product = np.einsum("nchw,hwc->hwn", kernel_spectrum, image_spectrum)
    return np.fft.ifft2(product, axes=(0, 1)).real


@pytest.mark.parametrize("dilation", [1, 2])
@pytest.mark.parametrize("kernel", [(1, 1), (3, 3), (2, 3), (4, 4), (5, 5), (7, 7)], ids=str)
@pytest.mark.parametrize("shape", [(7, 11), (13, 6), (2, 9), (1, 2), (1, 1)], ids=str)
def test_wrap_border_equals_circular_correlation_by_fft(shape, kernel, dilation):
    rng = np.random.default_rng(11)
    volume, weights, _ = random_case(rng, *shape, 3, 2, *kernel, False)
    expected = circular_correlation_fft(volume.astype(np.float64), weights, dilation)
    out = convolve(volume, weights, border="wrap", dilation=dilation)
    atol = 1e-5 * np.abs(weights).sum(axis=(1, 2, 3)).max()
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=atol)
    strided = convolve(volume, weights, border="wrap", dilation=dilation, stride=3)
    np.testing.assert_allclose(strided, expected[::3, ::3], rtol=1e-5, atol=atol)


# --- scipy.ndimage and torch as oracles ------------------------------------------------

SCIPY_MODES = {  # numpy.pad name → scipy.ndimage name for the same extension
    "reflect": "mirror",
    "symmetric": "reflect",
    "edge": "nearest",
    "wrap": "grid-wrap",
    "constant": "grid-constant",
}


def scipy_same_correlation(volume, weights, bias, *, border, cval, dilation):
    """Sum of scipy.ndimage.correlate over channels, per filter, same size as the input.

    A dilated kernel is written out with zeros between the taps. scipy centres a kernel of
    side m at m // 2; ours reads from reach // 2 = (m − 1) // 2, one earlier when m is even,
    which scipy's origin −1 gives.
    """
    ndimage = pytest.importorskip("scipy.ndimage")
    height, width, channels = volume.shape
    filters, _, kh, kw = weights.shape
    dilated = np.zeros((filters, channels, dilation * (kh - 1) + 1, dilation * (kw - 1) + 1))
    dilated[:, :, ::dilation, ::dilation] = weights
    origin = [0 if side % 2 else -1 for side in dilated.shape[2:]]
    out = np.zeros((height, width, filters))
    for n, c in itertools.product(range(filters), range(channels)):
        out[:, :, n] += ndimage.correlate(
            volume[:, :, c].astype(np.float64),
            dilated[n, c],
            mode=SCIPY_MODES[border],
            cval=cval,
            origin=origin,
        )
    return out + (0 if bias is None else bias)


@pytest.mark.parametrize("border", BORDERS)
@pytest.mark.parametrize("dilation", [1, 2])
@pytest.mark.parametrize(
    "kernel", [(1, 1), (3, 3), (5, 5), (3, 5), (2, 2), (4, 4), (2, 3)], ids=str
)
@pytest.mark.parametrize("shape", [(7, 11), (13, 6), (2, 9), (1, 1)], ids=str)
def test_same_padding_agrees_with_scipy_ndimage_correlate(shape, kernel, dilation, border):
    pytest.importorskip("scipy")
    rng = np.random.default_rng(12)
    volume, weights, bias = random_case(rng, *shape, 3, 2, *kernel, True)
    expected = scipy_same_correlation(
        volume, weights, bias, border=border, cval=-1.25, dilation=dilation
    )
    atol = 1e-5 * np.abs(weights).sum(axis=(1, 2, 3)).max() * 1.25
    for stride in (1, 2):
        out = convolve(
            volume, weights, bias, border=border, cval=-1.25, dilation=dilation, stride=stride
        )
        np.testing.assert_allclose(out, expected[::stride, ::stride], rtol=1e-5, atol=atol)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("dilation", [1, 2])
@pytest.mark.parametrize("padding", [0, 1, 2])
def test_zero_padding_agrees_with_torch_conv2d(padding, dilation, stride):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(13)
    volume, weights, bias = random_case(rng, 9, 12, 3, 4, 3, 2, True)
    expected = (
        torch.nn.functional.conv2d(
            torch.from_numpy(volume.transpose(2, 0, 1)[np.newaxis].astype(np.float64)),
            torch.from_numpy(weights),
            torch.from_numpy(bias),
            stride=stride,
            padding=padding,
            dilation=dilation,
        )[0]
        .numpy()
        .transpose(1, 2, 0)
    )
    out = convolve(
        volume, weights, bias, padding=padding, border="constant", stride=stride, dilation=dilation
    )
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-4)
    if padding == 0:
        valid = convolve(volume, weights, bias, padding="valid", stride=stride, dilation=dilation)
        np.testing.assert_array_equal(valid, out)
