"""Kernel generators and kernel arithmetic: unsharp, dog, log against scikit-image and
scipy, motion and disk, compass sets and rotations, {sum: ...} and {rotate: ...} in banks."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import convvol
from convvol import BankError, KernelError, builtin_kernel, convolve
from convvol.bank import bank_from_document
from convvol.cli import cli
from convvol.kernels import RING, rotate, weighted_sum

ndimage = pytest.importorskip("scipy.ndimage")
filters = pytest.importorskip("skimage.filters")

RNG = np.random.default_rng(18)
# Smooth-ish values in [0.4, 0.6]: an unsharp mask of amount ≤ 1 stays within [0, 1], so
# scikit-image's final clipping changes nothing.
IMAGE = (0.4 + 0.2 * RNG.random((41, 37))).astype(np.float64)


def correlate_2d(image: np.ndarray, kernel: np.ndarray, **settings: object) -> np.ndarray:
    """One 2-D kernel over one 2-D image through the engine (float32)."""
    return convolve(image, kernel[np.newaxis, np.newaxis], **settings)[..., 0]


# --- the oracles ----------------------------------------------------------------------


@pytest.mark.parametrize(("sigma", "amount"), [(1.0, 1.0), (2.0, 0.5), (1.5, 2.0), (0.7, 1.0)])
def test_unsharp_matches_scikit_image_unsharp_mask(sigma: float, amount: float) -> None:
    """scikit-image blurs with scipy's mode 'reflect' (ours: symmetric) and truncate 4."""
    image = IMAGE if amount <= 1 else 0.45 + 0.1 * (IMAGE - 0.4) / 0.2
    expected = filters.unsharp_mask(image, radius=sigma, amount=amount)
    kernel = builtin_kernel("unsharp", sigma=sigma, amount=amount)
    assert kernel.shape[0] == 2 * int(4 * sigma + 0.5) + 1
    ours = correlate_2d(image, kernel, border="symmetric")
    np.testing.assert_allclose(ours, expected, atol=2e-6)


@pytest.mark.parametrize(("low", "high"), [(1.0, 1.6), (1.0, 3.0), (0.8, 2.5)])
@pytest.mark.parametrize("method", ["direct", "fft"])
def test_dog_matches_scikit_image_difference_of_gaussians(
    low: float, high: float, method: str
) -> None:
    expected = filters.difference_of_gaussians(IMAGE, low, high)  # mode 'nearest'
    kernel = builtin_kernel("dog", sigma1=low, sigma2=high)
    ours = correlate_2d(IMAGE, kernel, border="edge", method=method)
    np.testing.assert_allclose(ours, expected, atol=2e-6)
    assert abs(kernel.sum()) < 1e-12  # two unit-sum Gaussians


def test_dog_default_sigma2_is_1_6_sigma1() -> None:
    np.testing.assert_allclose(
        builtin_kernel("dog", sigma1=1.5), builtin_kernel("dog", sigma1=1.5, sigma2=2.4)
    )


@pytest.mark.parametrize("sigma", [0.8, 1.0, 2.0, 3.3])
def test_log_matches_scipy_gaussian_laplace(sigma: float) -> None:
    expected = ndimage.gaussian_laplace(IMAGE, sigma)  # mode 'reflect' (ours: symmetric)
    ours = correlate_2d(IMAGE, builtin_kernel("log", sigma=sigma), border="symmetric")
    scale = np.abs(expected).max()
    np.testing.assert_allclose(ours, expected, atol=2e-6 * max(1.0, scale))


def test_log_is_negative_on_a_bright_blob() -> None:
    blob = np.zeros((21, 21))
    blob[10, 10] = 1
    assert correlate_2d(blob, builtin_kernel("log", sigma=2))[10, 10] < 0


