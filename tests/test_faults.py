"""Hostile input, faults and pipelines: every bad input gets one clear message and its exit
code, no input takes more than the documented limits, and no failure or interruption leaves
a file behind.

One table per category of docs/errors.md (banks, images and volumes, outputs and
processes). Each row runs ``convvol apply`` and checks the exit code, that the
message names the file and the problem, that there is no traceback, and that nothing was
written. Process-level faults (signals, pipes, file-size limits) run real subprocesses.
"""

from __future__ import annotations

import errno
import io
import os
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from PIL import Image

from convvol.cli import cli
from convvol.io import writers as volume_module

REPO = Path(__file__).resolve().parents[1]
PATTERN = REPO / "sample_images" / "pattern.png"  # 256×256 RGB
PHOTO = REPO / "sample_images" / "astronaut.png"  # 512×512 RGB
ENV = {
    **os.environ,
    "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
}


def run(*args: str | os.PathLike[str], stdin: bytes | None = None, **env: str) -> Result:
    """convvol in-process; an exception that escapes convvol fails the test."""
    return CliRunner(env=env or None).invoke(
        cli, [str(a) for a in args], input=stdin, catch_exceptions=False
    )


def everything(directory: Path) -> set[str]:
    """Every file and directory below ``directory``, hidden ones (temporaries) included."""
    return {str(p.relative_to(directory)) for p in directory.rglob("*")}


