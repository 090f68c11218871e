#!/usr/bin/env python
"""Measure convvol at scale: batch throughput, and peak memory of the out-of-core path.

Run from the repository root:

    python benchmarks/scale.py                    # both parts (about 3 minutes on 2 cores)
    python benchmarks/scale.py --files 200 --volumes 0.5,2 --budget 128M   # smaller
    python benchmarks/scale.py --no-ooc --markdown

Batch: N seeded RGB PNGs filtered by ``convvol apply DIR -f BANK -o 'out/{stem}.png'``
with ``--jobs 1`` and ``--jobs 2`` (and one ``convvol`` process per file, two at a time,
for comparison), process start included. Files/s, and CPU seconds ÷ wall seconds of the
whole process tree (2.0 = both cores busy).

Out of core: seeded float32 ``.npy`` volumes of the given sizes (GiB) filtered to
``.npy`` with ``--max-memory BUDGET``, each run in a fresh child whose peak RSS is
``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`` of a measuring process around it (the
whole convvol process: interpreter, libraries, mapped pages). The in-memory path
(``np.load`` + ``apply_bank`` + ``np.save``) runs the same way for comparison, and the
two outputs are compared bit for bit.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MIB = 2**20
GIB = 2**30
REPO = Path(__file__).resolve().parents[1]
IN_MEMORY = """
import sys, numpy as np, convvol
volume = np.load(sys.argv[1])
result = convvol.apply_bank(volume, convvol.load_bank(sys.argv[3]))
np.save(sys.argv[2], result)
"""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def measured(command: list[str], cwd: Path) -> dict[str, float]:
    """Run ``command`` in a fresh measuring process: wall time, CPU time, peak RSS."""
    probe = [sys.executable, __file__, "--_measure", json.dumps(command)]
    done = subprocess.run(probe, cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def measure_child(command: list[str]) -> None:
    """In the measuring process: run the command, report its tree's usage."""
    started = time.perf_counter()
    done = subprocess.run(command, check=False, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)  # fmt: skip
    wall = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode not in (0, 1):
        print(done.stderr, file=sys.stderr)
        raise SystemExit(done.returncode)
    print(json.dumps({
        "wall": wall, "cpu": usage.ru_utime + usage.ru_stime,
        "peak_mib": usage.ru_maxrss / 1024, "returncode": done.returncode,
    }))  # fmt: skip


def convvol_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "convvol", *args]


