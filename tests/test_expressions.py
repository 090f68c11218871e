"""Expressions between a layer's outputs: parsing, checking, values against NumPy
references, the same results in memory, out of core and on Dask, and the CLI's errors."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from PIL import Image

import convvol
from convvol import BankError, builtin_kernel
from convvol.bank import bank_from_document
from convvol.cli import cli
from convvol.expressions import parse_assignment, parse_expression
from convvol.jobs import filter_volume
from convvol.scaling import to_pixels
from convvol.settings import BORDERS
from reference import reference_convolve

RNG = np.random.default_rng(1818)
VOLUME = RNG.random((45, 38, 3), dtype=np.float32)
TINY = 1  # a --max-memory budget that forces one band per strip

BLUR_SHARP = {
    "filters": [
        {"name": "blur", "kernel": {"gaussian": {"sigma": 1.0, "size": 5}}, "depthwise": True}
    ],
    "expressions": [
        {"name": "detail", "expr": "input - blur", "output": False},
        {"name": "sharp", "expr": "input + 1.5 * where(abs(detail) > 0.05, detail, 0)"},
        {"name": "lift", "expr": "max(input_red, input_green, input_blue) - blur_green"},
    ],
}


def run(*args: str | os.PathLike[str]) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def bank(document: dict[str, object], name: str = "test") -> convvol.Bank:
    return bank_from_document(document, name=name)


def one_line_error(result: Result, *fragments: str) -> None:
    """Exit 2, one error line (and at most a hint), no traceback."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line]
    assert lines[0].startswith("convvol: error: "), result.stderr
    assert len(lines) <= 2, lines
    assert all(line.startswith("hint: ") for line in lines[1:]), lines
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def sobel_reference(volume: np.ndarray, border: str) -> tuple[np.ndarray, np.ndarray]:
    """float64 Sobel x and y over the sum of the channels, scaled by 1/12."""
    weights = np.stack(
        [np.broadcast_to(builtin_kernel(name), (3, 3, 3)) / 12 for name in ("sobel_x", "sobel_y")]
    )
    out = reference_convolve(volume, weights, border=border)
    return out[..., 0], out[..., 1]


# --- values ---------------------------------------------------------------------------


@pytest.mark.parametrize("border", ["reflect", "edge", "constant"])
def test_gradient_magnitude_matches_a_numpy_reference(border: str) -> None:
    sobel_x, sobel_y = sobel_reference(VOLUME, border)
    result = convvol.run_layers(VOLUME, [convvol.load_bank("gradient_magnitude")], border=border)
    assert result.names == ("magnitude",)
    np.testing.assert_allclose(result.volume[..., 0], np.sqrt(sobel_x**2 + sobel_y**2), atol=2e-6)


def test_a_unit_step_gives_magnitude_and_compass_edges_1() -> None:
    step = np.zeros((9, 10, 3), np.float32)
    step[:, 5:] = 1
    for name in ("gradient_magnitude", "compass_edges"):
        out = convvol.apply_bank(step, convvol.load_bank(name), border="edge")
        assert out.max() == pytest.approx(1.0, abs=1e-6), name
        assert out[:, 0].max() == 0


def test_compass_edges_is_the_maximum_over_the_eight_kirsch_kernels() -> None:
    weights = np.stack(
        [np.broadcast_to(builtin_kernel("kirsch", direction=d), (3, 3, 3)) / 45 for d in range(8)]
    )
    expected = reference_convolve(VOLUME, weights).max(axis=2)
    out = convvol.apply_bank(VOLUME, convvol.load_bank("compass_edges"))
    np.testing.assert_allclose(out[..., 0], expected, atol=2e-6)


