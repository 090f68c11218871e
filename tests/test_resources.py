"""Nothing fills the disk, nothing crashes: outputs checked against --max-output and the free
space before the first byte, integer options bounded, and the defects a new user hit."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from PIL import Image

import convvol
from convvol.cli import cli
from convvol.limits import check_free_space, parse_size, size_text
from test_faults import assert_refused

REPO = Path(__file__).resolve().parents[1]
PHOTO = REPO / "sample_images" / "pattern.png"
ADDRESS_SPACE = 4 * 2**30


def run(*args: str | os.PathLike[str], env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False, env=env)


def one_clear_line(result: Result, code: int, *fragments: str) -> None:
    """One line (and maybe a hint), the exit code, no traceback: test_faults' rule."""
    assert_refused(result, code, fragments)


def files(directory: Path) -> set[str]:
    return {str(p.relative_to(directory)) for p in directory.rglob("*")}


@pytest.fixture
def small_npy(workdir: Path) -> Path:
    np.save(workdir / "in.npy", np.random.default_rng(1).random((100, 100, 1), np.float32))
    (workdir / "one.yaml").write_text("filters:\n  - kernel: [[1]]\n")
    return workdir / "in.npy"


# --- the size of what is written ------------------------------------------------------


def test_a_huge_padding_is_refused_by_max_output_before_anything_is_written(
    workdir: Path, small_npy: Path
) -> None:
    started = time.monotonic()
    result = run("apply", small_npy, "-f", "one.yaml", "-o", "out.npy", "--padding", "1000000")
    one_clear_line(result, 2, "out.npy", "14.6 TiB", "--max-output", "1.0 TiB")
    assert time.monotonic() - started < 10
    assert files(workdir) == {"in.npy", "one.yaml"}


def test_without_a_cap_the_free_space_refuses_it(workdir: Path, small_npy: Path) -> None:
    result = run("apply", small_npy, "-f", "one.yaml", "-o", "out.npy", "--padding", "1000000",
                 "--max-output", "0")  # fmt: skip
    one_clear_line(result, 2, "out.npy: the result needs 14.6 TiB", "free")
    assert files(workdir) == {"in.npy", "one.yaml"}


def test_max_output_from_the_environment_and_zero_for_none(workdir: Path) -> None:
    capped = run("apply", PHOTO, "-f", "blur", "-o", "x.png", env={"CONVVOL_MAX_OUTPUT": "1K"})
    one_clear_line(capped, 2, "x.png", "--max-output limit of 1 KiB")
    assert not (workdir / "x.png").exists()
    assert run("apply", PHOTO, "-f", "blur", "-o", "x.png", "--max-output", "0").exit_code == 0
    assert (workdir / "x.png").is_file()


@pytest.mark.parametrize(
    ("output", "extra"),
    [("x.png", []), ("x.npy", []), ("{name}.png", ["--split"]), ("x.png", ["--montage", "s.png"])],
)
def test_every_output_is_counted_against_the_free_space(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, output: str, extra: list[str]
) -> None:
    """The free space seen through os.statvfs: 1 KiB left."""
    real = os.statvfs
    Stats = namedtuple("Stats", "f_bavail f_frsize")

    def almost_full(path: str | os.PathLike[str]) -> object:
        real(path)  # still fails where the real one would
        return Stats(1, 1024)

    monkeypatch.setattr("convvol.limits.os.statvfs", almost_full)
    result = run("apply", PHOTO, "-f", "edges", "-o", output, *extra)
    one_clear_line(result, 2, "the result needs", "has 1 KiB free")
    assert files(workdir) == set()


