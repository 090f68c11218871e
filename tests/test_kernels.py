"""Built-in kernels: their values, their signs under cross-correlation, their parameters."""

from __future__ import annotations

import math

import numpy as np
import pytest

import convvol
from convvol import KernelError, builtin_kernel, convolve

NAMES = [
    "identity", "box", "gaussian", "sobel_x", "sobel_y", "prewitt_x", "prewitt_y",
    "scharr_x", "scharr_y", "laplacian", "sharpen", "emboss",
]  # fmt: skip

FIXED = {
    "sobel_x": [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]],
    "sobel_y": [[-1, -2, -1], [0, 0, 0], [1, 2, 1]],
    "prewitt_x": [[-1, 0, 1], [-1, 0, 1], [-1, 0, 1]],
    "prewitt_y": [[-1, -1, -1], [0, 0, 0], [1, 1, 1]],
    "scharr_x": [[-3, 0, 3], [-10, 0, 10], [-3, 0, 3]],
    "scharr_y": [[-3, -10, -3], [0, 0, 0], [3, 10, 3]],
    "laplacian": [[0, 1, 0], [1, -4, 1], [0, 1, 0]],
    "sharpen": [[0, -1, 0], [-1, 5, -1], [0, -1, 0]],
    "emboss": [[-2, -1, 0], [-1, 1, 1], [0, 1, 2]],
}
DERIVATIVES_X = ["sobel_x", "prewitt_x", "scharr_x"]
DERIVATIVES_Y = ["sobel_y", "prewitt_y", "scharr_y"]


def correlate_2d(image: np.ndarray, kernel: np.ndarray, **settings) -> np.ndarray:
    """One 2-D kernel over one 2-D image through the engine."""
    return convolve(image, kernel[np.newaxis, np.newaxis], **settings)[..., 0]


@pytest.mark.parametrize("name", NAMES)
def test_every_builtin_is_a_finite_float64_matrix_with_defaults(name):
    kernel = builtin_kernel(name)
    assert kernel.dtype == np.float64
    assert kernel.ndim == 2
    assert np.all(np.isfinite(kernel))


@pytest.mark.parametrize("name", FIXED)
def test_fixed_kernels_have_their_documented_values(name):
    np.testing.assert_array_equal(builtin_kernel(name), np.array(FIXED[name], np.float64))


@pytest.mark.parametrize("name", NAMES)
def test_each_call_returns_a_fresh_array(name):
    first = builtin_kernel(name)
    first[...] = 99.0
    assert not np.any(builtin_kernel(name) == 99.0)


def test_default_identity_box_and_gaussian():
    np.testing.assert_array_equal(builtin_kernel("identity"), [[0, 0, 0], [0, 1, 0], [0, 0, 0]])
    np.testing.assert_allclose(builtin_kernel("box"), np.full((3, 3), 1 / 9))
    assert builtin_kernel("gaussian").shape == (7, 7)  # sigma 1 → 2·ceil(3)+1


# --- signs under cross-correlation ----------------------------------------------------

STEP_RIGHT = np.repeat([[0.0, 0, 0, 1, 1, 1]], 5, axis=0)  # dark left, bright right


@pytest.mark.parametrize("name", DERIVATIVES_X)
def test_x_derivatives_are_positive_where_intensity_rises_to_the_right(name):
    response = correlate_2d(STEP_RIGHT, builtin_kernel(name), border="edge")
    assert np.all(response[:, 2:4] > 0)  # the two columns either side of the step
    np.testing.assert_array_equal(response[:, [0, 1, 4, 5]], 0)
    flipped = correlate_2d(STEP_RIGHT, builtin_kernel(name), border="edge", flip=True)
    np.testing.assert_array_equal(flipped, -response)


@pytest.mark.parametrize("name", DERIVATIVES_Y)
def test_y_derivatives_are_positive_where_intensity_rises_downwards(name):
    step_down = STEP_RIGHT.T.copy()  # dark top, bright bottom
    response = correlate_2d(step_down, builtin_kernel(name), border="edge")
    assert np.all(response[2:4, :] > 0)
    np.testing.assert_array_equal(response[[0, 1, 4, 5], :], 0)


@pytest.mark.parametrize("name", DERIVATIVES_X + DERIVATIVES_Y + ["laplacian"])
def test_derivative_kernels_ignore_a_constant_image(name):
    flat = np.full((6, 7), 0.25)
    np.testing.assert_allclose(correlate_2d(flat, builtin_kernel(name)), 0, atol=1e-6)


@pytest.mark.parametrize("name", ["box", "gaussian", "sharpen", "emboss", "identity"])
def test_unit_sum_kernels_keep_a_constant_image(name):
    flat = np.full((6, 7), 0.25)
    np.testing.assert_allclose(correlate_2d(flat, builtin_kernel(name)), 0.25, rtol=1e-6)


