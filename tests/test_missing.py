"""Missing pixels and transparency: astropy and a float64 reference as oracles, the same
bits from every path (whole, strips, Dask, batches), the hole and the logo, bad input."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from PIL import Image

import convvol
from convvol import Settings
from convvol.cli import cli
from convvol.engine import plan_layer
from convvol.errors import ParameterError
from convvol.jobs import Item, JobOptions, filter_volume, process_file
from convvol.masks import mark_missing
from convvol.settings import BORDERS, LayerSettings, MissingRule, methods
from reference import reference_convolve, reference_missing

RNG = np.random.default_rng(15)


def holed(shape: tuple[int, int, int], share: float = 0.15, seed: int = 0) -> np.ndarray:
    """Random float32 values with a share of random holes (NaN)."""
    rng = np.random.default_rng(seed)
    volume = rng.random(shape, dtype=np.float32) * 4 - 1
    volume[rng.random(shape) < share] = np.nan
    return volume


def positive_weights(shape: tuple[int, int, int, int], seed: int = 1) -> np.ndarray:
    """Weights that sum well away from zero in every layer (interpolate is defined)."""
    rng = np.random.default_rng(seed)
    return (rng.random(shape) + 0.2).astype(np.float32)


def run(*args: str | os.PathLike[str]) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def layer_output(
    volume: np.ndarray, weights: np.ndarray, rule: MissingRule, **settings
) -> np.ndarray:
    layer = plan_layer(volume.shape, weights, None, LayerSettings(**settings), missing=rule)
    return layer.run(volume)


# --- astropy: each border mode it has, per layer and summed over channels ------------

ASTROPY_BORDERS = {"constant": "fill", "edge": "extend", "wrap": "wrap"}


@pytest.mark.parametrize("border", list(ASTROPY_BORDERS))
@pytest.mark.parametrize("treatment", ["interpolate", "fill"])
@pytest.mark.parametrize("method", methods())
def test_matches_astropy_per_layer_and_summed(border: str, treatment: str, method: str) -> None:
    astropy = pytest.importorskip("astropy.convolution")
    volume = holed((37, 41, 2), seed=3)
    weights = positive_weights((3, 2, 5, 3))
    cval = 0.25 if border == "constant" else 0.0
    # astropy convolves (the kernel flipped): flip=True is the same operation here
    ours = layer_output(volume, weights, MissingRule(treatment), border=border, cval=cval,
                        flip=True, method=method)  # fmt: skip
    expected = np.zeros(ours.shape)
    for n in range(3):
        for c in range(2):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # astropy warns about NaN left after it
                expected[..., n] += astropy.convolve(
                    volume[..., c].astype(np.float64), weights[n, c].astype(np.float64),
                    boundary=ASTROPY_BORDERS[border], fill_value=cval, nan_treatment=treatment,
                    normalize_kernel=False,
                )  # fmt: skip
    assert np.isfinite(expected).all()
    assert np.isfinite(ours).all()
    np.testing.assert_allclose(ours, expected, rtol=2e-5, atol=2e-5)


def test_one_filter_layer_matches_astropy_exactly_where_it_is_one_layer() -> None:
    astropy = pytest.importorskip("astropy.convolution")
    volume = holed((30, 30, 1), share=0.3, seed=4)
    kernel = np.outer(np.hanning(7)[1:-1], np.hanning(7)[1:-1]).astype(np.float32)
    ours = layer_output(volume, kernel[None, None], MissingRule("interpolate"), border="edge")
    expected = astropy.convolve(volume[..., 0], kernel, boundary="extend",
                                nan_treatment="interpolate", normalize_kernel=False)  # fmt: skip
    np.testing.assert_allclose(ours[..., 0], expected, rtol=2e-5, atol=1e-6)


# --- the float64 reference: every border, stride, dilation, padding ------------------


@pytest.mark.parametrize("border", BORDERS)
@pytest.mark.parametrize("treatment", ["interpolate", "propagate", "fill"])
@pytest.mark.parametrize(
    ("stride", "dilation", "padding"), [(1, 1, "same"), (2, 1, "same"), (1, 2, "valid"),
                                        (3, 2, "full"), (2, 1, 1)],
)  # fmt: skip
@pytest.mark.parametrize("signed", [False, True])
def test_matches_the_float64_reference(
    border: str, treatment: str, stride: int, dilation: int, padding: str | int, signed: bool
) -> None:
    volume = holed((29, 33, 3), share=0.1, seed=5)
    weights = positive_weights((2, 3, 3, 4), seed=6) - (0.4 if signed else 0.0)
    weights[1, 2] = 0  # a layer the filter does not read
    bias = np.array([0.5, -1.0], np.float32)
    cval = -0.5 if border == "constant" else 0.0
    settings = LayerSettings(border=border, cval=cval, stride=stride, dilation=dilation,
                             padding=padding)  # fmt: skip
    layer = plan_layer(volume.shape, weights, bias, settings, missing=MissingRule(treatment))
    ours = layer.run(volume)
    expected = reference_missing(
        volume, weights, bias, treatment=treatment, padding=padding, border=border, cval=cval,
        stride=stride, dilation=dilation,
    )  # fmt: skip
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(expected))
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("method", methods())
def test_propagate_sees_every_tap_on_every_method(method: str) -> None:
    """A Gaussian's tails are ~10⁻⁶ of its peak: a missing pixel under them still counts,
    FFT's rounding included."""
    volume = holed((45, 50, 1), share=0.02, seed=12)
    taps = np.exp(-0.5 * ((np.arange(15) - 7) / 1.5) ** 2)
    weights = np.outer(taps, taps)[None, None].astype(np.float32)
    ours = layer_output(volume, weights, MissingRule("propagate"), method=method)
    expected = reference_missing(volume, weights, treatment="propagate")
    assert 0 < np.isnan(expected).sum() < expected.size
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(expected))
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-5)


