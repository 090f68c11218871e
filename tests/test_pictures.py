"""Tests for convvol.pictures (contact sheets, kernel heat maps, thumbnails) and for the
terminal drawing of thumbnails in convvol.console."""

from __future__ import annotations

import doctest
import io
import math
import re
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

import convvol
from convvol import pictures
from convvol.bank import BankWeights, bank_from_document, channel_names, load_bank
from convvol.console import HALF_BLOCK, SHADES, draw_pictures, preview
from convvol.pictures import (
    BACKGROUND,
    DIVERGING,
    GAP,
    LABEL_BAND,
    MARGIN,
    MAX_TILE,
    MIN_CELL_WIDTH,
    MIN_TILE,
    NEUTRAL,
    TITLE_BAND,
    Picture,
    contact_sheet,
    diverging_colors,
    heatmap_layout,
    kernel_heatmaps,
    sheet_layout,
    thumbnail_size,
    thumbnails,
    tile_size,
    volume_pictures,
)
from convvol.scaling import to_pixels

ANSI = re.compile(r"\x1b\[[0-9;]*m")
REPO = Path(__file__).resolve().parents[1]


def noise(height: int, width: int, channels: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((height, width, channels), dtype=np.float32)


def is_background(region: np.ndarray) -> bool:
    return bool((region == BACKGROUND).all())


def bank(document: dict) -> convvol.Bank:  # type: ignore[type-arg]
    return bank_from_document(document, name="test")


def test_doctests() -> None:
    failures, tried = doctest.testmod(pictures)
    assert tried > 0
    assert failures == 0


# --- volumes to pictures ------------------------------------------------------------------


@pytest.mark.parametrize(("channels", "expected"), [(1, 1), (2, 1), (3, 3), (4, 3)])
def test_whole_volume_is_one_grey_or_colour_picture(channels: int, expected: int) -> None:
    volume = noise(5, 7, channels)
    (picture,) = volume_pictures(volume, channel_names(channels), whole="input")
    assert picture.label == "input"
    assert picture.pixels.shape == (5, 7, expected)
    np.testing.assert_array_equal(picture.pixels, to_pixels(volume[:, :, :expected]))


def test_deep_volumes_and_split_give_a_picture_per_channel() -> None:
    volume = noise(4, 4, 5)
    shown = volume_pictures(volume, channel_names(5), whole="input")
    assert [p.label for p in shown] == ["0", "1", "2", "3", "4"]
    assert all(p.pixels.shape == (4, 4, 1) for p in shown)
    split = volume_pictures(noise(4, 4, 3), ["a", "b", "c"])
    assert [p.label for p in split] == ["a", "b", "c"]


def test_pictures_follow_the_scale_rule() -> None:
    volume = np.array([[[-1.0], [0.0], [0.5], [2.0]]], np.float32)
    for scale in ("clip", "abs", "minmax", "signed"):
        (picture,) = volume_pictures(volume, ["x"], scale=scale)
        np.testing.assert_array_equal(picture.pixels, to_pixels(volume, scale))
    (signed,) = volume_pictures(volume, ["x"], scale="signed")
    assert signed.pixels.ravel().tolist() == [0, 128, 191, 255]


def test_names_must_match_the_channels() -> None:
    with pytest.raises(convvol.ParameterError):
        volume_pictures(noise(2, 2, 3), ["a", "b"])


def test_unit_volume_round_trips_every_byte() -> None:
    pixels = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)
    np.testing.assert_array_equal(to_pixels(pictures.as_unit_volume(pixels)), pixels)


# --- contact sheets -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "tile"),
    [
        ((512, 512), (320, 320)),  # large: longest side shrunk to MAX_TILE
        ((1080, 1920), (180, 320)),
        ((4000, 100), (320, 8)),
        ((256, 256), (256, 256)),  # in range: kept
        ((MIN_TILE, 90), (MIN_TILE, 90)),
        ((12, 10), (168, 140)),  # small: the smallest whole factor reaching MIN_TILE (14)
        ((1, 1), (MIN_TILE, MIN_TILE)),
        ((100, 3), (200, 6)),
    ],
)
def test_tile_size(shape: tuple[int, int], tile: tuple[int, int]) -> None:
    assert tile_size(*shape) == tile
    assert max(tile) <= MAX_TILE
    assert max(tile) >= min(MIN_TILE, max(shape))


