"""Every engine method, forced, against the float64 reference; bands, threads and the planner.

The grid in test_engine.py checks what ``method="auto"`` picks on small images (one band).
Here each method is forced, and images are cut into many bands (a tiny memory limit) run
on several threads, so band seams, halos and the Toeplitz blocks at the right edge are
all exercised.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import convvol
from convvol.engine import border_indices, plan_convolution, plan_geometry
from convvol.engine import weights as planner_weights
from convvol.engine.methods import REGISTRY
from convvol.engine.methods.fft import fft_spectra
from convvol.settings import METHODS
from reference import BORDERS, output_shape, reference_convolve

FORCED = [m for m in METHODS if m != "auto"]
KERNELS = [(1, 1), (2, 2), (3, 3), (5, 5), (3, 5), (2, 3), (7, 4)]
PADDINGS = ["same", "valid", "full", 0, 2]


def random_problem(seed: int, height: int, width: int, channels: int, n_filters: int, kernel):
    rng = np.random.default_rng(seed)
    volume = rng.random((height, width, channels), dtype=np.float32)
    weights = rng.standard_normal((n_filters, channels, *kernel)).astype(np.float32)
    bias = rng.standard_normal(n_filters).astype(np.float32)
    return volume, weights, bias


def assert_matches_reference(result, volume, weights, bias, **settings) -> None:
    expected = reference_convolve(volume, weights, bias, **settings)
    assert result.dtype == np.float32
    assert result.shape == expected.shape
    scale = np.abs(weights).sum(axis=(1, 2, 3)) + 1  # errors grow with Σ|w|
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=2e-6 * scale.max())


@pytest.mark.parametrize("method", FORCED)
@pytest.mark.parametrize("border", BORDERS)
@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize(("stride", "dilation"), [(1, 1), (2, 1), (1, 2), (3, 2)])
def test_every_method_matches_the_reference(method, border, padding, stride, dilation) -> None:
    """Many bands (tiny memory limit) on two threads, every kernel shape, C and N."""
    for index, (kernel, (channels, n_filters)) in enumerate(
        itertools.product(KERNELS, [(1, 1), (3, 4), (4, 2), (8, 5)])
    ):
        height, width = 23 + index % 5, 31 - index % 7
        out_h, out_w = output_shape(
            height, width, *kernel, padding=padding, stride=stride, dilation=dilation
        )
        if out_h < 1 or out_w < 1:
            continue
        volume, weights, bias = random_problem(index, height, width, channels, n_filters, kernel)
        settings = {
            "padding": padding, "border": border, "cval": 0.375,
            "stride": stride, "dilation": dilation,
        }  # fmt: skip
        result = convvol.convolve(
            volume, weights, bias, method=method, threads=2, memory_limit=1, **settings
        )
        assert_matches_reference(result, volume, weights, bias, **settings)


@pytest.mark.parametrize("method", FORCED)
def test_methods_agree_with_flip_and_without_bias(method) -> None:
    volume, weights, _ = random_problem(7, 40, 37, 3, 6, (5, 3))
    result = convvol.convolve(volume, weights, flip=True, method=method, memory_limit=1)
    assert_matches_reference(result, volume, weights, None, flip=True)


@pytest.mark.parametrize("method", FORCED)
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("memory_limit", [1, 2**16, None])
def test_bands_and_threads_do_not_change_the_result(method, threads, memory_limit) -> None:
    volume, weights, bias = random_problem(11, 61, 53, 3, 4, (3, 3))
    single = convvol.convolve(volume, weights, bias, method=method, threads=1, memory_limit=None)
    banded = convvol.convolve(
        volume, weights, bias, method=method, threads=threads, memory_limit=memory_limit
    )
    np.testing.assert_array_equal(banded, single)


def test_a_larger_image_on_the_default_plan() -> None:
    """An image big enough for the planner's real band sizes (hundreds of rows)."""
    volume, weights, bias = random_problem(5, 700, 300, 3, 8, (3, 3))
    result = convvol.convolve(volume, weights, bias, border="wrap")
    assert_matches_reference(result, volume, weights, bias, border="wrap")


@pytest.mark.parametrize("size", [1, 2, 3, 5])
@pytest.mark.parametrize("border", BORDERS)
def test_border_indices_follow_numpy_pad(size, border) -> None:
    line = np.arange(size) + 10
    for before, after in itertools.product(range(0, 12, 3), range(0, 12, 4)):
        indices = border_indices(size, before, after, border)
        if border == "constant":
            expected = np.pad(line, (before, after), mode="constant", constant_values=-1)
            got = np.where(indices >= 0, line[np.clip(indices, 0, None)], -1)
        else:
            expected = np.pad(line, (before, after), mode=border)
            got = line[indices]
        np.testing.assert_array_equal(got, expected)


