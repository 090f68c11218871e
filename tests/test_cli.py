"""The command line, driven like the docs drive it: CliRunner on real temporary files."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from PIL import Image

import convvol
from convvol import jobs as jobs_module
from convvol.cli import cli

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "sample_images"
PATTERN = SAMPLES / "pattern.png"
PHOTO = SAMPLES / "astronaut.png"


def load_regions() -> dict[str, tuple[int, int, int, int]]:
    spec = importlib.util.spec_from_file_location("make_pattern", SAMPLES / "make_pattern.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.REGIONS


def run(*args: str | os.PathLike[str], stdin: bytes | None = None) -> Result:
    """Run convvol in-process; unexpected exceptions propagate to the test."""
    return CliRunner().invoke(cli, [str(a) for a in args], input=stdin, catch_exceptions=False)


def assert_clean_error(result: Result, code: int, *fragments: str) -> None:
    """A failure: the exit code, one message naming the problem, no traceback."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    assert "convvol: error:" in result.stderr or "Error:" in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image)


@pytest.fixture
def rgba_image(workdir: Path) -> Path:
    pixels = np.random.default_rng(3).integers(0, 256, (12, 10, 4), dtype=np.uint8)
    path = workdir / "rgba.png"
    Image.fromarray(pixels).save(path)
    return path


# --- the main job ---------------------------------------------------------------------


def test_split_writes_one_greyscale_image_per_filter(workdir: Path) -> None:
    result = run("apply", PATTERN, "--filters", "edges", "--split", "-o", "out/{name}.png")
    assert result.exit_code == 0, result.output
    names = [f.name for f in convvol.load_bank("edges").filters]
    assert sorted(p.name for p in (workdir / "out").iterdir()) == sorted(f"{n}.png" for n in names)
    for name in names:
        with Image.open(workdir / "out" / f"{name}.png") as image:
            assert image.mode == "L"
            assert image.size == (256, 256)


def test_red_vertical_sees_red_vertical_edges_and_not_green_ones(workdir: Path) -> None:
    run("apply", PATTERN, "-f", "edges", "--split", "-o", "out/{name}.png")
    response = read_png(workdir / "out" / "red_vertical.png").astype(int)
    regions = load_regions()
    y0, y1, x0, x1 = regions["red_bar"]
    rows = slice(y0 + 4, y1 - 4)  # away from the bar's short horizontal ends
    assert response[rows, x0 - 1 : x0 + 1].min() > 200  # the red bar's left edge
    assert response[rows, x1 - 1 : x1 + 1].min() > 200  # and its right edge
    g0, g1, gx0, gx1 = regions["green_bar"]
    assert response[g0 - 2 : g1 + 2, gx0 - 3 : gx1 + 3].max() == 0  # green edges: nothing
    b0, b1, bx0, bx1 = regions["blue_bar"]
    assert response[b0 - 2 : b1 + 2, bx0 + 4 : bx1 - 4].max() == 0  # blue: nothing


def test_blue_horizontal_sees_only_blue_horizontal_edges(workdir: Path) -> None:
    run("apply", PATTERN, "-f", "blue_horizontal", "-o", "blue.png")
    response = read_png(workdir / "blue.png").astype(int)
    _, y1, x0, x1 = load_regions()["blue_bar"]
    # blue_horizontal is positive where blue falls downwards: the bar's bottom edge.
    assert response[y1 - 1 : y1 + 1, x0 + 4 : x1 - 4].min() == 255
    ry0, ry1, rx0, rx1 = load_regions()["red_bar"]
    assert response[ry0 - 2 : ry1 + 2, rx0 - 2 : rx1 + 2].max() == 0


def test_unsplit_rgb_result_is_an_rgb_image(workdir: Path) -> None:
    result = run("apply", PHOTO, "-f", "edges", "-o", "edges.png")
    assert result.exit_code == 0, result.output
    with Image.open(workdir / "edges.png") as image:
        assert (image.mode, image.size) == ("RGB", (512, 512))
    assert "wrote edges.png" in result.stderr
    assert result.stdout == ""


