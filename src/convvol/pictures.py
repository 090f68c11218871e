"""Pictures for people: contact sheets of responses, heat maps of kernels, thumbnails.

Pure functions: volumes, names and bank weights in, uint8 H×W×3 RGB arrays out. Writing
a picture is :mod:`convvol.io`'s job (see :func:`as_unit_volume`), drawing one in a
terminal :mod:`convvol.console`'s.

A contact sheet (:func:`contact_sheet`) shows the input and every output channel as
tiles of one size on a grid, each with a label band under it. A tile's size follows
from the input's (:func:`tile_size`): the longest side is brought into
[``MIN_TILE``, ``MAX_TILE``] pixels (larger inputs shrunk by area averaging, smaller ones
enlarged by the smallest whole factor, nearest neighbour, so pixels stay sharp squares),
so labels, drawn at a fixed pixel height, are readable whatever the image size.

A kernel heat map (:func:`kernel_heatmaps`) draws each filter as a row of its layers, one
per input channel, in a diverging colour map (:func:`diverging_colors`): zero is a neutral
light grey, negative weights blue, positive red, on one symmetric range for the bank.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from convvol.bank import BankWeights
from convvol.errors import ParameterError
from convvol.scaling import as_volume, to_pixels

# --- sizes and colours, in pixels and 8-bit RGB -----------------------------------------

MIN_TILE = 160  # a tile's longest side at least this (small inputs enlarged)...
MAX_TILE = 320  # ...and at most this (large inputs shrunk)
MIN_CELL_WIDTH = 120  # a tile's column is at least this wide, so its label has room
MARGIN = 12  # around a picture
GAP = 12  # between tiles, and between heat maps
LABEL_SIZE = 14  # font size of labels (about the height of a capital, plus descenders)
TITLE_SIZE = 16
VALUE_SIZE = 12  # font size of the weights written in heat map cells
LABEL_BAND = 24  # the band under each tile that holds its label
TITLE_BAND = 28  # the band above a sheet or heat map that holds its title

BACKGROUND = (255, 255, 255)
INK = (0, 0, 0)
MUTED = (100, 100, 100)
GRID = (190, 190, 190)

# Heat maps: kernels up to VALUE_LIMIT×VALUE_LIMIT get VALUE_CELL-pixel cells with their
# weights written in them; larger ones get cells that make each map about HEATMAP_SIDE
# pixels, never more than MAX_SIDE pixels for the whole grid of maps.
VALUE_LIMIT = 7
VALUE_CELL = 44
HEATMAP_SIDE = 264
MAX_SIDE = 4096
MIN_TINT = 0.05  # a non-zero weight is at least this far from neutral on the colour map
LEGEND_WIDTH = 256  # the colour bar under the maps, and its numbers under it
LEGEND_BAR = 12
LEGEND_HEIGHT = LEGEND_BAR + LABEL_BAND

# ColorBrewer's RdBu, from −1 (dark blue) through 0 (neutral #f7f7f7) to +1 (dark red).
DIVERGING = np.array(
    [
        (5, 48, 97), (33, 102, 172), (67, 147, 195), (146, 197, 222), (209, 229, 240),
        (247, 247, 247),
        (253, 219, 199), (244, 165, 130), (214, 96, 77), (178, 24, 43), (103, 0, 31),
    ],
    dtype=np.float64,
)  # fmt: skip
NEUTRAL = (247, 247, 247)

# Terminal thumbnails: columns between side-by-side thumbnails, and the narrowest one
# worth drawing before thumbnails wrap onto another band.
PREVIEW_GAP = 2
PREVIEW_MIN_COLUMNS = 16


@dataclass(frozen=True, eq=False)
class Picture:
    """A labelled picture: uint8 pixels, H×W×1 (grey) or H×W×3 (RGB)."""

    label: str
    pixels: np.ndarray


# --- from volumes to pictures ---------------------------------------------------------


def volume_pictures(
    volume: np.ndarray,
    names: Sequence[str],
    *,
    scale: str = "clip",
    whole: str | None = None,
) -> list[Picture]:
    """The pictures of a volume's channels, scaled by the ``--scale`` rule ``scale``.

    With ``whole`` (a label), a 1- or 3-channel volume is one picture (grey or RGB), and
    a 2- or 4-channel one is the picture of its grey or RGB part (alpha is transparency,
    not picture); otherwise, and for any other depth, each channel is a greyscale picture
    labelled by its entry in ``names``.
    """
    volume = as_volume(volume)
    channels = volume.shape[2]
    if len(names) != channels:
        raise ParameterError(f"{len(names)} names for a volume of {channels} channels")
    if whole is not None and channels <= 4:
        colour = 1 if channels in (1, 2) else 3
        return [Picture(whole, to_pixels(volume[:, :, :colour], scale))]
    # Channel by channel: to_pixels scales each channel on its own anyway (minmax), and
    # one channel at a time keeps the memory of a deep volume's pictures small.
    return [
        Picture(name, to_pixels(volume[:, :, index : index + 1], scale))
        for index, name in enumerate(names)
    ]


def fit(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """``pixels`` resized into a height×width box, keeping its aspect ratio.

    Shrinking averages areas (Pillow's box filter); enlarging repeats pixels (nearest
    neighbour), so a small input's pixels stay sharp squares.
    """
    source_height, source_width = pixels.shape[:2]
    ratio = min(height / source_height, width / source_width)
    size = (
        max(1, min(width, round(source_width * ratio))),
        max(1, min(height, round(source_height * ratio))),
    )
    return resize(pixels, size[1], size[0])


def resize(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """``pixels`` (H×W×1 or H×W×3 uint8) resized to exactly height×width."""
    if pixels.shape[:2] == (height, width):
        return pixels
    grey = pixels.shape[2] == 1
    image = Image.fromarray(np.ascontiguousarray(pixels[:, :, 0] if grey else pixels))
    enlarging = height >= pixels.shape[0] and width >= pixels.shape[1]
    method = Image.Resampling.NEAREST if enlarging else Image.Resampling.BOX
    resized = np.asarray(image.resize((width, height), method))
    return resized[:, :, np.newaxis] if grey else resized


def as_unit_volume(pixels: np.ndarray) -> np.ndarray:
    """An 8-bit picture as a float32 volume in [0, 1], which the writers turn back exactly."""
    return pixels.astype(np.float32) / np.float32(255.0)


# --- text -----------------------------------------------------------------------------


@lru_cache(maxsize=8)
def font(size: int) -> Any:
    """Pillow's built-in scalable font at ``size`` pixels (its bitmap font without FreeType)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow < 10.1, or no FreeType
        return ImageFont.load_default()


