"""Banks as CNN layers: settings precedence, filter kinds, normalisation, stacking."""

from __future__ import annotations

import numpy as np
import pytest

from convvol import (
    Bank,
    BankError,
    ParameterError,
    apply_bank,
    bank_from_document,
    builtin_kernel,
    convolve,
    load_bank,
    run_layers,
)
from convvol.engine import convolve_bands, plan_convolution, plan_geometry
from convvol.pipeline import render_layers
from convvol.scaling import to_pixels

SOBEL_X = builtin_kernel("sobel_x")


def make_bank(*filters: dict, **defaults) -> Bank:
    """A bank named "t" from filter documents, with optional ``defaults:``."""
    document: dict = {"filters": list(filters)}
    if defaults:
        document["defaults"] = defaults
    return bank_from_document(document, name="t")


def random_volume(height=6, width=7, channels=3, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (height, width, channels)).astype(np.float32)


def single_channel_weights(kernel: np.ndarray, channel: int, channels: int) -> np.ndarray:
    """1×C×kh×kw weights reading only ``channel``."""
    weights = np.zeros((1, channels, *np.shape(kernel)))
    weights[0, channel] = kernel
    return weights


SOBEL_FILTER = {"name": "sx", "kernel": "sobel_x"}


# --- settings: overrides, then the bank's defaults, then the engine's ----------------------


def test_engine_defaults_apply_when_neither_bank_nor_caller_says():
    volume = random_volume()
    out = apply_bank(volume, make_bank(SOBEL_FILTER))
    weights = np.broadcast_to(SOBEL_X, (1, 3, 3, 3))
    np.testing.assert_array_equal(out, convolve(volume, weights))  # same, reflect, stride 1


def test_bank_defaults_beat_engine_defaults():
    volume = random_volume()
    bank = make_bank(SOBEL_FILTER, padding="valid", border="constant", cval=2.0)
    assert apply_bank(volume, bank).shape == (4, 5, 1)
    bank = make_bank(SOBEL_FILTER, border="constant", cval=2.0, stride=2, dilation=2)
    weights = np.broadcast_to(SOBEL_X, (1, 3, 3, 3))
    np.testing.assert_array_equal(
        apply_bank(volume, bank),
        convolve(volume, weights, border="constant", cval=2.0, stride=2, dilation=2),
    )


def test_overrides_beat_bank_defaults():
    volume = random_volume()
    bank = make_bank(SOBEL_FILTER, padding="valid", border="constant", cval=2.0, stride=2)
    out = apply_bank(volume, bank, padding="same", border="wrap", stride=1)
    weights = np.broadcast_to(SOBEL_X, (1, 3, 3, 3))
    np.testing.assert_array_equal(out, convolve(volume, weights, border="wrap"))


def test_an_override_of_none_leaves_the_bank_default_in_force():
    bank = make_bank(SOBEL_FILTER, padding="valid")
    assert apply_bank(random_volume(), bank, padding=None).shape == (4, 5, 1)


def test_integer_padding_default_and_flip_override():
    volume = random_volume()
    bank = make_bank({"name": "k", "kernel": [[1.0, 2.0], [3.0, 4.0]]}, padding=1)
    weights = np.broadcast_to([[1.0, 2.0], [3.0, 4.0]], (1, 3, 2, 2))
    np.testing.assert_array_equal(
        apply_bank(volume, bank, flip=True), convolve(volume, weights, padding=1, flip=True)
    )
    assert apply_bank(volume, bank).shape == (7, 8, 1)


def test_unknown_override_raises_parameter_error():
    with pytest.raises(ParameterError):
        apply_bank(random_volume(), make_bank(SOBEL_FILTER), paddin="valid")


# --- activation ---------------------------------------------------------------------------

NEGATE = {"name": "negate", "kernel": [[-1.0]], "bias": 0.25}


@pytest.mark.parametrize(
    ("activation", "expected"),
    [
        ("none", lambda v: 0.25 - v),
        ("relu", lambda v: np.maximum(0.25 - v, 0)),
        ("abs", lambda v: np.abs(0.25 - v)),
    ],
)
def test_activation_is_applied_after_the_bias(activation, expected):
    volume = random_volume(channels=1)
    out = apply_bank(volume, make_bank(NEGATE), activation=activation)
    np.testing.assert_allclose(out, expected(volume), rtol=1e-6, atol=1e-7)


def test_activation_from_bank_defaults_and_overridden():
    volume = random_volume(channels=1)
    bank = make_bank(NEGATE, activation="relu")
    assert apply_bank(volume, bank).min() >= 0
    assert apply_bank(volume, bank, activation="none").min() < 0


