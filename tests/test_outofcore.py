"""Out of core: .npy in memory-mapped, .npy and Zarr out strip by strip, equal to in memory."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result

import convvol
from convvol.cli import cli
from convvol.errors import ParameterError, VolumeError
from convvol.io import streams
from convvol.jobs import filter_volume
from convvol.limits import parse_size
from convvol.settings import BORDERS

RNG = np.random.default_rng(11)
VOLUME = RNG.random((47, 39, 3), dtype=np.float32)
TINY = 1  # a budget that forces one band per strip


def run(*args: str | os.PathLike[str]) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def workdir(workdir: Path) -> Path:
    """The shared clean working directory, holding VOLUME as volume.npy."""
    np.save(workdir / "volume.npy", VOLUME)
    return workdir


@pytest.mark.parametrize(
    ("text", "size"),
    [("1000", 1000), ("512M", 512 * 2**20), ("2G", 2 * 2**30), ("1.5GiB", 3 * 2**29),
     ("64mb", 64 * 2**20), ("8 K", 8192), ("1T", 2**40)],
)  # fmt: skip
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "lots", "-5M", "0", "12X", "M"])
def test_parse_size_refuses(text: str) -> None:
    with pytest.raises(ParameterError):
        parse_size(text)


@pytest.mark.parametrize("border", BORDERS)
@pytest.mark.parametrize(
    "settings",
    [{}, {"padding": "valid", "stride": 2}, {"padding": "full", "dilation": 2},
     {"padding": 4, "stride": 3, "dilation": 2, "flip": True}],
)  # fmt: skip
def test_npy_to_npy_equals_in_memory_for_every_border(
    workdir: Path, border: str, settings: dict[str, object]
) -> None:
    banks = [convvol.load_bank("gradients")]
    options = {**settings, "border": border}
    if border == "constant":
        options["cval"] = 0.5
    expected = convvol.run_layers(VOLUME, banks, **options).volume
    filter_volume("volume.npy", banks, "out.npy", budget=TINY, **options)
    assert np.array_equal(np.load("out.npy"), expected)


def test_even_kernels_stacked_banks_and_zarr(workdir: Path) -> None:
    (workdir / "even.yaml").write_text(
        "filters:\n  - {name: a, kernel: [[1, 2, 0, -1], [0, 1, 3, 1]]}\n"
        "  - {name: b, kernel: [[1, 1, 1, 1], [1, 1, 1, 1]], scale: -1}\n"
    )
    banks = [convvol.load_bank("blur"), convvol.load_bank("even.yaml")]
    expected = convvol.run_layers(VOLUME, banks, border="symmetric").volume
    for budget in (TINY, None):
        filter_volume("volume.npy", banks, "out.npy", budget=budget, border="symmetric")
        assert np.array_equal(np.load("out.npy"), expected)
    pytest.importorskip("zarr")
    import zarr

    filter_volume("volume.npy", banks, "out.zarr", budget=TINY, border="symmetric")
    assert np.array_equal(zarr.open_array("out.zarr", mode="r")[:], expected)
    filter_volume("out.zarr", [convvol.load_bank("blur")], "again.npy", budget=TINY)
    blurred = convvol.apply_bank(expected, convvol.load_bank("blur"))
    assert np.array_equal(np.load("again.npy"), blurred)
    assert sorted(p.name for p in workdir.iterdir()) == [
        "again.npy",
        "even.yaml",
        "out.npy",
        "out.zarr",
        "volume.npy",
    ]  # no scratch layers or temporaries left behind


@pytest.mark.parametrize("dtype", [np.uint8, np.float64, np.bool_, np.int16])
def test_input_dtypes_and_two_dimensional_volumes(workdir: Path, dtype: type) -> None:
    raw = (RNG.random((30, 20)) * 200).astype(dtype)
    np.save("raw.npy", raw)
    bank = convvol.load_bank("box_blur")
    filter_volume("raw.npy", [bank], "out.npy", budget=TINY)
    expected = convvol.apply_bank(convvol.read_volume("raw.npy"), bank)
    assert np.array_equal(np.load("out.npy"), expected)


def test_output_file_is_what_np_save_writes(workdir: Path) -> None:
    bank = convvol.load_bank("edges")
    filter_volume("volume.npy", [bank], "out.npy", budget=TINY)
    convvol.write_volume("saved.npy", convvol.apply_bank(VOLUME, bank))
    assert (workdir / "out.npy").read_bytes() == (workdir / "saved.npy").read_bytes()


def test_bad_inputs_are_volume_errors(workdir: Path) -> None:
    bank = convvol.load_bank("blur")
    data = (workdir / "volume.npy").read_bytes()
    (workdir / "short.npy").write_bytes(data[: len(data) // 2])
    with pytest.raises(VolumeError, match="truncated"):
        filter_volume("short.npy", [bank], "out.npy")
    np.save("objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(VolumeError, match=r"objects\.npy"):
        filter_volume("objects.npy", [bank], "out.npy")
    np.save("four.npy", np.zeros((2, 2, 2, 2), np.float32))
    with pytest.raises(VolumeError, match="H×W×C"):
        filter_volume("four.npy", [bank], "out.npy")
    with pytest.raises(VolumeError, match="no such file"):
        filter_volume("missing.npy", [bank], "out.npy")
    assert not (workdir / "out.npy").exists()


def test_limits_and_values_as_for_every_input(workdir: Path) -> None:
    bank = convvol.load_bank("blur")
    with pytest.raises(VolumeError, match="more than the limit") as caught:
        filter_volume("volume.npy", [bank], "out.npy", max_pixels=100)
    assert "--max-pixels" in (caught.value.hint or "")
    filter_volume("volume.npy", [bank], "out.npy", max_pixels=0)  # 0: no limit
    spoiled = VOLUME.astype(np.float64)
    spoiled[40, 7, 2] = np.inf  # NaN would be a missing pixel
    np.save("nan.npy", spoiled)
    with pytest.raises(VolumeError, match=r"not finite, the first inf at row 40, column 7"):
        filter_volume("nan.npy", [bank], "bad.npy", budget=TINY)
    assert not (workdir / "bad.npy").exists()
    # A Fortran-ordered .npy is read whole (a strip of rows is not contiguous there).
    np.save("fortran.npy", np.asfortranarray(VOLUME))
    assert not streams.can_stream("fortran.npy", "f.npy", split=False, format_name=None)
    assert run("apply", "fortran.npy", "-f", "blur", "-o", "f.npy", "-q").exit_code == 0
    assert np.array_equal(np.load("f.npy"), convvol.apply_bank(VOLUME, bank))


def test_failure_midway_leaves_the_old_output(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (workdir / "out.npy").write_bytes(b"old")
    calls = []

    def failing(self: object, first: int, strip: np.ndarray) -> None:
        calls.append(first)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(streams.NpySink, "write", failing)
    with pytest.raises(convvol.OutputError, match="No space left"):
        filter_volume("volume.npy", [convvol.load_bank("blur")], "out.npy", budget=TINY)
    assert (workdir / "out.npy").read_bytes() == b"old"
    assert sorted(p.name for p in workdir.iterdir()) == ["out.npy", "volume.npy"]


def test_sources_give_padded_rows(workdir: Path) -> None:
    source = streams.open_source("volume.npy")
    assert isinstance(source, streams.NpySource)
    padded = source.rows(np.array([-1, 3, 2, 1, 0, 1, 2, 46]), cval=0.5)
    assert np.all(padded[0] == 0.5)
    assert np.array_equal(padded[1:], VOLUME[[3, 2, 1, 0, 1, 2, 46]])
    source.close()


# --- the command line -------------------------------------------------------------------


def test_cli_streams_npy_to_npy_within_max_memory(workdir: Path) -> None:
    result = run("apply", "volume.npy", "-f", "gradients", "-o", "out.npy", "--max-memory", "1K")
    assert result.exit_code == 0, result.output
    assert "wrote out.npy: 47×39×3 from volume.npy" in result.stderr
    expected = convvol.apply_bank(VOLUME, convvol.load_bank("gradients"))
    assert np.array_equal(np.load("out.npy"), expected)


def test_cli_stacked_layers_with_explain(workdir: Path) -> None:
    result = run("apply", "volume.npy", "-f", "blur", "-f", "edges", "--explain", "-o", "s.npy")
    assert result.exit_code == 0, result.output
    assert "layer 2 (edges):" in result.stderr
    expected = convvol.run_layers(VOLUME, [convvol.load_bank("blur"), convvol.load_bank("edges")])
    assert np.array_equal(np.load("s.npy"), expected.volume)


def test_cli_zarr_in_and_out(workdir: Path) -> None:
    pytest.importorskip("zarr")
    import zarr

    assert run("apply", "volume.npy", "-f", "blur", "-o", "blur.zarr", "-q").exit_code == 0
    (workdir / "stale.zarr").mkdir()
    result = run("apply", "blur.zarr", "-f", "edges", "-o", "edges.zarr")
    assert result.exit_code == 0, result.output
    blurred = convvol.apply_bank(VOLUME, convvol.load_bank("blur"))
    expected = convvol.apply_bank(blurred, convvol.load_bank("edges"))
    assert np.array_equal(zarr.open_array("edges.zarr", mode="r")[:], expected)
    # An existing Zarr output is replaced whole.
    assert run("apply", "volume.npy", "-f", "edges", "-o", "edges.zarr", "-q").exit_code == 0
    edges = convvol.apply_bank(VOLUME, convvol.load_bank("edges"))
    assert np.array_equal(zarr.open_array("edges.zarr", mode="r")[:], edges)
    assert not [p for p in workdir.iterdir() if p.name.startswith(".")]
    # A Zarr array to an image is read whole.
    assert run("apply", "blur.zarr", "-f", "edges", "-o", "edges.png", "-q").exit_code == 0
    assert convvol.read_volume("edges.png").shape == (47, 39, 3)


def test_cli_out_of_core_errors(workdir: Path) -> None:
    result = run("apply", "volume.npy", "-f", "blur", "-o", "volume.npy")
    assert result.exit_code == 2
    assert "never overwrites its input" in result.stderr
    result = run("apply", "volume.npy", "-f", "blur", "-o", "x.npy", "--max-memory", "lots")
    assert result.exit_code == 2
    assert "--max-memory" in result.stderr
    result = run("apply", "volume.npy", "-f", "grayscale", "-f", "color_edges", "-o", "x.npy")
    assert result.exit_code == 2
    assert "layer 2 (-f color_edges)" in result.stderr
    assert not (workdir / "x.npy").exists()


def test_cli_skip_existing_single_input(workdir: Path) -> None:
    (workdir / "out.npy").write_bytes(b"finished earlier")
    result = run("apply", "volume.npy", "-f", "blur", "-o", "out.npy", "--skip-existing")
    assert result.exit_code == 0
    assert "skipped volume.npy: out.npy exists" in result.stderr
    assert (workdir / "out.npy").read_bytes() == b"finished earlier"