def test_default_output_name_uses_stem_and_bank(workdir: Path) -> None:
    assert run("apply", PATTERN, "-f", "blur").exit_code == 0
    assert (workdir / "pattern_blur.png").is_file()
    assert run("apply", PATTERN, "-f", "edges", "--split").exit_code == 0
    assert (workdir / "pattern_edges_red_vertical.png").is_file()


def test_split_template_fields(workdir: Path) -> None:
    result = run("apply", PATTERN, "-f", "edges", "--split", "-o", "{stem}-{bank}-{index:02d}.png")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in workdir.glob("pattern-edges-*.png")) == [
        "pattern-edges-00.png",
        "pattern-edges-01.png",
        "pattern-edges-02.png",
    ]


def test_npy_output_is_the_raw_response(workdir: Path) -> None:
    result = run("apply", PATTERN, "-f", "gradients", "-o", "g.npy")
    assert result.exit_code == 0, result.output
    volume = np.load(workdir / "g.npy")
    expected = convvol.apply_bank(convvol.read_volume(PATTERN), convvol.load_bank("gradients"))
    assert volume.dtype == np.float32
    np.testing.assert_array_equal(volume, expected)
    assert volume.min() < 0  # never scaled or clipped


def test_tiff_output_keeps_every_channel(workdir: Path, rgba_image: Path) -> None:
    result = run("apply", rgba_image, "--channels", "keep", "-f", "blur", "-o", "blur.tif")
    assert result.exit_code == 0, result.output
    volume = convvol.read_volume(workdir / "blur.tif", channels="keep")
    assert volume.shape == (12, 10, 4)


def test_rgba_kept_is_written_back_as_rgba_png(workdir: Path, rgba_image: Path) -> None:
    result = run("apply", rgba_image, "--channels", "keep", "-f", "blur", "-o", "blur.png")
    assert result.exit_code == 0, result.output
    with Image.open(workdir / "blur.png") as image:
        assert image.mode == "RGBA"


def test_four_channels_to_png_is_refused_with_a_hint(workdir: Path, rgba_image: Path) -> None:
    # four output channels that are not the input's RGBA (alpha dropped, four filters)
    result = run("apply", rgba_image, "--channels", "keep", "--alpha", "ignore", "-f",
                 "color_edges", "-o", "edges.png")  # fmt: skip
    assert_clean_error(result, 2, "edges.png", "4 channels", "--split", ".npy")
    assert not (workdir / "edges.png").exists()


@pytest.mark.parametrize(
    ("scale", "expected"),
    [("clip", [0, 0, 128, 255]), ("abs", [255, 128, 128, 255]), ("signed", [0, 64, 191, 255])],
)
def test_scale_rules(workdir: Path, scale: str, expected: list[int]) -> None:
    np.save(workdir / "ramp.npy", np.array([[[-1.0], [-0.5], [0.5], [1.0]]], np.float32))
    result = run("apply", "ramp.npy", "-f", "identity_bank.yaml", "--scale", scale, "-o", "r.png")
    assert result.exit_code == 2  # the bank file does not exist yet
    (workdir / "identity_bank.yaml").write_text("filters: [{name: id, kernel: [[1]]}]\n")
    result = run("apply", "ramp.npy", "-f", "identity_bank.yaml", "--scale", scale, "-o", "r.png")
    assert result.exit_code == 0, result.output
    assert read_png(workdir / "r.png")[0].tolist() == expected


def test_minmax_stretches_each_channel(workdir: Path) -> None:
    np.save(workdir / "v.npy", np.array([[[2.0], [3.0], [4.0]]], np.float32))
    (workdir / "id.yaml").write_text("filters: [{name: id, kernel: [[1]]}]\n")
    assert run("apply", "v.npy", "-f", "id.yaml", "--scale", "minmax", "-o", "m.png").exit_code == 0
    assert read_png(workdir / "m.png")[0].tolist() == [0, 128, 255]