def test_alpha_weighs_only_images_that_have_one(workdir: Path) -> None:
    Image.fromarray(logo()[..., :3]).save("rgb.png")
    for alpha in ("premultiplied", "straight"):
        assert run("apply", "rgb.png", "-f", "blur", "--channels", "keep", "--alpha", alpha,
                   "-o", f"{alpha}.png").exit_code == 0  # fmt: skip
    assert Path("premultiplied.png").read_bytes() == Path("straight.png").read_bytes()


@pytest.mark.parametrize("treatment", ["interpolate", "fill"])
def test_min_valid_marks_outputs_with_too_little_valid_weight(treatment: str) -> None:
    volume = holed((40, 40, 2), share=0.4, seed=7)
    weights = positive_weights((2, 2, 5, 5), seed=8)
    rule = MissingRule(treatment, min_valid=0.6)
    ours = layer_output(volume, weights, rule, border="reflect")
    expected = reference_missing(volume, weights, treatment=treatment, border="reflect",
                                 min_valid=0.6)  # fmt: skip
    assert 0 < np.isnan(expected).sum() < expected.size
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(expected))
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-4)


def test_preserve_missing_keeps_holes_and_needs_the_input_grid() -> None:
    volume = holed((20, 24, 1), share=0.2, seed=9)
    weights = positive_weights((1, 1, 3, 3))
    out = layer_output(volume, weights, MissingRule("interpolate", preserve=True))
    assert np.isnan(out[np.isnan(volume[..., 0])]).all()
    plain = layer_output(volume, weights, MissingRule("interpolate"))
    kept = ~np.isnan(volume[..., 0])
    np.testing.assert_array_equal(out[kept], plain[kept])
    with pytest.raises(ParameterError, match=r"--preserve-missing .* stride 1"):
        layer_output(volume, weights, MissingRule("fill", preserve=True), stride=2)


def test_interpolate_where_undefined_is_refused() -> None:
    edge = np.array([[[[-1.0, 0.0, 1.0]] * 3]], np.float32)
    with pytest.raises(ParameterError, match=r"interpolate' is undefined .* sum to zero"):
        layer_output(holed((9, 9, 1)), edge, MissingRule("interpolate"))
    out = layer_output(holed((9, 9, 1)), edge, MissingRule("propagate"))  # defined there
    assert np.isnan(out).any()
    assert np.isfinite(out).any()


def test_a_volume_without_missing_pixels_filters_as_before() -> None:
    volume = RNG.random((30, 30, 3), dtype=np.float32)
    bank = convvol.load_bank("blur")
    plain = convvol.apply_bank(volume, bank)
    for treatment in ("propagate", "fill"):
        np.testing.assert_allclose(convvol.apply_bank(volume, bank, missing=treatment), plain,
                                   rtol=1e-6, atol=1e-6)  # fmt: skip


