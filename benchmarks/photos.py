#!/usr/bin/env python
"""A folder of photos: convvol's command line against the scripts and tools people use.

Run from the repository root:

    python benchmarks/photos.py                 # the full run (about 5 minutes on 2 cores)
    python benchmarks/photos.py --quick         # a smoke test of every part (about 1 minute)

Sections (each can be left out with --sections):

- ``folder``: N synthetic 3000×2000 JPEGs (quality 95, an sRGB ICC profile and EXIF make,
  model and dates; fixed seed) sharpened (3×3, per channel) to JPEG quality 95 by each tool
  using both cores: ``convvol apply 'in/*.jpg' -f sharpen -o 'out/{stem}.jpg'`` (its own
  workers), an OpenCV script (``multiprocessing.Pool(2)`` around ``cv2.imread``,
  ``filter2D``, ``imwrite``), ``vips conv`` and ImageMagick's ``-morphology Convolve``,
  each under ``xargs -P 2``;
- ``single``: one such photo, one process, start-up included: ``convvol apply``, an
  OpenCV ``python -c`` one-liner, ``vips conv``, ImageMagick;
- ``png16``: a folder of 16-bit RGB PNGs, written as 16-bit PNGs;
- ``small``: a folder of small (640×480) JPEGs, where start-up and per-file costs dominate;
- ``stages``: where one photo's CPU time goes (decode, sharpen, encode), convvol's stages
  and OpenCV's, each on one thread over every photo of the folder in turn.

Each section runs every tool once to warm up, then ``--rounds`` rounds, the order of the
tools rotated from round to round (the machine's load drifts; alternating keeps every tool
under the same conditions), and reports the median. Per run: wall time, CPU time of the
whole process tree (``os.wait4``), and, sampled every 20 ms, the largest peak RSS of any
one process and the most the tree held at once. Then it checks every tool's output:

- pixels: each tool filters the first input once more to a lossless PNG, whose interior
  (borders differ by tool) is compared with an exact integer sharpen of the input as
  Pillow decodes it: PASS within one level. The JPEG outputs themselves are lossy; their
  mean difference from the same reference is shown for information;
- metadata: whether the output JPEG carries the input's ICC profile and its EXIF make,
  model and date (read back with Pillow).

Tools that are not installed are skipped with a note. Tables go to standard output as
Markdown, progress to standard error.
"""

from __future__ import annotations

import argparse
import io
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SEED = 2026
SHARPEN = [[0, -1, 0], [-1, 5, -1], [0, -1, 0]]
MAKE, MODEL, DATE = "convvol bench", "synthetic 3000x2000", "2026:12:06 12:00:00"
MIB = 2**20


# ---------------------------------------------------------------------------- inputs


