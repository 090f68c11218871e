"""Photographs kept whole: colour profile and metadata carried (or --strip), linear light,
--quality and --lossless, chroma subsampling, and every frame of an animation."""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import subprocess
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner, Result
from PIL import ExifTags, Image, ImageCms, ImageOps, JpegImagePlugin, PngImagePlugin

import convvol
from convvol.cli import cli
from convvol.io.metadata import ImageInfo
from convvol.io.photo import clean_exif, for_output, png_chunks
from convvol.scaling import linear_to_srgb, srgb_to_linear

MAKE, MODEL, DATE_TIME, ORIENTATION = 0x010F, 0x0110, 0x0132, 0x0112
EXIF_IFD, DATE_TIME_ORIGINAL = 0x8769, 0x9003
SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
XMP = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF/></x:xmpmeta>'


def run(*args: str | os.PathLike[str]) -> Result:
    """convvol in-process; an exception that escapes convvol fails the test."""
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def ok(*args: str | os.PathLike[str]) -> Result:
    result = run(*args)
    assert result.exit_code == 0, result.output
    return result


def camera_exif(orientation: int = 1) -> Image.Exif:
    exif = Image.Exif()
    exif[MAKE] = "Canon"
    exif[MODEL] = "EOS R5"
    exif[DATE_TIME] = "2024:05:06 07:08:09"
    exif[ORIENTATION] = orientation
    exif.get_ifd(EXIF_IFD)[DATE_TIME_ORIGINAL] = "2024:05:06 07:08:09"
    return exif