# --- the planner ----------------------------------------------------------------------


def plan_for(shape, weights_shape, **options):
    """The plan for random (full-rank) weights of this shape."""
    geometry = plan_geometry(shape[0], shape[1], *weights_shape[2:])
    weights = np.random.default_rng(0).standard_normal(weights_shape)
    return plan_convolution(shape, weights, geometry, **options)


def test_forced_methods_are_obeyed_and_explained() -> None:
    for method in FORCED:
        plan = plan_for((100, 100, 3), (4, 3, 3, 3), method=method)
        assert plan.method == method
        assert f"forced with method={method}" in plan.describe()


def test_auto_picks_the_cheapest_estimate() -> None:
    plan = plan_for((1080, 1920, 3), (4, 3, 3, 3))
    assert plan.method == min(plan.estimates, key=plan.estimates.__getitem__)
    assert plan.method == "gemm"
    assert "lowest estimated time" in plan.describe()


def test_gemm_blocks_widen_skinny_products() -> None:
    assert plan_for((1080, 1920, 3), (4, 3, 3, 3)).kernel.block == 4  # B·N = 16 columns, not 4
    assert plan_for((256, 256, 3), (64, 3, 3, 3)).kernel.block == 1  # already 64 wide
    assert plan_for((256, 256, 3), (1, 3, 1, 1)).kernel.block == 1  # 1×1: blocks only add zeros


def test_bands_respect_the_memory_limit() -> None:
    roomy = plan_for((4096, 4096, 3), (16, 3, 5, 5), threads=2)
    tight = plan_for((4096, 4096, 3), (16, 3, 5, 5), threads=2, memory_limit=2**20)
    assert tight.band_rows < roomy.band_rows
    assert tight.band_rows >= 1
    assert roomy.band_rows <= 4096 // 8  # at least four bands per thread


def test_unknown_method_is_a_parameter_error() -> None:
    volume, weights, _ = random_problem(1, 8, 8, 3, 1, (3, 3))
    with pytest.raises(convvol.ParameterError, match="method"):
        convvol.convolve(volume, weights, method="winograd")


# --- structured banks: depthwise, separable, channel-selective ------------------------


def structured_banks(channels: int, kernel: tuple[int, int]) -> dict[str, np.ndarray]:
    """Banks whose structure the methods exploit, each N × C × kh × kw."""
    rng = np.random.default_rng(sum(kernel) + channels)
    kh, kw = kernel
    layer = rng.standard_normal((kh, kw))
    column, row = rng.standard_normal(kh), rng.standard_normal(kw)
    banks = {}
    same = np.zeros((channels, channels, kh, kw))  # one kernel on every channel (a blur)
    same[np.arange(channels), np.arange(channels)] = layer
    banks["depthwise, one kernel"] = same
    own = np.zeros((channels, channels, kh, kw))  # each channel its own kernel
    own[np.arange(channels), np.arange(channels)] = rng.standard_normal((channels, kh, kw))
    banks["depthwise, own kernels"] = own
    reads = rng.integers(0, channels, 5)  # five filters, each reading some channel
    picked = np.zeros((5, channels, kh, kw))
    picked[np.arange(5), reads] = rng.standard_normal((5, kh, kw))
    picked[2] = 0  # and an all-zero filter: its output is its bias
    banks["one channel each, permuted, one empty"] = picked
    integer = np.zeros((channels, channels, kh, kw))  # shared weights: grouped taps
    integer[np.arange(channels), np.arange(channels)] = rng.integers(-1, 2, (kh, kw))
    banks["depthwise, weights in {-1, 0, 1}"] = integer
    blur = np.zeros((channels, channels, kh, kw))  # rank one on each channel (a Gaussian)
    blur[np.arange(channels), np.arange(channels)] = rng.standard_normal(
        (channels, kh, 1)
    ) * rng.standard_normal((channels, 1, kw))
    banks["depthwise, rank one each"] = blur
    separable = np.zeros((2, channels, kh, kw))
    separable[0, 0] = np.outer(column, row)  # rank one, one channel
    separable[1] = np.outer(column, row) * rng.standard_normal((channels, 1, 1))  # shared u
    banks["rank one"] = separable
    return {name: bank.astype(np.float32) for name, bank in banks.items()}


