"""What the planner learns from the weights: which layers are used, their ranks, and
whether they are finite. Shared by the cost model and the methods."""

from __future__ import annotations

import math

import numpy as np

from convvol.errors import ParameterError


def channels_read(weights: np.ndarray) -> np.ndarray:
    """N × C: whether filter n has a non-zero layer on channel c."""
    return np.abs(weights).sum(axis=(2, 3)) > 0


def rank_one_factors(
    layers: np.ndarray, tolerance: float = 1e-7
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For a stack of layers (..., kh, kw): (shown, u, r) with each layer = u·rᵀ where
    ``shown``, by the SVD's own criterion (σ₁ ≤ tolerance·σ₀), in O(kh·kw) per layer and
    without an SVD. Where ``shown`` is False the layer may still be rank one: the SVD
    decides.

    u is the layer's largest column, normalised, and r = uᵀ·layer. Since u is a unit
    vector, ‖r‖ ≤ σ₀; since u·rᵀ has rank one, σ₁ ≤ ‖layer − u·rᵀ‖₂, which is at most
    both the Frobenius norm and √(‖·‖₁‖·‖∞) of the residual. Each layer is first scaled
    by its largest magnitude (the criterion does not depend on scale), so tiny weights do
    not underflow. A 1025×1025 Gaussian is checked far faster than its SVD would take, a
    third of a second.
    """
    with np.errstate(all="ignore"):  # non-finite layers are simply not shown
        return _rank_one_factors(np.asarray(layers, np.float64), tolerance)


def _rank_one_factors(
    layers: np.ndarray, tolerance: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    peak = np.abs(layers).max(axis=(-2, -1), keepdims=True)
    usable = np.isfinite(peak) & (peak > 0)
    scaled = layers / np.where(usable, peak, 1.0)
    largest = np.argmax(np.abs(scaled).sum(axis=-2), axis=-1)
    column = np.take_along_axis(scaled, largest[..., np.newaxis, np.newaxis], axis=-1)[..., 0]
    length = np.linalg.norm(column, axis=-1, keepdims=True)
    u = column / np.where(length > 0, length, 1.0)
    r = np.einsum("...i,...ij->...j", u, scaled)
    residual = np.abs(scaled - u[..., :, np.newaxis] * r[..., np.newaxis, :])
    bound = np.minimum(
        np.sqrt((residual * residual).sum(axis=(-2, -1))),
        np.sqrt(residual.sum(axis=-2).max(axis=-1) * residual.sum(axis=-1).max(axis=-1)),
    )
    shown = usable[..., 0, 0] & (bound <= tolerance * np.linalg.norm(r, axis=-1))
    return shown, u, r * peak[..., 0]


_RANK_CHUNK_VALUES = 1 << 20  # weights per batched rank-one check: 8 MiB of float64


def svd_flops(kernel_height: int, kernel_width: int) -> float:
    """Work of one layer's singular values (LAPACK's bidiagonalisation, 4mn² − 4n³/3),
    plus what a call costs whatever the size (about 5 000 flops' worth per layer at the
    planner's rate, for batches of small layers)."""
    m, n = max(kernel_height, kernel_width), min(kernel_height, kernel_width)
    return 4.0 * m * n * n - 4.0 * n**3 / 3 + 5000.0


def layer_ranks(
    weights: np.ndarray, tolerance: float = 1e-7, svd_budget: float = math.inf
) -> np.ndarray:
    """N×C numerical ranks of the layers: singular values above tolerance·σ₀.

    Zero layers are rank 0 and rank-one layers are recognised without an SVD (see
    :func:`rank_one_factors`); the rest take one batched SVD, unless that would cost
    more than ``svd_budget`` flops, when they are assumed of full rank (min(kh, kw)): a
    planner need not spend longer looking for a shortcut than the plain way takes.
    """
    n_filters, channels, kh, kw = weights.shape
    ranks = np.zeros((n_filters, channels), np.int64)
    used = np.nonzero(channels_read(weights))
    shown = np.zeros(len(used[0]), bool)
    chunk = max(1, _RANK_CHUNK_VALUES // (kh * kw))
    for first in range(0, len(shown), chunk):
        batch = tuple(index[first : first + chunk] for index in used)
        shown[first : first + len(batch[0])] = rank_one_factors(weights[batch], tolerance)[0]
    ranks[tuple(index[shown] for index in used)] = 1
    rest = tuple(index[~shown] for index in used)
    if rest[0].size and rest[0].size * svd_flops(kh, kw) > svd_budget:
        ranks[rest] = min(kh, kw)
    elif rest[0].size:
        sigma = np.linalg.svd(weights[rest].astype(np.float64), compute_uv=False)
        ranks[rest] = (sigma > tolerance * sigma[:, :1]).sum(axis=-1)
    return ranks


def finite_weights(weights: np.ndarray) -> np.ndarray:
    """The weights as float32; a ParameterError naming the first layer that holds NaN or
    an infinity (also after rounding to float32): methods that skip zero layers would
    otherwise give different results for it."""
    with np.errstate(over="ignore"):  # too large for float32: reported below
        weights32 = weights.astype(np.float32, copy=False)
    finite = np.isfinite(weights32)
    if not finite.all():
        n, c = (int(i) for i in np.argwhere(~finite)[0][:2])
        raise ParameterError(
            f"weights must be finite float32 numbers; filter {n}, channel {c} holds "
            f"{weights[n, c][~finite[n, c]].flat[0]}"
        )
    return weights32