@pytest.mark.parametrize("border", ["symmetric", "wrap"])
def test_threshold_unsharp_matches_a_numpy_reference(border: str) -> None:
    kernel = builtin_kernel("gaussian", sigma=1.0, size=5)
    depthwise = np.zeros((3, 3, 5, 5))
    for channel in range(3):
        depthwise[channel, channel] = kernel
    blur = reference_convolve(VOLUME, depthwise, border=border)
    detail = VOLUME.astype(np.float64) - blur
    sharp = VOLUME + 1.5 * np.where(np.abs(detail) > 0.05, detail, 0)
    lift = VOLUME.max(axis=2) - blur[..., 1]
    result = convvol.run_layers(VOLUME, [bank(BLUR_SHARP)], border=border)
    assert result.names == ("sharp_red", "sharp_green", "sharp_blue", "lift")
    # Pixels whose detail is within float32 rounding of the threshold may go either way.
    clear = np.abs(np.abs(detail) - 0.05) > 1e-5
    np.testing.assert_allclose(result.volume[..., :3][clear], sharp[clear], atol=2e-6)
    np.testing.assert_allclose(result.volume[..., 3], lift, atol=2e-6)


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"padding": "valid", "stride": 2},
        {"padding": "full", "dilation": 2, "border": "constant", "cval": 0.25},
        {"padding": 3, "stride": 3, "flip": True, "border": "wrap"},
        {"flip": True, "border": "symmetric", "stride": 2},
    ],
)
@pytest.mark.parametrize("size", [3, 4, [2, 5]], ids=str)
def test_input_is_what_an_identity_filter_gives(settings: dict[str, object], size: object) -> None:
    """The definition: `input` is the pixel under the kernel's centre tap, through the border."""
    document = {
        "filters": [
            {"name": "same", "kernel": {"identity": {"size": size}}, "depthwise": True},
            {"name": "box", "kernel": {"box": {"size": size}}, "depthwise": True},
        ],
        "expressions": [{"name": "x", "expr": "input + 0 * box"}],
    }
    out = convvol.apply_bank(VOLUME, bank(document), **settings)
    plain = bank({"filters": document["filters"][:1]})
    np.testing.assert_array_equal(out, convvol.apply_bank(VOLUME, plain, **settings))


def test_ieee_results_for_division_by_a_channel_that_is_zero() -> None:
    volume = np.array([[[1.0], [0.0], [-1.0]]], np.float32)  # 1×3×1
    document = {
        "filters": [{"name": "zero", "kernel": [[0.0]]}],
        "expressions": [
            {"name": "ratio", "expr": "input / zero"},
            {"name": "root", "expr": "sqrt(input)"},
            {"name": "logarithm", "expr": "log(input)"},
            {"name": "big", "expr": "max(input / zero, 0)"},
        ],
    }
    out = convvol.apply_bank(volume, bank(document))[0]
    assert out[0, 0] == np.inf
    assert np.isnan(out[1, 0])
    assert out[2, 0] == -np.inf
    assert np.isnan(out[2, 1])
    assert out[1, 2] == -np.inf
    assert np.isnan(out[1, 3])  # max with NaN is NaN
    assert out.dtype == np.float32


def test_comparisons_clip_and_chained_comparisons() -> None:
    document = {
        "filters": [{"name": "f", "kernel": [[1.0]]}],
        "expressions": [
            {"name": "band", "expr": "0.25 < input_gray <= 0.75"},
            {"name": "clipped", "expr": "clip(f, 0.3, 0.6)"},
            {"name": "power", "expr": "-f ** 2 + exp(0 * f)"},
        ],
    }
    volume = np.linspace(0, 1, 9, dtype=np.float32).reshape(1, 9, 1)
    out = convvol.apply_bank(volume, bank(document))[0]
    values = volume[0, :, 0]
    np.testing.assert_array_equal(out[:, 0], ((values > 0.25) & (values <= 0.75)).astype(float))
    np.testing.assert_array_equal(out[:, 1], np.clip(values, np.float32(0.3), np.float32(0.6)))
    np.testing.assert_allclose(out[:, 2], 1 - values**2, atol=1e-6)


def test_activation_applies_to_the_filters_before_the_expressions() -> None:
    document = {
        "filters": [{"name": "f", "kernel": [[-1.0]]}],
        "expressions": [{"name": "e", "expr": "f - 1"}],
        "defaults": {"activation": "relu"},
    }
    out = convvol.apply_bank(VOLUME[..., :1], bank(document))
    np.testing.assert_array_equal(out, np.full_like(out, -1.0))


# --- every path gives the same result ---------------------------------------------------