def test_unsharp_is_the_documented_sum() -> None:
    blur = builtin_kernel("gaussian", sigma=1.5, size=13)
    expected = 1.8 * builtin_kernel("identity", size=13) - 0.8 * blur
    np.testing.assert_allclose(builtin_kernel("unsharp", sigma=1.5, amount=0.8), expected)
    assert builtin_kernel("unsharp", sigma=1.5, amount=0.8).sum() == pytest.approx(1.0)


# --- motion, disk ---------------------------------------------------------------------


@pytest.mark.parametrize(("length", "side"), [(1, 1), (2, 3), (3, 3), (4, 5), (9, 9), (10.5, 11)])
def test_motion_side_is_the_smallest_odd_at_least_length(length: float, side: int) -> None:
    kernel = builtin_kernel("motion", length=length, angle=0)
    assert kernel.shape == (side, side)
    assert kernel.sum() == pytest.approx(1.0)


def test_motion_along_x_is_a_uniform_row_and_along_y_a_column() -> None:
    row = builtin_kernel("motion", length=9, angle=0)
    np.testing.assert_allclose(row[4], np.full(9, 1 / 9))
    assert not np.delete(row, 4, axis=0).any()
    np.testing.assert_allclose(builtin_kernel("motion", length=9, angle=90), row.T, atol=1e-12)


def test_motion_at_45_degrees_runs_up_to_the_right() -> None:
    kernel = builtin_kernel("motion", length=7, angle=45)
    assert kernel[1, -2] > 0  # up and to the right (y down, angle counter-clockwise)
    assert kernel[-2, 1] > 0
    assert kernel[1, 1] == 0
    assert kernel[-2, -2] == 0
    np.testing.assert_allclose(kernel, kernel[::-1, ::-1], atol=1e-12)  # symmetric line


@pytest.mark.parametrize(("radius", "side"), [(0.5, 1), (1, 3), (1.5, 3), (2, 5), (4.2, 9)])
def test_disk_is_a_normalised_symmetric_pillbox(radius: float, side: int) -> None:
    kernel = builtin_kernel("disk", radius=radius)
    assert kernel.shape == (side, side)
    assert kernel.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(kernel, kernel.T, atol=1e-15)
    np.testing.assert_allclose(kernel, kernel[::-1], atol=1e-15)
    centre = (side - 1) // 2
    assert kernel[centre, centre] == kernel.max()
    # Its area is about π r² pixels: the centre pixel, fully inside, holds 1/(π r²).
    if radius >= 1:
        assert kernel[centre, centre] == pytest.approx(1 / (math.pi * radius**2), rel=0.03)


# --- compass kernels and rotations ------------------------------------------------------


def test_kirsch_east_and_its_eight_directions() -> None:
    east = builtin_kernel("kirsch")
    np.testing.assert_array_equal(east, [[-3, -3, 5], [-3, 0, 5], [-3, -3, 5]])
    north = builtin_kernel("kirsch", direction=2)
    np.testing.assert_array_equal(north, [[5, 5, 5], [-3, 0, -3], [-3, -3, -3]])
    np.testing.assert_array_equal(builtin_kernel("kirsch", direction="n"), north)
    np.testing.assert_array_equal(builtin_kernel("kirsch", angle=90), north)
    np.testing.assert_array_equal(builtin_kernel("kirsch", angle=-270), north)
    directions = [builtin_kernel("kirsch", direction=d) for d in range(8)]
    assert len({d.tobytes() for d in directions}) == 8
    for d in range(8):
        np.testing.assert_array_equal(rotate(directions[d], 45), directions[(d + 1) % 8])


def test_robinson_east_is_sobel_x_and_north_is_minus_sobel_y() -> None:
    np.testing.assert_array_equal(builtin_kernel("robinson"), builtin_kernel("sobel_x"))
    np.testing.assert_array_equal(
        builtin_kernel("robinson", direction=2), -builtin_kernel("sobel_y")
    )
    np.testing.assert_array_equal(
        builtin_kernel("prewitt_compass"), [[-1, 1, 1], [-1, -2, 1], [-1, 1, 1]]
    )


