"""The picture options of the command line: apply --montage and --preview, show-filter
--image, and the preview command; CliRunner on real files, and a pseudo-terminal."""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import convvol
from convvol.bank import channel_names, load_bank
from convvol.pictures import (
    BACKGROUND,
    heatmap_layout,
    sheet_layout,
    thumbnail_size,
)
from convvol.scaling import to_pixels
from test_cli import assert_clean_error, read_png, run

REPO = Path(__file__).resolve().parents[1]
PATTERN = REPO / "sample_images" / "pattern.png"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


# --- apply --montage ----------------------------------------------------------------------


def test_montage_shows_the_input_and_every_filter(workdir: Path) -> None:
    result = run("apply", PATTERN, "-f", "edges", "-o", "edges.png", "--montage", "sheet.png")
    assert result.exit_code == 0, result.output
    assert "wrote edges.png" in result.stderr
    assert "wrote sheet.png: contact sheet of the input and 3 output channels" in result.stderr
    sheet = read_png(workdir / "sheet.png")
    layout = sheet_layout(1 + 3, 256, 256)  # the RGB input, then the 3 filters of edges
    assert sheet.shape == (*layout.size, 3)
    volume = convvol.read_volume(PATTERN)
    response = read_png(workdir / "edges.png")  # the RGB output: one channel per filter
    y0, y1, x0, x1 = layout.tile_box(0)
    np.testing.assert_array_equal(sheet[y0:y1, x0:x1], to_pixels(volume))
    for index in range(3):
        y0, y1, x0, x1 = layout.tile_box(1 + index)
        for colour in range(3):
            np.testing.assert_array_equal(sheet[y0:y1, x0:x1, colour], response[:, :, index])
        y0, y1, x0, x1 = layout.label_box(1 + index)
        assert (sheet[y0:y1, x0:x1] != BACKGROUND).any(), f"no label under tile {1 + index}"


def test_montage_with_split_and_the_scale_rule(workdir: Path) -> None:
    result = run(
        "apply", PATTERN, "-f", "gradients", "--split", "-o", "out/{name}.png",
        "--scale", "signed", "--montage", "out/{stem}-{bank}.png",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (workdir / "out").iterdir()) == sorted(
        [f"{f.name}.png" for f in load_bank("gradients").filters] + ["pattern-gradients.png"]
    )
    sheet = read_png(workdir / "out" / "pattern-gradients.png")
    layout = sheet_layout(4, 256, 256)
    for index, name in enumerate(f.name for f in load_bank("gradients").filters):
        y0, y1, x0, x1 = layout.tile_box(1 + index)
        np.testing.assert_array_equal(
            sheet[y0:y1, x0:x1, 0], read_png(workdir / "out" / f"{name}.png")
        )


def test_montage_of_stacked_layers_and_a_deep_input(workdir: Path) -> None:
    np.save(workdir / "deep.npy", np.random.default_rng(0).random((20, 30, 5), np.float32))
    (workdir / "pair.yaml").write_text(
        "filters: [{name: smooth, kernel: box}, {name: dx, kernel: sobel_x}]\n"
    )
    result = run("apply", "deep.npy", "-f", "pair.yaml", "-f", "pair.yaml", "-o", "out.tif",
                 "--montage", "sheet.png")  # fmt: skip
    assert result.exit_code == 0, result.output
    layout = sheet_layout(5 + 2, 20, 30)  # a tile per input channel, then 2 outputs
    sheet = read_png(workdir / "sheet.png")
    assert sheet.shape == (*layout.size, 3)
    # Labels say which bank made a channel ("pair/smooth"): wider text than "smooth" alone.
    single = run("apply", "deep.npy", "-f", "pair.yaml", "-o", "one.tif", "--montage", "one.png")
    assert single.exit_code == 0
    y0, y1, x0, x1 = layout.label_box(5)

    def inked_columns(picture: np.ndarray) -> int:
        return int((picture[y0:y1, x0:x1] != BACKGROUND).any(axis=(0, 2)).sum())

    assert inked_columns(sheet) > inked_columns(read_png(workdir / "one.png"))


def test_montage_may_be_a_jpeg_and_goes_with_stdout(workdir: Path) -> None:
    result = run("apply", PATTERN, "-f", "blur", "-o", "-", "--montage", "sheet.jpg")
    assert result.exit_code == 0
    assert result.stdout_bytes.startswith(b"\x89PNG")
    with Image.open(workdir / "sheet.jpg") as image:
        assert image.format == "JPEG"
        assert image.size == tuple(reversed(sheet_layout(4, 256, 256).size))