@pytest.mark.parametrize("border", BORDERS)
@pytest.mark.parametrize("settings", [{}, {"padding": "valid", "stride": 2}, {"dilation": 2}])
def test_out_of_core_strips_equal_in_memory(
    workdir: Path, border: str, settings: dict[str, object]
) -> None:
    np.save(workdir / "volume.npy", VOLUME)
    banks = [bank(BLUR_SHARP), convvol.load_bank("compass_edges")]
    options = {**settings, "border": border}
    expected = convvol.run_layers(VOLUME, banks, **options).volume
    layer = filter_volume("volume.npy", banks, "out.npy", budget=TINY, **options)
    assert layer.names == ("edges",)
    assert np.array_equal(np.load("out.npy"), expected)


def test_the_cli_out_of_core_with_expr_equals_in_memory(workdir: Path) -> None:
    np.save(workdir / "volume.npy", VOLUME)
    expression = "magnitude = hypot(dx, dy) + 0.5 * abs(input_green - laplacian)"
    result = run("apply", "volume.npy", "-f", "gradients", "--expr", expression,
                 "-o", "strips.npy", "--max-memory", "1")  # fmt: skip
    assert result.exit_code == 0, result.output
    result = run("apply", "volume.npy", "-f", "gradients", "--expr", expression, "-o", "whole.npy")
    assert result.exit_code == 0, result.output
    strips, whole = np.load("strips.npy"), np.load("whole.npy")
    assert strips.shape == (45, 38, 1)
    assert np.array_equal(strips, whole)
    outputs = convvol.run_layers(VOLUME, [convvol.load_bank("gradients")]).volume
    dx, dy, laplacian = (outputs[..., i].astype(np.float64) for i in range(3))
    expected = np.hypot(dx, dy) + 0.5 * np.abs(VOLUME[..., 1] - laplacian)
    np.testing.assert_allclose(whole[..., 0], expected, atol=2e-6)


def test_dask_equals_in_memory() -> None:
    da = pytest.importorskip("dask.array")
    from convvol import dask_arrays

    banks = [bank(BLUR_SHARP), convvol.load_bank("gradient_magnitude")]
    for settings in ({}, {"padding": "valid", "stride": 2, "border": "wrap"}):
        expected = convvol.run_layers(VOLUME, banks, **settings).volume
        array = da.from_array(VOLUME, chunks=(7, 38, 3))
        lazy = dask_arrays.apply_banks_dask(array, banks, chunk_bytes=1, **settings)
        assert len(lazy.chunks[0]) > 3
        assert np.array_equal(lazy.compute(scheduler="threads"), expected), settings


def test_threads_and_methods_do_not_change_the_expressions(workdir: Path) -> None:
    banks = [bank(BLUR_SHARP)]
    expected = convvol.run_layers(VOLUME, banks, threads=1).volume
    assert np.array_equal(convvol.run_layers(VOLUME, banks, threads=3).volume, expected)
    rendered = convvol.render_layers(VOLUME, banks, threads=2)
    assert rendered.names == ("sharp_red", "sharp_green", "sharp_blue", "lift")
    assert np.array_equal(rendered.pixels, to_pixels(expected, "clip", 8))


# --- the CLI ----------------------------------------------------------------------------


def test_split_names_the_expressions_outputs(workdir: Path) -> None:
    from PIL import Image

    Image.fromarray((VOLUME * 255).astype(np.uint8)).save("in.png")
    result = run("apply", "in.png", "-f", "blur", "--expr", "sharp = input + (input - blur)",
                 "--expr", "edge = hypot(blur_red - input_red, blur_blue - input_blue)",
                 "--split", "-o", "out/{name}.png")  # fmt: skip
    assert result.exit_code == 0, result.output
    names = sorted(path.name for path in (workdir / "out").iterdir())
    assert names == ["edge.png", "sharp_blue.png", "sharp_green.png", "sharp_red.png"]


def test_a_batch_runs_the_expressions_as_a_single_input_does(workdir: Path) -> None:
    for name in ("a", "b"):
        np.save(f"{name}.npy", VOLUME[::-1] if name == "b" else VOLUME)
    expression = "m = max(dx, dy, laplacian) - min(dx, dy)"
    result = run("apply", "a.npy", "b.npy", "-f", "gradients", "--expr", expression,
                 "-o", "out/{stem}.npy", "-j", "2")  # fmt: skip
    assert result.exit_code == 0, result.output
    for name, volume in (("a", VOLUME), ("b", VOLUME[::-1])):
        gradients = convvol.apply_bank(volume, convvol.load_bank("gradients"))
        dx, dy, laplacian = (gradients[..., i] for i in range(3))
        expected = np.maximum(np.maximum(dx, dy), laplacian) - np.minimum(dx, dy)
        np.testing.assert_array_equal(np.load(f"out/{name}.npy")[..., 0], expected)