def test_the_python_api_defaults_to_propagate_on_nan() -> None:
    volume = holed((30, 30, 3), share=0.05)
    bank = convvol.load_bank("blur")
    default = convvol.apply_bank(volume, bank)
    np.testing.assert_array_equal(default, convvol.apply_bank(volume, bank, missing="propagate"))
    assert np.isnan(default).any()
    assert np.isfinite(convvol.apply_bank(volume, bank, missing="interpolate")).all()


# --- the same bits on every path --------------------------------------------------------

PATH_CASES = [  # paired (two runs of the layer's plan) and combined (one wider plan)
    (("blur",), Settings(missing="interpolate")),
    (("blur",), Settings(missing="propagate", border="constant", cval=0.5)),
    (("blur",), Settings(missing="fill", min_valid=0.5, stride=2)),
    (("blur",), Settings(missing="interpolate", dilation=2, border="wrap", min_valid=0.3)),
    (("blur",), Settings(missing="interpolate", preserve_missing=True, border="edge")),
    (("grayscale",), Settings(missing="interpolate", min_valid=0.5)),
    (("sharpen",), Settings(missing="propagate", stride=3, padding="full")),
    (("sharpen",), Settings(missing="fill", min_valid=0.9, border="symmetric")),
    (("color_edges",), Settings(missing="propagate", dilation=3)),
    (("blur", "sharpen"), Settings(missing="interpolate", border="edge")),
]


@pytest.mark.parametrize(("names", "settings"), PATH_CASES)
def test_strips_dask_and_batches_equal_memory(
    names: tuple[str, ...], settings: Settings, workdir: Path
) -> None:
    volume = holed((97, 53, 3), share=0.1, seed=11)
    volume[30:50, 10:30] = np.nan  # a hole wider than the kernel
    banks = [convvol.load_bank(name) for name in names]
    whole = convvol.run_layers(volume, banks, settings).volume
    assert np.isfinite(whole).any()
    np.save("in.npy", volume)
    filter_volume("in.npy", banks, "strips.npy", settings, budget=40 * 2**20)
    np.testing.assert_array_equal(np.load("strips.npy"), whole)
    # strips of a few bands: compute() straight, as filter_volume and Dask run them
    layer = convvol.plan_stack(volume.shape, banks[:1], settings, has_missing=True)[0]
    first_layer = convvol.run_layers(volume, banks[:1], settings).volume
    rows = layer.band_rows
    for first in range(0, layer.out_shape[0], rows):
        last = min(first + rows, layer.out_shape[0])
        padded = np.where(layer.input_rows(first, last)[:, None, None] < 0, np.float32(layer.cval),
                          volume[np.clip(layer.input_rows(first, last), 0, None)])  # fmt: skip
        np.testing.assert_array_equal(layer.compute(padded, first, last), first_layer[first:last])
    options = JobOptions(banks=tuple(banks), template="{stem}_batch.npy", settings=settings)
    result = process_file(Item.of("in.npy"), options)
    assert result.status == "succeeded", result.message
    np.testing.assert_array_equal(np.load("in_batch.npy"), whole)
    da = pytest.importorskip("dask.array")
    from convvol.dask_arrays import apply_banks_dask

    lazy = apply_banks_dask(da.from_array(volume, chunks=(17, 20, 3)), banks, settings=settings,
                            chunk_bytes=20_000)  # fmt: skip
    np.testing.assert_array_equal(lazy.compute(), whole)


def test_nodata_and_mask_reach_strips_like_memory(workdir: Path) -> None:
    stored = RNG.integers(0, 50, (64, 40, 1)).astype(np.uint16)
    np.save("in.npy", stored)
    mask = np.ones((64, 40), np.uint8)
    mask[5:15, 5:25] = 0
    np.save("mask.npy", mask)
    expected = convvol.apply_bank(
        mark_missing(stored, nodata=7, mask=mask), convvol.load_bank("blur"),
        missing="interpolate",
    )  # fmt: skip
    args = ["-f", "blur", "--nodata", "7", "--mask", "mask.npy", "--missing", "interpolate"]
    assert run("apply", "in.npy", *args, "-o", "strips.npy", "--max-memory", "40M").exit_code == 0
    np.testing.assert_array_equal(np.load("strips.npy")[..., 0], expected[..., 0])
    assert run("apply", "in.npy", *args, "-o", "memory.png", "--depth", "16").exit_code == 0


