"""Strips of output rows, computed alone, are bit-identical to the engine's whole output."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import convvol
from convvol.engine import LayerPlan, plan_layer
from convvol.errors import BankError, ParameterError
from convvol.pipeline import plan_stack, run_plans
from convvol.settings import BORDERS, LayerSettings, Settings

RNG = np.random.default_rng(7)
VOLUME = RNG.random((53, 41, 3), dtype=np.float32)


def by_strips(layer: LayerPlan, volume: np.ndarray, rows: int) -> np.ndarray:
    """Each strip from only the input rows it reads, as out-of-core and Dask compute it."""
    parts = []
    height = layer.out_shape[0]
    for first in range(0, height, rows):
        last = min(first + rows, height)
        index = layer.input_rows(first, last)
        padded = volume[np.clip(index, 0, None)]
        padded[index < 0] = layer.cval
        parts.append(layer.compute(padded, first, last, threads=1))
    return np.concatenate(parts)


@pytest.mark.parametrize("method", ["direct", "gemm", "fft", "separable"])
@pytest.mark.parametrize(("kernel", "padding", "stride", "dilation"), [
    ((3, 3), "same", 1, 1),
    ((4, 5), "valid", 2, 1),
    ((7, 7), "full", 1, 2),
    ((15, 15), 3, 3, 1),
])  # fmt: skip
def test_strips_equal_the_engine_bit_for_bit(
    method: str, kernel: tuple[int, int], padding: str | int, stride: int, dilation: int
) -> None:
    weights = RNG.standard_normal((3, 3, *kernel)).astype(np.float32)
    bias = RNG.standard_normal(3).astype(np.float32)
    for border in BORDERS:
        settings = {"padding": padding, "border": border, "stride": stride,
                    "dilation": dilation, "flip": True, "method": method,
                    "cval": 0.25 if border == "constant" else 0.0}  # fmt: skip
        expected = convvol.convolve(VOLUME, weights, bias, **settings)
        layer = plan_layer(VOLUME.shape, weights, bias, LayerSettings(**settings))
        assert np.array_equal(layer.run(VOLUME), expected), border
        assert np.array_equal(layer.run(VOLUME, threads=1), expected), border
        for rows in (layer.band_rows, 3 * layer.band_rows):
            assert np.array_equal(by_strips(layer, VOLUME, rows), expected), (border, rows)


def test_memory_limit_and_threads_reach_the_plan() -> None:
    weights = RNG.standard_normal((2, 3, 15, 15)).astype(np.float32)
    for limit, threads in itertools.product([2**16, None], [1, 2]):
        expected = convvol.convolve(VOLUME, weights, memory_limit=limit, threads=threads)
        layer = plan_layer(VOLUME.shape, weights, memory_limit=limit, threads=threads)
        assert np.array_equal(layer.run(VOLUME, threads=1), expected)


def test_plan_layers_follow_run_layers() -> None:
    banks = [convvol.load_bank("blur"), convvol.load_bank("edges")]
    layers = plan_stack(VOLUME.shape, banks, Settings(stride=2))
    expected = convvol.run_layers(VOLUME, banks, stride=2)
    assert np.array_equal(run_plans(VOLUME, layers), expected.volume)
    assert layers[-1].names == expected.names


def test_depth_errors_name_the_layer() -> None:
    banks = [convvol.load_bank("grayscale"), convvol.load_bank("color_edges")]
    with pytest.raises(BankError, match=r"layer 2 \(-f ce\)") as caught:
        plan_stack(VOLUME.shape, banks, labels=["g", "ce"])
    assert caught.value.hint == "layer 1 (-f g) outputs 1 channel"


def test_strips_must_start_a_band() -> None:
    layer = plan_layer(VOLUME.shape, np.ones((1, 3, 3, 3)), memory_limit=2**14)
    assert layer.band_rows > 1
    with pytest.raises(ParameterError, match="band"):
        layer.compute(VOLUME[:7], 1, 5)
    with pytest.raises(ParameterError, match="read 7 rows, not 9"):
        layer.compute(VOLUME[:9], 0, 5)


def test_strip_rows_fit_the_budget() -> None:
    layer = plan_layer(VOLUME.shape, np.ones((4, 3, 3, 3)), memory_limit=2**14)
    rows = layer.strip_rows(layer.strip_bytes(5 * layer.band_rows))
    assert rows % layer.band_rows == 0 or rows == layer.out_shape[0]
    assert layer.strip_bytes(rows) <= layer.strip_bytes(5 * layer.band_rows)
    assert layer.strip_rows(1) == layer.band_rows  # never less than one band
    assert layer.strip_rows(2**40) == layer.out_shape[0]


@pytest.mark.parametrize("method", ["direct", "gemm", "fft", "separable"])
def test_a_plan_travels_by_pickle(method: str) -> None:
    import pickle

    layer = plan_layer(VOLUME.shape, np.ones((2, 3, 5, 5)), None, LayerSettings(method=method))
    expected = layer.run(VOLUME)
    copy = pickle.loads(pickle.dumps(layer))
    assert np.array_equal(copy.run(VOLUME), expected)