# --- sums, sizes and symmetry -----------------------------------------------------------


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 8, [3, 5], [4, 1], (2, 7)], ids=str)
def test_box_sums_to_one_with_equal_weights(size):
    kernel = builtin_kernel("box", size=size)
    assert kernel.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(kernel, kernel.flat[0])


@pytest.mark.parametrize("sigma", [0.3, 0.5, 1, 1.0, 1.5, 2.0, 3.7, 10])
def test_gaussian_default_size_is_2_ceil_3_sigma_plus_1_and_sums_to_one(sigma):
    kernel = builtin_kernel("gaussian", sigma=sigma)
    side = 2 * math.ceil(3 * sigma) + 1
    assert kernel.shape == (side, side)
    assert kernel.sum() == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("sigma", "size"), [(1.0, None), (1.5, 5), (0.8, 4), (2.0, [5, 9]), (1.0, [4, 6])]
)
def test_gaussian_is_symmetric_and_peaks_at_the_centre(sigma, size):
    kernel = builtin_kernel("gaussian", sigma=sigma, size=size)
    np.testing.assert_allclose(kernel, kernel[::-1, :], rtol=1e-12)
    np.testing.assert_allclose(kernel, kernel[:, ::-1], rtol=1e-12)
    assert np.all(kernel > 0)
    assert kernel.sum() == pytest.approx(1.0)
    h, w = kernel.shape
    centre = kernel[(h - 1) // 2 : h // 2 + 1, (w - 1) // 2 : w // 2 + 1]
    assert np.all(centre == kernel.max())
    if h == w:
        np.testing.assert_allclose(kernel, kernel.T, rtol=1e-12)


def test_wider_gaussian_is_flatter():
    narrow = builtin_kernel("gaussian", sigma=1.0, size=9)
    wide = builtin_kernel("gaussian", sigma=2.0, size=9)
    assert wide.max() < narrow.max()


@pytest.mark.parametrize("name", ["identity", "box", "gaussian"])
@pytest.mark.parametrize("size", [[3, 5], [4, 1], [1, 6], (2, 3)], ids=str)
def test_rectangular_size_is_height_by_width(name, size):
    assert builtin_kernel(name, size=size).shape == tuple(size)


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 6, [2, 3], [4, 5], [6, 1]], ids=str)
def test_identity_has_a_single_one_at_the_centre_or_its_top_left(size):
    kernel = builtin_kernel("identity", size=size)
    h, w = kernel.shape
    expected = np.zeros((h, w))
    expected[(h - 1) // 2, (w - 1) // 2] = 1
    np.testing.assert_array_equal(kernel, expected)


@pytest.mark.parametrize("border", ["reflect", "symmetric", "edge", "wrap", "constant"])
@pytest.mark.parametrize("size", [2, 3, 4, 5, [2, 3], [4, 1]], ids=str)
def test_identity_of_any_size_returns_the_image_under_same_padding(size, border):
    """Even sizes too: the 1 at the centre's top-left meets PyTorch's bottom/right padding."""
    image = np.random.default_rng(0).uniform(size=(7, 9)).astype(np.float32)
    out = correlate_2d(image, builtin_kernel("identity", size=size), border=border)
    np.testing.assert_array_equal(out, image)


# --- errors -----------------------------------------------------------------------------


def test_unknown_name_raises_kernel_error_with_a_did_you_mean_hint():
    with pytest.raises(KernelError) as caught:
        builtin_kernel("sobelx")
    assert "sobel_x" in (caught.value.hint or "")
    assert "did you mean" in caught.value.hint


def test_a_name_far_from_any_builtin_still_gets_a_hint():
    with pytest.raises(KernelError) as caught:
        builtin_kernel("zzzzzz")
    assert caught.value.hint


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("box", {"sigma": 1.0}),
        ("gaussian", {"sigmaa": 1.0}),
        ("sobel_x", {"size": 3}),
        ("laplacian", {"scale": 2}),
        ("identity", {"sise": 3}),
    ],
)
def test_unknown_parameter_raises_kernel_error(name, params):
    with pytest.raises(KernelError):
        builtin_kernel(name, **params)


@pytest.mark.parametrize(
    "sigma", [0, -1.0, float("nan"), float("inf"), "1.0", None, True, [1.0], 1e6]
)
def test_bad_sigma_raises_kernel_error(sigma):
    with pytest.raises(KernelError):
        builtin_kernel("gaussian", sigma=sigma)


@pytest.mark.parametrize("name", ["identity", "box", "gaussian"])
@pytest.mark.parametrize(
    "size", [0, -3, 2.5, "3", True, [3], [3, 3, 3], [3, 0], [3, 2.0], 100000], ids=repr
)
def test_bad_size_raises_kernel_error(name, size):
    with pytest.raises(KernelError):
        builtin_kernel(name, size=size)


def test_kernel_error_is_a_bank_error_and_a_convvol_error():
    assert issubclass(KernelError, convvol.BankError)
    assert issubclass(KernelError, convvol.ConvvolError)