def test_unknown_activation_override_raises_parameter_error():
    with pytest.raises(ParameterError):
        apply_bank(random_volume(), make_bank(SOBEL_FILTER), activation="softmax")


# --- depthwise filters --------------------------------------------------------------------

DEPTHWISE_BLUR = {"name": "blur", "kernel": {"gaussian": {"sigma": 1.5}}, "depthwise": True}


def test_depthwise_blur_of_rgb_gives_rgb_named_per_channel():
    volume = random_volume(9, 8)
    result = run_layers(volume, [make_bank(DEPTHWISE_BLUR)])
    assert result.names == ("blur_red", "blur_green", "blur_blue")
    assert result.volume.shape == (9, 8, 3)
    gaussian = builtin_kernel("gaussian", sigma=1.5)
    for c in range(3):
        alone = convolve(volume[:, :, c], gaussian[np.newaxis, np.newaxis])[..., 0]
        np.testing.assert_allclose(result.volume[..., c], alone, rtol=1e-6, atol=1e-6)


def test_each_depthwise_output_only_sees_its_own_channel():
    volume = random_volume(9, 8)
    bank = make_bank(DEPTHWISE_BLUR)
    changed = volume.copy()
    changed[..., 1] += 10.0  # only green
    before, after = apply_bank(volume, bank), apply_bank(changed, bank)
    np.testing.assert_array_equal(after[..., [0, 2]], before[..., [0, 2]])
    assert np.all(after[..., 1] != before[..., 1])


def test_bundled_blur_bank_is_a_depthwise_gaussian():
    volume = random_volume(9, 8)
    result = run_layers(volume, [load_bank("blur")])
    assert result.names == ("blur_red", "blur_green", "blur_blue")
    np.testing.assert_array_equal(result.volume, apply_bank(volume, make_bank(DEPTHWISE_BLUR)))


@pytest.mark.parametrize(
    ("channels", "names"),
    [
        (1, ("blur_gray",)),
        (2, ("blur_gray", "blur_alpha")),
        (4, ("blur_red", "blur_green", "blur_blue", "blur_alpha")),
        (8, tuple(f"blur_{i}" for i in range(8))),
    ],
)
def test_depthwise_output_names_follow_the_volume_depth(channels, names):
    result = run_layers(random_volume(channels=channels), [make_bank(DEPTHWISE_BLUR)])
    assert result.names == names
    assert result.volume.shape[2] == channels


# --- channels:, kernel: and weights: filters -----------------------------------------------

CROSS = [[0.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 0.0]]


def test_channels_filter_only_sees_its_channels():
    volume = random_volume()
    bank = make_bank({"name": "g", "channels": {"green": CROSS}})
    out = apply_bank(volume, bank)
    np.testing.assert_array_equal(out, convolve(volume, single_channel_weights(CROSS, 1, 3)))
    changed = volume.copy()
    changed[..., [0, 2]] = 5.0
    np.testing.assert_array_equal(apply_bank(changed, bank), out)


def test_channels_filter_sums_its_named_layers():
    volume = random_volume()
    bank = make_bank({"name": "rb", "channels": {"r": "sobel_x", "blue": "sobel_y"}})
    red = convolve(volume, single_channel_weights(SOBEL_X, 0, 3))
    blue = convolve(volume, single_channel_weights(builtin_kernel("sobel_y"), 2, 3))
    np.testing.assert_allclose(apply_bank(volume, bank), red + blue, rtol=1e-6, atol=1e-6)


def test_kernel_filter_sums_over_all_channels():
    volume = random_volume(channels=5)
    out = apply_bank(volume, make_bank({"name": "sum", "kernel": [[1.0]]}))
    np.testing.assert_allclose(out[..., 0], volume.sum(axis=2), rtol=1e-6, atol=1e-6)
    blurred = apply_bank(volume, make_bank({"name": "box", "kernel": "box"}))
    blurred_sum = convolve(volume.sum(axis=2), builtin_kernel("box")[np.newaxis, np.newaxis])
    np.testing.assert_allclose(blurred, blurred_sum, rtol=1e-5, atol=1e-5)


def test_weights_filter_uses_each_layer_on_its_channel():
    volume = random_volume()
    layers = [CROSS, SOBEL_X.tolist(), "laplacian"]
    bank = make_bank({"name": "w", "weights": layers})
    weights = np.stack([CROSS, SOBEL_X, builtin_kernel("laplacian")])[np.newaxis]
    np.testing.assert_array_equal(apply_bank(volume, bank), convolve(volume, weights))