@pytest.mark.parametrize(
    ("montage", "fragment"),
    [
        ("sheet.xyz", "cannot tell the output format"),
        ("sheet", "cannot tell the output format"),
        ("-", "a picture goes to a file"),
        ("result.png", "is an output of this run"),
        ("{name}.png", "uses {name}"),
        ("adir.png", "is a directory"),
    ],
)
def test_bad_montage_targets_are_refused_before_any_work(
    workdir: Path, montage: str, fragment: str
) -> None:
    (workdir / "adir.png").mkdir()
    result = run("apply", PATTERN, "-f", "edges", "-o", "result.png", "--montage", montage)
    assert_clean_error(result, 2, "'--montage'", fragment)
    assert sorted(p.name for p in workdir.iterdir()) == ["adir.png"]


def test_montage_never_overwrites_the_input(workdir: Path) -> None:
    shutil.copy(PATTERN, workdir / "in.png")
    before = (workdir / "in.png").read_bytes()
    result = run("apply", "in.png", "-f", "edges", "-o", "x.png", "--montage", "./in.png")
    assert_clean_error(result, 2, "is the input")
    assert (workdir / "in.png").read_bytes() == before
    assert not (workdir / "x.png").exists()


def test_montage_and_outputs_are_all_or_nothing(workdir: Path) -> None:
    (workdir / "blocked").write_text("a file, not a directory")
    result = run("apply", PATTERN, "-f", "edges", "--split", "-o", "out/{name}.png",
                 "--montage", "blocked/sheet.png")  # fmt: skip
    assert_clean_error(result, 1, "blocked/sheet.png")
    assert sorted(p.name for p in workdir.iterdir()) == ["blocked"]
    result = run("apply", PATTERN, "-f", "edges", "-o", "blocked/e.png", "--montage", "s.png")
    assert_clean_error(result, 1, "blocked/e.png")
    assert sorted(p.name for p in workdir.iterdir()) == ["blocked"]


def test_quiet_montage(workdir: Path) -> None:
    result = run("apply", PATTERN, "-f", "edges", "-q", "-o", "e.png", "--montage", "s.png")
    assert (result.exit_code, result.stdout, result.stderr) == (0, "", "")
    assert (workdir / "s.png").is_file()


# --- show-filter --image ------------------------------------------------------------------


def test_show_filter_image_draws_the_heat_maps(workdir: Path) -> None:
    result = run("show-filter", "edges", "--image", "kernels.png")
    assert result.exit_code == 0, result.output
    assert "red_vertical · red" in result.stdout  # the usual text, too
    assert "wrote kernels.png" in result.stderr
    resolved = load_bank("edges").resolve(3)
    layout = heatmap_layout(resolved, channel_names(3))
    picture = read_png(workdir / "kernels.png")
    assert picture.shape == (*layout.size, 3)
    red, _, blue = (int(v) for v in picture[layout.cell_box(0, 0, 0, 0)[0] + 1,
                                            layout.cell_box(0, 0, 0, 0)[2] + 1])  # fmt: skip
    assert red > blue  # red_vertical's red layer starts with +1


def test_show_filter_image_for_another_depth(workdir: Path) -> None:
    result = run("show-filter", "blur", "--channels", "1", "--image", "k.png")
    assert result.exit_code == 0, result.output
    assert "blur_gray" in result.stdout
    layout = heatmap_layout(load_bank("blur").resolve(1), ["gray"])
    assert read_png(workdir / "k.png").shape == (*layout.size, 3)


@pytest.mark.parametrize(
    ("image", "fragment"),
    [("k.xyz", "cannot tell the output format"), ("-", "a picture goes to a file")],
)
def test_show_filter_bad_image_targets(workdir: Path, image: str, fragment: str) -> None:
    result = run("show-filter", "edges", "--image", image)
    assert_clean_error(result, 2, "'--image'", fragment)
    assert result.stdout == ""  # refused before printing anything
    assert list(workdir.iterdir()) == []


def test_show_filter_image_never_overwrites_the_bank(workdir: Path) -> None:
    # A bank file is read by its contents, whatever its name, so it may be called .png.
    shutil.copy(REPO / "filters" / "edges.yaml", workdir / "mine.png")
    result = run("show-filter", "./mine.png", "--image", "mine.png")
    assert_clean_error(result, 2, "the bank's file")
    assert (workdir / "mine.png").read_bytes() == (REPO / "filters" / "edges.yaml").read_bytes()