def _base_photo(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Photo-like float planes in [0, 1]: smooth gradients and soft coloured blobs."""
    yy = (np.arange(height, dtype=np.float32) / np.float32(height))[:, None]
    xx = (np.arange(width, dtype=np.float32) / np.float32(width))[None, :]
    planes = np.empty((height, width, 3), np.float32)
    blobs = [(rng.random(), rng.random(), 0.03 + 0.12 * rng.random(), rng.random(3) - 0.5)
             for _ in range(12)]  # fmt: skip
    for c in range(3):
        plane = 0.45 + 0.25 * np.sin(2 * np.pi * (0.6 + 0.3 * c) * xx + 1.7 * c) * np.cos(
            2 * np.pi * (0.4 + 0.2 * c) * yy
        )
        plane = plane + 0.2 * (xx if c != 1 else yy)
        for by, bx, radius, tint in blobs:
            bump = np.exp(-((yy - by) ** 2) / (2 * radius**2)) * np.exp(
                -((xx - bx) ** 2) / (2 * radius**2)
            )
            plane = plane + np.float32(tint[c] * 0.6) * bump
        planes[:, :, c] = plane
    return planes


def make_photos(
    folder: Path, count: int, height: int, width: int, *, kind: str = "jpeg", seed: int = SEED
) -> list[Path]:
    """``count`` seeded photos in ``folder``: JPEG (quality 95, sRGB ICC, EXIF) or 16-bit
    RGB PNG. Each is the same scene shifted, with its own sensor-like noise."""
    from PIL import Image, ImageCms

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    base = _base_photo(height, width, rng)
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    paths = []
    for number in range(count):
        shifted = np.roll(base, (int(rng.integers(height)), int(rng.integers(width))), (0, 1))
        noise = rng.normal(0.0, 0.03, shifted.shape).astype(np.float32)
        if kind == "jpeg":
            pixels = np.clip((shifted + noise) * 255 + 0.5, 0, 255).astype(np.uint8)
            exif = Image.Exif()
            exif[0x010F], exif[0x0110], exif[0x0132] = MAKE, MODEL, DATE
            exif.get_ifd(0x8769)[0x9003] = DATE  # DateTimeOriginal
            path = folder / f"photo{number:04d}.jpg"
            Image.fromarray(pixels, "RGB").save(path, quality=95, icc_profile=icc, exif=exif)
        else:
            pixels = np.clip((shifted + noise) * 65535 + 0.5, 0, 65535).astype(np.uint16)
            path = folder / f"photo{number:04d}.png"
            write_png16(path, pixels)
        paths.append(path)
    return paths


def write_png16(path: Path, pixels: np.ndarray) -> None:
    """A 48-bit RGB PNG (Pillow cannot write one): OpenCV if installed, else our own."""
    try:
        import cv2

        cv2.imwrite(str(path), np.ascontiguousarray(pixels[:, :, ::-1]))
        return
    except ImportError:
        pass
    import struct
    import zlib

    height, width, _ = pixels.shape
    rows = pixels.astype(">u2").reshape(height, width * 6 // 2).view(np.uint8)
    raw = np.concatenate([np.zeros((height, 1), np.uint8), rows.reshape(height, -1)], axis=1)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body))
            + kind
            + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    body = zlib.compress(raw.tobytes(), 1)
    signature = b"\x89PNG\r\n\x1a\n"
    path.write_bytes(
        signature + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")
    )


def decode(path: Path) -> np.ndarray:
    """A file's pixels as H×W×3 (uint8 or uint16), 16-bit PNGs whole (Pillow keeps 8 bits
    of them), JPEGs as Pillow decodes them."""
    from PIL import Image

    if path.suffix.lower() == ".png":
        with open(path, "rb") as stream:
            bit_depth = stream.read(25)[24]
        if bit_depth == 16:
            return _decode_png16(path)
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _decode_png16(path: Path) -> np.ndarray:
    try:
        import imagecodecs

        return np.asarray(imagecodecs.png_decode(path.read_bytes()))[:, :, :3]
    except ImportError:
        import cv2

        pixels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if pixels is None:
            raise ValueError(f"{path}: not a PNG OpenCV can read") from None
        return np.asarray(pixels)[:, :, 2::-1]


def sharpen_reference(pixels: np.ndarray) -> np.ndarray:
    """The exact integer sharpen of the interior (every tool's borders differ), clipped."""
    p = pixels.astype(np.int64)
    interior = 5 * p[1:-1, 1:-1] - p[:-2, 1:-1] - p[2:, 1:-1] - p[1:-1, :-2] - p[1:-1, 2:]
    return np.clip(interior, 0, np.iinfo(pixels.dtype).max)


# ----------------------------------------------------------------------------- tools


@dataclass(frozen=True)
class Job:
    """What a tool is asked: filter ``inputs`` (in ``folder``) to ``out`` with ``suffix``."""

    folder: Path
    inputs: tuple[Path, ...]
    out: Path
    suffix: str  # ".jpg" or ".png"
    depth: int = 8

    def target(self, source: Path) -> Path:
        return self.out / (source.stem + self.suffix)


@dataclass(frozen=True)
class Tool:
    """A tool: the command (argv, and what it reads on standard input) for a folder job."""

    name: str
    command: Callable[[Job], tuple[list[str], bytes | None]]
    single: Callable[[Path, Path], list[str]] | None = None  # one photo, one process


OPENCV_POOL = """
import os, sys
from multiprocessing import Pool
import cv2
import numpy as np

KERNEL = np.array({kernel!r}, np.float32)


def one(job):
    source, target = job
    image = cv2.imread(source, cv2.IMREAD_UNCHANGED)
    sharp = cv2.filter2D(image, -1, KERNEL, borderType=cv2.BORDER_REFLECT_101)
    params = ([cv2.IMWRITE_JPEG_QUALITY, 95] if target.endswith(".jpg")
              else [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not cv2.imwrite(target, sharp, params):
        raise SystemExit("cannot write " + target)


if __name__ == "__main__":
    out, suffix = sys.argv[1], sys.argv[2]
    jobs = [(line, os.path.join(out, os.path.splitext(os.path.basename(line))[0] + suffix))
            for line in sys.stdin.read().splitlines() if line]
    with Pool(2) as pool:
        pool.map(one, jobs, chunksize=1)
"""

OPENCV_ONE_LINER = (
    "import sys, cv2, numpy as np; k = np.array({kernel!r}, np.float32); "
    "cv2.imwrite(sys.argv[2], cv2.filter2D(cv2.imread(sys.argv[1]), -1, k, "
    "borderType=cv2.BORDER_REFLECT_101), [cv2.IMWRITE_JPEG_QUALITY, 95])"
)


def _file_list(job: Job) -> bytes:
    return b"".join(os.fsencode(path) + b"\0" for path in job.inputs)


def _xargs(per_file: str, job: Job) -> tuple[list[str], bytes]:
    """``xargs -0 -P 2 -n 1 sh -c PER_FILE`` over the inputs; PER_FILE sees $0 (the input)
    and $b (its stem)."""
    script = "b=${0##*/}; b=${b%.*}; " + per_file
    return ["xargs", "-0", "-P", "2", "-n", "1", "sh", "-c", script], _file_list(job)


def find_tools(work: Path) -> tuple[list[Tool], list[str]]:
    """The tools installed here, and a note for each one that is not."""
    tools: list[Tool] = []
    missing: list[str] = []
    python = sys.executable
    script = Path(python).with_name("convvol")
    convvol = [str(script)] if script.exists() else [python, "-m", "convvol"]

    def convvol_folder(job: Job) -> tuple[list[str], bytes | None]:
        depth = ["--depth", "16"] if job.depth == 16 else []
        quality = ["--quality", "95"] if job.suffix == ".jpg" else []  # as the others write
        pattern = str(job.folder / ("*" + job.inputs[0].suffix))
        return [*convvol, "apply", pattern, "-f", "sharpen", "-o",
                str(job.out / ("{stem}" + job.suffix)), "-q", *depth, *quality], None  # fmt: skip

    tools.append(Tool("convvol", convvol_folder,
                      lambda src, dst: [*convvol, "apply", str(src), "-f", "sharpen", "-o",
                                        str(dst), "-q", "--quality", "95"]))  # fmt: skip

    try:
        import cv2  # noqa: F401

        pool_script = work / "opencv_pool.py"
        pool_script.write_text(OPENCV_POOL.format(kernel=SHARPEN))
        one_liner = OPENCV_ONE_LINER.format(kernel=SHARPEN)
        tools.append(Tool(
            "OpenCV script", lambda job: ([python, str(pool_script), str(job.out), job.suffix],
                                          "\n".join(map(str, job.inputs)).encode()),
            lambda src, dst: [python, "-c", one_liner, str(src), str(dst)],
        ))  # fmt: skip
    except ImportError:
        missing.append("OpenCV script: cv2 is not installed (pip install opencv-python-headless)")

    vips = shutil.which("vips")
    if vips:
        matrix = work / "sharpen.mat"
        matrix.write_text("3 3 1 0\n" + "\n".join(" ".join(map(str, r)) for r in SHARPEN) + "\n")

        def vips_folder(job: Job) -> tuple[list[str], bytes | None]:
            options = "[Q=95]" if job.suffix == ".jpg" else "[compression=1]"
            target = f'{shlex.quote(str(job.out) + "/")}"$b"{shlex.quote(job.suffix + options)}'
            command = f'exec {shlex.quote(vips)} conv "$0" {target} {shlex.quote(str(matrix))}'
            return _xargs(command, job)

        def vips_single(source: Path, target: Path) -> list[str]:
            return [vips, "conv", str(source), f"{target}[Q=95]", str(matrix)]

        tools.append(Tool("libvips (vips conv)", vips_folder, vips_single))
    else:
        missing.append("libvips: vips is not installed (apt-get install libvips-tools)")

    magick = find_imagemagick()
    if magick:
        kernel = "3x3: " + " ".join(",".join(map(str, r)) for r in SHARPEN)
        command = " ".join(map(shlex.quote, magick))

        def magick_options(suffix: str) -> list[str]:
            return (
                ["-quality", "95"] if suffix == ".jpg" else ["-define", "png:compression-level=1"]
            )

        def magick_folder(job: Job) -> tuple[list[str], bytes | None]:
            options = " ".join(magick_options(job.suffix))
            target = f'{shlex.quote(str(job.out) + "/")}"$b"{shlex.quote(job.suffix)}'
            return _xargs(f'exec {command} "$0" -morphology Convolve {shlex.quote(kernel)} '
                          f"{options} {target}", job)  # fmt: skip

        def magick_single(source: Path, target: Path) -> list[str]:
            return [*magick, str(source), "-morphology", "Convolve", kernel,
                    *magick_options(".jpg"), str(target)]  # fmt: skip

        tools.append(Tool("ImageMagick (-morphology Convolve)", magick_folder, magick_single))
    else:
        missing.append("ImageMagick: neither magick nor convert is installed")
    return tools, missing


def find_imagemagick() -> list[str] | None:
    """IM7's magick or IM6's convert, never a stand-in script of the same name."""
    for candidate in (shutil.which("magick"), "/usr/bin/convert", shutil.which("convert")):
        if not candidate or not os.path.exists(candidate):
            continue
        try:
            with open(candidate, "rb") as stream:
                if b"Stands in for ImageMagick" in stream.read(4096):
                    continue
            version = subprocess.run([candidate, "-version"], capture_output=True, text=True,
                                     timeout=20).stdout  # fmt: skip
        except (OSError, subprocess.SubprocessError):
            continue
        if "ImageMagick" in version:
            return [os.path.realpath(candidate)]
    return None


# ------------------------------------------------------------------------- measuring


@dataclass
class Run:
    """One timed run of a command."""

    seconds: float
    cpu_seconds: float  # user + system of the whole process tree
    peak_process: int  # bytes: the largest peak RSS of any process (sampled VmHWM)
    peak_tree: int  # bytes: the most the tree's processes held at once (sampled)


class TreeSampler(threading.Thread):
    """Samples a process and its descendants every ``interval`` seconds: the most their
    resident memory summed to, and the largest peak (VmHWM) of any one of them."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak_tree = self.peak_process = 0
        self.done = threading.Event()

    def _tree(self) -> list[int]:
        pids, queue = [], [self.pid]
        while queue:
            pid = queue.pop()
            pids.append(pid)
            try:
                for task in os.listdir(f"/proc/{pid}/task"):
                    with open(f"/proc/{pid}/task/{task}/children") as stream:
                        queue.extend(int(child) for child in stream.read().split())
            except OSError:
                continue
        return pids

    def sample(self) -> None:
        total = 0
        for pid in self._tree():
            try:
                with open(f"/proc/{pid}/status") as stream:
                    fields = dict(line.split(":", 1) for line in stream if ":" in line)
                total += int(fields["VmRSS"].split()[0]) * 1024
                hwm = int(fields["VmHWM"].split()[0]) * 1024
            except (OSError, KeyError, ValueError):
                continue  # gone, or a zombie without memory
            self.peak_process = max(self.peak_process, hwm)
        self.peak_tree = max(self.peak_tree, total)

    def run(self) -> None:
        while not self.done.wait(self.interval):
            self.sample()


def run_command(argv: list[str], stdin: bytes | None = None) -> Run:
    """Run a command to its end, measured; raise RuntimeError with its stderr if it fails."""
    started = time.perf_counter()
    process = subprocess.Popen(argv, stdin=subprocess.PIPE if stdin is not None else None,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    sampler = TreeSampler(process.pid)
    sampler.start()
    errors = io.BytesIO()

    def feed() -> None:  # stdin and stderr from threads, so neither pipe can fill up
        if stdin is not None and process.stdin is not None:
            with suppress(BrokenPipeError):
                process.stdin.write(stdin)
                process.stdin.close()

    def drain() -> None:
        assert process.stderr is not None
        errors.write(process.stderr.read())

    helpers = [threading.Thread(target=feed), threading.Thread(target=drain)]
    for helper in helpers:
        helper.start()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    sampler.done.set()
    for helper in (*helpers, sampler):
        helper.join()
    if process.returncode != 0:
        message = errors.getvalue().decode(errors="replace").strip().splitlines() or ["?"]
        raise RuntimeError(f"exit {process.returncode}: {message[-1][:200]}")
    cpu = usage.ru_utime + usage.ru_stime
    return Run(seconds, cpu, sampler.peak_process, sampler.peak_tree)


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@dataclass
class Row:
    """A tool's results in one section."""

    tool: str
    runs: list[Run] = field(default_factory=list)
    error: str | None = None
    pixels: str = "—"
    jpeg_error: str = "—"
    icc: str = "—"
    exif: str = "—"


def clean(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)


def timed_rounds(
    tools: Sequence[Tool],
    commands: Callable[[Tool, Path], tuple[list[str], bytes | None]],
    work: Path,
    rounds: int,
    label: str,
) -> dict[str, Row]:
    """A warm-up run of every tool, then ``rounds`` rounds, the order of the tools rotated
    each round. ``commands(tool, out)`` gives the command writing into ``out``."""
    rows = {tool.name: Row(tool.name) for tool in tools}
    for number in range(rounds + 1):
        shift = number % len(tools)
        for tool in [*tools[shift:], *tools[:shift]]:
            row = rows[tool.name]
            if row.error:
                continue
            out = work / "out" / _slug(tool.name)
            clean(out)
            argv, stdin = commands(tool, out)
            what = "warm-up" if number == 0 else f"round {number}/{rounds}"
            log(f"[{label}] {what}: {tool.name}")
            try:
                run = run_command(argv, stdin)
            except RuntimeError as error:
                row.error = str(error)
                continue
            if number:
                row.runs.append(run)
    return rows


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


# -------------------------------------------------------------------------- checking


def check_outputs(
    rows: dict[str, Row],
    tools: Sequence[Tool],
    job: Job,
    outputs: dict[str, Path],
    work: Path,
) -> None:
    """Pixels (a lossless PNG of the first input by each tool, against the exact integer
    sharpen) and, for JPEG outputs, the lossy output's difference and its metadata."""
    from PIL import Image

    source = job.inputs[0]
    pixels = decode(source)
    reference = sharpen_reference(pixels)
    top = np.iinfo(pixels.dtype).max
    with Image.open(source) as image:
        icc_in = image.info.get("icc_profile")
    folder = work / "check" / "in"
    clean(folder)
    os.link(source, folder / source.name)
    for tool in tools:
        row = rows[tool.name]
        if row.error:
            continue
        out = work / "check" / _slug(tool.name)
        clean(out)
        lossless = Job(folder, (folder / source.name,), out, ".png", job.depth)
        try:
            argv, stdin = tool.command(lossless)
            run_command(argv, stdin)
            result = decode(lossless.target(lossless.inputs[0]))
            worst = _worst(result, reference)
            row.pixels = ("PASS" if worst <= 1 else "FAIL") + f" {worst}"
        except (RuntimeError, OSError, ValueError) as error:
            row.pixels = f"FAIL: {error}"
        written = outputs.get(tool.name)
        if written is None or job.suffix != ".jpg":
            continue
        try:
            result = decode(written)
            difference = np.abs(result[1:-1, 1:-1].astype(np.int64) - reference)
            row.jpeg_error = f"{difference.mean():.2f} (max {int(difference.max())})"
            row.icc, row.exif = _metadata(written, icc_in)
        except (OSError, ValueError) as error:
            row.jpeg_error = f"unreadable: {error}"
    del top


def _worst(result: np.ndarray, reference: np.ndarray) -> int:
    if result.shape[:2] != (reference.shape[0] + 2, reference.shape[1] + 2):
        raise ValueError(f"size {result.shape[1]}×{result.shape[0]}")
    return int(np.abs(result[1:-1, 1:-1].astype(np.int64) - reference).max())


def _metadata(path: Path, icc_in: bytes | None) -> tuple[str, str]:
    """Whether the output kept the input's ICC profile and its EXIF make, model and date."""
    from PIL import Image

    with Image.open(path) as image:
        icc = image.info.get("icc_profile")
        exif = image.getexif()
    kept_icc = "yes" if icc and icc == icc_in else ("other" if icc else "no")
    tags = (exif.get(0x010F), exif.get(0x0110), exif.get(0x0132))
    kept_exif = "yes" if tags == (MAKE, MODEL, DATE) else ("partly" if any(tags) else "no")
    return kept_icc, kept_exif


# -------------------------------------------------------------------------- sections


def folder_section(
    title: str,
    tools: Sequence[Tool],
    folder: Path,
    inputs: list[Path],
    suffix: str,
    depth: int,
    work: Path,
    rounds: int,
    label: str,
) -> list[str]:
    """Every tool on the whole folder, then the checks; a Markdown table."""

    def command(tool: Tool, out: Path) -> tuple[list[str], bytes | None]:
        return tool.command(Job(folder, tuple(inputs), out, suffix, depth))

    rows = timed_rounds(tools, command, work, rounds, label)
    outputs = {tool.name: Job(folder, tuple(inputs), work / "out" / _slug(tool.name), suffix,
                              depth).target(inputs[0]) for tool in tools}  # fmt: skip
    log(f"[{label}] checking the outputs")
    check_outputs(rows, tools, Job(folder, tuple(inputs), work, suffix, depth), outputs, work)
    return [f"## {title}", "", *table(rows.values(), len(inputs))]


def stages_section(photos: Sequence[Path]) -> list[str]:
    """Where a photo's time goes: each stage on one thread, over every photo in turn (each
    stage gets fresh pixels, as in a batch), CPU milliseconds, median; OpenCV's beside."""
    import imagecodecs

    import convvol
    from convvol.batch import reuse_freed_memory
    from convvol.io.codecs import encode_jpeg

    reuse_freed_memory()  # as a batch worker does
    bank = convvol.load_bank("sharpen")
    times: dict[str, list[float]] = {}

    def timed(stage: str, work: Callable[[], object]) -> object:
        started = time.process_time()
        result = work()
        times.setdefault(stage, []).append(1e3 * (time.process_time() - started))
        return result

    datas = [photo.read_bytes() for photo in photos]
    for data in datas * 2:
        pixels = timed("convvol: decode (imagecodecs)", lambda: imagecodecs.jpeg8_decode(data))
        sharp = timed("convvol: sharpen (integer path)", lambda: convvol.render_layers(
            pixels, [bank], divisor=255.0, threads=1).pixels)  # fmt: skip
        timed("convvol: encode (imagecodecs, Pillow's bytes)",
              lambda: encode_jpeg(sharp, {"quality": 95}))  # fmt: skip
    try:
        import cv2
    except ImportError:
        cv2 = None
    if cv2 is not None:
        cv2.setNumThreads(1)
        kernel = np.array(SHARPEN, np.float32)
        for data in datas * 2:
            raw = np.frombuffer(data, np.uint8)
            image = timed("OpenCV: imdecode", lambda: cv2.imdecode(raw, cv2.IMREAD_UNCHANGED))
            sharp = timed("OpenCV: filter2D", lambda: cv2.filter2D(
                image, -1, kernel, borderType=cv2.BORDER_REFLECT_101))  # fmt: skip
            timed("OpenCV: imencode", lambda: cv2.imencode(".jpg", sharp,
                                                           [cv2.IMWRITE_JPEG_QUALITY, 95]))  # fmt: skip
    lines = [f"## Where one 3000×2000 photo's time goes (one thread, {len(photos)} photos × 2)",
             "", "| stage | CPU ms (median) |", "|---|---:|"]  # fmt: skip
    lines += [f"| {stage} | {statistics.median(values):.1f} |" for stage, values in times.items()]
    return lines


def single_section(tools: Sequence[Tool], photo: Path, work: Path, rounds: int) -> list[str]:
    """One photo, one process per tool, start-up included."""
    singles = [tool for tool in tools if tool.single is not None]

    def command(tool: Tool, out: Path) -> tuple[list[str], bytes | None]:
        assert tool.single is not None
        return tool.single(photo, out / "sharp.jpg"), None

    rows = timed_rounds(singles, command, work, rounds, "single")
    outputs = {tool.name: work / "out" / _slug(tool.name) / "sharp.jpg" for tool in singles}
    log("[single] checking the outputs")
    job = Job(photo.parent, (photo,), work, ".jpg", 8)
    check_outputs(rows, singles, job, outputs, work)
    height, width = decode(photo).shape[:2]
    return [f"## One {width}×{height} photo, one process, start-up included", "",
            *table(rows.values(), 1)]  # fmt: skip


def table(rows: Iterable[Row], files: int) -> list[str]:
    rows = list(rows)
    base = next((statistics.median(r.seconds for r in row.runs) for row in rows
                 if row.tool == "convvol" and row.runs), None)  # fmt: skip
    lines = [
        "| tool | median s | files/s | ÷ convvol | CPU s | CPU ÷ wall | peak MiB (process) | "
        "peak MiB (all) | pixels: max \\|Δ\\| | JPEG: mean \\|Δ\\| | ICC kept | EXIF kept |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---|---|---|",
    ]
    for row in rows:
        if row.error or not row.runs:
            lines.append(f"| {row.tool} | FAILED: {row.error} ||||||||||")
            continue
        seconds = statistics.median(run.seconds for run in row.runs)
        cpu = statistics.median(run.cpu_seconds for run in row.runs)
        busy = statistics.median(run.cpu_seconds / run.seconds for run in row.runs)
        process = max(run.peak_process for run in row.runs) / MIB
        tree = max(run.peak_tree for run in row.runs) / MIB
        ratio = f"{seconds / base:.2f}" if base else "—"
        lines.append(
            f"| {row.tool} | {seconds:.3f} | {files / seconds:.1f} | {ratio} | {cpu:.2f} | "
            f"{busy:.2f} | {process:.0f} | {tree:.0f} | {row.pixels} | {row.jpeg_error} | "
            f"{row.icc} | {row.exif} |"
        )
    return lines


# ------------------------------------------------------------------------------ main


def machine(tools: Sequence[Tool], missing: Sequence[str]) -> list[str]:
    import PIL

    import convvol

    cpu = "?"
    with suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = [f"Python {sys.version.split()[0]}", f"NumPy {np.__version__}",
                f"Pillow {PIL.__version__}"]  # fmt: skip
    with suppress(ImportError):
        import cv2

        versions.append(f"OpenCV {cv2.__version__}")
    for tool in tools:
        if tool.name.startswith("libvips"):
            versions.append(_first_line(["vips", "--version"]))
        if tool.name.startswith("ImageMagick"):
            magick = find_imagemagick() or ["convert"]
            versions.append(_first_line([*magick, "-version"]).replace("Version: ", ""))
    tree = Path(convvol.__file__).resolve().parent
    commit = _first_line(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"])
    lines = [
        f"- machine: {cpu}, {len(os.sched_getaffinity(0))} cores usable; load average "
        f"{os.getloadavg()[0]:.2f} at the start",
        f"- convvol from {tree} (commit {commit}); {', '.join(versions)}",
    ]
    lines += [f"- skipped: {note}" for note in missing]
    return lines


def _first_line(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=20)
        return (done.stdout.strip().splitlines() or ["?"])[0]
    except (OSError, subprocess.SubprocessError):
        return "?"


SECTIONS = ("folder", "single", "png16", "small", "stages")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=24, help="photos in the JPEG folder (24)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds after the warm-up")
    parser.add_argument("--small-files", type=int, default=200, help="640×480 JPEGs (200)")
    parser.add_argument("--png16-files", type=int, default=24, help="16-bit PNGs (24)")
    parser.add_argument("--png16-size", default="1536x1024", help="their W×H (1536x1024)")
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"which parts to run, of {','.join(SECTIONS)}")  # fmt: skip
    parser.add_argument("--quick", action="store_true",
                        help="4 photos, 1 round, 20 small JPEGs, 4 PNGs: a smoke test")  # fmt: skip
    parser.add_argument("--keep", type=Path, default=None,
                        help="work in this folder, kept (default: a temporary one)")  # fmt: skip
    args = parser.parse_args()
    if args.quick:
        args.files, args.rounds, args.small_files, args.png16_files = 4, 1, 20, 4
    sections = [name.strip() for name in args.sections.split(",") if name.strip()]
    if min(args.files, args.rounds, args.small_files, args.png16_files) < 1:
        parser.error("--files, --rounds, --small-files and --png16-files must be at least 1")
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    png16_width, png16_height = (int(side) for side in args.png16_size.lower().split("x"))

    import compileall

    import convvol

    # pip byte-compiles a package on install; an editable tree would compile every run.
    compileall.compile_dir(Path(convvol.__file__).parent, quiet=1)
    with tempfile.TemporaryDirectory(prefix="convvol-photos-") as temporary:
        work = args.keep or Path(temporary)
        work.mkdir(parents=True, exist_ok=True)
        tools, missing = find_tools(work)
        lines = ["# convvol on folders of photos", "", *machine(tools, missing), ""]
        photos: list[Path] = []
        if {"folder", "single", "stages"} & set(sections):
            count = args.files if {"folder", "stages"} & set(sections) else 1
            log(f"making {count} photos of 3000×2000 ...")
            photos = make_photos(work / "photos", count, 2000, 3000)
        if "folder" in sections:
            lines += folder_section(
                f"A folder of {args.files} JPEGs of 3000×2000 → JPEG quality 95", tools,
                work / "photos", photos, ".jpg", 8, work, args.rounds, "folder",
            )  # fmt: skip
            lines.append("")
        if "single" in sections:
            lines += single_section(tools, photos[0], work, args.rounds)
            lines.append("")
        if "stages" in sections:
            log("[stages] timing each stage")
            lines += stages_section(photos)
            lines.append("")
        if "png16" in sections:
            log(f"making {args.png16_files} 16-bit PNGs of {png16_width}×{png16_height} ...")
            pngs = make_photos(work / "png16", args.png16_files, png16_height, png16_width,
                               kind="png16")  # fmt: skip
            lines += folder_section(
                f"A folder of {args.png16_files} 16-bit RGB PNGs of {png16_width}×"
                f"{png16_height} → 16-bit PNG (deflate level 1)", tools, work / "png16",
                pngs, ".png", 16, work, args.rounds, "png16",
            )  # fmt: skip
            lines.append("")
        if "small" in sections:
            log(f"making {args.small_files} photos of 640×480 ...")
            small = make_photos(work / "small", args.small_files, 480, 640)
            lines += folder_section(
                f"A folder of {args.small_files} JPEGs of 640×480 → JPEG quality 95", tools,
                work / "small", small, ".jpg", 8, work, args.rounds, "small",
            )  # fmt: skip
            lines.append("")
        lines += [
            f"Median of {args.rounds} rounds after a warm-up, the tools' order rotated each "
            "round; process start included. CPU s: user + system time of the whole process "
            "tree (the work done, which a busy machine inflates less than the wall time); "
            "CPU ÷ wall: that over the wall time (2.00: both cores busy throughout). Peak MiB "
            "(process): the largest peak RSS (VmHWM) of any one process; (all): the most the "
            "tree's processes held at once, summed (shared pages counted in each); both "
            "sampled every 20 ms, so processes shorter than that are missed. Pixels: each tool "
            "filtered the first input once more to a lossless PNG, whose interior is "
            "compared with the exact integer sharpen of the input as Pillow decodes it "
            "(PASS: within one level). JPEG: the lossy output's mean (max) difference from "
            "that reference, for information. ICC/EXIF kept: the output JPEG carries the "
            "input's profile, and its EXIF make, model and date.",
            "",
            f"Load average at the end: {os.getloadavg()[0]:.2f}.",
        ]
        print("\n".join(lines))


if __name__ == "__main__":
    main()