def test_weights_filter_with_3_layers_on_a_4_channel_volume_raises_bank_error():
    bank = make_bank({"name": "w", "weights": [CROSS, CROSS, CROSS]})
    with pytest.raises(BankError):
        apply_bank(random_volume(channels=4), bank)
    with pytest.raises(BankError):
        bank.resolve(4)


@pytest.mark.parametrize("key", [7, "7"])
def test_channel_index_7_reads_the_eighth_channel(key):
    volume = random_volume(channels=8)
    bank = make_bank({"name": "c7", "channels": {key: [[2.0]]}})
    np.testing.assert_array_equal(apply_bank(volume, bank)[..., 0], 2 * volume[..., 7])


def test_channel_index_7_on_a_3_channel_volume_raises_bank_error():
    bank = make_bank({"name": "c7", "channels": {7: [[2.0]]}})
    with pytest.raises(BankError):
        apply_bank(random_volume(channels=3), bank)


def test_resolve_gives_names_weights_and_bias():
    bank = make_bank(
        {"name": "a", "channels": {"red": [[1.0]]}, "bias": 0.5},
        {"name": "b", "kernel": [[2.0]]},
    )
    resolved = bank.resolve(3)
    assert resolved.names == ("a", "b")
    assert resolved.weights.shape == (2, 3, 1, 1)
    assert resolved.weights.dtype == np.float32
    np.testing.assert_array_equal(resolved.weights[:, :, 0, 0], [[1, 0, 0], [2, 2, 2]])
    np.testing.assert_array_equal(resolved.bias, [0.5, 0.0])


# --- normalize, scale and bias ---------------------------------------------------------------


def test_normalize_scales_all_layers_together_to_sum_one():
    bank = make_bank({"name": "n", "kernel": [[1.0, 2.0], [3.0, 4.0]], "normalize": True})
    weights = bank.resolve(3).weights[0]
    assert weights.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(weights[0], np.array([[1, 2], [3, 4]]) / 30, rtol=1e-6)


def test_normalize_of_a_channels_filter_counts_every_layer():
    bank = make_bank(
        {"name": "n", "channels": {"red": [[1.0, 1.0]], "green": [[2.0, 2.0]]}, "normalize": True}
    )
    weights = bank.resolve(3).weights[0]
    np.testing.assert_allclose(weights[:, 0], [[1 / 6, 1 / 6], [2 / 6, 2 / 6], [0, 0]], rtol=1e-6)


def test_normalize_of_a_zero_sum_filter_scales_positives_to_one_and_negatives_to_minus_one():
    bank = make_bank({"name": "edge", "kernel": "sobel_x", "normalize": True})
    weights = bank.resolve(3).weights[0]
    assert weights[weights > 0].sum() == pytest.approx(1.0)
    assert weights[weights < 0].sum() == pytest.approx(-1.0)
    np.testing.assert_allclose(weights[1], SOBEL_X / 12, rtol=1e-6)


def test_normalize_of_an_all_zero_filter_raises_bank_error_when_built():
    with pytest.raises(BankError, match="all zero"):
        make_bank({"name": "zero", "kernel": [[0.0, 0.0], [0.0, 0.0]], "normalize": True})


def test_normalize_then_scale():
    bank = make_bank({"name": "n", "kernel": "box", "normalize": True, "scale": 2.0})
    assert bank.resolve(1).weights.sum() == pytest.approx(2.0)
    assert bank.resolve(3).weights.sum() == pytest.approx(2.0)


def test_depthwise_normalize_is_per_output():
    bank = make_bank({"name": "d", "kernel": [[1.0, 3.0]], "normalize": True, "depthwise": True})
    weights = bank.resolve(3).weights
    np.testing.assert_allclose(weights.sum(axis=(1, 2, 3)), [1, 1, 1], rtol=1e-6)


def test_scale_multiplies_the_weights_and_bias_is_added():
    volume = random_volume()
    bank = make_bank({"name": "s", "kernel": CROSS, "scale": 2.0, "bias": 0.5})
    plain = apply_bank(volume, make_bank({"name": "s", "kernel": CROSS}))
    np.testing.assert_allclose(apply_bank(volume, bank), 2 * plain + 0.5, rtol=1e-6, atol=1e-6)


# --- stacking layers ----------------------------------------------------------------------