@pytest.mark.parametrize(
    ("tiles", "columns", "rows"),
    [(1, 1, 1), (2, 2, 1), (4, 2, 2), (5, 3, 2), (9, 3, 3), (10, 4, 3)],
)
def test_sheet_layout_is_a_near_square_grid(tiles: int, columns: int, rows: int) -> None:
    layout = sheet_layout(tiles, 256, 256)
    assert (layout.columns, layout.rows) == (columns, rows)
    assert layout.size == (
        2 * MARGIN + TITLE_BAND + rows * (256 + LABEL_BAND) + (rows - 1) * GAP,
        2 * MARGIN + columns * 256 + (columns - 1) * GAP,
    )


def test_narrow_tiles_get_cells_wide_enough_for_a_label() -> None:
    layout = sheet_layout(2, 4000, 100, title=False)
    assert layout.tile == (320, 8)
    assert layout.size == (2 * MARGIN + 320 + LABEL_BAND, 2 * MARGIN + 2 * MIN_CELL_WIDTH + GAP)


def sheet_of(volume: np.ndarray, document: dict, **options: object) -> tuple:  # type: ignore[type-arg]
    result = convvol.run_layers(volume, [bank(document)])
    sheet = contact_sheet(volume, result.volume, result.names, **options)  # type: ignore[arg-type]
    return sheet, result


def test_sheet_size_and_tiles_follow_from_the_input_and_the_bank() -> None:
    volume = convvol.read_volume(REPO / "sample_images" / "pattern.png")
    edges = load_bank("edges")
    result = convvol.run_layers(volume, [edges])
    sheet = contact_sheet(volume, result.volume, result.names, title="pattern")
    # One tile for the RGB input and one per filter: 4 tiles, 2×2, of 256×256 each.
    layout = sheet_layout(1 + len(edges.filters), 256, 256)
    assert (layout.tiles, layout.columns, layout.rows, layout.tile) == (4, 2, 2, (256, 256))
    height = 2 * MARGIN + TITLE_BAND + 2 * (256 + LABEL_BAND) + GAP
    width = 2 * MARGIN + 2 * 256 + GAP
    assert sheet.shape == (height, width, 3) == (*layout.size, 3)
    tiles = [layout.tile_box(index) for index in range(4)]
    y0, y1, x0, x1 = tiles[0]
    np.testing.assert_array_equal(sheet[y0:y1, x0:x1], to_pixels(volume))
    for index in range(3):
        y0, y1, x0, x1 = tiles[index + 1]
        expected = to_pixels(result.volume[:, :, index : index + 1])
        np.testing.assert_array_equal(sheet[y0:y1, x0:x1], np.repeat(expected, 3, axis=2))
    # Between and around the tiles and labels, only background.
    covered = np.zeros(sheet.shape[:2], bool)
    covered[: TITLE_BAND + MARGIN] = True
    for index in range(4):
        for y0, y1, x0, x1 in (layout.tile_box(index), layout.label_box(index)):
            covered[y0:y1, x0:x1] = True
    assert is_background(sheet[~covered])


def test_every_tile_has_a_label() -> None:
    volume = noise(40, 30, 3)
    sheet, _ = sheet_of(volume, {"filters": [{"kernel": "box"}, {"kernel": "sobel_x"}]})
    layout = sheet_layout(3, 40, 30, title=False)
    assert sheet.shape[:2] == layout.size
    for index in range(3):
        y0, y1, x0, x1 = layout.label_box(index)
        assert not is_background(sheet[y0:y1, x0:x1]), f"tile {index} has no label"
    # The band of the grid's empty fourth cell stays empty.
    row, column = divmod(3, layout.columns)
    x0 = MARGIN + column * (layout.cell[1] + GAP)
    y0 = MARGIN + row * (layout.cell[0] + GAP)
    assert is_background(sheet[y0 : y0 + layout.cell[0], x0 : x0 + layout.cell[1]])


def test_labels_are_readable_on_tiny_and_huge_inputs() -> None:
    for shape in ((3, 2), (2000, 1500)):
        volume = noise(*shape, 1)
        sheet, _ = sheet_of(volume, {"filters": [{"kernel": [[1.0]]}]})
        layout = sheet_layout(2, *shape, title=False)
        assert MIN_TILE <= max(layout.tile) <= MAX_TILE
        y0, y1, x0, x1 = layout.label_box(1)
        ink = (sheet[y0:y1, x0:x1] != BACKGROUND).any(axis=2)
        rows = np.flatnonzero(ink.any(axis=1))
        assert rows.size
        assert 8 <= rows[-1] - rows[0] + 1 <= LABEL_BAND  # a line of text