def test_depth_16_png_grey_and_rgb(workdir: Path) -> None:
    assert run("apply", PATTERN, "-f", "grayscale", "--depth", "16", "-o", "g.png").exit_code == 0
    with Image.open(workdir / "g.png") as image:
        assert image.mode == "I;16"
    assert run("apply", PHOTO, "-f", "blur", "--depth", "16", "-o", "b.png").exit_code == 0
    sixteen = convvol.read_volume(workdir / "b.png")
    exact = np.clip(convvol.apply_bank(convvol.read_volume(PHOTO), convvol.load_bank("blur")), 0, 1)
    assert np.abs(sixteen - exact).max() <= 0.5 / 65535 + 1e-7


def test_depth_16_jpeg_is_refused(workdir: Path) -> None:
    result = run("apply", PATTERN, "-f", "blur", "--depth", "16", "-o", "b.jpg")
    assert_clean_error(result, 2, "b.jpg", "16-bit")
    assert not (workdir / "b.jpg").exists()


def test_format_option_overrides_extension(workdir: Path) -> None:
    assert run("apply", PATTERN, "-f", "blur", "--format", "npy", "-o", "out.dat").exit_code == 0
    assert np.load(workdir / "out.dat").shape == (256, 256, 3)


# --- engine options reach the engine --------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"padding": "valid"},
        {"padding": "full", "border": "constant", "cval": 0.25},
        {"padding": 2, "border": "wrap"},
        {"stride": 2, "dilation": 2, "border": "symmetric"},
        {"border": "edge", "activation": "relu", "flip": True},
    ],
)
def test_engine_options_match_the_python_api(workdir: Path, options: dict) -> None:
    args = []
    for key, value in options.items():
        args += [f"--{key}"] if value is True else [f"--{key}", str(value)]
    result = run("apply", PATTERN, "-f", "gradients", *args, "-o", "g.npy")
    assert result.exit_code == 0, result.output
    expected = convvol.apply_bank(
        convvol.read_volume(PATTERN), convvol.load_bank("gradients"), **options
    )
    np.testing.assert_array_equal(np.load(workdir / "g.npy"), expected)


def test_cli_overrides_bank_defaults(workdir: Path) -> None:
    # edges defaults to activation: abs; --activation none keeps the sign.
    run("apply", PATTERN, "-f", "edges", "-o", "abs.npy")
    run("apply", PATTERN, "-f", "edges", "--activation", "none", "-o", "signed.npy")
    assert np.load(workdir / "abs.npy").min() >= 0
    assert np.load(workdir / "signed.npy").min() < 0


def test_repeated_filters_stack_layers(workdir: Path) -> None:
    result = run("apply", PHOTO, "-f", "blur", "-f", "edges", "-o", "stack.npy")
    assert result.exit_code == 0, result.output
    photo = convvol.read_volume(PHOTO)
    blurred = convvol.apply_bank(photo, convvol.load_bank("blur"))
    expected = convvol.apply_bank(blurred, convvol.load_bank("edges"))
    np.testing.assert_allclose(np.load(workdir / "stack.npy"), expected, atol=1e-6)


def test_layer_depth_mismatch_is_an_error_before_any_work(workdir: Path) -> None:
    result = run("apply", PATTERN, "-f", "grayscale", "-f", "color_edges", "-o", "x.npy")
    assert_clean_error(result, 2, "color_edges", "3 layers", "1 channel")
    assert not (workdir / "x.npy").exists()


def test_channels_keep_reads_the_files_own_channels(workdir: Path, rgba_image: Path) -> None:
    result = run("apply", rgba_image, "--channels", "keep", "-f", "grayscale", "-o", "g.png")
    assert_clean_error(result, 2, "4 channels")  # grayscale's weights are 3 layers deep
    result = run("apply", rgba_image, "-f", "grayscale", "-o", "g.png")
    assert result.exit_code == 0, result.output