def fit_text(text: str, width: float, size: int) -> str:
    """``text``, or as much of it as fits ``width`` pixels followed by '…' ('' if none)."""
    face = font(size)
    if face.getlength(text) <= width:
        return text
    for end in range(len(text) - 1, -1, -1):
        shortened = text[:end] + "…"
        if face.getlength(shortened) <= width:
            return shortened
    return ""


def _draw_text(
    draw: Any,
    text: str,
    box: tuple[int, int, int, int],
    *,
    size: int,
    fill: tuple[int, int, int] = INK,
    align: str = "centre",
) -> None:
    """``text`` in ``box`` (x0, y0, x1, y1), vertically centred, cut with '…' to fit."""
    x0, y0, x1, y1 = box
    shown = fit_text(text, x1 - x0, size)
    if not shown:
        return
    face = font(size)
    length = face.getlength(shown)
    x = {"left": x0, "right": x1 - length, "centre": (x0 + x1 - length) / 2}[align]
    middle = (y0 + y1) / 2
    if isinstance(face, ImageFont.FreeTypeFont):
        draw.text((x, middle), shown, font=face, fill=fill, anchor="lm")
    else:  # the bitmap fallback font takes no anchor
        _, top, _, bottom = face.getbbox(shown)
        draw.text((x, middle - (top + bottom) / 2), shown, font=face, fill=fill)