@pytest.mark.parametrize("method", FORCED)
@pytest.mark.parametrize("kernel", [(1, 1), (3, 3), (2, 5), (5, 2), (7, 7)])
@pytest.mark.parametrize(("stride", "dilation"), [(1, 1), (1, 2), (2, 1)])
@pytest.mark.parametrize("border", ["reflect", "constant", "wrap"])
def test_structured_banks_match_the_reference(method, kernel, stride, dilation, border) -> None:
    """Depthwise, channel-selective and rank-one banks (what per-tap sums, channel groups
    and one-term separable passes are for), in many bands on two threads."""
    for channels, (name, weights) in itertools.product(
        (1, 3, 4), ((n, w) for n, w in structured_banks(3, kernel).items())
    ):
        weights = structured_banks(channels, kernel)[name]
        rng = np.random.default_rng(channels)
        volume = rng.random((29, 34, channels), dtype=np.float32)
        bias = rng.standard_normal(weights.shape[0]).astype(np.float32)
        settings = {"border": border, "cval": 0.25, "stride": stride, "dilation": dilation}
        result = convvol.convolve(
            volume, weights, bias, method=method, threads=2, memory_limit=1, **settings
        )
        assert_matches_reference(result, volume, weights, bias, **settings)


def test_a_depthwise_rank_one_bank_runs_both_passes_stacked() -> None:
    """One product per pass for every channel (Separated.one_each), not one per channel."""
    weights = structured_banks(3, (5, 5))["depthwise, rank one each"]
    plan = plan_convolution((64, 64, 3), weights, plan_geometry(64, 64, 5, 5),
                            method="separable")  # fmt: skip
    assert plan.kernel.separated is not None
    assert plan.kernel.separated.one_each == (0, 3)
    permuted = weights[[1, 0, 2]]  # filter order no longer follows channel order
    plan = plan_convolution((64, 64, 3), permuted, plan_geometry(64, 64, 5, 5),
                            method="separable")  # fmt: skip
    assert plan.kernel.separated is not None
    assert plan.kernel.separated.one_each is None


def sharpen_bank(channels: int = 3) -> np.ndarray:
    weights = np.zeros((channels, channels, 3, 3), np.float32)
    weights[np.arange(channels), np.arange(channels)] = [[0, -1, 0], [-1, 5, -1], [0, -1, 0]]
    return weights


def test_depthwise_sharpen_runs_as_per_tap_sums() -> None:
    """Four −1 taps share one sum and one subtraction: 5 passes over the output, not 17."""
    geometry = plan_geometry(2048, 2048, 3, 3)
    plan = plan_convolution((2048, 2048, 3), sharpen_bank(), geometry)
    assert plan.method == "direct"
    assert plan.kernel.taps is not None
    assert plan.kernel.taps.passes == 5  # 5·centre, 3 additions for the sum, 1 subtraction
    assert "per-tap sums, 5 passes" in plan.describe()


def test_per_tap_sums_only_where_each_filter_reads_one_channel_at_stride_1() -> None:
    geometry = plan_geometry(512, 512, 3, 3)
    dense = np.random.default_rng(1).standard_normal((3, 3, 3, 3))
    assert plan_convolution((512, 512, 3), dense, geometry, method="direct").kernel.taps is None
    strided = plan_geometry(512, 512, 3, 3, stride=2)
    forced = plan_convolution((512, 512, 3), sharpen_bank(), strided, stride=2, method="direct")
    assert forced.kernel.taps is None
    assert "Toeplitz products" in forced.describe()


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("memory_limit", [1, 2**16, None])
def test_per_tap_sums_do_not_depend_on_bands_or_threads(threads, memory_limit) -> None:
    volume = np.random.default_rng(3).random((61, 53, 3), dtype=np.float32)
    weights = structured_banks(3, (3, 3))["depthwise, own kernels"]
    single = convvol.convolve(volume, weights, method="direct", threads=1)
    banded = convvol.convolve(
        volume, weights, method="direct", threads=threads, memory_limit=memory_limit
    )
    np.testing.assert_array_equal(banded, single)


# --- rank analysis: what the planner and separable see ----------------------------------


def svd_ranks(weights: np.ndarray, tolerance: float = 1e-7) -> np.ndarray:
    """The definition: singular values above tolerance·σ₀, by a full SVD of every layer."""
    sigma = np.linalg.svd(weights.astype(np.float64), compute_uv=False)
    return (sigma > tolerance * sigma[..., :1]).sum(axis=-1) * (sigma[..., 0] > 0)


