"""Built-in 2-D kernels, as data and small constructors.

Every kernel is a float64 ``kh × kw`` array meant for *cross-correlation* (the CNN
convention, no flip): ``sobel_x`` is the derivative along x, positive where intensity
rises to the right; ``sobel_y`` likewise downwards. Derivative kernels are the outer
product of a smoothing part and a difference part, as in scikit-image.

>>> builtin_kernel("sobel_x")
array([[-1.,  0.,  1.],
       [-2.,  0.,  2.],
       [-1.,  0.,  1.]])
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

import numpy as np

from convvol.errors import KernelError, did_you_mean

# Named parts: a difference along the axis and a smoothing across it.
DIFFERENCE = np.array([-1.0, 0.0, 1.0])
SOBEL_SMOOTH = np.array([1.0, 2.0, 1.0])
PREWITT_SMOOTH = np.array([1.0, 1.0, 1.0])
SCHARR_SMOOTH = np.array([3.0, 10.0, 3.0])

LAPLACIAN = np.array([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])
SHARPEN = np.array([[0.0, -1.0, 0.0], [-1.0, 5.0, -1.0], [0.0, -1.0, 0.0]])
EMBOSS = np.array([[-2.0, -1.0, 0.0], [-1.0, 1.0, 1.0], [0.0, 1.0, 2.0]])

# A generous ceiling so a typo (size: 30000) fails fast instead of eating memory. The
# default; kernel_side_limit() changes it for a block of code (the CLI's --max-kernel).
MAX_KERNEL_SIDE = 1025
# Whatever the side limit, no kernel (and no bank: see bank.py) holds more weights than
# this: 512 MiB as float64.
MAX_KERNEL_WEIGHTS = 2**26
_side_limit: ContextVar[int] = ContextVar("kernel_side_limit", default=MAX_KERNEL_SIDE)


def max_kernel_side() -> int:
    """The largest kernel side allowed here and now."""
    return _side_limit.get()


@contextmanager
def kernel_side_limit(side: int) -> Iterator[None]:
    """Allow kernels up to ``side`` pixels a side inside the block (default 1025)."""
    if isinstance(side, bool) or not isinstance(side, int) or side < 1:
        raise KernelError(f"the kernel side limit must be an integer ≥ 1; got {side!r}")
    token = _side_limit.set(side)
    try:
        yield
    finally:
        _side_limit.reset(token)


def check_kernel_shape(height: int, width: int, what: str) -> None:
    """Raise KernelError if a kh×kw kernel is beyond the side limit or MAX_KERNEL_WEIGHTS."""
    limit = max_kernel_side()
    if max(height, width) > limit:
        raise KernelError(
            f"{what} is {height}×{width}, larger than the kernel limit of {limit} pixels a side",
            hint="raise the limit with --max-kernel N (or CONVVOL_MAX_KERNEL) if you mean it",
        )
    if height * width > MAX_KERNEL_WEIGHTS:
        raise KernelError(
            f"{what} is {height}×{width}: more than {MAX_KERNEL_WEIGHTS:,} weights in one layer"
        )


def _size_pair(size: object, name: str) -> tuple[int, int]:
    """Read ``size`` as ``n`` (square) or ``[h, w]``; each side an integer within the limit."""
    sides = list(size) if isinstance(size, list | tuple) else [size, size]
    if len(sides) != 2:
        raise KernelError(f"{name}: size must be an integer or [height, width], got {size!r}")
    for side in sides:
        if isinstance(side, bool) or not isinstance(side, int) or side < 1:
            raise KernelError(f"{name}: size must be an integer ≥ 1, got {side!r}")
    check_kernel_shape(int(sides[0]), int(sides[1]), f"{name}: size")  # type: ignore[arg-type]
    return int(sides[0]), int(sides[1])  # type: ignore[arg-type]


def identity(size: object = 3) -> np.ndarray:
    """A single 1 at the centre (for even sides, the centre's top-left): output = input."""
    h, w = _size_pair(size, "identity")
    kernel = np.zeros((h, w))
    kernel[(h - 1) // 2, (w - 1) // 2] = 1.0
    return kernel


def box(size: object = 3) -> np.ndarray:
    """A mean filter: all weights equal, summing to 1."""
    h, w = _size_pair(size, "box")
    return np.full((h, w), 1.0 / (h * w))


def gaussian(sigma: object = 1.0, size: object = None) -> np.ndarray:
    """A sampled, normalised Gaussian; ``size`` defaults to ``2·ceil(3σ) + 1``."""
    sigma = _sigma(sigma, "gaussian")
    if size is None:
        size = min(2 * math.ceil(3 * float(sigma)) + 1, MAX_KERNEL_SIDE)
    h, w = _size_pair(size, "gaussian")
    ys = (np.arange(h) - (h - 1) / 2) / sigma
    xs = (np.arange(w) - (w - 1) / 2) / sigma
    with np.errstate(over="ignore", under="ignore"):  # a tiny sigma tends to a delta
        kernel = np.outer(np.exp(-0.5 * ys**2), np.exp(-0.5 * xs**2))
    if kernel.sum() == 0:  # an even size with a tiny sigma: no tap near the centre
        raise KernelError(f"gaussian: sigma {sigma} is too small for size {h}×{w}")
    return kernel / kernel.sum()


def _sigma(value: object, name: str, what: str = "sigma") -> float:
    """A Gaussian's sigma: a number in (0, 200]."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 200:
        raise KernelError(f"{name}: {what} must be a number in (0, 200], got {value!r}")
    return float(value)


def _finite(value: object, name: str, what: str, low: float, high: float) -> float:
    """A number in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise KernelError(f"{name}: {what} must be a number in [{low:g}, {high:g}], got {value!r}")
    return float(value)


def _truncated_side(sigma: float) -> int:
    """2·round(4σ) + 1: the support of scipy's and scikit-image's Gaussians (truncate=4)."""
    return min(2 * int(4.0 * sigma + 0.5) + 1, MAX_KERNEL_SIDE)


def _gaussian_1d(sigma: float, side: int) -> np.ndarray:
    """A sampled 1-D Gaussian over ``side`` taps centred as ``identity`` is, sum 1."""
    offsets = (np.arange(side) - (side - 1) / 2) / sigma
    with np.errstate(over="ignore", under="ignore"):
        taps = np.exp(-0.5 * offsets**2)
    return np.asarray(taps / taps.sum())


def centred(kernel: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``kernel`` zero-padded to ``shape`` (at least as large), centres aligned.

    The centre is the tap ``identity`` puts its 1 on, ((h − 1) // 2, (w − 1) // 2), so a
    sum of kernels of different sizes still lines up with the input pixel.
    """
    height, width = kernel.shape
    full = np.zeros(shape)
    top = (shape[0] - 1) // 2 - (height - 1) // 2
    left = (shape[1] - 1) // 2 - (width - 1) // 2
    full[top : top + height, left : left + width] = kernel
    return full


def weighted_sum(terms: list[tuple[float, np.ndarray]]) -> np.ndarray:
    """Σ weight·kernel, each kernel zero-padded to the largest height and width, centres
    aligned (:func:`centred`): one kernel, so the sum costs one convolution."""
    if not terms:
        raise KernelError("a sum of kernels needs at least one term")
    height = max(kernel.shape[0] for _, kernel in terms)
    width = max(kernel.shape[1] for _, kernel in terms)
    check_kernel_shape(height, width, "the sum")
    total = np.zeros((height, width))
    for weight, kernel in terms:
        total += weight * centred(kernel, (height, width))
    return total


# The 3×3 ring counter-clockwise as displayed (row 0 at the top), from the east neighbour.
RING = ((1, 2), (0, 2), (0, 1), (0, 0), (1, 0), (2, 0), (2, 1), (2, 2))


def rotate(kernel: np.ndarray, angle: float) -> np.ndarray:
    """``kernel`` rotated ``angle`` degrees counter-clockwise, as displayed.

    Exact where the grid allows it: multiples of 90° by transposition (``numpy.rot90``; a
    rectangular kernel swaps its sides), multiples of 45° on a 3×3 kernel by shifting its
    ring of eight neighbours (how compass kernels are made). Any other angle samples the
    kernel bilinearly about its centre at the rotated positions, zero outside, keeping the
    kernel's size; the result is not renormalised (add ``normalize: true`` for a blur).
    """
    kernel = np.asarray(kernel, np.float64)
    if isinstance(angle, bool) or not isinstance(angle, int | float) or not math.isfinite(angle):
        raise KernelError(f"rotate: angle must be a finite number of degrees, got {angle!r}")
    turns = float(angle) / 45.0
    if turns == round(turns):
        eighths = round(turns) % 8
        if eighths % 2 == 0:
            return np.rot90(kernel, eighths // 2).copy()
        if kernel.shape == (3, 3):
            rotated = kernel.copy()
            for index, (row, col) in enumerate(RING):
                rotated[RING[(index + eighths) % 8]] = kernel[row, col]
            return rotated
    height, width = kernel.shape
    theta = math.radians(angle)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    cy, cx = (height - 1) / 2, (width - 1) / 2
    dx, dy = xs - cx, ys - cy  # x to the right, y downwards
    source_x = cx + dx * math.cos(theta) - dy * math.sin(theta)
    source_y = cy + dx * math.sin(theta) + dy * math.cos(theta)
    return _bilinear(kernel, source_y, source_x)


def _bilinear(kernel: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """``kernel`` sampled at (ys, xs) bilinearly, zero outside."""
    height, width = kernel.shape
    padded = np.zeros((height + 2, width + 2))
    padded[1:-1, 1:-1] = kernel
    ys = np.clip(ys + 1, 0, height + 1)
    xs = np.clip(xs + 1, 0, width + 1)
    y0 = np.clip(np.floor(ys).astype(int), 0, height)
    x0 = np.clip(np.floor(xs).astype(int), 0, width)
    fy, fx = ys - y0, xs - x0
    result = (
        padded[y0, x0] * (1 - fy) * (1 - fx)
        + padded[y0, x0 + 1] * (1 - fy) * fx
        + padded[y0 + 1, x0] * fy * (1 - fx)
        + padded[y0 + 1, x0 + 1] * fy * fx
    )
    result[np.abs(result) < 1e-15 * max(1.0, float(np.abs(kernel).max()))] = 0.0
    return np.asarray(result)


def unsharp(sigma: object = 1.0, amount: object = 1.0, size: object = None) -> np.ndarray:
    """The unsharp mask as one kernel: (1 + amount)·δ − amount·G(σ).

    ``size`` defaults to 2·round(4σ) + 1, the support of scikit-image's ``unsharp_mask``.
    """
    sigma = _sigma(sigma, "unsharp")
    weight = _finite(amount, "unsharp", "amount", -1000.0, 1000.0)
    blur = gaussian(sigma, _truncated_side(sigma) if size is None else size)
    return weighted_sum([(1.0 + weight, identity(list(blur.shape))), (-weight, blur)])


def dog(sigma1: object = 1.0, sigma2: object = None, size: object = None) -> np.ndarray:
    """Difference of Gaussians G(σ1) − G(σ2), a band-pass (σ1 < σ2; σ2 defaults to 1.6·σ1).

    Each Gaussian is sampled on its own support 2·round(4σ) + 1 and normalised there, as
    scikit-image's ``difference_of_gaussians`` does, the smaller one padded with zeros;
    ``size`` instead samples both on one size.
    """
    low = _sigma(sigma1, "dog", "sigma1")
    high = 1.6 * low if sigma2 is None else _sigma(sigma2, "dog", "sigma2")
    if not low < high:
        raise KernelError(f"dog: sigma1 must be less than sigma2, got {low:g} and {high:g}")
    if size is None:
        narrow, wide = gaussian(low, _truncated_side(low)), gaussian(high, _truncated_side(high))
    else:
        narrow, wide = gaussian(low, size), gaussian(high, size)
    return weighted_sum([(1.0, narrow), (-1.0, wide)])


def log(sigma: object = 1.0, size: object = None) -> np.ndarray:
    """Laplacian of Gaussian, ∂²G/∂y² + ∂²G/∂x², as ``scipy.ndimage.gaussian_laplace``.

    Built separably from the 1-D sampled Gaussian g (sum 1) and its second derivative
    g·(x²/σ⁴ − 1/σ²): d2(y)·g(x) + g(y)·d2(x). Negative at the centre: a bright blob gives
    a negative response. ``size`` defaults to 2·round(4σ) + 1 (scipy's truncate=4).
    """
    sigma = _sigma(sigma, "log")
    height, width = _size_pair(_truncated_side(sigma) if size is None else size, "log")
    profiles = []
    for side in (height, width):
        taps = _gaussian_1d(sigma, side)
        offsets = np.arange(side) - (side - 1) / 2
        profiles.append((taps, taps * (offsets**2 / sigma**4 - 1 / sigma**2)))
    (gy, d2y), (gx, d2x) = profiles
    return np.outer(d2y, gx) + np.outer(gy, d2x)


def motion(length: object = 9, angle: object = 0.0) -> np.ndarray:
    """A motion blur: a line ``length`` pixels long through the centre at ``angle`` degrees
    counter-clockwise from the x axis (as displayed), each pixel weighted by how much of
    the line falls inside it, normalised to sum 1. Its side is the smallest odd number
    ≥ ``length``."""
    extent = _finite(length, "motion", "length", 1.0, float(max_kernel_side()))
    theta = math.radians(_finite(angle, "motion", "angle", -3600.0, 3600.0))
    side = 2 * math.ceil((extent - 1) / 2) + 1
    check_kernel_shape(side, side, "motion")
    samples = max(64, math.ceil(extent * 64))
    along = -extent / 2 + (np.arange(samples) + 0.5) * extent / samples
    centre = (side - 1) / 2
    cols = np.floor(centre + along * math.cos(theta) + 0.5).astype(int)
    rows = np.floor(centre - along * math.sin(theta) + 0.5).astype(int)
    inside = (rows >= 0) & (rows < side) & (cols >= 0) & (cols < side)
    kernel = np.zeros((side, side))
    np.add.at(kernel, (rows[inside], cols[inside]), 1.0)
    return kernel / kernel.sum()


def disk(radius: object = 2.0) -> np.ndarray:
    """A pillbox (defocus) blur: each pixel weighted by the part of its area inside a
    circle of ``radius`` pixels about the centre (16×16 samples a pixel), normalised to sum
    1. Its side is 2·ceil(radius − ½) + 1."""
    extent = _finite(radius, "disk", "radius", 0.5, float(max_kernel_side()) / 2)
    half = math.ceil(extent - 0.5)
    side = 2 * half + 1
    check_kernel_shape(side, side, "disk")
    steps = (np.arange(16) + 0.5) / 16 - 0.5
    offsets = np.arange(-half, half + 1)
    kernel = np.zeros((side, side))
    for fraction_y in steps:
        ys = (offsets + fraction_y)[:, np.newaxis]
        for fraction_x in steps:
            xs = (offsets + fraction_x)[np.newaxis, :]
            kernel += ys**2 + xs**2 <= extent**2
    return kernel / kernel.sum()


# Compass kernels, each given pointing east (positive where intensity rises to the right,
# as sobel_x); direction d is that kernel rotated d·45° counter-clockwise by ring shifting.
KIRSCH = np.array([[-3.0, -3.0, 5.0], [-3.0, 0.0, 5.0], [-3.0, -3.0, 5.0]])
ROBINSON = np.outer(SOBEL_SMOOTH, DIFFERENCE)
PREWITT_COMPASS = np.array([[-1.0, 1.0, 1.0], [-1.0, -2.0, 1.0], [-1.0, 1.0, 1.0]])
COMPASS_DIRECTIONS = ("e", "ne", "n", "nw", "w", "sw", "s", "se")


def _compass(name: str, east: np.ndarray) -> Callable[..., np.ndarray]:
    def make(direction: object = 0, angle: object = None) -> np.ndarray:
        if angle is not None:
            degrees = _finite(angle, name, "angle", -3600.0, 3600.0)
            if degrees % 45 or direction != 0:
                raise KernelError(
                    f"{name}: angle must be a multiple of 45 degrees (and direction not given); "
                    f"got {angle!r}",
                    hint="rotate: {kernel: ..., angle: A} turns any kernel by any angle",
                )
            direction = int(degrees // 45) % 8
        if isinstance(direction, str) and direction.lower() in COMPASS_DIRECTIONS:
            eighths = COMPASS_DIRECTIONS.index(direction.lower())
        elif isinstance(direction, int) and not isinstance(direction, bool) and 0 <= direction < 8:
            eighths = direction
        else:
            raise KernelError(
                f"{name}: direction must be 0..7 (steps of 45° counter-clockwise from east) "
                f"or one of {', '.join(COMPASS_DIRECTIONS)}; got {direction!r}"
            )
        return rotate(east, 45.0 * eighths)

    return make


def _fixed(kernel: np.ndarray) -> Callable[[], np.ndarray]:
    def make() -> np.ndarray:
        return kernel.copy()

    return make


@dataclass(frozen=True)
class BuiltinKernel:
    """A named kernel: how to build it, its parameters with defaults, and what it does."""

    name: str
    make: Callable[..., np.ndarray]
    description: str
    params: Mapping[str, object] = field(default_factory=dict)


BUILTIN_KERNELS: dict[str, BuiltinKernel] = {
    kernel.name: kernel
    for kernel in [
        BuiltinKernel("identity", identity, "passes the input through", {"size": 3}),
        BuiltinKernel("box", box, "mean of a size×size window", {"size": 3}),
        BuiltinKernel(
            "gaussian", gaussian, "normalised Gaussian blur", {"sigma": 1.0, "size": None}
        ),
        BuiltinKernel(
            "sobel_x",
            _fixed(np.outer(SOBEL_SMOOTH, DIFFERENCE)),
            "derivative along x (vertical edges), positive where intensity rises to the right",
        ),
        BuiltinKernel(
            "sobel_y",
            _fixed(np.outer(DIFFERENCE, SOBEL_SMOOTH)),
            "derivative along y (horizontal edges), positive where intensity rises downwards",
        ),
        BuiltinKernel(
            "prewitt_x",
            _fixed(np.outer(PREWITT_SMOOTH, DIFFERENCE)),
            "Prewitt derivative along x (vertical edges)",
        ),
        BuiltinKernel(
            "prewitt_y",
            _fixed(np.outer(DIFFERENCE, PREWITT_SMOOTH)),
            "Prewitt derivative along y (horizontal edges)",
        ),
        BuiltinKernel(
            "scharr_x",
            _fixed(np.outer(SCHARR_SMOOTH, DIFFERENCE)),
            "Scharr derivative along x (vertical edges), better rotational symmetry",
        ),
        BuiltinKernel(
            "scharr_y",
            _fixed(np.outer(DIFFERENCE, SCHARR_SMOOTH)),
            "Scharr derivative along y (horizontal edges), better rotational symmetry",
        ),
        BuiltinKernel("laplacian", _fixed(LAPLACIAN), "4-neighbour Laplacian (edges, blobs)"),
        BuiltinKernel("sharpen", _fixed(SHARPEN), "identity plus a negative Laplacian"),
        BuiltinKernel("emboss", _fixed(EMBOSS), "relief lit from the bottom right"),
        BuiltinKernel(
            "unsharp",
            unsharp,
            "unsharp mask (1 + amount)·δ − amount·G(σ) as one kernel",
            {"sigma": 1.0, "amount": 1.0, "size": None},
        ),
        BuiltinKernel(
            "dog",
            dog,
            "difference of Gaussians G(σ1) − G(σ2), a band-pass",
            {"sigma1": 1.0, "sigma2": None, "size": None},
        ),
        BuiltinKernel(
            "log",
            log,
            "Laplacian of Gaussian (blobs, edges at a scale)",
            {"sigma": 1.0, "size": None},
        ),
        BuiltinKernel("motion", motion, "motion blur along a line", {"length": 9, "angle": 0.0}),
        BuiltinKernel("disk", disk, "pillbox (defocus) blur", {"radius": 2.0}),
        BuiltinKernel(
            "kirsch",
            _compass("kirsch", KIRSCH),
            "Kirsch compass edge kernel",
            {"direction": 0, "angle": None},
        ),
        BuiltinKernel(
            "robinson",
            _compass("robinson", ROBINSON),
            "Robinson (Sobel) compass edge kernel",
            {"direction": 0, "angle": None},
        ),
        BuiltinKernel(
            "prewitt_compass",
            _compass("prewitt_compass", PREWITT_COMPASS),
            "Prewitt compass edge kernel",
            {"direction": 0, "angle": None},
        ),
    ]
}


def builtin_kernel(name: str, **params: object) -> np.ndarray:
    """Build the built-in kernel ``name`` with keyword ``params``; a float64 2-D array.

    Raises KernelError for an unknown name (with a "did you mean") or bad parameters.
    """
    spec = BUILTIN_KERNELS.get(name)
    if spec is None:
        raise KernelError(
            f"unknown built-in kernel {name!r}",
            hint=did_you_mean(name, BUILTIN_KERNELS)
            or "built-in kernels: " + ", ".join(BUILTIN_KERNELS),
        )
    for key in params:
        if key not in spec.params:
            allowed = ", ".join(spec.params) or "none"
            raise KernelError(
                f"kernel {name!r} has no parameter {key!r} (parameters: {allowed})",
                hint=did_you_mean(key, spec.params),
            )
    return spec.make(**params)