# --- contact sheets -------------------------------------------------------------------


def tile_size(height: int, width: int) -> tuple[int, int]:
    """The (height, width) of a contact sheet's tiles for an input of height×width.

    The longest side is brought into [MIN_TILE, MAX_TILE]: shrunk to MAX_TILE if longer,
    enlarged by the smallest whole factor that reaches MIN_TILE if shorter, else kept.

    >>> tile_size(512, 512), tile_size(256, 128), tile_size(12, 10), tile_size(1080, 1920)
    ((320, 320), (256, 128), (168, 140), (180, 320))
    """
    longest = max(height, width)
    if longest > MAX_TILE:
        ratio = MAX_TILE / longest
        return max(1, round(height * ratio)), max(1, round(width * ratio))
    factor = math.ceil(MIN_TILE / longest) if longest < MIN_TILE else 1
    return height * factor, width * factor


@dataclass(frozen=True)
class SheetLayout:
    """Where a contact sheet's tiles and labels go: a grid of cells, row by row.

    Each cell is a tile (the picture's box) over a label band; a cell is at least
    MIN_CELL_WIDTH wide, the tile centred in it.
    """

    tiles: int
    columns: int
    rows: int
    tile: tuple[int, int]  # (height, width) of the box every picture is fitted into
    title: bool

    @property
    def cell(self) -> tuple[int, int]:
        """(height, width) of one cell: the tile and its label band."""
        return self.tile[0] + LABEL_BAND, max(self.tile[1], MIN_CELL_WIDTH)

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the whole sheet."""
        cell_height, cell_width = self.cell
        return (
            2 * MARGIN
            + (TITLE_BAND if self.title else 0)
            + self.rows * cell_height
            + (self.rows - 1) * GAP,
            2 * MARGIN + self.columns * cell_width + (self.columns - 1) * GAP,
        )

    def tile_box(self, index: int) -> tuple[int, int, int, int]:
        """(y0, y1, x0, x1) of tile ``index``'s box (row by row from the top left)."""
        row, column = divmod(index, self.columns)
        cell_height, cell_width = self.cell
        y0 = MARGIN + (TITLE_BAND if self.title else 0) + row * (cell_height + GAP)
        x0 = MARGIN + column * (cell_width + GAP) + (cell_width - self.tile[1]) // 2
        return y0, y0 + self.tile[0], x0, x0 + self.tile[1]

    def label_box(self, index: int) -> tuple[int, int, int, int]:
        """(y0, y1, x0, x1) of the label band under tile ``index``, as wide as its cell."""
        column = index % self.columns
        y0 = self.tile_box(index)[1]
        x0 = MARGIN + column * (self.cell[1] + GAP)
        return y0, y0 + LABEL_BAND, x0, x0 + self.cell[1]


def sheet_layout(tiles: int, height: int, width: int, *, title: bool = True) -> SheetLayout:
    """The layout of ``tiles`` tiles for an input of height×width: ceil(√tiles) columns.

    >>> layout = sheet_layout(4, 512, 512)
    >>> (layout.columns, layout.rows, layout.tile, layout.size)
    (2, 2, (320, 320), (752, 676))
    """
    if tiles < 1:
        raise ParameterError("a contact sheet needs at least one tile")
    columns = math.ceil(math.sqrt(tiles))
    return SheetLayout(tiles, columns, math.ceil(tiles / columns), tile_size(height, width), title)