def test_small_inputs_are_enlarged_with_sharp_pixels() -> None:
    volume = np.zeros((2, 2, 1), np.float32)
    volume[0, 0] = 1.0
    sheet = contact_sheet(volume, volume, ["same"])
    y0, y1, x0, x1 = sheet_layout(2, 2, 2, title=False).tile_box(0)
    tile = sheet[y0:y1, x0:x1, 0]
    assert tile.shape == (MIN_TILE, MIN_TILE)
    half = MIN_TILE // 2
    assert (tile[:half, :half] == 255).all()
    assert (tile[half:, :] == 0).all()
    assert (tile[:, half:] == 0).all()


def test_outputs_of_another_size_are_fitted_into_the_tile() -> None:
    volume = noise(64, 64, 3)
    result = convvol.run_layers(volume, [bank({"filters": [{"kernel": "box"}]})], stride=2)
    assert result.volume.shape == (32, 32, 1)
    sheet = contact_sheet(volume, result.volume, result.names)
    layout = sheet_layout(2, 64, 64, title=False)
    y0, y1, x0, x1 = layout.tile_box(1)
    assert layout.tile == (192, 192)  # 64 enlarged 3 times to reach MIN_TILE
    expected = to_pixels(result.volume).repeat(6, axis=0).repeat(6, axis=1)  # 192 = 32·6
    np.testing.assert_array_equal(sheet[y0:y1, x0:x1, 0], expected[:, :, 0])


def test_deep_inputs_get_a_tile_per_channel() -> None:
    volume = noise(20, 20, 5)
    sheet, _ = sheet_of(volume, {"filters": [{"kernel": "box"}, {"kernel": "sobel_y"}]})
    layout = sheet_layout(5 + 2, 20, 20, title=False)
    assert sheet.shape[:2] == layout.size
    for index in range(5):
        y0, y1, x0, x1 = layout.tile_box(index)
        small = sheet[y0:y1:8, x0:x1:8, 0]  # 20 px enlarged 8 times to 160
        np.testing.assert_array_equal(small, to_pixels(volume[:, :, index : index + 1])[:, :, 0])


def test_every_tile_follows_the_same_scale_rule() -> None:
    volume = np.zeros((16, 16, 3), np.float32)
    sheet, _ = sheet_of(volume, {"filters": [{"kernel": "sobel_x"}]}, scale="signed")
    layout = sheet_layout(2, 16, 16, title=False)
    for index in range(2):
        y0, y1, x0, x1 = layout.tile_box(index)
        assert (sheet[y0:y1, x0:x1] == 128).all()  # zero is mid-grey under signed


def test_a_title_band_on_top() -> None:
    volume = noise(16, 16, 3)
    untitled, _ = sheet_of(volume, {"filters": [{"kernel": "box"}]})
    titled, _ = sheet_of(volume, {"filters": [{"kernel": "box"}]}, title="a title")
    assert titled.shape[0] == untitled.shape[0] + TITLE_BAND
    np.testing.assert_array_equal(titled[TITLE_BAND:], untitled)
    assert not is_background(titled[MARGIN : MARGIN + TITLE_BAND])


# --- heat maps ----------------------------------------------------------------------------


def test_diverging_colours_follow_the_sign() -> None:
    values = np.array([-2.0, -1.0, -0.3, -1e-6, 0.0, 1e-6, 0.3, 1.0, 2.0])
    colours = diverging_colors(values, 1.0).astype(int)
    red, _, blue = colours.T
    negative, zero, positive = values < 0, values == 0, values > 0
    assert (blue[negative] > red[negative]).all()
    assert (red[positive] > blue[positive]).all()
    assert colours[zero].tolist() == [list(NEUTRAL)]
    assert colours[0].tolist() == colours[1].tolist() == DIVERGING[0].tolist()  # clipped
    assert colours[-1].tolist() == colours[-2].tolist() == DIVERGING[-1].tolist()
    # Symmetric: the same distance from neutral on both sides.
    distance = np.abs(colours - np.array(NEUTRAL)).sum(axis=1)
    assert distance[2] > 0
    np.testing.assert_array_equal(distance[:4] > 0, distance[::-1][:4] > 0)


def test_diverging_colours_of_an_all_zero_range_are_neutral() -> None:
    assert diverging_colors(np.zeros(3), 0.0).tolist() == [list(NEUTRAL)] * 3


def corner(canvas: np.ndarray, box: tuple[int, int, int, int]) -> tuple[int, ...]:
    """A cell's colour, taken at its top-left inside corner (values are written centred)."""
    return tuple(int(v) for v in canvas[box[0] + 1, box[2] + 1])