FIRST = make_bank(
    {"name": "red_edges", "channels": {"red": "sobel_x"}},
    {"name": "smooth", "kernel": "box"},
)
SECOND = make_bank({"name": "mix", "weights": [CROSS, "laplacian"], "bias": 0.1})


def test_stacked_banks_feed_each_output_into_the_next():
    volume = random_volume(9, 10)
    result = run_layers(volume, [FIRST, SECOND])
    assert result.names == ("mix",)
    assert result.volume.shape == (9, 10, 1)
    np.testing.assert_array_equal(result.volume, apply_bank(apply_bank(volume, FIRST), SECOND))


def test_overrides_apply_to_every_layer():
    result = run_layers(random_volume(9, 10), [FIRST, SECOND], padding="valid")
    assert result.volume.shape == (5, 6, 1)


def test_a_layer_whose_depth_does_not_fit_raises_bank_error():
    with pytest.raises(BankError):
        run_layers(random_volume(), [SECOND])  # 2 layers, 3 channels
    reads_blue = make_bank({"name": "b", "channels": {"blue": [[1.0]]}})
    with pytest.raises(BankError):
        run_layers(random_volume(), [FIRST, reads_blue])  # FIRST gives 2 channels


def test_no_banks_raises_parameter_error():
    with pytest.raises(ParameterError):
        run_layers(random_volume(), [])


def test_a_single_layer_matches_apply_bank():
    volume = random_volume()
    np.testing.assert_array_equal(run_layers(volume, [FIRST]).volume, apply_bank(volume, FIRST))


def test_the_input_volume_is_not_modified():
    volume = random_volume()
    before = volume.copy()
    run_layers(volume, [FIRST, SECOND], activation="relu", padding="valid")
    apply_bank(volume, make_bank(DEPTHWISE_BLUR), activation="abs")
    np.testing.assert_array_equal(volume, before)


def test_height_by_width_input_is_one_channel():
    image = random_volume(channels=1)[..., 0]
    out = apply_bank(image, make_bank(SOBEL_FILTER))
    np.testing.assert_array_equal(out, apply_bank(image[..., np.newaxis], make_bank(SOBEL_FILTER)))


# --- the bundled edges bank -----------------------------------------------------------------


def test_bundled_edges_bank_has_the_seed_filters():
    bank = load_bank("edges")
    assert [f.name for f in bank.filters] == ["red_vertical", "luminance_edges", "blue_horizontal"]
    assert bank.defaults["activation"] == "abs"
    weights = bank.resolve(3).weights
    assert weights.shape == (3, 3, 3, 3)
    np.testing.assert_array_equal(weights[0, 0], [[1, 0, -1]] * 3)
    np.testing.assert_array_equal(weights[0, 1:], 0)
    np.testing.assert_array_equal(weights[2, 2], [[1, 1, 1], [0, 0, 0], [-1, -1, -1]])
    np.testing.assert_array_equal(weights[2, :2], 0)


def test_edges_bank_sees_red_vertical_and_blue_horizontal_edges_separately():
    volume = np.zeros((8, 8, 3), np.float32)
    volume[:, 4:, 0] = 1.0  # red: a vertical edge between columns 3 and 4
    volume[4:, :, 2] = 1.0  # blue: a horizontal edge between rows 3 and 4
    result = run_layers(volume, [load_bank("edges")])
    assert result.names == ("red_vertical", "luminance_edges", "blue_horizontal")
    red_vertical, luminance, blue_horizontal = np.moveaxis(result.volume, 2, 0)
    assert np.all(result.volume >= 0)  # activation: abs
    np.testing.assert_array_equal(red_vertical[:, [3, 4]], 3.0)
    np.testing.assert_array_equal(np.delete(red_vertical, [3, 4], axis=1), 0)
    np.testing.assert_array_equal(blue_horizontal[[3, 4], :], 3.0)
    np.testing.assert_array_equal(np.delete(blue_horizontal, [3, 4], axis=0), 0)
    assert luminance.max() > 0


def test_edges_bank_with_activation_none_keeps_the_sign():
    volume = np.zeros((6, 6, 3), np.float32)
    volume[:, 3:, 0] = 1.0  # red rises to the right
    out = apply_bank(volume, load_bank("edges"), activation="none")
    assert np.all(out[:, [2, 3], 0] == -3.0)  # [1, 0, −1] is a right-to-left difference


# --- streamed: stored pixels in, pixels out, the same values --------------------------