def montage(
    pictures: Sequence[Picture], layout: SheetLayout, *, title: str | None = None
) -> np.ndarray:
    """Draw ``pictures`` on ``layout``'s grid, each fitted into its tile and labelled."""
    if len(pictures) != layout.tiles:
        raise ParameterError(f"{len(pictures)} pictures for a layout of {layout.tiles} tiles")
    height, width = layout.size
    sheet = np.empty((height, width, 3), np.uint8)
    sheet[...] = BACKGROUND
    for index, picture in enumerate(pictures):
        y0, y1, x0, x1 = layout.tile_box(index)
        fitted = fit(picture.pixels, y1 - y0, x1 - x0)
        top = y0 + (y1 - y0 - fitted.shape[0]) // 2
        left = x0 + (x1 - x0 - fitted.shape[1]) // 2
        sheet[top : top + fitted.shape[0], left : left + fitted.shape[1]] = fitted
    image = Image.fromarray(sheet)
    draw = ImageDraw.Draw(image)
    for index, picture in enumerate(pictures):
        y0, y1, x0, x1 = layout.label_box(index)
        _draw_text(draw, picture.label, (x0 + 4, y0, x1 - 4, y1), size=LABEL_SIZE)
    if title is not None:
        band = (MARGIN, MARGIN, width - MARGIN, MARGIN + TITLE_BAND - 8)
        _draw_text(draw, title, band, size=TITLE_SIZE, align="left")
    return np.asarray(image)


def contact_sheet(
    volume: np.ndarray,
    response: np.ndarray,
    names: Sequence[str],
    *,
    scale: str = "clip",
    input_names: Sequence[str] | None = None,
    input_label: str = "input",
    title: str | None = None,
) -> np.ndarray:
    """One picture with the input and every channel of the response, labelled, on a grid.

    ``volume`` is the input (H×W×C), ``response`` the output (H'×W'×N) and ``names`` its
    channels' labels. Every tile goes through the same ``--scale`` rule ``scale``, the
    input's too, so a tile shows what writing that volume would. A 1–4-channel input is
    one tile (grey or RGB; alpha left out); deeper inputs give a tile per channel,
    labelled ``input · NAME`` with ``input_names`` (default 0, 1, ...). Tiles are all of
    :func:`tile_size` of the input; an output of another size (strides, valid padding)
    is fitted into that box. Returns uint8 RGB, of :func:`sheet_layout`'s size.
    """
    volume, response = as_volume(volume), as_volume(response)
    depth = volume.shape[2]
    input_names = input_names or [str(index) for index in range(depth)]
    inputs = volume_pictures(
        volume, [f"{input_label} · {name}" for name in input_names], scale=scale,
        whole=input_label,
    )  # fmt: skip
    outputs = volume_pictures(response, names, scale=scale)
    pictures = [*inputs, *outputs]
    layout = sheet_layout(len(pictures), *volume.shape[:2], title=title is not None)
    return montage(pictures, layout, title=title)


# --- kernel heat maps -----------------------------------------------------------------