def test_ring_shift_by_two_is_numpy_rot90() -> None:
    kernel = RNG.random((3, 3))
    np.testing.assert_array_equal(rotate(kernel, 90), np.rot90(kernel))
    np.testing.assert_array_equal(rotate(rotate(kernel, 45), 45), np.rot90(kernel))
    for row, col in RING:
        assert (row, col) != (1, 1)


def test_rotations_by_right_angles_are_exact_for_any_size() -> None:
    kernel = RNG.random((5, 7))
    np.testing.assert_array_equal(rotate(kernel, 90), np.rot90(kernel))
    np.testing.assert_array_equal(rotate(kernel, -90), np.rot90(kernel, 3))
    np.testing.assert_array_equal(rotate(kernel, 180), kernel[::-1, ::-1])
    np.testing.assert_array_equal(rotate(kernel, 360), kernel)


def test_rotation_by_any_angle_interpolates_about_the_centre() -> None:
    kernel = np.zeros((7, 7))
    kernel[3, 5] = 1  # two pixels east of the centre
    turned = rotate(kernel, 30)
    assert turned.shape == (7, 7)
    # The point moves to (x, y) = (2 cos 30°, −2 sin 30°) = (1.73, −1): about row 2, col 5.
    rows, cols = np.nonzero(turned)
    assert set(rows) <= {1, 2, 3}
    assert set(cols) <= {4, 5, 6}
    assert turned[2, 5] == turned.max()
    centre = np.array(np.unravel_index(np.argmax(turned), turned.shape))
    assert np.hypot(*(centre - 3)) == pytest.approx(2, abs=0.5)
    # A 45° turn of a kernel larger than 3×3 is interpolated, not a ring shift.
    wide = builtin_kernel("gaussian", sigma=1, size=5)
    np.testing.assert_allclose(rotate(wide, 45).sum(), wide.sum(), rtol=0.05)


def test_weighted_sum_aligns_centres() -> None:
    total = weighted_sum([(2.0, builtin_kernel("identity")), (-1.0, np.ones((5, 5)))])
    assert total.shape == (5, 5)
    assert total[2, 2] == 1.0
    assert total[0, 0] == -1.0
    even = weighted_sum([(1.0, builtin_kernel("identity", size=2)), (1.0, np.zeros((4, 4)))])
    assert even[1, 1] == 1.0  # the centre's top-left, as identity's


@pytest.mark.parametrize(
    ("name", "params", "fragment"),
    [
        ("unsharp", {"sigma": 0}, "sigma"),
        ("unsharp", {"amount": "a"}, "amount"),
        ("dog", {"sigma1": 2, "sigma2": 1}, "less than"),
        ("log", {"sigma": -1}, "sigma"),
        ("motion", {"length": 0}, "length"),
        ("motion", {"length": 5000}, "length"),
        ("disk", {"radius": 0.1}, "radius"),
        ("kirsch", {"direction": 8}, "direction"),
        ("kirsch", {"direction": "up"}, "direction"),
        ("kirsch", {"angle": 30}, "multiple of 45"),
        ("robinson", {"size": 3}, "parameter"),
    ],
)
def test_bad_generator_parameters(name: str, params: dict[str, object], fragment: str) -> None:
    with pytest.raises(KernelError, match=fragment):
        builtin_kernel(name, **params)


# --- kernel arithmetic in a bank ------------------------------------------------------


def bank(*filters: dict[str, object], **keys: object) -> convvol.Bank:
    return bank_from_document({"filters": list(filters), **keys}, name="test")