def assert_refused(result: Result, code: int, fragments: tuple[str, ...]) -> None:
    """One clear message naming the problem (and the file), the exit code, no traceback."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    assert result.stderr.startswith("convvol: error: "), result.stderr
    assert len(result.stderr.splitlines()) <= 2, result.stderr  # the message, maybe a hint
    for fragment in fragments:
        assert fragment in result.stderr, (fragment, result.stderr)


# --- bad filter banks -------------------------------------------------------------------


def laughs(levels: int, base: str = "[1, 1, 1, 1, 1, 1, 1, 1, 1, 1]") -> str:
    """A "billion laughs" bank: each level lists the one before ten times."""
    lines = [f"l0: &l0 {base}"]
    for level in range(1, levels):
        lines.append(f"l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * 10) + "]")
    return "\n".join(lines) + f"\nfilters:\n  - kernel: *l{levels - 1}\n"


@dataclass(frozen=True)
class BadBank:
    """A bank file (or directory) that must be refused, and what the message must say."""

    name: str
    content: str | bytes | None  # None: a directory; "missing": no file at all
    fragments: tuple[str, ...]
    args: tuple[str, ...] = ()
    hint: str | None = None


NESTED = "[" * 100_000 + "]" * 100_000
BAD_BANKS = [
    # Syntax, with line and column.
    BadBank(
        "syntax.yaml",
        "filters:\n  - kernel: [[1, 2]\n  - kernel: identity\n",
        ("line 3, column 3", "invalid YAML"),
    ),
    BadBank(
        "syntax.json",
        '{"filters": [\n  {"kernel": "identity",}\n]}',
        ("line 2, column 25", "invalid JSON"),
    ),
    BadBank("tab.yaml", "filters:\n\t- kernel: identity\n", ("line 2", "invalid YAML")),
    BadBank(
        "nul.yaml",
        "filters:\n  - kernel: box\x00\n",
        ("line 2, column 16", "U+0000 is not allowed"),
    ),
    # The wrong top-level type, or no filters.
    BadBank("list.yaml", "- kernel: identity\n", ("a bank must be a mapping",), hint="filters:"),
    BadBank("string.json", '"edges"', ("a bank must be a mapping", "'edges' (text)")),
    BadBank("empty.yaml", "", ("a bank must be a mapping", "(null)")),
    BadBank("no-filters.yaml", "filters: []\n", ("non-empty 'filters' list",)),
    BadBank(
        "twins.yaml",
        "filters:\n  - {name: a, kernel: box}\n  - {name: a, kernel: box}\n",
        ("line 3", "filters[1] ('a')", "duplicate filter name (also filters[0])"),
    ),
    # Booleans, text, NaN and infinities where numbers go.
    BadBank(
        "yes.yaml",
        "filters:\n  - kernel: [[yes]]\n",
        ("kernel[1][1] must be a number", "True (a boolean)"),
    ),
    BadBank(
        "text.yaml",
        "filters:\n  - kernel: [['1']]\n",
        ("kernel[1][1] must be a number", "'1' (text)"),
    ),
    BadBank("text.json", '{"filters": [{"kernel": [["1"]]}]}', ("must be a number", "'1'")),
    BadBank("bias.yaml", "filters:\n  - {kernel: box, bias: 'on'}\n", ("bias must be a number",)),
    BadBank("nan.yaml", "filters:\n  - kernel: [[.nan]]\n", ("must be a finite number",)),
    BadBank(
        "inf.yaml",
        "filters:\n  - {kernel: box, scale: -.inf}\n",
        ("scale must be a finite number",),
    ),
    BadBank("nan.json", '{"filters": [{"kernel": [[NaN]]}]}', ("NaN is not a finite number",)),
    BadBank("inf.json", '{"filters": [{"kernel": [[Infinity]]}]}', ("Infinity is not a finite",)),
    BadBank("overflow.json", '{"filters": [{"kernel": [[1e999]]}]}', ("finite number",)),
    BadBank("huge.yaml", "filters:\n  - kernel: [[3e38, 4e38]]\n", ("beyond float32's range",)),
    BadBank(
        "digits.yaml",
        "filters:\n  - kernel: [[" + "9" * 5000 + "]]\n",
        ("line 2", "a number of 5,000 characters"),
    ),
    BadBank(
        "digits.json",
        '{"filters": [{"kernel": [[' + "9" * 5000 + "]]}]}",
        ("a number of 5,000 characters",),
    ),
    BadBank(
        "sexagesimal.yaml",
        "filters:\n  - kernel: [[1" + ":0" * 100_000 + "]]\n",
        ("a number of 200,001 characters",),
    ),
    BadBank("date.yaml", "filters:\n  - kernel: [[2001-02-30]]\n", ("line 2", "cannot read")),
    # Ragged, empty and nested rows.
    BadBank(
        "ragged.yaml",
        "filters:\n  - kernel: [[1, 2, 3], [1, 2]]\n",
        ("row 2 has 2 values but row 1 has 3",),
    ),
    BadBank(
        "empty-row.yaml", "filters:\n  - kernel: [[1], []]\n", ("row 2 must be a non-empty list",)
    ),
    BadBank("empty-kernel.json", '{"filters": [{"kernel": []}]}', ("non-empty list of rows",)),
    BadBank("cube.yaml", "filters:\n  - kernel: [[[1]]]\n", ("must be a number", "(list)")),
    BadBank(
        "nested.yaml",
        "filters:\n  - kernel: " + NESTED + "\n",
        ("line 2", "nested more than 64 levels deep"),
    ),
    BadBank(
        "nested.json",
        '{"filters": [{"kernel": ' + NESTED + "}]}",
        ("line 1", "nested more than 64 levels deep"),
    ),
    BadBank(
        "nested-blocks.yaml",
        "filters:\n" + "".join("  " * depth + "-\n" for depth in range(1, 2000)),
        ("nested more than 64 levels deep",),
    ),
    # Enormous kernels: a limit, overridable.
    BadBank(
        "wide.yaml",
        "filters:\n  - kernel: [" + str([0] * 1100) + "]\n",
        ("kernel is 1×1100", "larger than the kernel limit of 1025 pixels a side"),
        hint="--max-kernel",
    ),
    BadBank(
        "box.yaml",
        "filters:\n  - kernel: {box: {size: 30000}}\n",
        ("box: size is 30000×30000", "the kernel limit of 1025"),
    ),
    BadBank(
        "sobel.yaml",
        "filters:\n  - kernel: sobel_x\n",
        ("kernel is 3×3", "the kernel limit of 2 pixels"),
        args=("--max-kernel", "2"),
    ),
    # Non-positive stride and dilation.
    BadBank(
        "stride.yaml",
        "defaults: {stride: 0}\nfilters: [{kernel: box}]\n",
        ("defaults", "stride must be an integer ≥ 1, got 0"),
    ),
    BadBank(
        "dilation.yaml",
        "defaults: {dilation: -1}\nfilters: [{kernel: box}]\n",
        ("dilation must be an integer ≥ 1, got -1",),
    ),
    # Unknown keys: errors with a "did you mean", never ignored.
    BadBank(
        "kernal.yaml",
        "filters:\n  - {name: typo, kernal: identity}\n",
        ("line 2", "filters[0] ('typo')", "unknown key 'kernal'"),
        hint="did you mean 'kernel'?",
    ),
    BadBank(
        "filtres.yaml",
        "filtres:\n  - kernel: identity\n",
        ("unknown key 'filtres'",),
        hint="did you mean 'filters'?",
    ),
    BadBank(
        "strides.json",
        '{"defaults": {"strides": 2}, "filters": [{"kernel": "box"}]}',
        ("unknown key 'strides'",),
        hint="did you mean 'stride'?",
    ),
    # Bytes that are not UTF-8 text, text that cannot be printed, files that are too large.
    BadBank(
        "latin1.yaml",
        "filters:\n  - {kernel: box, description: 'café'}\n".encode("latin-1"),
        ("not UTF-8 text",),
    ),
    BadBank("utf16.yaml", "filters:\n  - kernel: box\n".encode("utf-16"), ("not UTF-8 text",)),
    BadBank("binary.yaml", bytes(range(256)) * 4, ("not UTF-8 text",)),
    BadBank(
        "surrogate.json",
        '{"filters": [{"kernel": "box", "description": "\\ud800"}]}',
        ("description holds", "surrogate"),
    ),
    BadBank(
        "big.yaml",
        b"filters: [{kernel: box}]\n#" + b"x" * (16 * 2**20),
        ("larger than 16 MiB, the limit for a bank file",),
    ),
    # Not a file at all.
    BadBank("folder.yaml", None, ("is a directory, not a bank file",)),
    BadBank("missing.yaml", "missing", ("no such bank file",)),
    # YAML aliases that blow up the size ("billion laughs"), and recursive ones.
    BadBank("laughs.yaml", laughs(9), ("line 6", "more than 1,048,576 values", "aliases")),
    BadBank(
        "laughs-keys.yaml",
        "a: &a {k0: 0, k1: 1, k2: 2, k3: 3, k4: 4, k5: 5, k6: 6, k7: 7}\n"
        + "".join(
            f"{b}: &{b} {{<<: [" + ", ".join([f"*{a}"] * 10) + "]}\n"
            for a, b in zip("abcdefg", "bcdefgh", strict=True)
        )
        + "filters: [{kernel: box}]\n",
        ("more than 1,048,576 values",),
    ),
    BadBank(
        "recursive.yaml",
        "a: &a [1, *a]\nfilters: [{kernel: box}]\n",
        ("line 1", "an alias inside the node it refers to"),
    ),
    BadBank(
        "merge-loop.yaml",
        "a: &a {<<: *a}\nfilters: [{kernel: box}]\n",
        ("an alias inside the node it refers to",),
    ),
    # Tags that try to construct objects.
    BadBank(
        "python.yaml",
        "filters:\n  - kernel: !!python/object/apply:os.mkdir ['pwned']\n",
        ("line 2", "could not determine a constructor", "python/object/apply"),
    ),
    BadBank("name.yaml", "filters: !!python/name:os.system\n", ("could not determine",)),
    BadBank(
        "custom.yaml",
        "filters:\n  - kernel: !Kernel {size: 3}\n",
        ("could not determine a constructor for the tag '!Kernel'",),
    ),
    BadBank("set.yaml", "filters:\n  - kernel: !!set {a, b}\n", ("must be a 2-D matrix", "(set)")),
    BadBank(
        "binary-tag.yaml",
        "filters:\n  - kernel: !!binary aGVsbG8=\n",
        ("must be a 2-D matrix", "(bytes)"),
    ),
]


@pytest.mark.parametrize("case", BAD_BANKS, ids=[case.name for case in BAD_BANKS])
def test_bad_banks_are_refused_clearly(workdir: Path, case: BadBank) -> None:
    bank = workdir / "banks" / case.name
    bank.parent.mkdir()
    if case.content is None:
        bank.mkdir()
    elif isinstance(case.content, bytes):
        bank.write_bytes(case.content)
    elif case.content != "missing":
        bank.write_text(case.content, encoding="utf-8")
    before = everything(workdir)
    result = run("apply", PATTERN, "-f", bank, "-o", "out/result.png", *case.args)
    assert_refused(result, 2, (str(bank), *case.fragments))
    if case.hint:
        assert result.stderr.splitlines()[-1].startswith("hint: ")
        assert case.hint in result.stderr.splitlines()[-1]
    assert everything(workdir) == before
    assert not (workdir / "pwned").exists()


def test_kernel_limit_is_raised_by_option_and_environment(workdir: Path) -> None:
    (workdir / "wide.yaml").write_text("filters:\n  - kernel: {box: {size: [1, 1100]}}\n")
    assert run("apply", PATTERN, "-f", "wide.yaml", "-o", "a.npy").exit_code == 2
    result = run("apply", PATTERN, "-f", "wide.yaml", "-o", "a.npy", "--max-kernel", "1100")
    assert result.exit_code == 0, result.output
    assert np.load(workdir / "a.npy").shape == (256, 256, 1)
    result = run("validate", "wide.yaml", CONVVOL_MAX_KERNEL="1100")
    assert result.exit_code == 0, result.output
    assert run("show-filter", "wide.yaml", "--max-kernel", "1099").exit_code == 2


def test_resolved_weights_have_a_limit(workdir: Path) -> None:
    """A 1025² kernel is fine on RGB; on a 70-channel volume it would be 73 M weights."""
    (workdir / "big.yaml").write_text("filters:\n  - kernel: {box: {size: 1025}}\n")
    np.save(workdir / "deep.npy", np.zeros((2, 2, 70), np.float32))
    result = run("apply", "deep.npy", "-f", "big.yaml", "-o", "x.npy")
    assert_refused(result, 2, ("big.yaml", "70 channels", "more than the limit of 67,108,864"))
    assert not (workdir / "x.npy").exists()


def test_non_positive_stride_and_dilation_options(workdir: Path) -> None:
    for option, value in [("--stride", "0"), ("--dilation", "-2")]:
        result = run("apply", PATTERN, "-f", "edges", option, value, "-o", "x.png")
        assert_refused(result, 2, (option, value))
    assert everything(workdir) == set()


def test_a_bank_from_a_pipe_is_read(workdir: Path) -> None:
    """``-f <(make-bank)`` reads a pipe, within the same size limit as a file."""
    done = subprocess.run(
        ["bash", "-c", f'"{sys.executable}" -m convvol apply "{PATTERN}" -q -o p.npy '
         f'-f <(printf "filters: [{{kernel: box}}]")'],
        cwd=workdir, env=ENV, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert np.load(workdir / "p.npy").shape == (256, 256, 1)


# --- bad images and volumes ---------------------------------------------------------------


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width×height greyscale pixels with almost no data: a bomb."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        checksum = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", checksum)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    data = zlib.compress(b"\x00" * 4096)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )


def image_bytes(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def npy_bytes(array: np.ndarray, **options: bool) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, **options)
    return buffer.getvalue()


def npy_claiming(shape: tuple[int, ...], payload: int) -> bytes:
    """A .npy whose header declares ``shape`` float32 but which holds ``payload`` bytes."""
    header = f"{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}"
    header = header.ljust(118) + "\n"
    return (
        b"\x93NUMPY\x01\x00"
        + struct.pack("<H", len(header))
        + header.encode()
        + (b"\x00" * payload)
    )


def gif_screen(width: int, height: int) -> bytes:
    """A 1×1 GIF whose logical screen claims width×height."""
    data = bytearray(image_bytes(Image.new("P", (1, 1)), "GIF"))
    data[6:10] = struct.pack("<HH", width, height)
    return bytes(data)


class Tripwire:
    """Records it if it is ever unpickled."""

    def __reduce__(self) -> tuple[Callable[[], None], tuple[()]]:
        return (_tripwire, ())


TRIGGERED: list[bool] = []


def _tripwire() -> None:
    TRIGGERED.append(True)


def photo_png() -> bytes:
    return PATTERN.read_bytes()


def object_npy() -> bytes:
    array = np.empty((1, 1, 1), dtype=object)
    array[0, 0, 0] = Tripwire()
    return npy_bytes(array, allow_pickle=True)


def with_value(value: float, dtype: type = np.float32) -> bytes:
    array = np.zeros((4, 4, 3), dtype)
    array[2, 1, 0] = value
    return npy_bytes(array)


@dataclass(frozen=True)
class BadInput:
    """An input that must be refused (exit 2), and what the message must say."""

    name: str
    make: Callable[[], bytes]
    fragments: tuple[str, ...]
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)


JPEG = image_bytes(Image.open(PATTERN).convert("RGB"), "JPEG")
BAD_INPUTS = [
    BadInput("zero.png", lambda: b"", ("the file is empty",)),
    BadInput("cut.png", lambda: photo_png()[: len(photo_png()) // 2], ("damaged or truncated",)),
    BadInput("cut-header.png", lambda: photo_png()[:30], ("a damaged or truncated PNG",)),
    BadInput("cut-header.jpg", lambda: JPEG[:5], ("a damaged or truncated JPEG",)),
    BadInput("cut.jpg", lambda: JPEG[: len(JPEG) // 2], ("damaged or truncated",)),
    BadInput("text.png", lambda: b"just some text\n", ("not an image or .npy volume",)),
    BadInput("html.jpg", lambda: b"<html>404 Not Found</html>", ("not an image",)),
    # Decompression bombs: refused from the header, before decoding.
    BadInput(
        "bomb.png",
        lambda: png_header_only(20_000, 20_000),
        ("20000×20000 = 400,000,000 pixels", "more than the limit of 178,956,970"),
    ),
    BadInput("huge.png", lambda: png_header_only(100_000, 100_000), ("10,000,000,000 pixels",)),
    BadInput(
        "limited.png",
        photo_png,
        ("256×256 = 65,536 pixels", "limit of 65,535"),
        args=("--max-pixels", "65535"),
    ),
    BadInput("env-limited.png", photo_png, ("limit of 1,000",), env={"CONVVOL_MAX_PIXELS": "1000"}),
    BadInput("bomb.gif", lambda: gif_screen(65535, 65535), ("65535×65535", "more than the limit")),
    # .npy: never unpickled, headers checked against the file, shapes, values.
    BadInput("objects.npy", object_npy, ("Python objects", "never unpickles")),
    BadInput(
        "liar.npy",
        lambda: npy_claiming((100_000, 100_000, 3), 100),
        ("declares 100000×100000×3 float32 values", "120,000,000,000 bytes", "100 bytes"),
    ),
    BadInput("short.npy", lambda: npy_claiming((10, 10, 3), 100), ("the file is truncated",)),
    BadInput(
        "trailing.npy",
        lambda: npy_claiming((10, 10, 3), 100_000),
        ("declares 10×10×3", "100,000 bytes follow"),
    ),
    BadInput(
        "four.npy",
        lambda: npy_bytes(np.zeros((2, 3, 4, 5), np.float32)),
        ("must be H×W×C or H×W", "(2, 3, 4, 5)"),
    ),
    BadInput("line.npy", lambda: npy_bytes(np.zeros(5, np.float32)), ("(5,)",)),
    BadInput("empty.npy", lambda: npy_bytes(np.zeros((0, 3, 3), np.float32)), ("empty",)),
    BadInput(
        "complex.npy", lambda: npy_bytes(np.ones((2, 2, 2), np.complex64)), ("is not real numbers",)
    ),
    BadInput(  # NaN are missing pixels, but with none valid there is nothing to filter
        "nan.npy",
        lambda: npy_bytes(np.full((4, 4, 3), np.nan, np.float32)),
        ("every pixel is missing",),
    ),
    BadInput("inf.npy", lambda: with_value(-np.inf), ("-inf at row 2",)),
    BadInput(
        "float64.npy", lambda: with_value(1e300, np.float64), ("beyond float32's range", "1e+300")
    ),
    BadInput(
        "values.npy",
        lambda: npy_bytes(np.zeros((4, 4, 3), np.float32)),
        ("4×4×3 = 48 values", "more than the limit of 40"),
        args=("--max-pixels", "10"),
    ),
    BadInput(
        "garbage.npy", lambda: b"\x93NUMPY\x01\x00\x10\x00{'descr': '<f4'", ("not a readable",)
    ),
    BadInput(
        "code-header.npy",
        lambda: b"\x93NUMPY\x01\x00\x20\x00__import__('os').system('x')   \n",
        ("not a readable .npy volume",),
    ),
]


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[case.name for case in BAD_INPUTS])
def test_bad_inputs_are_refused_clearly(workdir: Path, case: BadInput) -> None:
    source = workdir / case.name
    source.write_bytes(case.make())
    TRIGGERED.clear()
    before = everything(workdir)
    result = run("apply", source, "-f", "edges", "-o", "out/result.png", *case.args, **case.env)
    assert_refused(result, 2, (str(source), *case.fragments))
    assert everything(workdir) == before
    assert TRIGGERED == []


# Found by the fuzzer: libtiff itself prints "TIFFReadDirectory: Failed to read directory
# at offset 8." on stderr before Pillow raises.
DAMAGED_TIFF = (
    b"II*\x00\x08\x00\x00\x00\t\x00\x00\x01\x04\x00\x01\x00\x00\x00\x05\x00\x00\x00\x01"
    b"\x01\x04\x00\x01\x00\x00\x00\x04\x00\x00\x00\x02\x01\x03\x00\x01\x00\x00\x00\x08\x00"
    b"\x00\x00\x03\x01\x03\x00\x01\x00\x00\x00\x04\x00\x01\x00\x009ed9\xad\x8f\x80\x00\x00II*"
    b"\x00\x08\x00\x00\x00\t\x00\x00\x01\x04\x00\x01\x00\xff\xff\xff\xff\xff\xff\xff\x80\x00\x00"
)


def test_what_c_libraries_print_is_hidden(workdir: Path) -> None:
    """The user sees convvol's one line, not libtiff's own complaint before it."""
    (workdir / "damaged.tif").write_bytes(DAMAGED_TIFF)
    process = convvol_process("apply", "damaged.tif", "-f", "edges", "-o", "x.png",
                              cwd=workdir, stderr=subprocess.PIPE)  # fmt: skip
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 2
    assert stderr.decode().splitlines() == [  # tifffile reads TIFFs now: its message
        "convvol: error: damaged.tif: damaged or truncated TIFF (TiffFileError: corrupted IFD "
        "structure)"
    ]


def test_pixel_limit_is_checked_before_decoding(workdir: Path) -> None:
    """A 10-gigapixel bomb is refused in well under a second, without touching memory."""
    (workdir / "bomb.png").write_bytes(png_header_only(100_000, 100_000))
    started = time.perf_counter()
    result = run("apply", "bomb.png", "-f", "edges", "-o", "x.png")
    assert time.perf_counter() - started < 5
    assert_refused(result, 2, ("bomb.png", "--max-pixels"))


def test_preview_has_the_same_limit(workdir: Path) -> None:
    (workdir / "bomb.png").write_bytes(png_header_only(20_000, 20_000))
    result = run("preview", "bomb.png")
    assert_refused(result, 2, ("bomb.png", "400,000,000 pixels", "limit of 178,956,970"))
    result = run("preview", PATTERN, "--max-pixels", "100")
    assert_refused(result, 2, ("65,536 pixels", "limit of 100"))


def test_pixel_limit_can_be_raised_or_lifted(workdir: Path) -> None:
    for args in (["--max-pixels", "65536"], ["--max-pixels", "0"]):
        result = run("apply", PATTERN, "-f", "blur", "-o", "ok.png", *args)
        assert result.exit_code == 0, result.output


def test_standard_input_is_read_within_the_limit(workdir: Path) -> None:
    result = run("apply", "-", "-f", "edges", "--max-pixels", "1", "-o", "x.png",
                 stdin=b"\0" * (3 * 2**20))  # fmt: skip
    assert_refused(result, 2, ("<stdin>", "more than 1,048,608 bytes"))
    assert everything(workdir) == set()


def identity_bank(workdir: Path) -> Path:
    """Each channel as it is."""
    path = workdir / "same.yaml"
    path.write_text("filters:\n  - {name: v, kernel: [[1]], depthwise: true}\n")
    return path


@pytest.mark.parametrize(
    ("array", "expected"),
    [
        (np.arange(12, dtype=np.uint8).reshape(2, 2, 3) * 20, "unscaled"),
        (np.arange(12, dtype=np.int64).reshape(2, 2, 3) * -(2**40), "unscaled"),
        (np.array([[[0.1, 1e30, -2.5]]], np.float64), "rounded"),
        (np.ones((2, 2, 1), bool), "unscaled"),
    ],
    ids=["uint8", "int64", "float64", "bool"],
)
def test_npy_numbers_load_as_float32_unscaled(
    workdir: Path, array: np.ndarray, expected: str
) -> None:
    np.save(workdir / "in.npy", array)
    result = run("apply", "in.npy", "-f", identity_bank(workdir), "-o", "out.npy")
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(np.load(workdir / "out.npy"), array.astype(np.float32))


def test_cmyk_and_palette_images_become_rgb(workdir: Path) -> None:
    colour = (200, 30, 90)
    Image.new("RGB", (6, 4), colour).convert("CMYK").save(workdir / "cmyk.jpg", quality=100)
    Image.new("RGB", (6, 4), colour).convert("CMYK").save(workdir / "cmyk.tif")
    Image.new("RGB", (6, 4), colour).convert("P").save(workdir / "palette.png")
    clear = Image.new("P", (6, 4), 1)
    clear.putpalette([0, 0, 0, *colour])
    clear.save(workdir / "clear.png", transparency=0)
    for name in ("cmyk.jpg", "cmyk.tif", "palette.png"):
        result = run("apply", name, "-f", "box_blur", "-o", f"{name}.npy")
        assert result.exit_code == 0, result.output
        out = np.load(workdir / f"{name}.npy")
        assert out.shape == (4, 6, 3)
        np.testing.assert_allclose(out[1, 2], np.array(colour) / 255, atol=0.03)
    result = run("apply", "clear.png", "--channels", "keep", "-f", "box_blur", "-o", "a.npy")
    assert result.exit_code == 0, result.output
    assert np.load(workdir / "a.npy").shape == (4, 6, 4)  # RGBA: the transparency kept


def test_exif_rotated_photo_is_read_as_a_viewer_shows_it(workdir: Path) -> None:
    """Orientation 6: stored 6 wide and 4 high with a red top row, shown 4 wide, 6 high."""
    stored = np.zeros((4, 6, 3), np.uint8)
    stored[0] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(workdir / "phone.png", exif=exif)
    result = run("apply", "phone.png", "-f", identity_bank(workdir), "-o", "seen.npy")
    assert result.exit_code == 0, result.output
    seen = np.load(workdir / "seen.npy")[:, :, 0]
    assert seen.shape == (6, 4)
    assert (seen[:, -1] == 1).all()  # the stored top row is now the right column
    assert (seen[:, :-1] == 0).all()


@pytest.mark.parametrize("fmt", ["GIF", "PNG", "WEBP"])
def test_animated_images_give_their_first_frame(workdir: Path, fmt: str) -> None:
    """With --frames first; by default every frame is filtered, and one .npy cannot hold
    them: refused with a hint, nothing written."""
    frames = [Image.new("RGB", (5, 3), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    path = workdir / f"anim.{fmt.lower()}"
    frames[0].save(path, format=fmt, save_all=True, append_images=frames[1:], lossless=True)
    with Image.open(path) as check:
        assert getattr(check, "n_frames", 1) == 2
    result = run("apply", path, "-f", "box_blur", "-o", "first.npy")
    assert_refused(result, 2, ("2 frames cannot go to one NPY file", "--frames first"))
    assert not (workdir / "first.npy").exists()
    result = run("apply", path, "-f", "box_blur", "-o", "first.npy", "--frames", "first")
    assert result.exit_code == 0, result.output
    first = np.load(workdir / "first.npy")
    np.testing.assert_allclose(first[1, 2], [1, 0, 0], atol=0.02)


SIZES = {"one-pixel": (1, 1), "one-row": (1, 50), "one-column": (50, 1), "two": (2, 3)}


@pytest.mark.parametrize("border", ["reflect", "symmetric", "edge", "wrap", "constant"])
@pytest.mark.parametrize("size", SIZES, ids=list(SIZES))
def test_tiny_images_with_kernels_larger_than_the_image(
    workdir: Path, size: str, border: str
) -> None:
    """A 7×7 kernel on 1×1, 1×50, 50×1 and 2×3 images: same, full and N pad by numpy.pad's
    rules (repeated as often as needed); valid has no output, a clear error."""
    height, width = SIZES[size]
    rng = np.random.default_rng(height * 100 + width)
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save("tiny.png")
    (workdir / "k7.yaml").write_text("filters:\n  - kernel: {box: {size: 7}}\n")
    expected = {"same": (height, width), "full": (height + 6, width + 6),
                "2": (height - 2, width - 2), "5": (height + 4, width + 4)}  # fmt: skip
    for padding, (out_h, out_w) in expected.items():
        target = f"o-{padding}.npy"
        result = run("apply", "tiny.png", "-f", "k7.yaml", "--padding", padding,
                     "--border", border, "-o", target)  # fmt: skip
        if out_h < 1 or out_w < 1:
            assert_refused(result, 2, ("tiny.png", "the output would be empty"))
            continue
        assert result.exit_code == 0, result.output
        out = np.load(workdir / target)
        assert out.shape == (out_h, out_w, 1)
        assert np.isfinite(out).all()
    result = run("apply", "tiny.png", "-f", "k7.yaml", "--padding", "valid", "-o", "v.npy")
    assert_refused(result, 2, ("tiny.png", "k7", "covers 7×7 pixels", "the output would be empty"))
    assert not (workdir / "v.npy").exists()


# --- output and process faults --------------------------------------------------------------


@dataclass(frozen=True)
class BadOutput:
    """An output that must be refused before anything is written."""

    name: str
    args: tuple[str, ...]
    code: int
    fragments: tuple[str, ...]


BAD_OUTPUTS = [
    BadOutput("two-channels-one-file", ("-f", "edges", "--split", "-o", "o/x{name:.0}.png"), 2,
              ("maps two output channels to the same file", "{index}")),
    BadOutput("every-channel-one-file", ("-f", "edges", "--split", "-o", "o/all.png"), 2,
              ("would write every channel to the same file",)),
    BadOutput("input", ("-f", "edges", "-o", "input.png"), 2,
              ("input.png is the input", "never overwrites its input")),
    BadOutput("input-by-symlink", ("-f", "edges", "-o", "link.png"), 2, ("is the input",)),
    BadOutput("input-by-hard-link", ("-f", "edges", "-o", "hard.png"), 2, ("is the input",)),
    BadOutput("input-in-split", ("-f", "grayscale", "--split", "-o", "{stem}{name:.0}.png"), 2,
              ("is the input",)),
    BadOutput("directory", ("-f", "edges", "-o", "folder.png"), 2, ("folder.png is a directory",)),
    BadOutput("under-a-file", ("-f", "edges", "-o", "plain/x.png"), 1,
              ("plain/x.png", "a parent of this path is a file")),
    BadOutput("format-cannot-store", ("-f", "color_edges", "-o", "four.png"), 2,
              ("the result has 4 channels", "PNG stores 1")),
    BadOutput("too-large", ("-f", "edges", "--padding", "100000", "-o", "big.png"), 2,
              ("input.png", "too large for memory", "GiB", "available")),
    BadOutput("too-large-dilated", ("-f", "edges", "--dilation", "70000", "--padding", "full",
                                    "-o", "big.png"), 2, ("too large for memory", "GiB")),
    BadOutput("too-large-later-layer", ("-f", "edges", "-f", "pad.yaml", "-o", "big.png"), 2,
              ("layer 2 (bank 'pad')", "GiB")),
]  # fmt: skip


@pytest.mark.parametrize("case", BAD_OUTPUTS, ids=[case.name for case in BAD_OUTPUTS])
def test_bad_outputs_are_refused_before_anything_is_written(workdir: Path, case: BadOutput) -> None:
    shutil.copyfile(PATTERN, workdir / "input.png")
    (workdir / "link.png").symlink_to(workdir / "input.png")
    os.link(workdir / "input.png", workdir / "hard.png")
    (workdir / "folder.png").mkdir()
    (workdir / "plain").write_text("a file, not a directory")
    (workdir / "pad.yaml").write_text("defaults: {padding: 200000}\nfilters: [{kernel: box}]\n")
    before = everything(workdir)
    result = run("apply", "input.png", *case.args)
    assert_refused(result, case.code, case.fragments)
    assert everything(workdir) == before
    assert (workdir / "input.png").read_bytes() == PATTERN.read_bytes()


def test_missing_output_directories_are_created(workdir: Path) -> None:
    result = run("apply", PATTERN, "-f", "edges", "--split", "-o", "a/b/{name}.png")
    assert result.exit_code == 0, result.output
    assert len(list((workdir / "a" / "b").iterdir())) == 3


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_directory(workdir: Path) -> None:
    (workdir / "locked").mkdir(mode=0o555)
    result = run("apply", PATTERN, "-f", "edges", "--split", "-o", "locked/new/{name}.png")
    assert_refused(result, 1, ("locked/new", "Permission denied"))
    assert everything(workdir) == {"locked"}


@pytest.mark.parametrize(
    ("code", "text"), [(errno.EACCES, "Permission denied"), (errno.EROFS, "Read-only")]
)
def test_a_directory_that_refuses_files(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, code: int, text: str
) -> None:
    """As a read-only directory or file system answers (also when running as root)."""

    def refuse(path: Path) -> int:
        raise OSError(code, os.strerror(code), str(path))

    monkeypatch.setattr(volume_module, "_create_temporary", refuse)
    result = run("apply", PATTERN, "-f", "edges", "--split", "-o", "made/{name}.png")
    assert_refused(result, 1, ("made/", text))
    assert everything(workdir) == set()  # the directory made for the outputs is gone too


def test_full_disk_halfway_leaves_nothing(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The second of three files hits ENOSPC while written: none of them appears."""
    (workdir / "out").mkdir()
    (workdir / "out" / "blue_horizontal.png").write_bytes(b"the user's old file")
    real = volume_module.encode_volume
    calls: list[str] = []

    lock = threading.Lock()

    def filling(stream, volume, fmt, **options):  # type: ignore[no-untyped-def]
        with lock:  # the files are written on parallel threads: count before writing
            calls.append(options["target"])
            second = len(calls) == 2
        real(stream, volume, fmt, **options)
        if second:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(volume_module, "encode_volume", filling)
    result = run("apply", PATTERN, "-f", "edges", "--split", "-o", "out/{name}.png")
    assert_refused(result, 1, ("out/", "No space left on device"))
    assert everything(workdir) == {"out", "out/blue_horizontal.png"}
    assert (workdir / "out" / "blue_horizontal.png").read_bytes() == b"the user's old file"