# --- preview ------------------------------------------------------------------------------


def test_preview_draws_nothing_when_stdout_is_not_a_terminal(workdir: Path) -> None:
    result = run("preview", PATTERN)
    assert (result.exit_code, result.stdout, result.stderr) == (0, "", "")
    np.save(workdir / "v.npy", np.zeros((4, 4, 7), np.float32))
    result = run("preview", "-", "--split", stdin=(workdir / "v.npy").read_bytes())
    assert (result.exit_code, result.output) == (0, "")


def test_apply_preview_draws_nothing_when_stderr_is_not_a_terminal(workdir: Path) -> None:
    result = run("apply", PATTERN, "-f", "edges", "-o", "e.png", "--preview")
    assert result.exit_code == 0
    assert result.stderr.count("\n") == 1  # only the "wrote" line
    assert "▀" not in result.output


def test_preview_of_a_bad_input_is_an_error(workdir: Path) -> None:
    assert_clean_error(run("preview", "nope.png"), 2, "no such file")
    assert run("preview", PATTERN, "--width", "0").exit_code == 2


def on_terminal(command: list[str], cwd: Path, **environment: str) -> str:
    """Run a command on a pseudo-terminal (util-linux `script`) of 100×30; its screen."""
    if shutil.which("script") is None:
        pytest.skip("needs util-linux's script for a pseudo-terminal")
    line = " ".join(f"'{word}'" for word in command)
    env = {key: value for key, value in os.environ.items()
           if key not in ("NO_COLOR", "FORCE_COLOR", "TERM", "COLORTERM")}  # fmt: skip
    env.update(COLUMNS="100", LINES="30", TERM="xterm-256color", COLORTERM="truecolor")
    env.update(environment)
    done = subprocess.run(
        ["script", "-qec", line, "/dev/null"],
        cwd=cwd, capture_output=True, text=True, timeout=120, check=False, env=env,
    )  # fmt: skip
    return done.stdout.replace("\r\n", "\n")


def convvol_command(*args: str | os.PathLike[str]) -> list[str]:
    return [sys.executable, "-m", "convvol", *map(str, args)]


def test_preview_in_a_terminal_fits_its_size(workdir: Path) -> None:
    screen = on_terminal(convvol_command("preview", PATTERN), workdir)
    lines = screen.splitlines()
    # 100 columns, but at most 30 − 2 rows: 256×256 becomes 56×56 pixels, 28 rows.
    height, width = thumbnail_size(256, 256, columns=100, max_rows=28)
    assert (height, width) == (56, 56)
    assert len(lines) == math.ceil(height / 2) + 1
    assert ANSI.sub("", lines[0]) == "▀" * width
    assert "38;2;" in screen  # true colour
    fewer = on_terminal(convvol_command("preview", PATTERN), workdir, COLORTERM="")
    assert "38;5;" in fewer  # the nearest of 256 colours, where true colour is not announced
    assert ANSI.sub("", lines[-1]).strip() == "pattern.png 256×256×3"


def test_preview_split_and_width(workdir: Path) -> None:
    screen = on_terminal(convvol_command("preview", PATTERN, "--split", "--width", "62"), workdir)
    lines = screen.splitlines()
    width = (62 - 2 * 2) // 3
    assert len(lines) == math.ceil(width / 2) + 1  # square image; no height limit with --width
    assert ANSI.sub("", lines[-1]).split() == ["red", "green", "blue"]


def test_apply_preview_draws_the_outputs_on_stderr(workdir: Path) -> None:
    command = convvol_command("apply", PATTERN, "-f", "edges", "-o", "e.png", "--preview")
    screen = on_terminal([*command, "-q"], workdir)
    lines = screen.splitlines()
    width = (100 - 2 * 2) // 3  # three channels side by side
    assert len(lines) == math.ceil(width / 2) + 1
    assert ANSI.sub("", lines[-1]).split() == ["red_vertical", "luminance_edges", "blue_horizontal"]
    # stdout to a file, stderr still the terminal: the picture shows, stdout stays clean.
    line = " ".join(f"'{word}'" for word in command) + " > stdout.txt"
    assert "▀" in on_terminal(["sh", "-c", line], workdir)
    assert (workdir / "stdout.txt").read_text() == ""


def test_preview_honours_no_color(workdir: Path) -> None:
    screen = on_terminal(convvol_command("preview", PATTERN), workdir, NO_COLOR="1")
    assert "38;2;" not in screen
    assert "▀" not in screen
    assert "█" in screen  # the white square, in shades