def test_a_sum_in_a_bank_is_one_filter_equal_to_the_generator() -> None:
    written = bank(
        {
            "name": "sharp",
            "kernel": {
                "sum": [
                    {"weight": 2, "kernel": "identity"},
                    {"weight": -1, "kernel": {"gaussian": {"sigma": 2, "size": 17}}},
                ]
            },
        }
    )
    generated = bank({"name": "sharp", "kernel": {"unsharp": {"sigma": 2, "amount": 1}}})
    assert len(written.filters) == 1
    np.testing.assert_allclose(written.filters[0].kernel, generated.filters[0].kernel)
    assert written.filters[0].recipe == "2·identity − gaussian(sigma=2, size=17)"


def test_rotate_and_nested_arithmetic_in_a_bank() -> None:
    turned = bank({"kernel": {"rotate": {"kernel": "sobel_x", "angle": 90}}})
    np.testing.assert_array_equal(turned.filters[0].kernel, -builtin_kernel("sobel_y"))
    nested = bank(
        {
            "channels": {
                "red": {
                    "sum": [
                        {"kernel": {"rotate": {"kernel": "kirsch", "angle": 45}}},
                        {"weight": -1, "kernel": {"kirsch": {"direction": 1}}},
                    ]
                }
            }
        }
    )
    assert nested.filters[0].layers is not None
    assert not nested.filters[0].layers[0].any()


@pytest.mark.parametrize(
    ("kernel", "fragment"),
    [
        ({"sum": []}, "non-empty list"),
        ({"sum": [{"weight": 1}]}, "kernel.sum[0] must be a mapping"),
        ({"sum": [{"kernel": "box", "wieght": 2}]}, "unknown key 'wieght'"),
        ({"sum": [{"kernel": "box", "weight": "2"}]}, "weight must be a number"),
        ({"sum": [{"kernel": "sobelx"}]}, "unknown built-in kernel"),
        ({"rotate": {"kernel": "box"}}, "angle"),
        ({"rotate": {"kernel": "box", "angle": float("nan")}}, "finite"),
    ],
)
def test_bad_kernel_arithmetic_names_the_place(kernel: object, fragment: str) -> None:
    with pytest.raises(BankError, match="filters\\[0\\]") as caught:
        bank({"kernel": kernel})
    assert fragment in caught.value.message


@pytest.mark.parametrize("name", ["kirsch", "disk", "motion", "sobel_x", "prewitt_compass"])
def test_show_filter_shows_a_built_in_kernel(workdir: Path, name: str) -> None:
    """A kernel generator or built-in kernel (no bank of that name): one filter, one
    channel, its default parameters, the same weights as builtin_kernel."""
    result = CliRunner().invoke(cli, ["show-filter", name], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    kernel = builtin_kernel(name)
    lines = result.output.splitlines()
    assert lines[0].startswith(f"{name}: 1 filter, 1×1×{kernel.shape[0]}×{kernel.shape[1]}")
    assert f"the built-in kernel {name!r}" in lines[0]
    rows = [[float(v) for v in line.split()] for line in lines[3 : 3 + kernel.shape[0]]]
    np.testing.assert_allclose(rows, kernel, atol=1e-4, rtol=1e-3)
    three = CliRunner().invoke(cli, ["show-filter", name, "--channels", "3"])
    assert three.exit_code == 0
    assert f"1×3×{kernel.shape[0]}×{kernel.shape[1]}" in three.output


def test_show_filter_prefers_a_bank_and_suggests_kernels(workdir: Path) -> None:
    result = CliRunner().invoke(cli, ["show-filter", "log"], catch_exceptions=False)
    assert "the built-in kernel" not in result.output  # the bundled bank
    result = CliRunner().invoke(cli, ["show-filter", "kirch"])
    assert result.exit_code == 2
    assert "no built-in kernel" in result.stderr
    assert "did you mean 'kirsch'?" in result.stderr


def test_show_filter_shows_a_composite_kernel(workdir: Path) -> None:
    result = CliRunner().invoke(cli, ["show-filter", "unsharp"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "17×17 = unsharp(sigma=2.0, amount=1.0)" in result.output
