"""Dask: chunked arrays equal to the in-memory engine at every seam, and batches on a
LocalCluster (loopback, 2 worker processes) equal to this machine's, even when a worker
is killed mid-batch."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from PIL import Image

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")
zarr = pytest.importorskip("zarr")

import convvol  # noqa: E402
from convvol import batch, dask_arrays  # noqa: E402
from convvol import cluster as cluster_batches  # noqa: E402
from convvol.cli import cli  # noqa: E402
from convvol.jobs import JobOptions, JobResult  # noqa: E402
from convvol.settings import BORDERS, Settings  # noqa: E402

RNG = np.random.default_rng(13)
VOLUME = RNG.random((61, 45, 3), dtype=np.float32)


def run(*args: str | os.PathLike[str]) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def cluster() -> Iterator[object]:
    local = distributed.LocalCluster(
        processes=True, n_workers=2, threads_per_worker=1, host="127.0.0.1",
        dashboard_address=None,
    )  # fmt: skip
    yield local
    local.close()


@pytest.fixture
def client(cluster: object) -> Iterator[object]:
    with distributed.Client(cluster, set_as_default=False) as connected:
        yield connected


# --- chunked arrays -------------------------------------------------------------------


@pytest.mark.parametrize("border", BORDERS)
def test_map_overlap_equals_in_memory_at_every_seam(border: str) -> None:
    """Chunks smaller than the kernel's reach (7 rows with dilation 2 reach 13)."""
    weights = RNG.standard_normal((2, 3, 7, 7)).astype(np.float32)
    array = da.from_array(VOLUME, chunks=(5, 7, 2))
    cval = 0.75 if border == "constant" else 0.0
    for settings in ({}, {"padding": "valid", "stride": 2}, {"padding": 5, "stride": 3}):
        options = {"border": border, "cval": cval, "dilation": 2, **settings}
        expected = convvol.convolve(VOLUME, weights, **options)
        lazy = dask_arrays.convolve_dask(array, weights, chunk_bytes=1, **options)
        assert len(lazy.chunks[0]) > 3  # several seams
        assert np.array_equal(lazy.compute(scheduler="threads"), expected), settings


@pytest.mark.parametrize("method", ["gemm", "fft", "separable"])
def test_banks_and_methods_on_dask(method: str) -> None:
    banks = [convvol.load_bank("blur"), convvol.load_bank("edges")]
    expected = convvol.run_layers(VOLUME, banks, method=method, border="wrap").volume
    array = da.from_array(VOLUME, chunks=(9, 45, 3))
    lazy = dask_arrays.apply_banks_dask(array, banks, method=method, border="wrap",
                                        chunk_bytes=20_000)  # fmt: skip
    assert np.array_equal(lazy.compute(scheduler="threads"), expected)
    grey = da.from_array(VOLUME[:, :, 0], chunks=(4, 4))
    bank = convvol.load_bank("box_blur")
    lazy = dask_arrays.convolve_dask(grey, bank, chunk_bytes=1)
    assert np.array_equal(lazy.compute(), convvol.apply_bank(VOLUME[:, :, :1], bank))


def test_mosaic_on_the_cluster_for_every_border(workdir: Path, cluster: object) -> None:
    stored = zarr.create_array(store="mosaic.zarr", shape=VOLUME.shape, chunks=(6, 11, 3),
                               dtype="float32")  # fmt: skip
    stored[:] = VOLUME
    address = cluster.scheduler_address  # type: ignore[attr-defined]
    bank = convvol.load_bank("gradients")
    for border in BORDERS:
        result = run("apply", "mosaic.zarr", "-f", "gradients", "--border", border,
                     "-o", "out.zarr", "--scheduler", address)  # fmt: skip
        assert result.exit_code == 0, result.output
        assert "1 succeeded, 0 failed, 0 skipped" in result.stderr
        expected = convvol.apply_bank(VOLUME, bank, border=border)
        assert np.array_equal(zarr.open_array("out.zarr", mode="r")[:], expected), border
    assert sorted(p.name for p in workdir.iterdir()) == ["mosaic.zarr", "out.zarr"]


