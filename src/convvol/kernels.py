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
    if isinstance(sigma, bool) or not isinstance(sigma, int | float) or not 0 < sigma <= 200:
        raise KernelError(f"gaussian: sigma must be a number in (0, 200], got {sigma!r}")
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
