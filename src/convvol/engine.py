"""The convolution engine: convolution over volume, as in a CNN layer.

``out[y, x, n] = bias[n] + Σ_c Σ_i Σ_j W[n, c, i, j] · V[y·s + i·d − top, x·s + j·d − left, c]``

One public entry point, :func:`convolve`. It validates its arguments, plans the output
geometry (:func:`plan_geometry`), pads the volume as numpy.pad does, and hands the work
to the method that computes it. Faster methods slot in behind :func:`convolve` without
changing its contract.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from convvol.errors import ParameterError, choice_hint

PADDINGS = ("same", "valid", "full")
BORDERS = ("reflect", "symmetric", "edge", "wrap", "constant")
ACTIVATIONS = ("none", "relu", "abs")

Padding = str | int


@dataclass(frozen=True)
class Geometry:
    """Where the padded area goes and how large the output is, for one image and kernel."""

    top: int
    bottom: int
    left: int
    right: int
    out_height: int
    out_width: int


def _check_choice(value: object, choices: tuple[str, ...], what: str) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ParameterError(
            f"{what} must be one of {', '.join(choices)}; got {value!r}",
            hint=choice_hint(value, choices),
        )
    return value


def _check_positive_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ParameterError(f"{what} must be an integer ≥ 1; got {value!r}")
    return int(value)


def check_padding(padding: object) -> Padding:
    """Return ``padding`` if it is 'same', 'valid', 'full' or an integer ≥ 0, else raise."""
    if isinstance(padding, int | np.integer) and not isinstance(padding, bool):
        if padding < 0:
            raise ParameterError(f"padding must be ≥ 0; got {padding}")
        return int(padding)
    return _check_choice(padding, PADDINGS, "padding")


def _axis_geometry(
    size: int, kernel: int, padding: Padding, stride: int, dilation: int
) -> tuple[int, int, int]:
    """(before, after, output length) along one axis."""
    reach = dilation * (kernel - 1)  # the dilated kernel spans reach + 1 pixels
    if padding == "same":
        # Pad as for stride 1 (extra row/column at the end for even kernels, as PyTorch
        # does), then keep every stride-th output from the first: ceil(size / stride).
        before, after = reach // 2, reach - reach // 2
        return before, after, -(-size // stride)
    if padding == "valid":
        before = after = 0
    elif padding == "full":
        before = after = reach
    else:
        before = after = int(padding)
    span = size + before + after - reach
    return before, after, (span - 1) // stride + 1 if span > 0 else 0


def plan_geometry(
    height: int,
    width: int,
    kernel_height: int,
    kernel_width: int,
    *,
    padding: Padding = "same",
    stride: int = 1,
    dilation: int = 1,
) -> Geometry:
    """Plan the padding and output size of a convolution; raise if the output would be empty."""
    padding = check_padding(padding)
    stride = _check_positive_int(stride, "stride")
    dilation = _check_positive_int(dilation, "dilation")
    top, bottom, out_h = _axis_geometry(height, kernel_height, padding, stride, dilation)
    left, right, out_w = _axis_geometry(width, kernel_width, padding, stride, dilation)
    if out_h < 1 or out_w < 1:
        reach_h = dilation * (kernel_height - 1) + 1
        reach_w = dilation * (kernel_width - 1) + 1
        raise ParameterError(
            f"the kernel covers {reach_h}×{reach_w} pixels (with dilation {dilation}), more "
            f"than the {height}×{width} image padded with padding={padding!r}: "
            "the output would be empty",
            hint="use padding 'same' or 'full', a smaller kernel or a smaller dilation",
        )
    return Geometry(top, bottom, left, right, out_h, out_w)


def _check_memory(shape: tuple[int, ...], geometry: Geometry, n_filters: int) -> None:
    """Refuse, before allocating, a padded volume and output larger than this machine's RAM."""
    height, width, channels = shape
    padded = (height + geometry.top + geometry.bottom) * (width + geometry.left + geometry.right)
    needed = 4 * (padded * channels + geometry.out_height * geometry.out_width * n_filters)
    try:
        available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not on this platform: let NumPy try
        return
    if needed > available:
        raise ParameterError(
            f"this convolution needs {needed / 2**30:.1f} GiB for its padded input and output, "
            f"more than this machine's {available / 2**30:.1f} GiB of memory",
            hint="check the padding and dilation, or use a smaller image or stride",
        )


def pad_volume(
    volume: np.ndarray, geometry: Geometry, *, border: str = "reflect", cval: float = 0.0
) -> np.ndarray:
    """Pad an H×W×C volume in space as ``numpy.pad`` does with mode ``border``."""
    border = _check_choice(border, BORDERS, "border")
    widths = ((geometry.top, geometry.bottom), (geometry.left, geometry.right), (0, 0))
    if not any(width for pair in widths for width in pair):
        return volume
    if border == "constant":
        return np.pad(volume, widths, mode="constant", constant_values=cval)
    return np.pad(volume, widths, mode=border)  # type: ignore[call-overload]


