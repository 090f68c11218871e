"""A PNG encoder for volumes: rows filtered in NumPy, deflated in parallel pieces
(ISA-L at level 1 when installed, zlib otherwise), joined into one valid stream.
"""

from __future__ import annotations

import os
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any

import numpy as np


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    checksum = zlib.crc32(payload, zlib.crc32(kind)) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", checksum)


def _raw_deflater(compress_level: int) -> Any:
    """A raw-deflate compressor for ``compress_level`` (0–9).

    Level 1, the default, is ISA-L's level 1 when the ``isal`` package is there: several
    times zlib's speed at the same size on photos (figures in benchmarks/README.md).
    Other levels are zlib's; level 1 without ISA-L is zlib's with the
    run-length strategy, as OpenCV writes PNGs.
    """
    if compress_level == 1:
        try:
            from isal import isal_zlib
        except ImportError:
            pass
        else:
            return isal_zlib.compressobj(1, isal_zlib.DEFLATED, -15)
        return zlib.compressobj(1, zlib.DEFLATED, -15, 8, zlib.Z_RLE)
    return zlib.compressobj(compress_level, zlib.DEFLATED, -15, 8, zlib.Z_DEFAULT_STRATEGY)


def write_png(
    stream: IO[bytes],
    pixels: np.ndarray,
    compress_level: int,
    *,
    chunks: tuple[list[tuple[bytes, bytes]], list[tuple[bytes, bytes]]] = ([], []),
) -> None:
    """A greyscale or RGB PNG (with alpha for 2 and 4 channels) of 8 or 16 bits, deflated
    in parallel.

    ``chunks`` are ancillary chunks (kind, payload) to write before the image data
    (iCCP, pHYs, eXIf) and after it (tEXt, iTXt), as :func:`convvol.io.photo.png_chunks`
    makes them.

    Pillow's encoder runs on one core (and cannot write 48-bit RGB at all). Rows are
    filtered with 'Up' (difference with the row above, vectorised) and cut into pieces;
    each piece is raw-deflated on its own thread, ending in a sync flush, and becomes
    its own IDAT chunk (its CRC computed on that thread too), as pigz joins deflate
    streams. See :func:`_raw_deflater` for the compressors.
    """
    height, width, channels = pixels.shape
    bits = pixels.dtype.itemsize * 8
    rows = np.ascontiguousarray(pixels.astype(pixels.dtype.newbyteorder(">"), copy=False))
    rows = rows.view(np.uint8).reshape(height, -1)
    per_piece = max(1, _DEFLATE_PIECE_BYTES // (rows.shape[1] + 1))
    starts = list(range(0, height, per_piece))

    def deflate(first: int) -> tuple[int, bytes]:
        last = min(first + per_piece, height)
        filtered = np.empty((last - first, rows.shape[1] + 1), np.uint8)
        filtered[:, 0] = 2  # PNG filter type 'Up'
        filtered[0, 1:] = rows[first] - (rows[first - 1] if first else 0)
        np.subtract(rows[first + 1 : last], rows[first : last - 1], out=filtered[1:, 1:])
        raw = filtered.reshape(-1).data  # a flat, contiguous byte buffer: no copy
        compressor = _raw_deflater(compress_level)
        flush = zlib.Z_FINISH if last == height else zlib.Z_SYNC_FLUSH
        return zlib.adler32(raw), _png_chunk(
            b"IDAT", compressor.compress(raw) + compressor.flush(flush)
        )

    if len(starts) == 1:
        pieces = [deflate(0)]
    else:
        workers = min(len(starts), os.cpu_count() or 1)
        with ThreadPoolExecutor(workers, thread_name_prefix="convvol-png") as pool:
            pieces = list(pool.map(deflate, starts))
    checksum = 1
    for first, (adler, _) in zip(starts, pieces, strict=True):
        length = (min(first + per_piece, height) - first) * (rows.shape[1] + 1)
        checksum = _adler32_combine(checksum, adler, length)
    level_bits = (
        0 if compress_level < 2 else 1 if compress_level < 6 else 2 if compress_level == 6 else 3
    )
    header = 0x7800 | level_bits << 6
    header += 31 - header % 31 if header % 31 else 0
    stream.write(b"\x89PNG\r\n\x1a\n")
    colour = {1: 0, 2: 4, 3: 2, 4: 6}[channels]  # grey, grey+alpha, RGB, RGBA
    stream.write(_png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bits, colour, 0, 0, 0)))
    before, after = chunks
    for kind, payload in before:
        stream.write(_png_chunk(kind, payload))
    stream.write(_png_chunk(b"IDAT", struct.pack(">H", header)))  # zlib stream header
    for _, chunk in pieces:
        stream.write(chunk)
    stream.write(_png_chunk(b"IDAT", struct.pack(">I", checksum)))  # zlib stream trailer
    for kind, payload in after:
        stream.write(_png_chunk(kind, payload))
    stream.write(_png_chunk(b"IEND", b""))


def _adler32_combine(first: int, second: int, second_length: int) -> int:
    """The Adler-32 of two byte strings joined, from theirs (zlib's adler32_combine)."""
    base = 65521
    remainder = second_length % base
    low = ((first & 0xFFFF) + (second & 0xFFFF) + base - 1) % base
    high = (remainder * (first & 0xFFFF) + (first >> 16) + (second >> 16) + base - remainder) % base
    return (high << 16) | low


_DEFLATE_PIECE_BYTES = 4 * 2**20  # raw bytes per parallel deflate piece (and IDAT chunk)