def test_heat_map_cells_are_red_blue_and_neutral_as_the_weights() -> None:
    resolved = load_bank("edges").resolve(3)
    canvas = kernel_heatmaps(resolved, channel_names(3), title="edges")
    layout = heatmap_layout(resolved, channel_names(3))
    assert canvas.shape == (*layout.size, 3)
    assert (layout.filters, layout.channels, layout.kernel) == (3, 3, (3, 3))
    weights = resolved.weights
    for index in np.ndindex(*weights.shape):
        red, green, blue = corner(canvas, layout.cell_box(*index))
        weight = weights[index]
        if weight > 0:
            assert red > blue, (index, weight)
        elif weight < 0:
            assert blue > red, (index, weight)
        else:
            assert (red, green, blue) == NEUTRAL, index
    # One range for the whole bank: its largest |weight| (−4/3, luminance_edges) is darkest.
    assert corner(canvas, layout.cell_box(1, 0, 1, 1)) == tuple(DIVERGING[0])


def test_heat_maps_are_labelled_with_filters_and_channels() -> None:
    resolved = load_bank("edges").resolve(3)
    canvas = kernel_heatmaps(resolved, channel_names(3))
    layout = heatmap_layout(resolved, channel_names(3), title=False)
    for c in range(3):
        _, _, x0, x1 = layout.map_box(0, c)
        header = canvas[layout.top - LABEL_BAND : layout.top, x0:x1]
        assert not is_background(header), f"no name over channel {c}"
    for n in range(3):
        y0, y1, _, _ = layout.map_box(n, 0)
        names = canvas[y0:y1, MARGIN : MARGIN + layout.label_width]
        assert not is_background(names), f"no name for filter {n}"