def test_a_mosaic_with_missing_pixels_on_the_cluster(workdir: Path, cluster: object) -> None:
    holed = VOLUME.copy()
    holed[10:20, 5:15] = np.nan
    holed[40:44, 30:40] = -9999.0  # a nodata value
    stored = zarr.create_array(store="holed.zarr", shape=holed.shape, chunks=(6, 11, 3),
                               dtype="float32")  # fmt: skip
    stored[:] = holed
    address = cluster.scheduler_address  # type: ignore[attr-defined]
    bank = convvol.load_bank("blur")
    result = run("apply", "holed.zarr", "-f", "blur", "-o", "out.zarr", "--scheduler", address)
    assert result.exit_code == 0, result.output
    expected = convvol.apply_bank(holed, bank)  # NaN seen: propagate
    assert np.array_equal(zarr.open_array("out.zarr", mode="r")[:], expected, equal_nan=True)
    result = run("apply", "holed.zarr", "-f", "blur", "-o", "kept.zarr", "--nodata", "-9999",
                 "--missing", "interpolate", "--scheduler", address)  # fmt: skip
    assert result.exit_code == 0, result.output
    expected = convvol.apply_bank(convvol.mark_missing(holed, nodata=-9999), bank,
                                  missing="interpolate")  # fmt: skip
    assert np.array_equal(zarr.open_array("kept.zarr", mode="r")[:], expected, equal_nan=True)


# --- batches on the cluster -------------------------------------------------------------


def make_inputs(directory: Path, count: int, size: int = 24) -> None:
    directory.mkdir()
    for index in range(count):
        pixels = RNG.integers(0, 256, (size, size + 3, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(directory / f"img{index:02d}.png")


def test_cluster_batch_equals_local_batch(
    workdir: Path, cluster: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_inputs(workdir / "in", 8)
    (workdir / "in" / "bad.png").write_text("not an image")
    np.save(workdir / "in" / "volume.npy", VOLUME)
    local = run("apply", "in", "-f", "edges", "-o", "local/{stem}.npy", "-j", "1")
    assert local.exit_code == 1
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", cluster.scheduler_address)  # type: ignore[attr-defined]
    remote = run("apply", "in", "-f", "edges", "-o", "remote/{stem}.npy")
    assert remote.exit_code == 1, remote.output
    assert "9 succeeded, 1 failed, 0 skipped" in remote.stderr
    assert "in/bad.png: not an image" in remote.stderr  # named as the user named it
    names = sorted(p.name for p in (workdir / "local").iterdir())
    assert names == sorted(p.name for p in (workdir / "remote").iterdir())
    assert len(names) == 9
    for name in names:
        assert np.array_equal(np.load(workdir / "local" / name), np.load(workdir / "remote" / name))
    resumed = run("apply", "in", "-f", "edges", "-o", "remote/{stem}.npy", "--skip-existing")
    assert "0 succeeded, 1 failed, 9 skipped" in resumed.stderr


def test_a_worker_killed_mid_batch_loses_nothing(workdir: Path, client: object) -> None:
    make_inputs(workdir / "in", 16, size=150)
    (workdir / "slow.yaml").write_text(
        "filters: [{name: g, kernel: {gaussian: {sigma: 4}}, depthwise: true}]\n"
    )
    bank = convvol.load_bank("slow.yaml")
    items = batch.expand_inputs(["in"])
    options = JobOptions(banks=(bank,), template="out/{stem}.npy",
                         settings=Settings(method="gemm"))  # fmt: skip
    pids = client.run(os.getpid)  # type: ignore[attr-defined]
    victim = next(iter(pids.values()))
    killed = []

    def kill_once(result: JobResult) -> None:
        if not killed:
            os.kill(victim, signal.SIGKILL)  # mid-batch: the other files are still running
            killed.append(result)

    results = cluster_batches.run_on_cluster(items, options, client, on_result=kill_once)
    assert killed
    client.wait_for_workers(2, timeout=60)  # type: ignore[attr-defined]
    assert victim not in client.run(os.getpid).values()  # type: ignore[attr-defined]
    assert [r.status for r in results] == ["succeeded"] * 16, [r.message for r in results]
    for item in items:
        expected = convvol.apply_bank(convvol.read_volume(item.source), bank, method="gemm")
        assert np.array_equal(np.load(workdir / "out" / f"{item.stem}.npy"), expected)
    assert sorted(p.name for p in (workdir / "out").iterdir()) == [
        f"{item.stem}.npy" for item in items
    ]  # no part-files of the killed worker left


def test_unreachable_scheduler() -> None:
    with pytest.raises(convvol.ConvvolError, match="cannot reach the Dask scheduler"):
        cluster_batches.connect("tcp://127.0.0.1:9", timeout=0.5)