def convvol_process(
    *args: str | os.PathLike[str], prelude: str = "", **options: object
) -> subprocess.Popen[bytes]:
    """``python -m convvol ARGS``, after ``prelude`` (Python run in the child first)."""
    start = "; ".join([*filter(None, [prelude]), "import runpy",
                       "runpy.run_module('convvol', run_name='__main__')"])  # fmt: skip
    return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
        [sys.executable, "-c", start, *map(str, args)], env=ENV,
        preexec_fn=default_interrupts, **options,
    )  # fmt: skip


def default_interrupts() -> None:
    """In the child: SIGINT as a terminal delivers it, even when the tests themselves run
    in the background (a shell's `&` makes them ignore it, and children inherit that)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


# In the child: files of at most 64 KiB; beyond, write() fails with EFBIG (a full disk's
# cousin that needs no root). SIGXFSZ ignored, as Python itself does.
LIMIT_FILE_SIZE = (
    "import resource, signal; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
    "resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, resource.RLIM_INFINITY))"
)


@pytest.mark.parametrize("output", ["big.png", "big.npy", "out/{name}.npy"])
def test_file_size_limit_leaves_no_partial_file(workdir: Path, output: str) -> None:
    split = ["--split"] if "{name}" in output else []
    process = convvol_process("apply", PHOTO, "-f", "edges", *split, "-o", output,
                              "--compress-level", "0", cwd=workdir, stderr=subprocess.PIPE,
                              prelude=LIMIT_FILE_SIZE)  # fmt: skip
    _, stderr = process.communicate(timeout=120)
    message = stderr.decode()
    assert process.returncode == 1, message
    assert message.startswith("convvol: error: ")
    assert "File too large" in message
    assert "Traceback" not in message
    assert everything(workdir) == set()


def test_full_standard_output(workdir: Path) -> None:
    with open("/dev/full", "wb") as full:
        process = convvol_process("apply", PATTERN, "-f", "edges", "-o", "-", cwd=workdir,
                                  stdout=full, stderr=subprocess.PIPE)  # fmt: skip
        _, stderr = process.communicate(timeout=120)
    assert process.returncode == 1
    assert stderr.decode().startswith(
        "convvol: error: standard output: cannot write: No space left on device"
    )


def test_reader_closing_the_pipe_is_a_quiet_exit_141(workdir: Path) -> None:
    """`| head -c 100` on a 3 MiB volume: no traceback, no message, exit 141 (as `yes`)."""
    done = subprocess.run(
        ["bash", "-c", f'"{sys.executable}" -m convvol apply "{PHOTO}" -f edges -o - '
         '--format npy | head -c 100 | wc -c; echo "status ${PIPESTATUS[0]}" >&2'],
        cwd=workdir, env=ENV, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.stdout.strip() == "100"
    assert done.stderr == "status 141\n"


def test_reader_closing_a_listing_pipe_is_quiet(workdir: Path) -> None:
    done = subprocess.run(
        ["bash", "-c", f'"{sys.executable}" -m convvol show-filter edges | head -c 10; '
         'echo "status ${PIPESTATUS[0]}" >&2'],
        cwd=workdir, env=ENV, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert len(done.stdout) == 10
    assert done.stderr in ("status 0\n", "status 141\n")  # 0 if it all fit in the pipe


@pytest.fixture
def large_input(workdir: Path) -> Path:
    """1200×1200×3: a run that takes long enough to be interrupted in each phase."""
    path = workdir / "large.npy"
    np.save(path, np.random.default_rng(5).random((1200, 1200, 3), np.float32))
    return path


def wait_for(condition: Callable[[], bool], process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while not condition():
        assert process.poll() is None, "finished before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.002)


@pytest.mark.parametrize(
    ("signum", "code", "said"),
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "stopped by SIGTERM")],
)
def test_interrupt_while_computing(
    workdir: Path, large_input: Path, signum: int, code: int, said: str
) -> None:
    """--explain prints each layer's plan before it runs: the signal lands mid-computation."""
    (workdir / "slow.yaml").write_text("filters:\n  - kernel: {gaussian: {sigma: 6}}\n")
    process = convvol_process("apply", large_input, "-f", "slow.yaml", "--method", "direct",
                              "--explain", "-o", "out/slow.png", cwd=workdir,
                              stderr=subprocess.PIPE)  # fmt: skip
    assert process.stderr is not None
    assert process.stderr.readline().startswith(b"layer 1")
    started = time.monotonic()
    process.send_signal(signum)
    _, rest = process.communicate(timeout=60)
    assert time.monotonic() - started < 10
    assert process.returncode == code
    assert rest.decode() == f"convvol: error: {said}; no output was written\n"
    assert everything(workdir) == {"large.npy", "slow.yaml"}


def test_interrupt_while_writing(workdir: Path, large_input: Path) -> None:
    """Ctrl-C once the first file's temporary exists: none of the files is left."""
    (workdir / "out").mkdir()
    process = convvol_process("apply", large_input, "-f", "edges", "-f", "blur", "--split",
                              "-o", "out/{name}.png", "--compress-level", "9", cwd=workdir,
                              stderr=subprocess.PIPE)  # fmt: skip

    def writing() -> bool:
        return any(name.endswith(".convvol-part") for name in os.listdir(workdir / "out"))

    wait_for(writing, process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    assert stderr.decode() == "convvol: error: interrupted; no output was written\n"
    assert everything(workdir) == {"large.npy", "out"}


def test_memory_error_names_the_input(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Should an allocation fail anyway (a ulimit, another process), the message is clear."""

    def exhausted(*args: object, **kwargs: object) -> None:
        raise MemoryError

    monkeypatch.setattr("convvol.jobs.run_plans", exhausted)
    monkeypatch.setattr("convvol.jobs.render_plans", exhausted)
    result = run("apply", PATTERN, "-f", "edges", "-o", "x.png")
    assert_refused(result, 1, (str(PATTERN), "not enough memory"))
    assert everything(workdir) == set()