# --- standard input and output --------------------------------------------------------


def test_stdout_gets_only_data(workdir: Path) -> None:
    result = run("apply", PATTERN, "-f", "blur", "-o", "-", "--format", "npy")
    assert result.exit_code == 0, result.stderr
    volume = np.load(io.BytesIO(result.stdout_bytes))
    assert volume.shape == (256, 256, 3)
    assert list(workdir.iterdir()) == []


def test_stdout_defaults_to_png(workdir: Path) -> None:
    result = run("apply", PATTERN, "-f", "blur", "-o", "-")
    assert result.stdout_bytes.startswith(b"\x89PNG")


def test_stdin_accepts_npy_and_images(workdir: Path) -> None:
    volume = np.random.default_rng(0).random((9, 7, 3)).astype(np.float32)
    buffer = io.BytesIO()
    np.save(buffer, volume)
    result = run("apply", "-", "-f", "blur", "-o", "from_npy.npy", stdin=buffer.getvalue())
    assert result.exit_code == 0, result.output
    expected = convvol.apply_bank(volume, convvol.load_bank("blur"))
    np.testing.assert_array_equal(np.load(workdir / "from_npy.npy"), expected)
    result = run("apply", "-", "-f", "blur", "-o", "from_png.png", stdin=PATTERN.read_bytes())
    assert result.exit_code == 0, result.output
    assert "from -" in result.stderr


def test_shell_pipeline_through_real_processes(workdir: Path) -> None:
    convvol_command = f'"{sys.executable}" -m convvol'
    pipeline = (
        f"{convvol_command} apply '{PHOTO}' -f blur -o - --format npy"
        f" | {convvol_command} apply - -f edges -o edges.png"
    )
    done = subprocess.run(
        pipeline, shell=True, cwd=workdir, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    with Image.open(workdir / "edges.png") as image:
        assert (image.mode, image.size) == ("RGB", (512, 512))


# --- errors ---------------------------------------------------------------------------


def test_missing_input(workdir: Path) -> None:
    assert_clean_error(run("apply", "nope.png", "-f", "edges"), 2, "nope.png", "no such file")


def test_input_that_is_not_an_image(workdir: Path) -> None:
    (workdir / "notes.png").write_text("hello")
    result = run("apply", "notes.png", "-f", "edges", "-o", "x.png")
    assert_clean_error(result, 2, "notes.png", "not an image")
    assert not (workdir / "x.png").exists()


def test_unknown_bank_suggests_a_name(workdir: Path) -> None:
    result = run("apply", PATTERN, "-f", "edgse")
    assert_clean_error(result, 2, "edgse", "did you mean 'edges'")


def test_invalid_bank_names_file_filter_and_line(workdir: Path) -> None:
    (workdir / "bad.yaml").write_text(
        "filters:\n  - name: ok\n    kernel: sobel_x\n  - name: broken\n    kernel: sobel_z\n"
    )
    result = run("apply", PATTERN, "-f", "bad.yaml", "-o", "x.png")
    assert_clean_error(result, 2, "bad.yaml", "line 4", "broken", "sobel_z", "did you mean")


def test_output_equal_to_input_is_refused(workdir: Path) -> None:
    image = workdir / "photo.png"
    image.write_bytes(PATTERN.read_bytes())
    result = run("apply", "photo.png", "-f", "blur", "-o", "photo.png")
    assert_clean_error(result, 2, "photo.png", "never overwrites its input")
    assert image.read_bytes() == PATTERN.read_bytes()


@pytest.mark.parametrize(
    ("template", "fragment"),
    [("out.png", "same file"), ("{stem}.png", "same file"), ("{nmae}.png", "{nmae}")],
)
def test_bad_split_templates_are_usage_errors(workdir: Path, template: str, fragment: str) -> None:
    result = run("apply", PATTERN, "-f", "edges", "--split", "-o", template)
    assert result.exit_code == 2
    assert fragment in result.stderr
    assert list(workdir.iterdir()) == []


def test_template_fields_need_split(workdir: Path) -> None:
    result = run("apply", PATTERN, "-f", "edges", "-o", "{name}.png")
    assert result.exit_code == 2
    assert "{name}" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["--padding", "sometimes"],
        ["--border", "mirror"],
        ["--stride", "0"],
        ["--scale", "log"],
        ["--depth", "12"],
        ["--format", "jp2"],
        ["--bogus"],
    ],
)
def test_bad_options_are_usage_errors(workdir: Path, args: list[str]) -> None:
    result = run("apply", PATTERN, "-f", "edges", "-o", "x.png", *args)
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert not (workdir / "x.png").exists()