def apply_activation(volume: np.ndarray, activation: str) -> np.ndarray:
    """Apply ``none``, ``relu`` or ``abs`` in place and return the volume."""
    activation = _check_choice(activation, ACTIVATIONS, "activation")
    if activation == "relu":
        np.maximum(volume, 0, out=volume)
    elif activation == "abs":
        np.abs(volume, out=volume)
    return volume


def _correlate_taps(
    padded: np.ndarray,
    weights: np.ndarray,
    geometry: Geometry,
    stride: int,
    dilation: int,
    out: np.ndarray,
) -> None:
    """Accumulate one (H'·W' × C) @ (C × N) product per kernel tap into ``out``.

    No loop over pixels: each tap is one strided view of the padded volume, and BLAS
    does the sum over channels and filters.
    """
    _, _, kh, kw = weights.shape
    tap_weights = np.ascontiguousarray(weights.transpose(2, 3, 1, 0))  # kh×kw×C×N
    rows = (geometry.out_height - 1) * stride + 1
    cols = (geometry.out_width - 1) * stride + 1
    for i in range(kh):
        for j in range(kw):
            window = padded[
                i * dilation : i * dilation + rows : stride,
                j * dilation : j * dilation + cols : stride,
            ]
            out += window @ tap_weights[i, j]


def convolve(
    volume: np.ndarray,
    weights: np.ndarray,
    bias: np.ndarray | None = None,
    *,
    padding: Padding = "same",
    border: str = "reflect",
    cval: float = 0.0,
    stride: int = 1,
    dilation: int = 1,
    flip: bool = False,
) -> np.ndarray:
    """Convolve an H×W×C volume with a bank of N filters; return an H'×W'×N float32 volume.

    Parameters
    ----------
    volume : ndarray
        H×W×C (an H×W array is taken as C = 1). Computed in float32.
    weights : ndarray
        N×C×kh×kw, PyTorch's layout: one kh×kw layer per input channel per filter.
    bias : ndarray, optional
        N values added to the output channels.
    padding : {'same', 'valid', 'full'} or int
        'same' keeps H×W at stride 1 (for even kernels the extra row and column go at the
        bottom and right, as in PyTorch; with stride s the output is ceil(H/s)×ceil(W/s));
        'valid' uses no padding; 'full' pads the kernel's whole reach; an integer pads that
        many pixels on every side.
    border : {'reflect', 'symmetric', 'edge', 'wrap', 'constant'}
        How the padded area is filled, with numpy.pad's meanings; ``cval`` for 'constant'.
    stride, dilation : int
        Step between outputs and between kernel taps (≥ 1).
    flip : bool
        False (default) gives cross-correlation, as in CNNs; True rotates each layer 180°
        in space (true convolution). The channel axis is never flipped.

    Examples
    --------
    A 3×3 impulse through the identity kernel comes back unchanged:

    >>> import numpy as np
    >>> impulse = np.zeros((3, 3, 1), np.float32); impulse[1, 1] = 1
    >>> identity = np.zeros((1, 1, 3, 3)); identity[0, 0, 1, 1] = 1
    >>> convolve(impulse, identity)[..., 0]
    array([[0., 0., 0.],
           [0., 1., 0.],
           [0., 0., 0.]], dtype=float32)
    """
    volume = np.asarray(volume)
    if volume.ndim == 2:
        volume = volume[:, :, np.newaxis]
    if volume.ndim != 3:
        raise ParameterError(f"volume must be H×W×C (3-D); got shape {volume.shape}")
    weights = np.asarray(weights)
    if weights.ndim != 4:
        raise ParameterError(f"weights must be N×C×kh×kw (4-D); got shape {weights.shape}")
    height, width, channels = volume.shape
    n_filters, weight_channels, kh, kw = weights.shape
    if weight_channels != channels:
        raise ParameterError(
            f"the filters have {weight_channels} layers but the volume has {channels} channels"
        )
    if 0 in weights.shape or 0 in volume.shape:
        raise ParameterError(
            f"empty volume or weights (volume {volume.shape}, weights {weights.shape})"
        )
    if not np.issubdtype(volume.dtype, np.number) or np.iscomplexobj(volume):
        raise ParameterError(f"volume must hold real numbers; got dtype {volume.dtype}")
    geometry = plan_geometry(
        height, width, kh, kw, padding=padding, stride=stride, dilation=dilation
    )
    try:
        cval = float(cval)
    except (TypeError, ValueError):
        raise ParameterError(f"cval must be a number; got {cval!r}") from None
    if not np.isfinite(cval):
        raise ParameterError(f"cval must be a finite number; got {cval}")
    _check_memory(volume.shape, geometry, n_filters)
    weights = weights.astype(np.float32, copy=False)
    if flip:
        weights = weights[:, :, ::-1, ::-1]
    out = np.zeros((geometry.out_height, geometry.out_width, n_filters), np.float32)
    if bias is not None:
        bias = np.asarray(bias, np.float32).reshape(-1)
        if bias.shape != (n_filters,):
            raise ParameterError(f"bias must hold {n_filters} values; got {bias.size}")
        out += bias
    padded = pad_volume(volume.astype(np.float32, copy=False), geometry, border=border, cval=cval)
    _correlate_taps(padded, weights, geometry, int(stride), int(dilation), out)
    return out