# --- the hole and the logo ----------------------------------------------------------


def test_valid_pixels_next_to_a_hole_keep_their_level(workdir: Path) -> None:
    level = np.full((256, 256), 262.5, np.float32)
    level[96:160, 96:160] = np.nan  # a 64×64 hole
    np.save("dem.npy", level)
    assert run("apply", "dem.npy", "-f", "blur", "--missing", "interpolate", "-o",
               "kept.npy").exit_code == 0  # fmt: skip
    kept = np.load("kept.npy")[..., 0]
    near = np.zeros(level.shape, bool)
    near[92:164, 92:164] = True
    near[96:160, 96:160] = False  # the four pixels around the hole
    np.testing.assert_allclose(kept[near], 262.5, rtol=1e-6)
    # what the old hint (numpy.nan_to_num) did: the same pixels dragged far down
    assert run("apply", "dem.npy", "-f", "blur", "--missing", "fill", "-o",
               "filled.npy").exit_code == 0  # fmt: skip
    assert np.load("filled.npy")[..., 0][near].min() < 200


def logo() -> np.ndarray:
    """An RGBA logo: a red disc on a fully transparent background whose hidden colour
    is green (what straight-alpha filtering bleeds into the disc's edge)."""
    yy, xx = np.mgrid[:48, :48]
    inside = (yy - 24) ** 2 + (xx - 24) ** 2 < 15**2
    pixels = np.zeros((48, 48, 4), np.uint8)
    pixels[..., 1] = 255  # green, hidden
    pixels[inside] = (220, 30, 40, 255)
    pixels[~inside, 3] = 0
    return pixels