def gaussian(size: int, sigma: float) -> np.ndarray:
    taps = np.exp(-0.5 * ((np.arange(size) - size // 2) / sigma) ** 2)
    return taps / taps.sum()


def ranked_layers(kernel: tuple[int, int]) -> np.ndarray:
    """Layers of known rank, as one N × 1 × kh × kw bank: zero, rank one (random, a
    float32 Gaussian, a ramp), rank two, full rank."""
    kh, kw = kernel
    rng = np.random.default_rng(kh * 31 + kw)
    layers = [
        np.zeros(kernel),
        np.outer(rng.standard_normal(kh), rng.standard_normal(kw)),
        np.outer(gaussian(kh, kh / 5 + 0.5), gaussian(kw, kw / 5 + 0.5)),
        np.outer(np.arange(kh) - (kh - 1) / 2 + 0.25, np.ones(kw)),
        rng.standard_normal((kh, 2)) @ rng.standard_normal((2, kw)),
        rng.standard_normal(kernel),
    ]
    return np.array(layers, np.float32)[:, np.newaxis]


@pytest.mark.parametrize("kernel", [(1, 1), (1, 7), (7, 1), (3, 3), (5, 9), (15, 15), (64, 31)])
def test_layer_ranks_agree_with_the_svd(kernel) -> None:
    weights = ranked_layers(kernel)
    np.testing.assert_array_equal(planner_weights.layer_ranks(weights), svd_ranks(weights))


def test_rank_one_layers_need_no_svd(monkeypatch) -> None:
    """Zero and rank-one layers (a large Gaussian) are recognised without LAPACK, for the
    ranks and for the separable terms alike: a 1025² SVD takes a third of a second."""
    blur = np.zeros((3, 3, 255, 255), np.float32)
    blur[np.arange(3), np.arange(3)] = np.outer(gaussian(255, 40), gaussian(255, 40))
    sobel = np.zeros((2, 3, 3, 3), np.float32)
    sobel[0, 1] = np.outer([1, 2, 1], [-1, 0, 1])
    sobel[1, 2] = sobel[0, 1].T

    def refuse(*args, **kwargs):
        raise AssertionError("an SVD was computed")

    monkeypatch.setattr(np.linalg, "svd", refuse)
    np.testing.assert_array_equal(planner_weights.layer_ranks(blur), np.eye(3, dtype=int))
    np.testing.assert_array_equal(planner_weights.layer_ranks(sobel), [[0, 1, 0], [0, 0, 1]])
    geometry = plan_geometry(300, 300, 255, 255)
    plan = plan_convolution((300, 300, 3), blur, geometry)
    assert plan.method == "separable"
    assert plan.kernel.separated is not None
    assert plan.kernel.separated.rank == 3


def test_rank_one_factors_rebuild_the_layer_or_decline() -> None:
    layers = ranked_layers((6, 11))[:, 0]
    shown, u, r = planner_weights.rank_one_factors(layers)
    np.testing.assert_array_equal(shown, [False, True, True, True, False, False])
    for layer, column, row in zip(layers[1:4], u[1:4], r[1:4], strict=True):
        assert np.isclose(np.linalg.norm(column), 1)
        np.testing.assert_allclose(np.outer(column, row), layer, rtol=1e-6, atol=1e-7)


def near_rank_one(ratio: float, scale: float = 1.0) -> np.ndarray:
    """A float64 7×9 layer with σ₁/σ₀ = ratio exactly (orthonormal singular vectors)."""
    rng = np.random.default_rng(5)
    left, _ = np.linalg.qr(rng.standard_normal((7, 2)))
    right, _ = np.linalg.qr(rng.standard_normal((9, 2)))
    return scale * (np.outer(left[:, 0], right[:, 0]) + ratio * np.outer(left[:, 1], right[:, 1]))


@pytest.mark.parametrize("scale", [1.0, 1e-160, 1e150])
def test_the_rank_one_check_holds_at_the_threshold(scale) -> None:
    """σ₁/σ₀ just above 10⁻⁷ is rank two, whatever the scale (no underflow); just below,
    rank one (shown without an SVD when the bound allows, else by the SVD)."""
    above, below = near_rank_one(2e-7, scale), near_rank_one(5e-9, scale)
    shown, _, _ = planner_weights.rank_one_factors(np.array([above, below]))
    assert not shown[0]
    assert shown[1]
    bank = np.array([above, below, near_rank_one(5e-8, scale)])[:, np.newaxis]
    np.testing.assert_array_equal(planner_weights.layer_ranks(bank)[:, 0], [2, 1, 1])


def test_non_finite_weights_are_refused() -> None:
    volume = np.ones((8, 8, 3), np.float32)
    for bad in (np.nan, np.inf, 1e39):
        weights = np.ones((2, 3, 3, 3))
        weights[1, 2, 0, 1] = bad
        with pytest.raises(convvol.ParameterError, match="filter 1, channel 2"):
            convvol.convolve(volume, weights)


def test_the_svd_is_skipped_when_it_would_cost_more_than_the_plain_way() -> None:
    """Layers that are not rank one are then taken as full rank: separable cannot win."""
    weights = ranked_layers((9, 5))
    ranks = planner_weights.layer_ranks(weights, svd_budget=0)
    np.testing.assert_array_equal(ranks[:, 0], [0, 1, 1, 1, 5, 5])

    def refuse(*args, **kwargs):
        raise AssertionError("an SVD was computed")

    dense = np.random.default_rng(2).standard_normal((3, 3, 301, 301)).astype(np.float32)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(np.linalg, "svd", refuse)
        plan = plan_convolution((256, 256, 3), dense, plan_geometry(256, 256, 301, 301))
    assert plan.method == "fft"
    assert plan.estimates["separable"] > plan.estimates["fft"]


def test_fft_spectra_skip_zero_layers() -> None:
    weights = structured_banks(3, (5, 4))["one channel each, permuted, one empty"]
    spectra = fft_spectra(weights, (16, 12), dilation=2)
    dilated = np.zeros((*weights.shape[:2], 9, 7))
    dilated[:, :, ::2, ::2] = weights
    expected = np.conj(np.fft.rfft2(dilated, s=(16, 12), axes=(2, 3)))
    np.testing.assert_allclose(spectra, expected, atol=1e-12)
    assert not spectra[~planner_weights.channels_read(weights)].any()


def test_separable_is_not_picked_for_many_small_rank_one_terms() -> None:
    """16 filters of distinct rank-one 5×5 layers: 48 horizontal passes of small products
    (measured 0.13–0.17 s on 1024² against 0.05 s for gemm), so the calls into NumPy
    count, not only the flops. A depthwise Gaussian still runs separable, 16 per block."""
    rng = np.random.default_rng(4)
    terms = np.einsum(
        "nci,ncj->ncij", rng.standard_normal((16, 3, 5)), rng.standard_normal((16, 3, 5))
    )
    geometry = plan_geometry(1024, 1024, 5, 5)
    plan = plan_convolution((1024, 1024, 3), terms.astype(np.float32), geometry)
    assert plan.method == "gemm"
    assert plan.estimates["separable"] > plan.estimates["gemm"]
    blur = np.zeros((3, 3, 15, 15), np.float32)
    blur[np.arange(3), np.arange(3)] = np.outer(gaussian(15, 2.6), gaussian(15, 2.6))
    plan = plan_convolution((2048, 2048, 3), blur, plan_geometry(2048, 2048, 15, 15))
    assert plan.method == "separable"
    assert plan.kernel.block == 16


def test_filters_share_a_vertical_pass_only_for_the_same_column_vector() -> None:
    """Unit column vectors equal to 1e-7 share one vertical pass per channel; a vector
    that differs by 1e-5 relative gets its own (sharing it would be a 1e-5 error)."""
    weights = structured_banks(3, (5, 5))["rank one"]  # filter 1 reuses filter 0's column
    geometry = plan_geometry(64, 64, 5, 5)
    plan = plan_convolution((64, 64, 3), weights, geometry, method="separable")
    separated = plan.kernel.separated
    assert separated is not None
    assert [len(separated.columns[c]) for c in range(3)] == [1, 1, 1]
    nudged = weights.astype(np.float64)
    nudged[1, 0, 2] *= 1 + 1e-5  # one row of filter 1's channel-0 layer: another column
    separated = plan_convolution((64, 64, 3), nudged, geometry, method="separable").kernel.separated
    assert separated is not None
    assert len(separated.columns[0]) == 2


def test_every_method_is_one_registry_entry() -> None:
    """settings.METHODS (what users may force) and the engine's registry agree."""
    assert set(METHODS) == {"auto", *REGISTRY}
    for name, module in REGISTRY.items():
        assert name == module.NAME
        assert callable(module.estimate)
        assert callable(module.prepare)