def test_outputs_on_one_file_system_are_counted_together(tmp_path: Path) -> None:
    free = shutil.disk_usage(tmp_path).free
    check_free_space([(str(tmp_path / "a"), free // 2)])
    with pytest.raises(convvol.ParameterError, match="b: the result needs"):
        check_free_space([(str(tmp_path / "a"), free // 2), (str(tmp_path / "b"), free)])


def test_a_batch_checks_each_file_as_it_starts(workdir: Path) -> None:
    (workdir / "in").mkdir()
    for name in ("a", "b"):
        shutil.copy(PHOTO, workdir / "in" / f"{name}.png")
    result = run("apply", "in", "-f", "blur", "-o", "out/{stem}.npy", "--max-output", "100K",
                 "-j", "1")  # fmt: skip
    assert result.exit_code == 1
    assert "2 of 2 files failed" in result.stderr
    assert "out/a.npy: the result would be 768 KiB" in result.stderr
    assert not (workdir / "out").exists()


def test_sizes_read_as_users_write_them() -> None:
    assert parse_size("1T") == 2**40
    assert parse_size("0", zero=True) == 0
    with pytest.raises(convvol.ParameterError, match="above zero"):
        parse_size("0")
    with pytest.raises(convvol.ParameterError, match=r"more than 1\.0 EiB"):
        parse_size("2000000T")
    assert [size_text(n) for n in (512, 2**20, 77 * 2**30, 16 * 10**12)] == [
        "512 bytes", "1.0 MiB", "77.0 GiB", "14.6 TiB",
    ]  # fmt: skip


# --- integer options ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--dilation", "2147483648"], ("--dilation", "2147483647")),
        (["--stride", "99999999999"], ("--stride",)),
        (["--padding", "2147483648"], ("--padding", "at most 2147483647")),
        (["-j", "100000"], ("--jobs",)),
        (["--max-memory", "99999999T"], ("--max-memory", "EiB")),
        (["--max-output", "99999999T"], ("--max-output", "EiB")),
        (["--stride", "100000"], ("pattern.png", "stride 100000", "256×256", "at most 256")),
        (["--dilation", "100000"], ("pattern.png", "dilation 100000", "GiB", "memory")),
    ],
)
def test_integers_that_cannot_be_meant_are_usage_errors(
    workdir: Path, args: list[str], fragments: tuple[str, ...]
) -> None:
    result = run("apply", PHOTO, "-f", "edges", "-o", "x.png", *args)
    one_clear_line(result, 2, *fragments)
    assert files(workdir) == set()


def test_the_library_says_which_setting_is_too_large() -> None:
    with pytest.raises(convvol.ParameterError, match="dilation must be at most 2147483647"):
        convvol.Settings(dilation=2**31)
    with pytest.raises(convvol.ParameterError, match="padding must be at most"):
        convvol.convolve(np.zeros((4, 4, 1)), np.ones((1, 1, 3, 3)), padding=2**40)


# --- the defects a new user hit -------------------------------------------------------


def test_an_output_that_is_a_directory_says_so(workdir: Path) -> None:
    (workdir / "out").mkdir()
    result = run("apply", PHOTO, "-f", "edges", "-o", "out")
    one_clear_line(result, 2, "out is a directory", "-o 'out/{stem}.png'")


def test_show_filter_writes_its_picture_before_the_text(workdir: Path) -> None:
    """`| head -3` stops reading after three lines: the picture must be there already."""
    command = f'"{sys.executable}" -m convvol show-filter edges --image k.png | head -3'
    done = subprocess.run(["sh", "-c", command], cwd=workdir, capture_output=True, timeout=60,
                          check=False)  # fmt: skip
    assert len(done.stdout.splitlines()) == 3
    assert b"Traceback" not in done.stderr
    with Image.open(workdir / "k.png") as picture:
        assert picture.size[0] > 100


def test_a_tiff_page_stack_of_nan_only_is_all_missing(workdir: Path) -> None:
    pages = [Image.fromarray(np.full((64, 64), np.nan, np.float32), mode="F") for _ in range(4)]
    pages[0].save(workdir / "stack.tif", save_all=True, append_images=pages[1:])
    np.save(workdir / "stack.npy", np.full((64, 64, 4), np.nan, np.float32))
    tiff = run("apply", "stack.tif", "-f", "blur", "--channels", "keep", "-o", "a.tif")
    npy = run("apply", "stack.npy", "-f", "blur", "-o", "b.tif")
    one_clear_line(tiff, 2, "every pixel is missing")
    one_clear_line(npy, 2, "every pixel is missing")


def test_a_quoted_pattern_that_matches_nothing_does_not_say_to_quote_it(workdir: Path) -> None:
    result = run("apply", "photos/*.png", "-f", "edges", "-o", "out/{stem}.png")
    one_clear_line(result, 2, "pattern 'photos/*.png' matches no images", "convvol matches")
    assert "quote patterns" not in result.stderr


def test_list_filters_counts_the_output_channels_of_depthwise_banks(workdir: Path) -> None:
    result = run("list-filters")
    lines = {line.split("\t")[0]: line.split("\t") for line in result.stdout.splitlines()}
    assert lines["blur"][1] == "1 → 3"
    assert lines["edges"][1] == "3"
    listed = {entry["name"]: entry for entry in __import__("json").loads(
        run("list-filters", "--json").stdout)}  # fmt: skip
    assert (listed["blur"]["filters"], listed["blur"]["outputs"]) == (1, 3)


@pytest.mark.parametrize("delay", [0.05, 0.1, 0.2, 0.3])
def test_ctrl_c_while_the_command_starts_prints_no_traceback(workdir: Path, delay: float) -> None:
    script = shutil.which("convvol", path=os.path.dirname(sys.executable))
    if script is None:
        pytest.skip("the convvol console script is not installed beside this Python")
    process = subprocess.Popen([script, "apply", PHOTO, "-f", "edges", "-o", "x.png"],
                               cwd=workdir, stderr=subprocess.PIPE)  # fmt: skip
    time.sleep(delay)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert b"Traceback" not in stderr, stderr.decode()
    assert process.returncode in (0, 130, -signal.SIGINT), stderr.decode()
    if process.returncode == 130:
        assert stderr.decode() == "convvol: error: interrupted; no output was written\n"
        assert not (workdir / "x.png").exists()


# --- all of it fast and small -----------------------------------------------------------


REFUSALS = [
    ["in.npy", "-f", "one.yaml", "-o", "out.npy", "--padding", "1000000"],
    ["in.npy", "-f", "one.yaml", "-o", "out.npy", "--padding", "1000000", "--max-output", "0"],
    [PHOTO, "-f", "edges", "-o", "x.png", "--dilation", "2147483648"],
    [PHOTO, "-f", "edges", "-o", "x.png", "--dilation", "100000"],
    [PHOTO, "-f", "edges", "-o", "x.png", "--stride", "100000"],
    [PHOTO, "-f", "edges", "-o", "x.png", "--padding", "100000"],
    [PHOTO, "-f", "edges", "-o", "outdir"],
    ["photos/*.png", "-f", "edges", "-o", "out/{stem}.png"],
]


def _address_space_limit() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


@pytest.mark.parametrize("args", REFUSALS, ids=lambda args: " ".join(map(str, args[1:])))
def test_refusals_are_fast_and_small(workdir: Path, small_npy: Path, args: list[str]) -> None:
    """Each refusal within seconds in a process that may map at most 4 GiB."""
    (workdir / "outdir").mkdir()
    before = files(workdir)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "convvol", "apply", *map(str, args)], cwd=workdir,
        capture_output=True, text=True, timeout=60, preexec_fn=_address_space_limit,
        env={**os.environ, "OPENBLAS_NUM_THREADS": "1"}, check=False,
    )  # fmt: skip
    assert time.monotonic() - started < 10
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("convvol: error: "), done.stderr
    assert "Traceback" not in done.stderr
    assert files(workdir) == before


# --- found in review: the one flow keeps every check -------------------------------------


def test_skip_existing_never_skips_past_the_checks(workdir: Path) -> None:
    shutil.copy(PHOTO, workdir / "p.png")
    same = run("apply", "p.png", "-f", "blur", "-o", "p.png", "--skip-existing")
    one_clear_line(same, 2, "Invalid value for '-o'", "p.png is the input")
    (workdir / "out.png").write_bytes(b"an earlier result")
    missing = run("apply", "missing.png", "-f", "blur", "-o", "out.png", "--skip-existing")
    one_clear_line(missing, 2, "missing.png")


def test_the_streamed_path_explains_a_dilation_beyond_memory(workdir: Path) -> None:
    np.save(workdir / "a.npy", np.zeros((64, 64, 3), np.float32))
    result = run("apply", "a.npy", "-f", "edges", "-o", "o.npy", "--dilation", "100000")
    one_clear_line(result, 2, "a.npy", "dilation 100000", "GiB of memory", "at most 64")
    assert files(workdir) == {"a.npy"}


def test_a_size_error_names_the_output_once(workdir: Path, small_npy: Path) -> None:
    result = run("apply", small_npy, "-f", "one.yaml", "-o", "o.npy", "--padding", "1000000")
    assert result.stderr.startswith("convvol: error: o.npy: the result would be")


def test_memory_limit_is_bytes_not_a_step() -> None:
    volume = np.zeros((8, 8, 3), np.float32)
    out = convvol.apply_bank(volume, convvol.load_bank("blur"), memory_limit=4 * 2**30)
    assert out.shape == (8, 8, 3)


def test_padding_digits_are_ascii(workdir: Path) -> None:
    one_clear_line(run("apply", PHOTO, "-f", "edges", "-o", "x.png", "--padding", "²"), 2,
                   "--padding")  # fmt: skip