def batch_part(work: Path, files: int, size: int, bank: str) -> list[list[str]]:
    from PIL import Image

    images = work / "images"
    images.mkdir()
    rng = np.random.default_rng(2024)
    base = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    for index in range(files):
        noise = rng.integers(-12, 13, (size, size, 3))
        pixels = np.clip(base.astype(int) + noise, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(images / f"img{index:05d}.png")
    log(f"batch: {files} PNGs of {size}×{size}×3, bank {bank}")
    rows = []
    for jobs in (1, 2):
        out = work / f"out{jobs}"
        result = measured(
            convvol_command("apply", "images", "-f", bank, "-o", f"{out.name}/{{stem}}.png",
                            "--jobs", str(jobs), "-q"), work,
        )  # fmt: skip
        assert len(list(out.iterdir())) == files
        rows.append([f"`convvol apply images/ --jobs {jobs}`", f"{files}",
                     f"{result['wall']:.1f} s", f"{files / result['wall']:.0f}",
                     f"{result['cpu'] / result['wall']:.2f}"])  # fmt: skip
        log(f"  --jobs {jobs}: {result['wall']:.1f} s")
    per_file = min(files, 100)
    script = (
        f"ls images | head -n {per_file} | xargs -P 2 -I{{}} "
        f"{sys.executable} -m convvol apply images/{{}} -f {bank} -o single/{{}} -q"
    )
    result = measured(["bash", "-c", script], work)
    rows.append([f"one `convvol apply` per file, 2 at a time ({per_file} files)",
                 f"{per_file}", f"{result['wall']:.1f} s", f"{per_file / result['wall']:.1f}",
                 f"{result['cpu'] / result['wall']:.2f}"])  # fmt: skip
    log(f"  one process per file: {result['wall']:.1f} s for {per_file}")
    for directory in ("images", "out1", "out2", "single"):
        shutil.rmtree(work / directory, ignore_errors=True)
    return rows


def out_of_core_part(work: Path, sizes: list[float], budget: str, bank: str) -> list[list[str]]:
    rows = []
    for gib in sizes:
        height = int(gib * GIB / (4096 * 3 * 4))
        path = work / "volume.npy"
        volume = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32,
                                           shape=(height, 4096, 3))  # fmt: skip
        rng = np.random.default_rng(7)
        for first in range(0, height, 1024):
            last = min(first + 1024, height)
            volume[first:last] = rng.random((last - first, 4096, 3), dtype=np.float32)
        volume.flush()
        del volume
        size_mib = path.stat().st_size / MIB
        log(f"out of core: {height}×4096×3 float32 ({size_mib:.0f} MiB), --max-memory {budget}")
        streamed = measured(
            convvol_command("apply", "volume.npy", "-f", bank, "-o", "streamed.npy",
                            "--max-memory", budget, "-q"), work,
        )  # fmt: skip
        in_memory = measured([sys.executable, "-c", IN_MEMORY, "volume.npy", "memory.npy", bank],
                             work)  # fmt: skip
        same = _same(work / "streamed.npy", work / "memory.npy")
        rows.append([f"{height}×4096×3 ({size_mib:.0f} MiB)", budget,
                     f"{streamed['peak_mib']:.0f} MiB", f"{streamed['wall']:.1f} s",
                     f"{in_memory['peak_mib']:.0f} MiB", f"{in_memory['wall']:.1f} s",
                     "yes" if same else "NO"])  # fmt: skip
        log(f"  peak {streamed['peak_mib']:.0f} MiB streamed, {in_memory['peak_mib']:.0f} MiB "
            f"in memory; identical: {same}")  # fmt: skip
        for name in ("volume.npy", "streamed.npy", "memory.npy"):
            (work / name).unlink()
    return rows


def _same(first: Path, second: Path) -> bool:
    a, b = np.load(first, mmap_mode="r"), np.load(second, mmap_mode="r")
    if a.shape != b.shape:
        return False
    return all(np.array_equal(a[i : i + 512], b[i : i + 512]) for i in range(0, len(a), 512))


def table(header: list[str], rows: list[list[str]], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=True)]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True))
                     for row in [header, *rows])  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=1000, help="batch size (default 1000)")
    parser.add_argument("--size", type=int, default=256, help="image side (default 256)")
    parser.add_argument("--bank", default="edges", help="bank for both parts (default edges)")
    parser.add_argument("--volumes", default="1,2", help="GiB per .npy volume (default 1,2)")
    parser.add_argument("--budget", default="256M", help="--max-memory (default 256M)")
    parser.add_argument("--ooc", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--batch", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--markdown", action="store_true", help="tables as GitHub markdown")
    parser.add_argument("--_measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._measure:
        measure_child(json.loads(args._measure))
        return
    machine = platform.processor() or platform.machine()
    print(f"# convvol scale benchmark: {machine}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, NumPy {np.__version__}, "
          f"load average {os.getloadavg()[0]:.2f}")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="convvol-scale-", dir=REPO) as scratch:
        work = Path(scratch)
        shutil.copytree(REPO / "filters", work / "filters")
        if args.batch:
            rows = batch_part(work, args.files, args.size, args.bank)
            print(f"\n## Batch: {args.files} PNGs of {args.size}×{args.size}×3, -f {args.bank}\n")
            print(table(["run", "files", "time", "files/s", "CPU ÷ wall"], rows, args.markdown))
        if args.ooc:
            sizes = [float(s) for s in args.volumes.split(",")]
            rows = out_of_core_part(work, sizes, args.budget, args.bank)
            print(f"\n## Out of core: .npy → .npy, -f {args.bank}\n")
            print(table(["volume", "--max-memory", "peak RSS", "time", "in memory: peak RSS",
                         "time", "identical"], rows, args.markdown))  # fmt: skip
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