def test_missing_output_directory_is_created(workdir: Path) -> None:
    assert run("apply", PATTERN, "-f", "blur", "-o", "a/b/c.png").exit_code == 0
    assert (workdir / "a" / "b" / "c.png").is_file()


def test_failed_write_leaves_no_partial_file(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (workdir / "out").mkdir()
    (workdir / "out" / "red_vertical.png").write_bytes(b"the user's old file")
    calls = []

    def failing_encode(stream, volume, fmt, **options):  # type: ignore[no-untyped-def]
        calls.append(fmt)
        stream.write(b"half")
        if len(calls) == 2:
            raise OSError(28, "No space left on device")

    monkeypatch.setattr("convvol.io.writers.encode_volume", failing_encode)
    result = run("apply", PATTERN, "-f", "edges", "--split", "-o", "out/{name}.png")
    assert_clean_error(result, 1, "No space left on device")
    assert sorted(p.name for p in (workdir / "out").iterdir()) == ["red_vertical.png"]
    assert (workdir / "out" / "red_vertical.png").read_bytes() == b"the user's old file"


def test_interrupt_exits_130_without_output(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt

    monkeypatch.setattr(jobs_module, "run_plans", interrupted)
    monkeypatch.setattr(jobs_module, "render_plans", interrupted)
    result = run("apply", PATTERN, "-f", "edges", "-o", "x.png")
    assert result.exit_code == 130
    assert list(workdir.iterdir()) == []


def test_internal_errors_are_one_line_unless_debug(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("something unforeseen")

    monkeypatch.setattr(jobs_module, "run_plans", broken)
    monkeypatch.setattr(jobs_module, "render_plans", broken)
    result = run("apply", PATTERN, "-f", "edges", "-o", "x.png")
    assert_clean_error(result, 1, "internal error", "something unforeseen", "--debug")
    with pytest.raises(RuntimeError):
        run("--debug", "apply", PATTERN, "-f", "edges", "-o", "x.png")


# --- list-filters, show-filter, validate ----------------------------------------------


def test_list_filters_json(workdir: Path) -> None:
    result = run("list-filters", "--json")
    assert result.exit_code == 0
    banks = {entry["name"]: entry for entry in json.loads(result.stdout)}
    assert len(banks) >= 8
    assert banks["edges"]["filters"] == 3
    assert banks["edges"]["shape"] == [3, 3, 3, 3]
    assert banks["edges"]["description"]


def test_list_filters_plain_when_piped(workdir: Path) -> None:
    result = run("list-filters")
    lines = result.stdout.splitlines()
    edges = next(line.split("\t") for line in lines if line.startswith("edges\t"))
    assert edges[1:3] == ["3", "3×3×3×3"]


def test_list_filters_follows_the_search_path(
    workdir: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    extra = tmp_path_factory.mktemp("extra")
    (extra / "mine.yml").write_text("description: my own\nfilters: [{kernel: box}]\n")
    (extra / "edges.yaml").write_text("description: shadowed\nfilters: [{kernel: box}]\n")
    (extra / "broken.json").write_text("{")
    monkeypatch.setenv("CONVVOL_FILTERS", os.pathsep.join(["/does/not/exist", str(extra)]))
    (workdir / "filters").mkdir()
    (workdir / "filters" / "edges.yaml").write_text(
        "description: local\nfilters: [{kernel: box}]\n"
    )
    banks = {e["name"]: e for e in json.loads(run("list-filters", "--json").stdout)}
    assert banks["mine"]["description"] == "my own"
    assert banks["edges"]["description"] == "local"
    assert banks["broken"]["error"]
    assert "blur" in banks  # still the bundled ones


def test_bundled_banks_are_found_from_any_directory(workdir: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "convvol", "list-filters", "--json"],
        cwd=workdir, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    names = {entry["name"] for entry in json.loads(done.stdout)}
    assert {"edges", "blur", "sharpen", "color_edges"} <= names


def test_show_filter_prints_every_layer(workdir: Path) -> None:
    result = run("show-filter", "edges")
    assert result.exit_code == 0
    assert "red_vertical" in result.stdout
    assert "red_vertical · red" in result.stdout
    assert "blue_horizontal · blue" in result.stdout
    assert "1 0 -1" in result.stdout
    assert "zero on green, blue" in result.stdout


def test_show_filter_for_another_depth(workdir: Path) -> None:
    result = run("show-filter", "blur", "--channels", "1")
    assert result.exit_code == 0
    assert "blur_gray" in result.stdout


def test_validate(workdir: Path) -> None:
    (workdir / "bad.json").write_text('{"filters": [{"kernel": "sobel_x", "scale": "big"}]}')
    good = run("validate", REPO / "filters" / "edges.yaml", "blur")
    assert good.exit_code == 0
    assert "ok (3 filters, 3×3×3×3)" in good.stdout
    bad = run("validate", "blur", "bad.json")
    assert_clean_error(bad, 2, "bad.json", "scale must be a number")
    assert "blur.yaml: ok" in bad.stdout


# --- conventions ----------------------------------------------------------------------


def test_version() -> None:
    result = run("--version")
    assert result.exit_code == 0
    assert convvol.__version__ in result.stdout


def test_python_dash_m() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "convvol", "--version"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert convvol.__version__ in done.stdout


@pytest.mark.parametrize("command", sorted(cli.commands))
def test_every_command_has_help_with_an_example(command: str) -> None:
    result = run(command, "--help")
    assert result.exit_code == 0
    assert "Example" in result.stdout


def test_missing_arguments_are_usage_errors() -> None:
    assert run("apply").exit_code == 2
    assert run("apply", PATTERN).exit_code == 2  # no --filters
    assert run("validate").exit_code == 2


def test_quiet_prints_nothing_on_success(workdir: Path) -> None:
    result = run("apply", PATTERN, "-f", "blur", "-q", "-o", "b.png")
    assert result.exit_code == 0
    assert (result.stdout, result.stderr) == ("", "")
    assert (workdir / "b.png").is_file()


# --- found in review: terminals, templates, settings, layers ---------------------------


def run_in_terminal(command: str, cwd: Path) -> str:
    """Run a shell command on a pseudo-terminal (util-linux `script`); its screen output."""
    if shutil.which("script") is None:
        pytest.skip("needs util-linux's script for a pseudo-terminal")
    done = subprocess.run(
        ["script", "-qec", command, "/dev/null"],
        cwd=cwd, capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "COLUMNS": "160"},
    )  # fmt: skip
    return re.sub(r"\x1b\[[0-9;]*m", "", done.stdout)  # colours off, text kept


def test_terminal_gets_rich_tables(workdir: Path) -> None:
    screen = run_in_terminal(f'"{sys.executable}" -m convvol list-filters', workdir)
    assert "┃ bank" in screen
    assert "edges" in screen
    screen = run_in_terminal(f'"{sys.executable}" -m convvol show-filter edges', workdir)
    assert "red_vertical · red" in screen
    assert "┌" in screen


def test_binary_output_to_a_terminal_is_refused(workdir: Path) -> None:
    screen = run_in_terminal(
        f"\"{sys.executable}\" -m convvol apply '{PATTERN}' -f blur -o -; echo rc=$?", workdir
    )
    assert "refusing to write binary image data to a terminal" in screen
    assert "rc=2" in screen
    assert "PNG" not in screen


def test_no_color_is_honoured(workdir: Path) -> None:
    command = [sys.executable, "-m", "convvol", "apply", "nope.png", "-f", "edges"]
    coloured = subprocess.run(
        command, cwd=workdir, capture_output=True, text=True, check=False,
        env={**os.environ, "FORCE_COLOR": "1"},
    )  # fmt: skip
    plain = subprocess.run(
        command, cwd=workdir, capture_output=True, text=True, check=False,
        env={**os.environ, "FORCE_COLOR": "1", "NO_COLOR": "1"},
    )  # fmt: skip
    assert "\x1b[1;31m" in coloured.stderr
    assert "31m" not in plain.stderr
    assert "no such file" in plain.stderr


def test_usage_errors_are_one_line_with_a_hint(workdir: Path) -> None:
    result = run("apply", PATTERN, "-f", "edges", "--border", "mirror")
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("convvol: error: Invalid value for '--border'")
    assert "did you mean 'reflect'?" in lines[0]
    assert lines[1] == "hint: see 'convvol apply --help'"


def test_closing_the_pipe_early_is_quiet(workdir: Path) -> None:
    done = subprocess.run(
        f'"{sys.executable}" -m convvol list-filters | head -n 1',
        shell=True, cwd=workdir, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.stdout.count("\n") == 1
    assert "Traceback" not in done.stderr
    assert "Exception" not in done.stderr


@pytest.mark.parametrize(
    ("template", "fragment"),
    [
        ("o/{name:d}.png", "Unknown format code"),
        ("o/{name!r}.png", "conversions"),
        ("o/{}.png", "uses {}"),
        ("o/{index:xyz}.png", "Invalid format specifier"),
    ],
)
def test_template_format_errors_are_usage_errors(
    workdir: Path, template: str, fragment: str
) -> None:
    result = run("apply", PATTERN, "-f", "edges", "--split", "-o", template)
    assert_clean_error(result, 2, fragment)
    assert not (workdir / "o").exists()


def test_format_comes_from_the_filled_in_name(workdir: Path) -> None:
    result = run("apply", PATTERN, "-f", "edges", "--split", "-o", "o/{name}.{index}.png")
    assert result.exit_code == 0, result.output
    assert (workdir / "o" / "red_vertical.0.png").is_file()


def test_split_to_stdout_is_refused(workdir: Path) -> None:
    assert_clean_error(run("apply", PATTERN, "-f", "edges", "--split", "-o", "-"), 2, "--split")


def test_output_that_is_a_directory_is_refused_before_work(workdir: Path) -> None:
    (workdir / "taken.png").mkdir()
    assert_clean_error(run("apply", PATTERN, "-f", "blur", "-o", "taken.png"), 2, "directory")


def test_output_under_a_file_is_a_clear_error(workdir: Path) -> None:
    (workdir / "plain").write_text("not a directory")
    result = run("apply", PATTERN, "-f", "blur", "-o", "plain/x.png")
    assert_clean_error(result, 1, "plain/x.png", "not a directory")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--cval", "nan", "--border", "constant"], "finite"),
        (["--cval", "0.5"], "--border constant"),
    ],
)
def test_cval_rules(workdir: Path, args: list[str], fragment: str) -> None:
    assert_clean_error(run("apply", PATTERN, "-f", "edges", *args, "-o", "x.png"), 2, fragment)


def test_impossible_memory_is_refused_up_front(workdir: Path) -> None:
    result = run("apply", PATTERN, "-f", "edges", "--dilation", "100000", "-o", "d.png")
    assert_clean_error(result, 2, "GiB", "memory")


def test_a_directory_named_like_a_bank_does_not_hide_it(workdir: Path) -> None:
    (workdir / "edges").mkdir()
    assert run("apply", PATTERN, "-f", "edges", "-o", "e.png").exit_code == 0


def test_list_filters_shows_the_name_that_finds_the_bank(workdir: Path) -> None:
    (workdir / "filters").mkdir()
    (workdir / "filters" / "foo.yaml").write_text("name: bar\nfilters: [{kernel: box}]\n")
    banks = {entry["name"] for entry in json.loads(run("list-filters", "--json").stdout)}
    assert "foo" in banks
    assert run("apply", PATTERN, "-f", "foo", "-o", "foo.png").exit_code == 0


def test_layer_errors_name_the_layer_and_what_came_before(workdir: Path) -> None:
    result = run("apply", PATTERN, "-f", "edges", "-f", "grayscale", "-f", "grayscale")
    assert_clean_error(result, 2, "layer 3 (-f grayscale)", "1 channel")
    assert "hint: layer 2 (-f grayscale) outputs 1 channel" in result.stderr


def test_sixteen_bit_rgb_tiff_is_one_rgb_page(workdir: Path) -> None:
    assert run("apply", PHOTO, "-f", "blur", "--depth", "16", "-o", "b.tif").exit_code == 0
    with Image.open(workdir / "b.tif") as image:
        assert (image.mode, image.size, image.n_frames) == ("RGB", (512, 512), 1)
    exact = np.clip(convvol.apply_bank(convvol.read_volume(PHOTO), convvol.load_bank("blur")), 0, 1)
    assert np.abs(convvol.read_volume(workdir / "b.tif") - exact).max() <= 0.5 / 65535 + 1e-7


# --- the engine's controls --------------------------------------------------------------


@pytest.mark.parametrize("method", ["direct", "gemm", "fft", "separable"])
def test_forced_methods_give_the_same_result(workdir: Path, method: str) -> None:
    assert run("apply", PATTERN, "-f", "gradients", "-o", "auto.npy").exit_code == 0
    result = run("apply", PATTERN, "-f", "gradients", "--method", method, "-o", "m.npy")
    assert result.exit_code == 0, result.output
    np.testing.assert_allclose(np.load(workdir / "m.npy"), np.load(workdir / "auto.npy"), atol=1e-5)


def test_explain_prints_each_layers_plan_on_stderr(workdir: Path) -> None:
    result = run("apply", PHOTO, "-f", "blur", "-f", "edges", "--explain", "-o", "x.png")
    assert result.exit_code == 0
    assert "layer 1 (blur): separable" in result.stderr
    assert "layer 2 (edges):" in result.stderr
    assert "estimated" in result.stderr
    assert result.stdout == ""
    forced = run("apply", PHOTO, "-f", "edges", "--method", "fft", "--explain", "-o", "y.png")
    assert "layer 1 (edges): fft" in forced.stderr
    assert "forced with method=fft" in forced.stderr


def test_compress_level_trades_size_for_speed(workdir: Path) -> None:
    for level in ("0", "1", "9"):
        result = run("apply", PHOTO, "-f", "blur", "--compress-level", level, "-o", f"{level}.png")
        assert result.exit_code == 0
    sizes = [(workdir / f"{level}.png").stat().st_size for level in ("0", "1", "9")]
    assert sizes[0] > sizes[1] > sizes[2]
    pixels = [read_png(workdir / f"{level}.png") for level in ("0", "1", "9")]
    assert all(np.array_equal(pixels[0], p) for p in pixels[1:])  # lossless, whatever the level
    assert run("apply", PHOTO, "-f", "blur", "--compress-level", "10").exit_code == 2