def photo_pixels(height: int = 400, width: int = 600) -> np.ndarray:
    """A smooth photo-like picture with a marked top-left corner."""
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack(
        [x * 255 / width, y * 255 / height, 128 + 100 * np.sin(x / 17.0) * np.cos(y / 23.0)], 2
    ).astype(np.uint8)
    pixels[: height // 10, : width // 10] = (255, 0, 0)
    return pixels


def save_photo(path: Path, *, orientation: int = 1, **options: Any) -> Path:
    options = {"quality": 90, "exif": camera_exif(orientation), "icc_profile": SRGB,
               "dpi": (300, 300), **options}  # fmt: skip
    Image.fromarray(photo_pixels()).save(path, **options)
    return path


def assert_camera(image: Image.Image) -> None:
    exif = image.getexif()
    assert exif[MAKE] == "Canon"
    assert exif[MODEL] == "EOS R5"
    assert exif[DATE_TIME] == "2024:05:06 07:08:09"
    assert exif.get_ifd(EXIF_IFD)[DATE_TIME_ORIGINAL] == "2024:05:06 07:08:09"


# --- metadata carried ---------------------------------------------------------------------


def test_a_sharpened_jpeg_keeps_its_profile_exif_and_resolution(workdir: Path) -> None:
    save_photo(workdir / "photo.jpg", xmp=XMP)
    ok("apply", "photo.jpg", "-f", "sharpen", "-o", "sharp.jpg")
    with Image.open(workdir / "sharp.jpg") as image:
        assert image.info["icc_profile"] == SRGB  # byte for byte
        assert_camera(image)
        assert image.getexif()[ORIENTATION] == 1
        assert image.info["dpi"] == (300, 300)
        assert image.info["xmp"] == XMP


def test_orientation_is_reset_and_the_pixels_are_upright(workdir: Path) -> None:
    save_photo(workdir / "phone.jpg", orientation=6)
    ok("apply", "phone.jpg", "-f", "sharpen", "-o", "sharp.png")
    with Image.open(workdir / "phone.jpg") as stored:
        ImageOps.exif_transpose(stored).save(workdir / "upright.png")
    ok("apply", "upright.png", "-f", "sharpen", "-o", "expected.png")
    with Image.open(workdir / "sharp.png") as image, Image.open("expected.png") as expected:
        image.load()
        assert image.size == (400, 600)  # stored 600 wide, shown 400 wide
        assert image.getexif()[ORIENTATION] == 1
        assert_camera(image)
        np.testing.assert_array_equal(np.asarray(image), np.asarray(expected))
        red, green, blue = np.asarray(image)[5, -5].astype(int)  # red corner: top right now
        assert red > 200
        assert max(green, blue) < 50


@pytest.mark.skipif(shutil.which("exiftool") is None, reason="exiftool is not installed")
def test_exiftool_reads_the_carried_metadata(workdir: Path) -> None:
    save_photo(workdir / "photo.jpg", orientation=6)
    ok("apply", "photo.jpg", "-f", "sharpen", "-o", "sharp.jpg")
    ok("apply", "photo.jpg", "-f", "sharpen", "-o", "sharp.png")
    for name in ("sharp.jpg", "sharp.png"):
        done = subprocess.run(["exiftool", "-j", "-n", name], capture_output=True, check=True)
        (tags,) = json.loads(done.stdout)
        assert tags["Make"] == "Canon", name
        assert tags["Model"] == "EOS R5", name
        assert tags["DateTimeOriginal"] == "2024:05:06 07:08:09", name
        assert tags["Orientation"] == 1, name
        assert "ProfileDescription" in tags, name
        assert "ThumbnailImage" not in tags, name


@pytest.mark.parametrize("suffix", [".webp", ".tif"])
def test_webp_and_tiff_outputs_keep_what_they_hold(workdir: Path, suffix: str) -> None:
    save_photo(workdir / "photo.jpg", xmp=XMP)
    ok("apply", "photo.jpg", "-f", "sharpen", "-o", f"sharp{suffix}")
    with Image.open(workdir / f"sharp{suffix}") as image:
        assert image.info["icc_profile"] == SRGB
        assert image.info["xmp"] == XMP
        if suffix == ".webp":
            assert_camera(image)
        else:  # the Pillow TIFF path keeps the profile, XMP and resolution only
            assert image.info["dpi"] == (300, 300)


def test_strip_drops_everything(workdir: Path) -> None:
    save_photo(workdir / "photo.jpg", xmp=XMP)
    ok("apply", "photo.jpg", "-f", "sharpen", "-o", "bare.jpg", "--strip")
    ok("apply", "photo.jpg", "-f", "sharpen", "-o", "bare.png", "--strip")
    for name in ("bare.jpg", "bare.png"):
        with Image.open(workdir / name) as image:
            assert "icc_profile" not in image.info, name
            assert "exif" not in image.info, name
            assert "xmp" not in image.info, name
            assert "dpi" not in image.info, name
            assert not image.getexif(), name


def test_png_chunks_are_valid_and_read_back(workdir: Path) -> None:
    """convvol's own PNG encoder writes iCCP, pHYs, eXIf, iTXt and tEXt with right CRCs."""
    text = {"Title": "Harbour at dawn", "Comment": "Ünïcode → iTXt"}
    chunks = PngImagePlugin.PngInfo()
    for key, value in text.items():
        chunks.add_itxt(key, value)
    chunks.add_itxt("XML:com.adobe.xmp", XMP.decode())
    Image.fromarray(photo_pixels(40, 60)).save(
        workdir / "in.png", icc_profile=SRGB, exif=camera_exif(), pnginfo=chunks, dpi=(72, 72)
    )
    ok("apply", "in.png", "-f", "blur", "-o", "out.png")
    data = (workdir / "out.png").read_bytes()
    kinds = []
    at = 8
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kind, payload = data[at + 4 : at + 8], data[at + 8 : at + 8 + length]
        (crc,) = struct.unpack(">I", data[at + 8 + length : at + 12 + length])
        assert zlib.crc32(payload, zlib.crc32(kind)) & 0xFFFFFFFF == crc, kind
        kinds.append(kind)
        at += 12 + length
    assert kinds.index(b"iCCP") < kinds.index(b"IDAT")
    assert {b"pHYs", b"eXIf", b"tEXt", b"iTXt"} <= set(kinds)
    with Image.open(workdir / "out.png") as image:
        image.load()
        assert image.info["icc_profile"] == SRGB
        assert_camera(image)
        assert image.text["Title"] == text["Title"]
        assert image.text["Comment"] == text["Comment"]
        assert image.info["xmp"] == XMP
        assert image.info["dpi"] == pytest.approx((72, 72), abs=0.01)


def test_outputs_that_are_not_colours_keep_exif_but_not_the_profile(workdir: Path) -> None:
    save_photo(workdir / "photo.jpg")
    ok("apply", "photo.jpg", "-f", "edges", "-o", "edges.jpg")  # responses, not colours
    ok("apply", "photo.jpg", "-f", "sharpen", "--split", "-o", "{name}.png")  # grey of RGB
    ok("apply", "photo.jpg", "-f", "blur", "-f", "sharpen", "-o", "stacked.jpg")
    for name in ("edges.jpg", "sharpen_red.png", "stacked.jpg"):
        with Image.open(workdir / name) as image:
            assert ("icc_profile" in image.info) == (name == "stacked.jpg"), name
            assert_camera(image)


def test_for_output_decides_the_profile_by_colour_and_channels() -> None:
    info = ImageInfo(icc_profile=SRGB, exif=b"x")
    assert for_output(info, 3, colour=True).icc_profile == SRGB
    assert for_output(info, 1, colour=True).icc_profile is None
    assert for_output(info, 3, colour=False).icc_profile is None
    assert for_output(info, 3, colour=False).exif == b"x"
    grey = ImageInfo(icc_profile=SRGB[:16] + b"GRAY" + SRGB[20:])
    assert png_chunks(grey, 3) == ([], [])


def test_a_damaged_profile_or_exif_is_dropped_with_a_warning(workdir: Path) -> None:
    Image.fromarray(photo_pixels(40, 60)).save(
        workdir / "bad.jpg", icc_profile=b"not a profile" * 20, exif=b"Exif\x00\x00garbage!"
    )
    result = ok("apply", "bad.jpg", "-f", "blur", "-o", "out.jpg")
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 2, result.stderr
    assert "bad.jpg: the ICC profile is damaged" in warnings[0]
    assert "bad.jpg: the EXIF block is damaged" in warnings[1]
    with Image.open(workdir / "out.jpg") as image:
        assert "icc_profile" not in image.info
        assert not image.getexif()


def test_clean_exif_resets_orientation_and_keeps_sub_directories() -> None:
    raw = camera_exif(8).tobytes()
    exif = Image.Exif()
    exif.load(clean_exif(raw))
    assert exif[ORIENTATION] == 1
    assert exif.get_ifd(EXIF_IFD)[DATE_TIME_ORIGINAL] == "2024:05:06 07:08:09"
    assert 0x8825 not in exif  # no empty GPS directory made up


def test_the_embedded_thumbnail_is_dropped() -> None:
    """EXIF with a thumbnail in IFD1 (as cameras write it): the thumbnail shows the
    unfiltered picture, so it goes; IFD0 stays, and no empty directory is made up."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buffer, "JPEG")
    thumbnail = buffer.getvalue()
    make = b"Canon\x00"
    ifd0 = (
        struct.pack("<H", 1) + struct.pack("<HHII", MAKE, 2, len(make), 26) + struct.pack("<I", 32)
    )
    ifd1 = (
        struct.pack("<H", 2)
        + struct.pack("<HHII", 0x0201, 4, 1, 62)  # JPEGInterchangeFormat: the offset
        + struct.pack("<HHII", 0x0202, 4, 1, len(thumbnail))  # ... and the length
        + struct.pack("<I", 0)
    )
    raw = b"II*\x00" + struct.pack("<I", 8) + ifd0 + make + ifd1 + thumbnail
    before = Image.Exif()
    before.load(raw)
    assert before.get_ifd(ExifTags.IFD.IFD1)  # the fixture holds a thumbnail
    cleaned = clean_exif(raw)
    after = Image.Exif()
    after.load(cleaned)
    assert dict(after) == {MAKE: "Canon"}
    assert not after.get_ifd(ExifTags.IFD.IFD1)
    assert thumbnail not in cleaned


def test_metadata_on_the_batch_path_and_to_standard_output(workdir: Path) -> None:
    (workdir / "photos").mkdir()
    for name in ("a", "b"):
        save_photo(workdir / "photos" / f"{name}.jpg")
    ok("apply", "photos/*.jpg", "-f", "sharpen", "-o", "out/{stem}.jpg", "-j", "2")
    for name in ("a", "b"):
        with Image.open(workdir / "out" / f"{name}.jpg") as image:
            assert image.info["icc_profile"] == SRGB
            assert_camera(image)
    result = ok("apply", "photos/a.jpg", "-f", "sharpen", "-o", "-", "--format", "jpeg")
    with Image.open(io.BytesIO(result.stdout_bytes)) as image:
        assert image.info["icc_profile"] == SRGB
        assert_camera(image)


# --- quality and subsampling -------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".jpg", ".webp"])
def test_quality_changes_the_size_monotonically(workdir: Path, suffix: str) -> None:
    save_photo(workdir / "photo.jpg")
    sizes = []
    for quality in (10, 40, 70, 95):
        target = workdir / f"q{quality}{suffix}"
        ok("apply", "photo.jpg", "-f", "sharpen", "-o", target, "--quality", str(quality))
        sizes.append(target.stat().st_size)
    assert sizes == sorted(sizes), sizes
    assert len(set(sizes)) == 4, sizes


def test_quality_out_of_range_is_a_usage_error(workdir: Path) -> None:
    save_photo(workdir / "photo.jpg")
    result = run("apply", "photo.jpg", "-f", "sharpen", "-o", "x.jpg", "--quality", "101")
    assert result.exit_code == 2
    assert not (workdir / "x.jpg").exists()


def test_lossless_webp_holds_the_exact_pixels(workdir: Path) -> None:
    save_photo(workdir / "photo.jpg")
    ok("apply", "photo.jpg", "-f", "sharpen", "-o", "exact.png")
    ok("apply", "photo.jpg", "-f", "sharpen", "-o", "exact.webp", "--lossless")
    with Image.open(workdir / "exact.webp") as webp, Image.open(workdir / "exact.png") as png:
        np.testing.assert_array_equal(np.asarray(webp.convert("RGB")), np.asarray(png))
        assert webp.info["icc_profile"] == SRGB


@pytest.mark.parametrize("subsampling", [0, 1, 2])
def test_jpeg_chroma_subsampling_is_kept(workdir: Path, subsampling: int) -> None:
    save_photo(workdir / "photo.jpg", subsampling=subsampling)
    ok("apply", "photo.jpg", "-f", "sharpen", "-o", "out.jpg")
    with Image.open(workdir / "out.jpg") as image:
        assert JpegImagePlugin.get_sampling(image) == subsampling


# --- linear light -------------------------------------------------------------------------


def checkerboard(workdir: Path) -> None:
    board = (np.indices((32, 32)).sum(axis=0) % 2 * 255).astype(np.uint8)
    Image.fromarray(board).save(workdir / "checker.png")


def test_a_blurred_checkerboard_is_188_in_linear_light(workdir: Path) -> None:
    checkerboard(workdir)
    ok("apply", "checker.png", "-f", "blur", "-o", "linear.png", "--linear")
    ok("apply", "checker.png", "-f", "blur", "-o", "gamma.png")
    with Image.open(workdir / "linear.png") as linear, Image.open(workdir / "gamma.png") as gamma:
        assert set(np.unique(np.asarray(linear))) == {188}
        assert np.abs(np.asarray(gamma).astype(int) - 128).max() <= 1  # 0.5 in float32


def test_linear_in_a_batch_on_the_float_path_and_for_every_frame(workdir: Path) -> None:
    checkerboard(workdir)
    shutil.copy(workdir / "checker.png", workdir / "second.png")
    ok("apply", "checker.png", "second.png", "-f", "blur", "-o", "{stem}.npy", "--linear")
    for stem in ("checker", "second"):
        np.testing.assert_allclose(np.load(workdir / f"{stem}.npy"), 187.516 / 255, atol=1e-4)
    ok("apply", "checker.png", "-f", "blur", "-o", "minmax.png", "--linear", "--scale", "minmax")
    board = Image.open(workdir / "checker.png").convert("RGB")
    inverse = ImageOps.invert(board)  # a frame that differs (Pillow merges equal ones)
    board.save(workdir / "anim.gif", save_all=True, append_images=[inverse], duration=50)
    ok("apply", "anim.gif", "-f", "blur", "-o", "anim_{frame}.png", "--linear")
    for number in (0, 1):
        with Image.open(workdir / f"anim_{number}.png") as frame:
            assert set(np.unique(np.asarray(frame))) == {188}


def test_linear_refuses_a_profile_that_is_not_srgb(workdir: Path) -> None:
    xyz = ImageCms.ImageCmsProfile(ImageCms.createProfile("XYZ")).tobytes()
    Image.fromarray(photo_pixels(20, 30)).save(workdir / "xyz.jpg", icc_profile=xyz)
    result = run("apply", "xyz.jpg", "-f", "blur", "-o", "out.png", "--linear")
    assert result.exit_code == 2
    assert "xyz.jpg: --linear decodes sRGB" in result.stderr
    assert "--strip" in result.stderr
    assert not (workdir / "out.png").exists()
    ok("apply", "xyz.jpg", "-f", "blur", "-o", "out.png", "--linear", "--strip")


def test_linear_refuses_the_out_of_core_path(workdir: Path) -> None:
    np.save(workdir / "big.npy", np.full((8, 8, 3), 0.5, np.float32))
    result = run("apply", "big.npy", "-f", "blur", "-o", "out.npy", "--linear")
    assert result.exit_code == 2
    assert "strip by strip" in result.stderr
    assert not (workdir / "out.npy").exists()


def test_the_srgb_transfer_is_exact_and_inverse() -> None:
    values = np.array([0.0, 0.04045, 0.5, 1.0], np.float32)
    expected = [0.0, 0.04045 / 12.92, ((0.5 + 0.055) / 1.055) ** 2.4, 1.0]
    np.testing.assert_allclose(srgb_to_linear(values.reshape(1, 4, 1)).ravel(), expected,
                               rtol=1e-6)  # fmt: skip
    wide = np.linspace(-1, 2, 301, dtype=np.float32).reshape(1, -1, 1)
    np.testing.assert_allclose(linear_to_srgb(srgb_to_linear(wide)), wide, atol=1e-6)
    rgba = np.full((1, 1, 4), 0.5, np.float32)
    assert srgb_to_linear(rgba)[0, 0, 3] == 0.5  # alpha is no colour
    assert convvol.srgb_to_linear is srgb_to_linear


# --- every frame --------------------------------------------------------------------------

DURATIONS = [80, 120, 160, 200, 240]


def animated_gif(path: Path, size: tuple[int, int] = (48, 32)) -> list[Image.Image]:
    width, height = size
    frames = []
    for number in range(5):
        pixels = photo_pixels(height, width)
        pixels = np.roll(pixels, 7 * number, axis=1)
        frames.append(Image.fromarray(pixels).quantize(64))
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=DURATIONS, loop=0)
    with Image.open(path) as check:
        assert check.n_frames == 5
    return frames


def gif_frames(path: Path) -> tuple[list[np.ndarray], list[int], Any]:
    with Image.open(path) as image:
        frames, durations = [], []
        for number in range(image.n_frames):
            image.seek(number)
            frames.append(np.asarray(image.convert("RGB")))
            durations.append(image.info.get("duration"))
        return frames, durations, image.info.get("loop")


def test_a_five_frame_gif_comes_back_as_five_frames(workdir: Path) -> None:
    animated_gif(workdir / "anim.gif")
    ok("apply", "anim.gif", "-f", "sharpen", "-o", "out.gif")
    frames, durations, loop = gif_frames(workdir / "out.gif")
    assert len(frames) == 5
    assert durations == DURATIONS
    assert loop == 0
    source, _, _ = gif_frames(workdir / "anim.gif")
    for number, frame in enumerate(source):  # each frame as if it were filtered alone
        Image.fromarray(frame).save(workdir / f"alone{number}.png")
        ok("apply", f"alone{number}.png", "-f", "sharpen", "-o", f"alone{number}.gif")
        alone, _, _ = gif_frames(workdir / f"alone{number}.gif")
        np.testing.assert_array_equal(frames[number], alone[0])


def test_a_gif_through_an_identity_bank_comes_back_unchanged(workdir: Path) -> None:
    """Frames of at most 256 colours keep their exact colours (no median cut needed)."""
    animated_gif(workdir / "anim.gif")
    (workdir / "identity.yaml").write_text("filters:\n  - kernel: [[1]]\n    depthwise: true\n")
    ok("apply", "anim.gif", "-f", "identity.yaml", "-o", "same.gif")
    source, durations, _ = gif_frames(workdir / "anim.gif")
    frames, same_durations, _ = gif_frames(workdir / "same.gif")
    assert same_durations == durations
    for original, written in zip(source, frames, strict=True):
        np.testing.assert_array_equal(written, original)


@pytest.mark.parametrize("suffix", [".png", ".webp"])
def test_animated_png_and_webp_outputs_hold_each_frame_filtered(workdir: Path, suffix: str) -> None:
    animated_gif(workdir / "anim.gif")
    options = ["--lossless"] if suffix == ".webp" else []
    ok("apply", "anim.gif", "-f", "blur", "-o", f"out{suffix}", *options)
    source, _, _ = gif_frames(workdir / "anim.gif")
    with Image.open(workdir / f"out{suffix}") as image:
        assert image.n_frames == 5
        for number, frame in enumerate(source):
            image.seek(number)
            image.load()
            assert image.info["duration"] == DURATIONS[number]
            Image.fromarray(frame).save(workdir / "alone.png")
            ok("apply", "alone.png", "-f", "blur", "-o", "alone_out.png")
            with Image.open(workdir / "alone_out.png") as expected:
                np.testing.assert_array_equal(np.asarray(image.convert("RGB")), expected)


def test_frames_to_a_template_a_refusal_and_first(workdir: Path) -> None:
    animated_gif(workdir / "anim.gif")
    result = run("apply", "anim.gif", "-f", "blur", "-o", "out.jpg")
    assert result.exit_code == 2
    assert "5 frames cannot go to one JPEG file" in result.stderr
    assert "{frame}" in result.stderr
    assert not list(workdir.glob("out*"))
    ok("apply", "anim.gif", "-f", "blur", "-o", "out_{frame:02d}.jpg")
    assert sorted(p.name for p in workdir.glob("out_*.jpg")) == [
        f"out_{n:02d}.jpg" for n in range(5)
    ]
    ok("apply", "anim.gif", "-f", "blur", "-o", "first.gif", "--frames", "first")
    with Image.open(workdir / "first.gif") as first:
        assert first.n_frames == 1
    ok("apply", "anim.gif", "-f", "blur", "--split", "-o", "{name}_{frame}.png")
    assert len(list(workdir.glob("blur_*_*.png"))) == 15


def test_frames_to_standard_output_and_in_a_batch(workdir: Path) -> None:
    animated_gif(workdir / "anim.gif")
    result = ok("apply", "anim.gif", "-f", "blur", "-o", "-", "--format", "gif")
    with Image.open(io.BytesIO(result.stdout_bytes)) as image:
        assert image.n_frames == 5
    result = run("apply", "anim.gif", "-f", "blur", "-o", "-", "--format", "npy")
    assert result.exit_code == 2
    assert "--frames first" in result.stderr
    (workdir / "in").mkdir()
    animated_gif(workdir / "in" / "a.gif")
    save_photo(workdir / "in" / "b.jpg")
    ok("apply", "in", "-f", "blur", "-o", "out/{stem}.gif")
    for name, count in (("a", 5), ("b", 1)):
        with Image.open(workdir / "out" / f"{name}.gif") as image:
            assert image.n_frames == count


def test_max_pixels_bounds_all_frames_together(workdir: Path) -> None:
    animated_gif(workdir / "anim.gif", size=(30, 20))  # 5 frames of 600 pixels
    result = run("apply", "anim.gif", "-f", "blur", "-o", "out.gif", "--max-pixels", "2000")
    assert result.exit_code == 2
    assert "5 frames of 30×20 = 3,000 pixels" in result.stderr
    assert not (workdir / "out.gif").exists()
    ok("apply", "anim.gif", "-f", "blur", "-o", "out.gif", "--max-pixels", "3000")
    ok("apply", "anim.gif", "-f", "blur", "-o", "one.gif", "--max-pixels", "2000",
       "--frames", "first")  # fmt: skip


def test_an_apng_keeps_its_loop_and_disposal(workdir: Path) -> None:
    frames = [Image.fromarray(photo_pixels(20, 30)), Image.fromarray(255 - photo_pixels(20, 30))]
    frames[0].save(workdir / "anim.png", save_all=True, append_images=frames[1:],
                   duration=[100, 300], loop=3, disposal=[1, 0])  # fmt: skip
    ok("apply", "anim.png", "-f", "blur", "-o", "out.png")
    ok("apply", "anim.png", "-f", "blur", "-o", "out.gif")
    with Image.open(workdir / "out.png") as image:
        assert image.n_frames == 2
        assert image.info["loop"] == 3
        durations, disposals = [], []
        for number in range(2):
            image.seek(number)
            durations.append(image.info["duration"])
            disposals.append(image.info["disposal"])
        assert durations == [100, 300]
        assert disposals == [1, 0]
    with Image.open(workdir / "out.gif") as image:
        assert image.n_frames == 2
        image.seek(0)
        assert image.disposal_method == 2  # APNG's "background" in GIF's numbering