def test_a_stacked_layer_reads_the_expressions_channels(workdir: Path) -> None:
    np.save("volume.npy", VOLUME)
    result = run("apply", "volume.npy", "-f", "gradient_magnitude", "-f", "blur",
                 "--expr", "x = input_gray - blur", "-o", "out.npy")  # fmt: skip
    assert result.exit_code == 0, result.output
    magnitude = convvol.apply_bank(VOLUME, convvol.load_bank("gradient_magnitude"))
    blurred = convvol.apply_bank(magnitude, convvol.load_bank("blur"))
    np.testing.assert_array_equal(np.load("out.npy"), magnitude - blurred)


def test_expr_after_a_bank_with_expressions_reads_them(workdir: Path) -> None:
    np.save("volume.npy", VOLUME)
    result = run("apply", "volume.npy", "-f", "gradient_magnitude",
                 "--expr", "edges = magnitude > 0.1", "-o", "out.npy")  # fmt: skip
    assert result.exit_code == 0, result.output
    magnitude = convvol.apply_bank(VOLUME, convvol.load_bank("gradient_magnitude"))
    np.testing.assert_array_equal(np.load("out.npy"), (magnitude > 0.1).astype(np.float32))


def test_show_filter_lists_the_expressions_and_list_filters_counts_outputs(
    workdir: Path,
) -> None:
    shown = run("show-filter", "compass_edges")
    assert shown.exit_code == 0
    assert "8 filters → 1 output channel" in shown.output
    assert "edges = max(k0, k1, k2, k3, k4, k5, k6, k7)" in shown.output
    listed = run("list-filters", "--json")
    entries = {entry["name"]: entry for entry in json.loads(listed.output)}
    assert entries["compass_edges"]["filters"] == 8
    assert entries["compass_edges"]["outputs"] == 1
    assert entries["compass_edges"]["expressions"] == 1
    assert entries["unsharp"]["outputs"] == 3
    table = run("list-filters")
    assert "8 → 1" in table.output


@pytest.mark.parametrize("name", ["unsharp", "dog", "log", "gradient_magnitude", "compass_edges"])
def test_the_bundled_composite_banks_validate_and_have_descriptions(name: str) -> None:
    loaded = convvol.load_bank(name)
    assert loaded.description
    result = run("validate", name)
    assert result.exit_code == 0, result.output


# --- bad input: one clear line, exit 2, at validation time ------------------------------

EXPRESSION_BANK = """\
filters:
  - name: sx
    kernel: sobel_x
  - name: blur
    kernel: box
    depthwise: true
expressions:
  - name: mag
    expr: {expr}
"""


@pytest.mark.parametrize(
    ("expr", "fragments"),
    [
        ("'hypot(sx,, blur_red)'", ["line 8", "expressions[0] ('mag')", "syntax error at column 10",
                                    "hypot(sx,▶, blur_red)"]),
        ("'hypt(sx, blur_red)'", ["unknown function 'hypt'"]),
        ("'hypot(sx, blur)'", ["'sx' (one channel)", "'blur' (a group of 3: red, green, blue)"]),
        ("'sx + input'", ["cannot be combined"]),
        ("'hypot(sxx, blur_red)'", ["at column 7 of 'hypot(sxx, blur_red)'", "unknown name 'sxx'"]),
        ("'sx / 0'", ["divides by the constant 0: every pixel would be ±inf or NaN"]),
        ("'sx / (2 - 2.0)'", ["divides by the constant '2 - 2.0', which is 0"]),
        ("'sx / 0.0'", ["divides by the constant 0.0:"]),
        ("'sx.real'", ["'sx.real' is not allowed"]),
        ("'__import__(\"os\").system(\"true\")'", ["may be called"]),
        ("'sx % 2'", ["operator"]),
        ("'max(sx)'", ["max() takes 2 or more arguments, got 1"]),
        ("'where(sx, 1)'", ["where() takes 3 arguments"]),
        ("'[sx]'", ["not allowed"]),
        ("'2 + 3'", ["is a constant"]),
        ("'sx if sx else 0'", ["not allowed"]),
        ("'sx < blur_red and sx'", ["not allowed"]),
    ],
)  # fmt: skip
def test_validate_refuses_bad_expressions(workdir: Path, expr: str, fragments: list[str]) -> None:
    (workdir / "bad.yaml").write_text(EXPRESSION_BANK.format(expr=expr), encoding="utf-8")
    one_line_error(run("validate", "bad.yaml"), "bad.yaml", *fragments)