@pytest.mark.parametrize("scale", ["clip", "abs", "signed", "minmax"])
@pytest.mark.parametrize("depth", [8, 16])
def test_render_layers_gives_to_pixels_of_run_layers(scale, depth):
    stored = np.random.default_rng(3).integers(0, 256, (37, 41, 3), dtype=np.uint8)
    banks = [load_bank("blur"), load_bank("edges")]
    volume = stored.astype(np.float32) / np.float32(255)
    expected = to_pixels(run_layers(volume, banks, activation="none").volume, scale, depth)
    rendered = render_layers(
        stored, banks, scale=scale, depth=depth, divisor=255.0, activation="none"
    )
    assert rendered.pixels.dtype == expected.dtype
    np.testing.assert_array_equal(rendered.pixels, expected)
    assert rendered.names == ("red_vertical", "luminance_edges", "blue_horizontal")


@pytest.mark.parametrize("method", ["direct", "gemm", "fft", "separable"])
def test_render_layers_applies_the_activation_per_band(method):
    volume = random_volume(50, 33, seed=4)
    bank = make_bank(SOBEL_FILTER, {"name": "l", "kernel": "laplacian"})
    for activation in ("relu", "abs"):
        expected = to_pixels(apply_bank(volume, bank, activation=activation, method=method))
        rendered = render_layers(volume, [bank], activation=activation, method=method)
        np.testing.assert_array_equal(rendered.pixels, expected)


@pytest.mark.parametrize(("dtype", "divisor"), [(np.uint8, 255.0), (np.uint16, 65535.0)])
def test_stored_pixels_with_a_divisor_match_the_float_volume(dtype, divisor):
    stored = np.random.default_rng(5).integers(0, np.iinfo(dtype).max, (30, 20, 3), dtype)
    volume = np.divide(stored, np.float32(divisor), dtype=np.float32)
    bank = load_bank("edges")
    for border in ("reflect", "constant", "wrap"):
        np.testing.assert_array_equal(
            run_layers(stored, [bank], divisor=divisor, border=border).volume,
            run_layers(volume, [bank], border=border).volume,
        )


def test_convolve_bands_hands_every_output_row_to_the_sink_once():
    volume = random_volume(200, 30, seed=6)
    weights = np.random.default_rng(7).normal(size=(2, 3, 3, 3))
    seen = np.zeros(200, int)
    collected = np.full((200, 30, 2), np.nan, np.float32)

    def sink(first: int, band: np.ndarray) -> None:
        seen[first : first + band.shape[0]] += 1
        collected[first : first + band.shape[0]] = band

    geometry = convolve_bands(volume, weights, sink=sink, threads=2, memory_limit=2**14)
    assert (geometry.out_height, geometry.out_width) == (200, 30)
    assert (seen == 1).all()
    np.testing.assert_array_equal(collected, convolve(volume, weights, threads=1))


def test_convolve_bands_refuses_a_divisor_that_is_not_positive():
    with pytest.raises(ParameterError, match="divisor"):
        convolve_bands(random_volume(), np.ones((1, 3, 1, 1)), sink=print, divisor=0.0)


def test_convolve_bands_checks_out():
    volume = random_volume(8, 9)
    weights = np.ones((2, 3, 3, 3))
    with pytest.raises(ParameterError, match="out must be"):
        convolve_bands(volume, weights, sink=print, out=np.empty((8, 9, 3), np.float32))


@pytest.mark.parametrize("method", ["auto", "direct", "gemm", "fft", "separable"])
@pytest.mark.parametrize("depthwise", [False, True])
@pytest.mark.parametrize("channels", [slice(None, None, 2), slice(1, 3)])
def test_bias_reaches_bands_that_are_not_contiguous_rows(method, depthwise, channels):
    volume = random_volume(20, 9)
    weights = np.random.default_rng(8).normal(size=(2, 3, 3, 3))
    if depthwise:  # a sharpen on channels 0 and 1: direct runs it as per-tap sums
        weights = np.zeros((2, 3, 3, 3))
        weights[[0, 1], [0, 1]] = [[0, -1, 0], [-1, 5, -1], [0, -1, 0]]
        geometry = plan_geometry(20, 9, 3, 3)
        assert plan_convolution((20, 9, 3), weights, geometry, method="direct").kernel.taps
    bias = np.array([0.5, -2.0])
    holder = np.zeros((20, 9, 4), np.float32)
    out = holder[:, :, channels]  # some of its channels: rows are not contiguous
    convolve_bands(volume, weights, bias, sink=lambda first, band: None, out=out, method=method)
    np.testing.assert_allclose(out, convolve(volume, weights, bias), rtol=1e-5, atol=1e-5)