def premultiplied_reference(pixels: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Premultiply, blur each channel, unpremultiply (float64; 0 where alpha is 0)."""
    from scipy.ndimage import correlate

    unit = pixels.astype(np.float64) / 255
    alpha = unit[..., 3]
    blurred_alpha = correlate(alpha, kernel, mode="reflect")
    out = np.zeros(unit.shape)
    for c in range(3):
        colour = correlate(unit[..., c] * alpha, kernel, mode="reflect")
        shown = blurred_alpha > 0
        out[..., c] = np.where(shown, colour / np.where(shown, blurred_alpha, 1), 0)
    out[..., 3] = blurred_alpha
    return out


def test_an_rgba_logo_blurred_by_default_shows_no_colour_bleeding(workdir: Path) -> None:
    pytest.importorskip("scipy")
    Image.fromarray(logo(), "RGBA").save("logo.png")
    assert run("apply", "logo.png", "-f", "blur", "--channels", "keep", "-o",
               "soft.png").exit_code == 0  # fmt: skip
    with Image.open("soft.png") as image:
        assert image.mode == "RGBA"
        soft = np.asarray(image).astype(np.float64) / 255
    kernel = convvol.load_bank("blur").resolve(1).weights[0, 0].astype(np.float64)
    expected = premultiplied_reference(logo(), kernel)
    seen = expected[..., 3] > 0.02  # where the colour shows at all
    np.testing.assert_allclose(soft[seen], expected[seen], atol=1.5 / 255)
    assert soft[seen][:, 1].max() < 40 / 255  # no green from the transparent pixels
    # straight alpha (today's behaviour) does bleed: the edge turns green
    assert run("apply", "logo.png", "-f", "blur", "--channels", "keep", "--alpha", "straight",
               "-o", "bled.png").exit_code == 0  # fmt: skip
    with Image.open("bled.png") as image:
        bled = np.asarray(image).astype(np.float64) / 255
    assert bled[seen][:, 1].max() > 100 / 255
    assert run("apply", "logo.png", "-f", "blur", "--channels", "keep", "--alpha", "ignore",
               "-o", "rgb.png").exit_code == 0  # fmt: skip
    with Image.open("rgb.png") as image:
        assert image.mode == "RGB"


def premultiplied_rgb(pixels: np.ndarray, weights: np.ndarray, **settings) -> np.ndarray:
    """float64 out_c = S·Σ w·α·c / Σ w·α per colour channel (S = Σ w: the level a
    normalised convolution keeps), NaN where no opacity falls under the kernel: the
    premultiplied reference for an LA/RGBA image read as RGB."""
    unit = pixels.astype(np.float64) / np.iinfo(pixels.dtype).max
    colour = np.repeat(unit[..., :1], 3, axis=2) if unit.shape[2] == 2 else unit[..., :3]
    alpha = unit[..., -1:]
    layer = weights[None, None].astype(np.float64)
    den = reference_convolve(alpha, layer, **settings)[..., 0]
    out = np.empty((*den.shape, 3))
    for c in range(3):
        num = reference_convolve(colour[..., c : c + 1] * alpha, layer, **settings)[..., 0]
        with np.errstate(divide="ignore", invalid="ignore"):
            out[..., c] = np.where(den > 1e-9, weights.sum() * num / den, np.nan)
    return out


def blur_kernel() -> np.ndarray:
    return convvol.load_bank("blur").resolve(1).weights[0, 0].astype(np.float64)


@pytest.mark.parametrize("extra", [[], ["--max-memory", "1"], ["--border", "constant"],
                                   ["--stride", "2"], ["--linear"]])  # fmt: skip
def test_an_rgba_logo_read_as_rgb_is_premultiplied_by_default(
    workdir: Path, extra: list[str]
) -> None:
    """The default --channels rgb: colours weighted by alpha, alpha not written; outputs
    with no opacity under the kernel are missing (NaN in .npy, 0 in images)."""
    Image.fromarray(logo(), "RGBA").save("logo.png")
    result = run("apply", "logo.png", "-f", "blur", "-o", "soft.npy", *extra)
    assert result.exit_code == 0, result.output
    soft = np.load("soft.npy")
    assert soft.shape[2] == 3
    settings = {"border": "constant"} if "constant" in extra else {}
    settings.update({"stride": 2} if "2" in extra else {})
    source = logo()
    if "--linear" in extra:  # colours decoded to linear light before, encoded after
        unit = source.astype(np.float64) / 255
        linear = np.where(unit <= 0.04045, unit / 12.92, ((unit + 0.055) / 1.055) ** 2.4)
        source = np.round(linear * 65535).astype(np.uint16)
        source[..., 3] = logo()[..., 3].astype(np.uint16) * 257
    expected = premultiplied_rgb(source, blur_kernel(), **settings)
    if "--linear" in extra:
        expected = np.where(
            expected <= 0.0031308, expected * 12.92, 1.055 * np.abs(expected) ** (1 / 2.4) - 0.055
        )
    np.testing.assert_array_equal(np.isnan(soft), np.isnan(expected))
    assert np.isnan(soft).any()
    shown = ~np.isnan(expected[..., 0])
    np.testing.assert_allclose(soft[shown], expected[shown], atol=1e-4 if extra else 2e-6)
    assert soft[shown][:, 1].max() < 31 / 255  # the disc's own green (30): none bleeds in


def test_an_rgba_logo_read_as_rgb_shows_no_colour_bleeding_in_a_png(workdir: Path) -> None:
    Image.fromarray(logo(), "RGBA").save("logo.png")
    assert run("apply", "logo.png", "-f", "blur", "-o", "soft.png").exit_code == 0
    with Image.open("soft.png") as image:
        assert image.mode == "RGB"
        soft = np.asarray(image).astype(np.float64)
    expected = premultiplied_rgb(logo(), blur_kernel())
    shown = ~np.isnan(expected[..., 0])
    np.testing.assert_allclose(soft[shown], expected[shown] * 255, atol=0.51)
    assert (soft[~shown] == 0).all()  # missing outputs: 0 in 8-bit images
    assert soft[shown][:, 1].max() <= 30  # the disc's own; straight gave the edge 161
    # --alpha straight (and ignore) filter the colours as stored: the green bleeds in
    for alpha in ("straight", "ignore"):
        assert run("apply", "logo.png", "-f", "blur", "--alpha", alpha, "-o",
                   f"{alpha}.png").exit_code == 0  # fmt: skip
        with Image.open(f"{alpha}.png") as image:
            assert image.mode == "RGB"
            assert np.asarray(image)[shown][:, 1].max() > 100
    assert Path("straight.png").read_bytes() == Path("ignore.png").read_bytes()


def test_grey_alpha_and_animations_read_as_rgb_are_premultiplied(workdir: Path) -> None:
    grey = np.stack([logo()[..., 0], logo()[..., 3]], axis=2)  # LA
    Image.fromarray(grey, "LA").save("la.png")
    assert run("apply", "la.png", "-f", "blur", "-o", "la.npy").exit_code == 0
    expected = premultiplied_rgb(grey, blur_kernel())
    shown = ~np.isnan(expected[..., 0])
    np.testing.assert_allclose(np.load("la.npy")[shown], expected[shown], atol=2e-6)
    # every frame of an animation, each as if alone
    frames = [logo(), np.roll(logo(), 5, axis=1)]
    images = [Image.fromarray(frame, "RGBA") for frame in frames]
    images[0].save("anim.png", save_all=True, append_images=images[1:], duration=100)
    assert run("apply", "anim.png", "-f", "blur", "-o", "frame{frame}.npy").exit_code == 0
    for number, frame in enumerate(frames):
        expected = premultiplied_rgb(frame, blur_kernel())
        shown = ~np.isnan(expected[..., 0])
        np.testing.assert_allclose(np.load(f"frame{number}.npy")[shown], expected[shown],
                                   atol=2e-6)  # fmt: skip


def test_an_opaque_rgba_image_is_filtered_as_rgb(workdir: Path) -> None:
    opaque = logo()
    opaque[..., 3] = 255
    Image.fromarray(opaque, "RGBA").save("opaque.png")
    Image.fromarray(opaque[..., :3], "RGB").save("rgb.png")
    for name in ("opaque", "rgb"):
        assert run("apply", f"{name}.png", "-f", "edges", "-o", f"{name}.npy").exit_code == 0
    np.testing.assert_array_equal(np.load("opaque.npy"), np.load("rgb.npy"))


def test_rgba_read_as_rgb_is_the_same_in_a_batch_and_with_expressions(workdir: Path) -> None:
    os.mkdir("in")
    for number in range(2):
        Image.fromarray(np.roll(logo(), 3 * number, axis=0), "RGBA").save(f"in/{number}.png")
    assert run("apply", "in/*.png", "-f", "blur", "-j", "2", "-o", "out/{stem}.npy").exit_code == 0
    for number in range(2):
        assert run("apply", f"in/{number}.png", "-f", "blur", "-o", "one.npy").exit_code == 0
        np.testing.assert_array_equal(np.load(f"out/{number}.npy"), np.load("one.npy"))
    # expressions see the 3 colour channels; --montage shows the colours
    result = run("apply", "in/0.png", "-f", "blur", "--expr", "d = input - blur", "-o", "d.npy",
                 "--montage", "sheet.png")  # fmt: skip
    assert result.exit_code == 0, result.output
    difference = np.load("d.npy")
    assert difference.shape == (48, 48, 3)
    colour = logo()[..., :3].astype(np.float32) / 255
    blurred = np.load("out/0.npy")
    np.testing.assert_allclose(difference, colour - blurred, atol=1e-6)
    assert Path("sheet.png").exists()


@pytest.mark.parametrize("channels", ["keep", "rgb"])
def test_missing_fill_or_propagate_with_alpha_is_refused_only_with_missing_pixels(
    workdir: Path, channels: str
) -> None:
    """Without missing pixels every treatment is the same: accepted; with some, a missing
    pixel is transparent under premultiplied alpha, which fill and propagate contradict."""
    Image.fromarray(logo(), "RGBA").save("logo.png")
    keep = ["--channels", channels]
    assert run("apply", "logo.png", "-f", "blur", *keep, "-o", "plain.npy").exit_code == 0
    for treatment in ("fill", "propagate"):
        result = run("apply", "logo.png", "-f", "blur", *keep, "--missing", treatment,
                     "-o", f"{treatment}.npy")  # fmt: skip
        assert result.exit_code == 0, result.output
        np.testing.assert_array_equal(np.load(f"{treatment}.npy"), np.load("plain.npy"))
    result = run("apply", "logo.png", "-f", "blur", *keep, "--missing", "fill", "--nodata",
                 "40", "-o", "refused.npy")  # fmt: skip
    assert result.exit_code == 2
    assert "does not apply with premultiplied alpha" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 2  # the line and its hint
    assert not Path("refused.npy").exists()


def test_missing_outputs_are_nan_in_npy_and_zero_in_images(workdir: Path) -> None:
    level = np.full((40, 40), 0.5, np.float32)
    level[5:10, 5:10] = np.nan
    np.save("in.npy", level)
    assert run("apply", "in.npy", "-f", "blur", "-o", "out.npy").exit_code == 0
    assert np.isnan(np.load("out.npy")[7, 7, 0])
    assert run("apply", "in.npy", "-f", "blur", "-o", "out.png").exit_code == 0
    with Image.open("out.png") as image:
        pixels = np.asarray(image)
    assert pixels[7, 7] == 0
    assert pixels[35, 35] == 128


# --- bad input: one clear line each --------------------------------------------------


def refused(result: Result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if not line.startswith("hint:")]
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_a_mask_of_the_wrong_size(workdir: Path) -> None:
    np.save("in.npy", np.ones((20, 30), np.float32))
    Image.fromarray(np.ones((20, 20), np.uint8)).save("mask.png")
    refused(run("apply", "in.npy", "-f", "blur", "--mask", "mask.png", "-o", "out.png"),
            "--mask mask.png is 20×20×1", "in.npy is 20×30×1")  # fmt: skip
    refused(run("apply", "in.npy", "-f", "blur", "--mask", "mask.png", "-o", "out.npy"),
            "--mask mask.png is 20×20×1")  # fmt: skip
    assert not Path("out.png").exists()
    assert not Path("out.npy").exists()


def test_an_all_missing_image(workdir: Path) -> None:
    Image.fromarray(np.full((10, 10), 9, np.uint8)).save("flat.png")
    refused(run("apply", "flat.png", "-f", "blur", "--nodata", "9", "-o", "out.png"),
            "flat.png: every pixel is missing")  # fmt: skip
    assert not Path("out.png").exists()


def test_an_all_missing_volume_read_strip_by_strip(workdir: Path) -> None:
    np.save("nan.npy", np.full((50, 40, 2), np.nan, np.float32))
    refused(run("apply", "nan.npy", "-f", "blur", "-o", "out.npy", "--max-memory", "40M"),
            "nan.npy: every pixel is missing")  # fmt: skip
    assert not Path("out.npy").exists()


@pytest.mark.parametrize(("value", "problem"), [("300", "outside uint8's range"),
                                                 ("1.5", "not a whole number"),
                                                 ("nan", "cannot occur in its uint8")])  # fmt: skip
def test_a_nodata_value_the_file_cannot_hold(workdir: Path, value: str, problem: str) -> None:
    Image.fromarray(np.full((10, 10), 9, np.uint8)).save("grey.png")
    refused(run("apply", "grey.png", "-f", "blur", "--nodata", value, "-o", "out.png"),
            "grey.png", problem)  # fmt: skip


def test_interpolate_asked_for_where_it_is_undefined(workdir: Path) -> None:
    np.save("in.npy", holed((20, 20, 3)))
    refused(run("apply", "in.npy", "-f", "edges", "--missing", "interpolate", "-o", "out.npy"),
            "bank 'edges'", "interpolate' is undefined", "sum to zero")  # fmt: skip
    assert run("apply", "in.npy", "-f", "edges", "-o", "out.npy").exit_code == 0


def test_the_file_nodata_is_the_default(workdir: Path) -> None:
    from dataclasses import replace

    import convvol.jobs as jobs

    stored = np.full((12, 12, 1), 3, np.uint8)
    stored[4:8, 4:8] = 0
    read = jobs.ReadImage(stored, 255.0, jobs.ImageInfo(format="TIFF", sample_type="uint8"))
    options = JobOptions(banks=(convvol.load_bank("blur"),))
    item = Item.of("x.tif")
    assert not np.isnan(jobs._missing_pixels(item, options, read).pixels).any()
    tagged = jobs.ReadImage(stored, 255.0, replace(read.info, nodata=0.0))
    marked = jobs._missing_pixels(item, options, tagged).pixels
    assert np.isnan(marked[4:8, 4:8]).all()
    assert np.isfinite(marked[:4]).all()


def test_the_docs_picture_is_what_its_script_draws(tmp_path: Path) -> None:
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, str(repo / "scripts" / "make_missing_picture.py"), "--out",
         str(tmp_path / "hole.png")], capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    with (
        Image.open(tmp_path / "hole.png") as made,
        Image.open(repo / "docs" / "figures" / "missing_hole.png") as committed,
    ):
        drawn, kept = np.asarray(made, np.float64), np.asarray(committed, np.float64)
    assert drawn.shape == kept.shape, "rerun scripts/make_missing_picture.py"
    assert np.abs(drawn - kept).mean() < 1.0, "rerun scripts/make_missing_picture.py"
    assert (repo / "docs" / "figures" / "missing_hole.png").stat().st_size < 40_000