def test_did_you_mean_for_names_and_functions(workdir: Path) -> None:
    (workdir / "bad.yaml").write_text(EXPRESSION_BANK.format(expr="'sx + blur_rde'"))
    result = run("validate", "bad.yaml")
    one_line_error(result, "unknown name 'blur_rde'")
    assert "did you mean 'blur_red'" in result.stderr
    result = run("validate", "gradients", "--expr", "m = hypo(dx, dy)")
    one_line_error(result, "--expr m", "unknown function 'hypo'")
    assert "did you mean 'hypot'" in result.stderr


@pytest.mark.parametrize(
    ("document", "fragment"),
    [
        ({"expressions": {"name": "x"}}, "expressions must be a list"),
        ({"expressions": [{"name": "x"}]}, "needs expr:"),
        ({"expressions": [{"expr": "sx"}]}, "needs name:"),
        ({"expressions": [{"name": "x", "expr": "sx", "outptu": True}]}, "unknown key 'outptu'"),
        ({"expressions": [{"name": "x", "expr": "sx", "output": "yes"}]}, "true or false"),
        ({"expressions": [{"name": "x-y", "expr": "sx"}]}, "letters, digits and '_'"),
        ({"expressions": [{"name": "input", "expr": "sx"}]}, "not 'input'"),
        ({"expressions": [{"name": "sx", "expr": "sx"}]}, "taken by an output of a filter"),
        ({"expressions": [{"name": "input_red", "expr": "sx"}]}, "taken by the layer's input"),
        ({"expressions": [{"name": "a", "expr": "sx"}, {"name": "a", "expr": "sx"}]},
         "taken by an earlier expression"),
        ({"expressions": [{"name": "a", "expr": "sx", "output": False}]}, "no expression"),
        ({"expressions": [{"name": "a", "expr": ""}]}, "empty"),
        ({"expressions": [{"name": "a", "expr": "sx\n+ sx"}]}, "one line"),
        ({"expressions": [{"name": "a", "expr": "sx" + " + sx" * 1500}]}, "at most"),
        ({"expressions": [{"name": "a", "expr": "-" * 300 + "sx"}]}, "levels deep"),
        ({"expressions": [{"name": "a", "expr": "sx + 1" + "0" * 400}]}, "beyond any float"),
    ],
)  # fmt: skip
def test_bad_expression_items(document: dict[str, object], fragment: str) -> None:
    full = {"filters": [{"name": "sx", "kernel": "sobel_x"}], **document}
    with pytest.raises(BankError) as caught:
        bank(full).resolve(3)
    assert fragment in caught.value.message


def test_apply_checks_expressions_before_reading_any_pixel(workdir: Path) -> None:
    result = run("apply", "missing.png", "-f", "gradients", "--expr", "m = hypot(dx, dz)")
    one_line_error(result, "unknown name 'dz'")
    assert not (workdir / "missing_gradients.png").exists()


GAUSSIAN_BANK = "name: g\nfilters:\n  - name: g\n    kernel: {gaussian: {sigma: 1}}\n"