def text_pixels(canvas: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The pixels of a cell that differ from its colour: the written value."""
    y0, y1, x0, x1 = box
    cell = canvas[y0:y1, x0:x1].astype(int)
    return cell[(cell != cell[0, 0]).any(axis=2)]


def test_small_kernels_have_their_values_written_in_contrasting_ink() -> None:
    resolved = load_bank("edges").resolve(3)
    canvas = kernel_heatmaps(resolved, channel_names(3))
    layout = heatmap_layout(resolved, channel_names(3), title=False)
    assert layout.writes_values
    dark = text_pixels(canvas, layout.cell_box(1, 0, 1, 1))  # −1.33 on dark blue
    light = text_pixels(canvas, layout.cell_box(0, 1, 0, 0))  # 0 on neutral grey
    assert dark.size
    assert light.size
    assert dark.sum(axis=1).max() > 600  # white ink shows on dark blue
    assert light.sum(axis=1).min() < 150  # black ink on grey


def test_large_kernels_are_colour_only() -> None:
    resolved = load_bank("blur").resolve(3)  # 11×11 Gaussians
    layout = heatmap_layout(resolved, channel_names(3), title=False)
    assert not layout.writes_values
    canvas = kernel_heatmaps(resolved, channel_names(3))
    for i, j in ((0, 0), (5, 5), (10, 3)):
        assert text_pixels(canvas, layout.cell_box(0, 0, i, j)).size == 0
    red, _, blue = corner(canvas, layout.cell_box(0, 0, 5, 5))
    assert red > blue  # Gaussians are positive
    assert corner(canvas, layout.cell_box(0, 1, 5, 5)) == NEUTRAL  # blur_red ignores green


def test_heat_maps_of_a_bank_completed_for_one_channel() -> None:
    resolved = load_bank("blur").resolve(1)
    canvas = kernel_heatmaps(resolved, channel_names(1))
    layout = heatmap_layout(resolved, channel_names(1), title=False)
    assert (layout.filters, layout.channels) == (1, 1)
    assert canvas.shape == (*layout.size, 3)


def test_heat_maps_of_many_layers_stay_bounded() -> None:
    resolved = load_bank("blur").resolve(64)  # 64 depthwise outputs × 64 layers of 11×11
    layout = heatmap_layout(resolved, channel_names(64), title=False)
    assert max(layout.size) <= pictures.MAX_SIDE + 2 * 64 * layout.gap + 400
    assert kernel_heatmaps(resolved, channel_names(64)).shape == (*layout.size, 3)


def test_a_bias_is_written_under_the_filter_name() -> None:
    with_bias = bank({"filters": [{"kernel": "box", "bias": 0.5}]}).resolve(1)
    without = bank({"filters": [{"kernel": "box"}]}).resolve(1)
    assert not np.array_equal(
        kernel_heatmaps(with_bias, ["gray"]), kernel_heatmaps(without, ["gray"])
    )


def test_heat_maps_need_a_name_per_layer() -> None:
    resolved = BankWeights(("f",), np.ones((1, 2, 3, 3), np.float32), np.zeros(1, np.float32))
    with pytest.raises(convvol.ParameterError):
        kernel_heatmaps(resolved, ["only one"])


# --- thumbnails in a terminal -------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "columns", "max_rows", "size"),
    [
        ((512, 512), 52, None, (52, 52)),
        ((512, 512), 160, 22, (44, 44)),  # limited by the terminal's height
        ((256, 512), 80, None, (40, 80)),
        ((12, 10), 80, None, (12, 10)),  # never enlarged
        ((3, 1000), 80, None, (1, 80)),
    ],
)
def test_thumbnail_size(
    shape: tuple[int, int], columns: int, max_rows: int | None, size: tuple[int, int]
) -> None:
    assert thumbnail_size(*shape, columns=columns, max_rows=max_rows) == size


def test_thumbnails_share_the_width_and_wrap_into_bands() -> None:
    many = [Picture(str(i), np.zeros((100, 100, 1), np.uint8)) for i in range(10)]
    bands = thumbnails(many, columns=80)
    per_band = (80 + 2) // (16 + 2)  # 4 of at least 16 columns, 2 between
    assert [len(band) for band in bands] == [per_band, per_band, 10 - 2 * per_band]
    assert all(p.pixels.shape == (18, 18, 1) for band in bands for p in band)  # (80−6)//4


def terminal(width: int = 80, height: int = 24, **options: object) -> tuple[Console, io.StringIO]:
    screen = io.StringIO()
    console = Console(
        file=screen, force_terminal=True, width=width, height=height,
        color_system="truecolor", **options,  # type: ignore[arg-type]
    )  # fmt: skip
    return console, screen


def test_preview_rows_are_half_the_thumbnail_height_plus_names() -> None:
    volume = noise(30, 40, 3)
    shown = volume_pictures(volume, ["red", "green", "blue"])
    console, screen = terminal(width=80)
    draw_pictures(console, shown)
    width = (80 - 2 * 2) // 3  # three side by side, 2 columns between
    height = round(30 * width / 40)
    lines = screen.getvalue().splitlines()
    assert len(lines) == math.ceil(height / 2) + 1
    plain = [ANSI.sub("", line) for line in lines]
    gap = " " * pictures.PREVIEW_GAP
    assert plain[0] == gap.join([HALF_BLOCK * width] * 3)
    assert plain[-1].split() == ["red", "green", "blue"]
    assert all(len(line) <= 80 for line in plain)


def test_preview_colours_are_the_pixels_in_true_colour() -> None:
    pixels = np.array([[[255, 0, 0], [0, 0, 255]], [[0, 255, 0], [9, 8, 7]]], np.uint8)
    console, screen = terminal()
    draw_pictures(console, [Picture("p", pixels)])
    first = screen.getvalue().splitlines()[0]
    assert "38;2;255;0;0;48;2;0;255;0m" in first  # red over green
    assert "38;2;0;0;255;48;2;9;8;7m" in first  # blue over a dark grey


def test_odd_heights_end_with_a_row_of_upper_halves() -> None:
    console, screen = terminal()
    draw_pictures(console, [Picture("p", np.full((3, 4, 1), 200, np.uint8))])
    lines = screen.getvalue().splitlines()
    assert len(lines) == 2 + 1
    assert "48;2" not in lines[1]  # no pixel below the last one: no background colour


def test_preview_limits_height_to_the_terminal() -> None:
    console, screen = terminal(width=200, height=20)
    draw_pictures(console, [Picture("p", np.zeros((400, 400, 3), np.uint8))], max_rows=18)
    assert len(screen.getvalue().splitlines()) == 18 + 1


def test_no_color_draws_shades_of_brightness() -> None:
    ramp = np.repeat(np.linspace(0, 255, 10).astype(np.uint8)[np.newaxis, :, np.newaxis], 2, 0)
    console, screen = terminal(no_color=True)
    draw_pictures(console, [Picture("ramp", ramp)])
    lines = screen.getvalue().splitlines()
    assert "38;2" not in screen.getvalue()
    assert ANSI.sub("", lines[0]) == "  ░░▒▒▓▓██"
    assert set(ANSI.sub("", lines[0])) <= set(SHADES)


def test_preview_draws_nothing_when_not_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    shown = [Picture("p", np.zeros((4, 4, 3), np.uint8))]
    assert preview(shown) is False
    assert preview(shown, stderr=True) is False
    assert capsys.readouterr() == ("", "")