def diverging_colors(values: np.ndarray, limit: float) -> np.ndarray:
    """uint8 RGB for ``values`` on a blue–grey–red map symmetric about zero.

    ``limit`` maps to full red (and −``limit`` to full blue); zero is neutral grey
    (247, 247, 247). A non-zero value is at least ``MIN_TINT`` of the way towards its
    colour, so that even a tiny weight never looks like an exact zero.

    >>> diverging_colors(np.array([-1.0, 0.0, 1.0]), 1.0).tolist()
    [[5, 48, 97], [247, 247, 247], [103, 0, 31]]
    """
    values = np.asarray(values, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        position = np.clip(values / limit if limit > 0 else np.zeros_like(values), -1.0, 1.0)
    position = np.nan_to_num(position, nan=0.0)
    tinted = np.sign(values) * np.maximum(np.abs(position), MIN_TINT)
    position = np.where(values != 0, tinted, 0.0)
    stops = np.linspace(-1.0, 1.0, len(DIVERGING))
    channels = [np.interp(position, stops, DIVERGING[:, k]) for k in range(3)]
    return np.rint(np.stack(channels, axis=-1)).astype(np.uint8)


def format_value(value: float, width: float, size: int = VALUE_SIZE) -> str:
    """A weight as short text that fits ``width`` pixels: 3 significant digits, fewer if
    needed; '' if even one does not fit."""
    value = float(value) + 0.0  # no "-0"
    for digits in (3, 2, 1):
        text = f"{value:.{digits}g}"
        if font(size).getlength(text) <= width:
            return text
    return ""


@dataclass(frozen=True)
class HeatmapLayout:
    """Where a bank's heat maps go: a row per filter, a column per input channel layer."""

    filters: int
    channels: int
    kernel: tuple[int, int]  # (kh, kw)
    cell: int  # pixels per weight along each side
    label_width: int  # the column of filter names on the left
    title: bool

    @property
    def grid(self) -> int:
        """1 if cells are outlined with a grid line, 0 for cells too small for one."""
        return 1 if self.cell >= 6 else 0

    @property
    def gap(self) -> int:
        """Pixels between two heat maps."""
        return GAP if self.cell >= 6 else 4

    @property
    def map_size(self) -> tuple[int, int]:
        """(height, width) of one heat map, grid lines included."""
        kh, kw = self.kernel
        return kh * self.cell + self.grid, kw * self.cell + self.grid

    @property
    def row_height(self) -> int:
        """Pixels per filter: its maps, or its name and bias line if taller."""
        return max(self.map_size[0], 2 * (LABEL_SIZE + 6))

    @property
    def writes_values(self) -> bool:
        """Whether each cell holds its weight written out."""
        return max(self.kernel) <= VALUE_LIMIT and self.cell >= VALUE_CELL

    @property
    def top(self) -> int:
        """y of the first row of maps, under the title and the channel names."""
        return MARGIN + (TITLE_BAND if self.title else 0) + LABEL_BAND

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the whole picture, the colour legend at the bottom included."""
        map_width = self.map_size[1]
        maps_width = self.channels * map_width + (self.channels - 1) * self.gap
        height = (
            self.top + self.filters * self.row_height + (self.filters - 1) * self.gap
            + GAP + LEGEND_HEIGHT + MARGIN
        )  # fmt: skip
        width = 2 * MARGIN + self.label_width + max(maps_width, LEGEND_WIDTH)
        return height, width

    def map_box(self, filter_index: int, channel: int) -> tuple[int, int, int, int]:
        """(y0, y1, x0, x1) of the heat map of ``filter_index``'s layer ``channel``."""
        map_height, map_width = self.map_size
        y0 = self.top + filter_index * (self.row_height + self.gap)
        y0 += (self.row_height - map_height) // 2
        x0 = MARGIN + self.label_width + channel * (map_width + self.gap)
        return y0, y0 + map_height, x0, x0 + map_width

    def cell_box(
        self, filter_index: int, channel: int, i: int, j: int
    ) -> tuple[int, int, int, int]:
        """(y0, y1, x0, x1) of the coloured inside of weight [i, j] of that layer's map."""
        y0, _, x0, _ = self.map_box(filter_index, channel)
        top = y0 + i * self.cell + self.grid
        left = x0 + j * self.cell + self.grid
        return top, y0 + (i + 1) * self.cell, left, x0 + (j + 1) * self.cell

    @property
    def legend_box(self) -> tuple[int, int, int, int]:
        """(y0, y1, x0, x1) of the colour bar."""
        y0 = self.size[0] - MARGIN - LEGEND_HEIGHT
        x0 = MARGIN + self.label_width
        return y0, y0 + LEGEND_BAR, x0, x0 + LEGEND_WIDTH


def heatmap_layout(
    weights: BankWeights, channel_names: Sequence[str], *, title: bool = True
) -> HeatmapLayout:
    """The layout of :func:`kernel_heatmaps` for ``weights`` (N×C×kh×kw)."""
    filters, channels, kh, kw = weights.weights.shape
    if len(channel_names) != channels:
        raise ParameterError(f"{len(channel_names)} channel names for {channels} layers")
    largest = max(kh, kw)
    cell = VALUE_CELL if largest <= VALUE_LIMIT else max(1, HEATMAP_SIDE // largest)
    cell = max(1, min(cell, MAX_SIDE // (channels * kw), MAX_SIDE // (filters * kh)))
    texts = [*weights.names, *(f"bias {float(b):g}" for b in weights.bias)]
    widest = max(font(LABEL_SIZE).getlength(text) for text in texts)
    label_width = int(min(240, max(80, math.ceil(widest) + 16)))
    return HeatmapLayout(filters, channels, (kh, kw), cell, label_width, title)


def kernel_heatmaps(
    weights: BankWeights, channel_names: Sequence[str], *, title: str | None = None
) -> np.ndarray:
    """Every filter of a resolved bank as a row of heat maps, one per input channel layer.

    Colours follow :func:`diverging_colors` on one symmetric range for the whole bank,
    ±max|weight|, so colours compare across filters; a legend at the bottom gives it.
    Kernels up to VALUE_LIMIT×VALUE_LIMIT have each weight written in its cell, in black
    or white, whichever reads better on the cell's colour. Rows are labelled with the
    filters' names (and bias, when not zero), columns with ``channel_names``.
    Returns uint8 RGB of :func:`heatmap_layout`'s size.
    """
    layout = heatmap_layout(weights, channel_names, title=title is not None)
    values = weights.weights.astype(np.float64)
    limit = float(np.abs(values).max()) if values.size else 0.0
    height, width = layout.size
    canvas = np.empty((height, width, 3), np.uint8)
    canvas[...] = BACKGROUND
    colours = diverging_colors(values, limit)
    cell, grid = layout.cell, layout.grid
    for n in range(layout.filters):
        for c in range(layout.channels):
            y0, y1, x0, x1 = layout.map_box(n, c)
            painted = np.repeat(np.repeat(colours[n, c], cell, axis=0), cell, axis=1)
            canvas[y0 : y0 + painted.shape[0], x0 : x0 + painted.shape[1]] = painted
            if grid:  # lines on every cell boundary, the outer ones too
                canvas[y0:y1:cell, x0:x1] = GRID
                canvas[y0:y1, x0:x1:cell] = GRID
    legend_y0, legend_y1, legend_x0, legend_x1 = layout.legend_box
    ramp = np.linspace(-limit, limit, legend_x1 - legend_x0)
    canvas[legend_y0:legend_y1, legend_x0:legend_x1] = diverging_colors(ramp, limit)
    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    if title is not None:
        band = (MARGIN, MARGIN, width - MARGIN, MARGIN + TITLE_BAND - 8)
        _draw_text(draw, title, band, size=TITLE_SIZE, align="left")
    header_y = layout.top - LABEL_BAND
    for c, name in enumerate(channel_names):
        _, _, x0, x1 = layout.map_box(0, c)
        _draw_text(draw, name, (x0, header_y, x1, header_y + LABEL_BAND), size=LABEL_SIZE)
    for n, name in enumerate(weights.names):
        y0 = layout.top + n * (layout.row_height + layout.gap)
        middle = y0 + layout.row_height // 2
        bias = float(weights.bias[n])
        box_x = (MARGIN, MARGIN + layout.label_width - 12)
        if bias:
            line = LABEL_SIZE + 4
            _draw_text(draw, name, (box_x[0], middle - line, box_x[1], middle), size=LABEL_SIZE,
                       align="left")  # fmt: skip
            _draw_text(draw, f"bias {bias:g}", (box_x[0], middle, box_x[1], middle + line),
                       size=LABEL_SIZE, fill=MUTED, align="left")  # fmt: skip
        else:
            _draw_text(draw, name, (box_x[0], middle - 10, box_x[1], middle + 10),
                       size=LABEL_SIZE, align="left")  # fmt: skip
    if layout.writes_values:
        _write_values(draw, layout, values, colours)
    _label_legend(draw, layout, limit)
    return np.asarray(image)


def _write_values(
    draw: Any, layout: HeatmapLayout, values: np.ndarray, colours: np.ndarray
) -> None:
    """Each weight in its cell, black on light colours and white on dark ones."""
    kh, kw = layout.kernel
    for n in range(layout.filters):
        for c in range(layout.channels):
            for i in range(kh):
                for j in range(kw):
                    y0, y1, x0, x1 = layout.cell_box(n, c, i, j)
                    text = format_value(values[n, c, i, j], x1 - x0 - 4)
                    red, green, blue = (int(v) for v in colours[n, c, i, j])
                    light = 0.299 * red + 0.587 * green + 0.114 * blue >= 140
                    _draw_text(draw, text, (x0 + 2, y0, x1 - 2, y1), size=VALUE_SIZE,
                               fill=INK if light else BACKGROUND)  # fmt: skip


def _label_legend(draw: Any, layout: HeatmapLayout, limit: float) -> None:
    """The colour bar's ends and zero, written under it; its name to its left."""
    y0, y1, x0, x1 = layout.legend_box
    labels = [(f"{-limit:.3g}", "left"), ("0", "centre"), (f"+{limit:.3g}", "right")]
    for text, align in labels:
        _draw_text(draw, text, (x0, y1, x1, y1 + LABEL_BAND - 4), size=VALUE_SIZE, fill=MUTED,
                   align=align)  # fmt: skip
    _draw_text(draw, "weight", (MARGIN, y0 - 4, x0 - 12, y1 + 4), size=VALUE_SIZE, fill=MUTED,
               align="left")  # fmt: skip


# --- terminal thumbnails --------------------------------------------------------------


def thumbnail_size(
    height: int, width: int, *, columns: int, max_rows: int | None = None
) -> tuple[int, int]:
    """(height, width) in pixels of a thumbnail ``columns`` terminal columns wide at most.

    A terminal cell shows two pixels, one above the other (a half block), so a cell's
    pixels are about square: the width is min(width, columns) and the height keeps the
    aspect ratio. With ``max_rows``, a thumbnail taller than 2·max_rows pixels is shrunk
    to that height (and its width with it). Never enlarged beyond the image.

    >>> thumbnail_size(512, 512, columns=52), thumbnail_size(512, 512, columns=160, max_rows=22)
    ((52, 52), (44, 44))
    """
    thumb_width = max(1, min(width, columns))
    thumb_height = max(1, round(height * thumb_width / width))
    if max_rows is not None and thumb_height > 2 * max_rows:
        thumb_height = 2 * max(1, max_rows)
        thumb_width = max(1, min(thumb_width, round(width * thumb_height / height)))
    return thumb_height, thumb_width


def thumbnails(
    pictures: Sequence[Picture], *, columns: int, max_rows: int | None = None
) -> list[list[Picture]]:
    """The pictures as thumbnails for a terminal ``columns`` wide, in bands side by side.

    Each band holds as many thumbnails as fit at PREVIEW_MIN_COLUMNS wide or more, with
    PREVIEW_GAP columns between them; every thumbnail gets an equal share of the width
    (:func:`thumbnail_size`). All pictures are expected to be of one size (the channels
    of one volume).
    """
    if not pictures:
        return []
    fitting = (columns + PREVIEW_GAP) // (PREVIEW_MIN_COLUMNS + PREVIEW_GAP)
    per_band = max(1, min(len(pictures), fitting))
    share = max(1, (columns - PREVIEW_GAP * (per_band - 1)) // per_band)
    height, width = pictures[0].pixels.shape[:2]
    size = thumbnail_size(height, width, columns=share, max_rows=max_rows)
    small = [Picture(p.label, resize(p.pixels, *size)) for p in pictures]
    return [small[first : first + per_band] for first in range(0, len(small), per_band)]


# --- colour patches of 3-channel filters ----------------------------------------------

PATCH_SIDE = 56  # a patch's side, about: kernels are magnified by a whole factor to it
MAX_PATCHES_WIDTH = 1200  # a patch grid wraps to rows at most this wide
PATCH_GAP = 6
PATCH_LABEL = 16  # the band under a patch that holds its label
PATCH_LABEL_SIZE = 11
PIXEL_LINES_FROM = 8  # magnified at least this much, lines between pixels show them


def filter_patches(weights: BankWeights, *, title: str | None = None) -> np.ndarray:
    """Each 3-channel filter as one small colour patch, as papers show first layers.

    The three layers are the patch's red, green and blue. All filters are scaled together,
    symmetric around mid-grey: 0 is grey 128, ±max|weight| over the bank are 0 and 255, so
    patches compare (AlexNet's figure). Each kernel pixel is a square of a whole number of
    screen pixels (nearest neighbour, with thin lines between pixels when large), on a
    labelled grid that wraps to at most MAX_PATCHES_WIDTH pixels, so hundreds of filters
    stay a bounded picture. Returns uint8 RGB.
    """
    values = weights.weights
    if values.ndim != 4 or values.shape[1] != 3:
        raise ParameterError(
            f"--rgb draws 3-channel filters as colour patches; these have "
            f"{values.shape[1]} channels",
            hint="show-filter --channels 3, or draw heat maps without --rgb",
        )
    count, _, kh, kw = values.shape
    limit = float(np.abs(values).max()) or 1.0
    unit = np.clip(0.5 + 0.5 * values.astype(np.float32) / np.float32(limit), 0, 1)
    colours = np.rint(unit * 255).astype(np.uint8).transpose(0, 2, 3, 1)  # N×kh×kw×3
    magnify = max(1, PATCH_SIDE // max(kh, kw))
    while True:  # hundreds of filters: smaller patches keep the picture within MAX_SIDE
        patch_h, patch_w = kh * magnify, kw * magnify
        cell_w = max(patch_w, 40) + PATCH_GAP
        cell_h = patch_h + PATCH_LABEL + PATCH_GAP
        columns = max(1, min(count, (MAX_PATCHES_WIDTH - 2 * MARGIN) // cell_w))
        rows = math.ceil(count / columns)
        if rows * cell_h <= MAX_SIDE or magnify == 1:
            break
        magnify -= 1
    top = MARGIN + (TITLE_BAND if title is not None else 0)
    width = max(2 * MARGIN + columns * cell_w - PATCH_GAP, 240)
    height = top + rows * cell_h - PATCH_GAP + MARGIN
    canvas = np.empty((height, width, 3), np.uint8)
    canvas[...] = BACKGROUND
    patches = colours.repeat(magnify, axis=1).repeat(magnify, axis=2)  # N×ph×pw×3
    if magnify >= PIXEL_LINES_FROM:
        patches[:, magnify::magnify, :] = GRID
        patches[:, :, magnify::magnify] = GRID
    boxes = []
    for index in range(count):
        row, column = divmod(index, columns)
        y0 = top + row * cell_h
        x0 = MARGIN + column * cell_w + (cell_w - PATCH_GAP - patch_w) // 2
        canvas[y0 : y0 + patch_h, x0 : x0 + patch_w] = patches[index]
        boxes.append((MARGIN + column * cell_w, y0 + patch_h, cell_w - PATCH_GAP))
    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    if title is not None:
        band = (MARGIN, MARGIN, width - MARGIN, MARGIN + TITLE_BAND - 8)
        _draw_text(draw, title, band, size=TITLE_SIZE, align="left")
    for name, (x0, y0, cell) in zip(weights.names, boxes, strict=True):
        _draw_text(draw, name, (x0, y0, x0 + cell, y0 + PATCH_LABEL), size=PATCH_LABEL_SIZE,
                   fill=MUTED)  # fmt: skip
    return np.asarray(image)