@pytest.mark.parametrize(
    ("depth", "option", "bank_expressions", "channel"),
    [
        (1, "d = input - g", "", 0),
        (1, "d = input_0 - g", "", 0),
        (1, "d = input_gray - g", "", 0),
        (1, "", "expressions:\n  - {name: d, expr: input - g}\n", 0),
        (5, "d = input_4 - g", "", 4),
        (2, "", "expressions:\n  - {name: d, expr: input_1 - g}\n", 1),
    ],
)  # fmt: skip
def test_apply_expressions_on_a_npy_of_its_own_depth(
    workdir: Path, depth: int, option: str, bank_expressions: str, channel: int
) -> None:
    """A .npy keeps its depth under the default --channels rgb: expressions are checked
    against that depth, not against 3 channels."""
    volume = RNG.random((32, 32, depth), dtype=np.float32)
    np.save(workdir / "in.npy", volume)
    (workdir / "g.yaml").write_text(GAUSSIAN_BANK + bank_expressions)
    args = ["apply", "in.npy", "-f", "g.yaml", "-o", "out.npy"]
    result = run(*args, *(["--expr", option] if option else []))
    assert result.exit_code == 0, result.output
    kernel = builtin_kernel("gaussian", sigma=1)
    weights = np.broadcast_to(kernel / kernel.sum(), (1, depth, *kernel.shape))
    blurred = reference_convolve(volume, weights)[..., 0]
    expected = volume[..., channel] - blurred
    np.testing.assert_allclose(np.load(workdir / "out.npy")[..., 0], expected, atol=2e-6)


def test_apply_expressions_from_standard_input_keep_its_depth(workdir: Path) -> None:
    volume = RNG.random((16, 16, 1), dtype=np.float32)
    (workdir / "g.yaml").write_text(GAUSSIAN_BANK)
    buffer = io.BytesIO()
    np.save(buffer, volume)
    result = CliRunner().invoke(
        cli, ["apply", "-", "-f", "g.yaml", "--expr", "d = input - g", "-o", "out.npy"],
        input=buffer.getvalue(), catch_exceptions=False,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert np.load(workdir / "out.npy").shape == (16, 16, 1)


def test_a_name_the_input_depth_lacks_is_refused_once_read(workdir: Path) -> None:
    """input_red on a grey .npy: refused as it is planned (its own hint, then the depth),
    nothing written."""
    np.save(workdir / "in.npy", RNG.random((16, 16, 1), dtype=np.float32))
    (workdir / "g.yaml").write_text(GAUSSIAN_BANK)
    result = run("apply", "in.npy", "-f", "g.yaml", "--expr", "d = input_red - g", "-o", "o.npy")
    one_line_error(result, "unknown name 'input_red'")
    assert "hint: did you mean" in result.stderr
    assert "'input_gray'" in result.stderr
    assert "the input has 1 channel" in result.stderr
    assert not (workdir / "o.npy").exists()


def test_an_unknown_name_keeps_its_did_you_mean(workdir: Path) -> None:
    image = (RNG.random((24, 24, 3)) * 255).astype(np.uint8)
    Image.fromarray(image).save(workdir / "photo.png")
    result = run("apply", "photo.png", "-f", "gradients", "--expr", "m = hypot(dxx, dy)",
                 "-o", "x.png")  # fmt: skip
    one_line_error(result, "unknown name 'dxx'")
    assert "hint: did you mean 'dx'?" in result.stderr
    assert not (workdir / "x.png").exists()
    # Found once the depth is known (plan_stack), the error's own hint comes first.
    sobel = bank({"filters": [{"name": "sx", "kernel": "sobel_x"}]}).with_expressions(
        ["m = sx + input_gren"]
    )
    with pytest.raises(BankError) as caught:
        convvol.plan_stack((8, 8, 3), [sobel])
    assert caught.value.hint is not None
    assert caught.value.hint.startswith("did you mean 'input_green'")
    assert "the input has 3 channels" in caught.value.hint


@pytest.mark.parametrize(
    ("text", "fragment"),
    [("m hypot(dx, dy)", "expected NAME = EXPRESSION"), ("= dx", "expected NAME"),
     ("m == dx", "expected NAME"), ("m = hypot(dx,", "syntax error at column")],
)  # fmt: skip
def test_bad_expr_options(workdir: Path, text: str, fragment: str) -> None:
    one_line_error(run("validate", "gradients", "--expr", text), fragment)
    one_line_error(run("apply", "in.png", "-f", "gradients", "--expr", text), fragment)


def test_parsing_never_evaluates() -> None:
    expression = parse_expression("x", "hypot(a, b) * 2 ** -1", "test")
    assert expression.text == "hypot(a, b) * 2 ** -1"
    assert parse_assignment(" m =  a + b ").name == "m"
    with pytest.raises(BankError):
        parse_expression("x", "().__class__", "test")
