#!/usr/bin/env python3
"""A fault soak for convvol's batches (issue 13): many files, faults injected while they run.

It drives the real command line (``python -m convvol apply``) as a subprocess:

1. Make N small inputs from a seed: mostly valid images (PNG, JPEG, grey, RGBA, .npy, a
   PNG named .jpg) and some corrupt ones (truncated PNG, JPEG and .npy, a PNG whose
   pixel data is garbled, random bytes named .png, empty files, text named .tif).
2. A clean reference run into ref/: every valid input must succeed, every corrupt one fail.
3. The faulty run ("run A") into out/, while the script
   - SIGKILLs worker processes (found through /proc by their parent's pid; preferably
     one caught writing an output), each once the files retried after the last kill are
     done, so that each should cost no file; and once a "double kill": the first worker
     of the pool that replaces a killed one is killed as soon as it appears, so the files
     retried once die a second time and fail for good,
   - fills the output file system partway through (out/ is on a small tmpfs: a filler
     file takes all its free space, then is removed again), and holds a file-size limit
     (RLIMIT_FSIZE) on run A for the whole run, below the size of the largest outputs,
   - starts a second convvol ("run B") on a slice of the same inputs, in reverse order,
     writing into the same out/ with the same template.
4. Check the invariants, then resume with ``--skip-existing`` and check them again.

The invariants (any one failing makes the exit status 1):

- every file in out/ is the output of a valid input and byte-identical to ref/ (a PNG
  that differs in bytes but not pixels is counted apart, and is a failure too);
- no hidden file (``.*.convvol-part``, ``.*.convvol-backup``, anything starting with
  ".") is left in out/, after the faulty run and after the resume;
- "the summary lists exactly the failures": the per-file ``convvol: error: FILE: ...``
  lines of a run name exactly the files that failed, and each such file is a corrupt
  input (with the same message as in the clean run) or a valid input that an injected
  fault explains: "No space left on device" printed while the disk was full, "File too
  large" for an output that the clean run made larger than the size limit (and every
  such file fails), "the worker process died on it" printed after two kills (which files
  a pool holds at a kill cannot be told from outside; how many may die so is bounded:
  a window of 4 × jobs per kill after the first). The summary lines agree:
  ``S succeeded, F failed, K skipped`` with F the failures and S + F + K the inputs, and
  ``F of N files failed: ...`` names failures only. A valid input that a run does not
  name as failed must have its output in out/;
- nothing else on stderr (no traceback, no warning), no run hangs, exit statuses as
  documented (1 when a file failed);
- the resume skips exactly the outputs present (and rewrites none of them) and fails
  only the corrupt inputs;
- files lost = valid inputs whose output is not present and byte-identical to ref/ after
  the resume: must be 0.

    python scripts/soak.py                      # 500 files, seed 13
    python scripts/soak.py --quick              # 100 files: the version the tests run
    python scripts/soak.py --files 2000 --seed 7 --workdir /tmp/soak --json figures.json
    python scripts/soak.py --rounds 20          # 20 soaks, seeds 13 to 32, and a summary

The tmpfs needs root (``mount``); without it the full-disk fault is left out (said in the
figures) and the file-size limit, which needs no privilege, remains. Each run's stderr,
with the faults at their times, is kept in WORKDIR/logs/. Failures that match a known
convvol bug (KNOWN_BUGS; reproductions in docs/reliability.md) are named as such.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

BANK = "blur"  # bundled: RGB in, RGB out
TEMPLATE = "out/{stem}.png"
TIMEOUT = [120.0]  # seconds for one convvol run before it counts as a hang (--timeout)

CORRUPT_KINDS = (
    "truncated-png", "garbled-png", "random-bytes-png", "empty-png", "text-as-tif",
    "truncated-jpeg", "truncated-npy",
)  # fmt: skip
VALID_KINDS = ("rgb-png", "grey-png", "rgba-png", "jpeg", "npy", "png-named-jpg")
SUFFIX = {
    "truncated-png": ".png", "garbled-png": ".png", "random-bytes-png": ".png",
    "empty-png": ".png", "text-as-tif": ".tif", "truncated-jpeg": ".jpg",
    "truncated-npy": ".npy", "rgb-png": ".png", "grey-png": ".png", "rgba-png": ".png",
    "jpeg": ".jpg", "npy": ".npy", "png-named-jpg": ".jpg",
}  # fmt: skip

ENOSPC_TEXT = "No space left on device"
# convvol checks each output against the free space before writing it (issue 13): on a
# full disk most files are refused up front, "out/x.png: the result needs 12 KiB, /mnt
# has 0 bytes free", and only those that pass the check and then meet the full disk while
# writing fail with ENOSPC. Both are the full disk's failures.
FREE_SPACE = re.compile(r": the result needs [\d.]+ \w+, .* has [\d.]+ \w+ free")


def disk_full_message(message: str) -> bool:
    """A failure that a full output file system explains."""
    return ENOSPC_TEXT in message or FREE_SPACE.search(message) is not None
EFBIG_TEXT = "File too large"
DIED_TEXT = "the worker process died on it"


# --- inputs -------------------------------------------------------------------------


@dataclass(frozen=True)
class Input:
    name: str  # file name in in/
    kind: str

    @property
    def valid(self) -> bool:
        return self.kind in VALID_KINDS

    @property
    def source(self) -> str:  # as convvol names it (runs use the work directory as cwd)
        return f"in/{self.name}"

    @property
    def stem(self) -> str:
        return Path(self.name).stem


def picture(rng: np.random.Generator, sides: tuple[int, int]) -> np.ndarray:
    """A small RGB image: a gradient with noise of a random strength (so sizes vary)."""
    height, width = (int(v) for v in rng.integers(sides[0], sides[1] + 1, 2))
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x / width, y / height, (x + y) / (width + height)], axis=-1) * 255
    noise = rng.normal(0, rng.uniform(0, 90), (height, width, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def encoded(array: np.ndarray, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array.astype(np.float32) / 255)
    return buffer.getvalue()


def content(kind: str, rng: np.random.Generator, sides: tuple[int, int]) -> bytes:
    pixels = picture(rng, sides)
    if kind == "rgb-png":
        return encoded(pixels, "PNG")
    if kind == "grey-png":
        return encoded(pixels[:, :, 0], "PNG")
    if kind == "rgba-png":
        alpha = rng.integers(0, 256, pixels.shape[:2], dtype=np.uint8)[..., None]
        return encoded(np.concatenate([pixels, alpha], axis=-1), "PNG")
    if kind == "jpeg":
        return encoded(pixels, "JPEG", quality=90)
    if kind == "npy":
        return npy_bytes(pixels)
    if kind == "png-named-jpg":  # the format is told from the bytes: a valid input
        return encoded(pixels, "PNG")
    if kind == "truncated-png":
        data = encoded(pixels, "PNG")
        return data[: int(len(data) * rng.uniform(0.3, 0.9))]
    if kind == "garbled-png":  # complete, but the middle of the pixel data overwritten
        garbled = bytearray(encoded(pixels, "PNG"))
        start = garbled.index(b"IDAT") + 4
        middle = start + (len(garbled) - start) // 3
        garbled[middle : middle + 64] = rng.bytes(64)
        return bytes(garbled)
    if kind == "random-bytes-png":
        return rng.bytes(int(rng.integers(1, 4096)))
    if kind == "empty-png":
        return b""
    if kind == "text-as-tif":
        return b"these are notes, not an image\n" * int(rng.integers(1, 20))
    if kind == "truncated-jpeg":
        data = encoded(pixels, "JPEG", quality=90)
        return data[: int(len(data) * rng.uniform(0.3, 0.8))]
    if kind == "truncated-npy":
        data = npy_bytes(pixels)
        return data[: int(len(data) * rng.uniform(0.3, 0.9))]
    raise ValueError(kind)


def make_inputs(directory: Path, count: int, seed: int, sides: tuple[int, int]) -> list[Input]:
    """``count`` inputs from ``seed``: every kind at least once (if count allows), about
    15% corrupt, in an order mixed by the seed, named f0000... so names sort as made."""
    rng = np.random.default_rng(seed)
    kinds = list(CORRUPT_KINDS + VALID_KINDS)[:count]
    while len(kinds) < count:
        if rng.random() < 0.15:
            kinds.append(CORRUPT_KINDS[int(rng.integers(len(CORRUPT_KINDS)))])
        else:  # mostly RGB PNGs, the other valid kinds now and then
            kinds.append("rgb-png" if rng.random() < 0.7 else VALID_KINDS[int(rng.integers(6))])
    kinds = [kinds[i] for i in rng.permutation(count)]
    directory.mkdir(parents=True)
    inputs = []
    for index, kind in enumerate(kinds):
        item = Input(f"f{index:04d}{SUFFIX[kind]}", kind)
        (directory / item.name).write_bytes(content(kind, rng, sides))
        inputs.append(item)
    return inputs


# --- running convvol ----------------------------------------------------------------


SUMMARY = re.compile(r"^(\d+) succeeded, (\d+) failed, (\d+) skipped in [\d.]+ s")
FAILED_LIST = re.compile(r"^convvol: error: (\d+) of (\d+) files failed: (.*)$")
FILE_ERROR = re.compile(r"^convvol: error: (in/[^:]+): (.*)$")


@dataclass
class Run:
    """One convvol process and what it printed on stderr, each line with its time."""

    name: str
    process: subprocess.Popen[bytes]
    lines: list[tuple[float, str]] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None
    hung: bool = False
    _reader: threading.Thread | None = None

    def read(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            self.lines.append((time.monotonic(), raw.decode(errors="replace").rstrip("\n")))

    def wait(self) -> int:
        try:
            self.process.wait(timeout=max(0.0, self.started + TIMEOUT[0] - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.hung = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        if self._reader:
            self._reader.join()
        self.ended = self.ended or time.monotonic()
        return self.process.returncode

    def failures(self) -> dict[str, tuple[float, str]]:
        """FILE -> (time printed, message) for each per-file error line."""
        found: dict[str, tuple[float, str]] = {}
        for when, line in self.lines:
            match = FILE_ERROR.match(line)
            if match and not FAILED_LIST.match(line):
                found.setdefault(match.group(1), (when, match.group(2)))
        return found

    def failure_count(self) -> int:
        return sum(1 for _, line in self.lines if FILE_ERROR.match(line))

    def seconds(self) -> float:
        return (self.ended or time.monotonic()) - self.started


RUNS: list[Run] = []  # every convvol started, to be killed if the soak itself is stopped
DEBUG: list[str] = []  # ["--debug"] with the soak's --debug: tracebacks of internal errors


def start(name: str, workdir: Path, args: list[str], fsize: int | None = None) -> Run:
    """``python -m convvol ARGS`` in ``workdir``, in its own process group, stderr read by a
    thread. ``fsize``: an RLIMIT_FSIZE for it and its workers (SIGXFSZ ignored, as Python
    does, so a write past it fails with EFBIG)."""

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        if fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, resource.RLIM_INFINITY))

    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("CONVVOL_") and key != "DASK_SCHEDULER_ADDRESS"
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "convvol", *DEBUG, *args], cwd=workdir, env=environment,
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True, preexec_fn=limit,
    )  # fmt: skip
    run = Run(name, process)
    RUNS.append(run)
    run._reader = threading.Thread(target=run.read, daemon=True)
    run._reader.start()
    return run


# --- faults -------------------------------------------------------------------------


def children(parent: int) -> list[int]:
    """Worker processes of ``parent`` (forked or spawned: every child but multiprocessing's
    resource tracker), from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: fields follow the last ')'.
        fields = stat[stat.rindex(")") + 2 :].split()
        tracker = b"resource_tracker" in cmdline
        if int(fields[1]) == parent and fields[0] not in "ZX" and not tracker:
            found.append(int(entry))
    return sorted(found)


def writing(pid: int) -> list[str]:
    """The convvol part-files the process has open (it is writing those outputs)."""
    found = []
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if ".convvol-part" in target:
                    found.append(os.path.basename(target))
    return found


@dataclass
class Kill:
    at: float
    pid: int
    parts: list[str]  # the part-files it was writing
    role: str  # "single"; "first" and "second" of a double kill (the second: a worker of
    # the pool that replaced the first's)


def state(pid: int) -> str:
    """The process's state letter from /proc (R, S, T for stopped, Z...), or "" if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat[stat.rindex(")") + 2]


def kill_worker(run: Run, *, avoid: set[int], patience: float, role: str) -> Kill | None:
    """SIGKILL one worker of ``run`` not in ``avoid``: one caught writing an output if one is
    within ``patience`` seconds, else the first. None if the run has ended.

    To catch one writing, each worker is stopped (SIGSTOP) and its open files read; one
    holding a part-file is killed as it stands, any other continued (SIGCONT).
    """
    deadline = time.monotonic() + patience
    while run.process.poll() is None and time.monotonic() < run.started + TIMEOUT[0]:
        workers = [pid for pid in children(run.process.pid) if pid not in avoid]
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
                stop_by = time.monotonic() + 0.1
                while state(pid) not in ("T", "t", "Z", "") and time.monotonic() < stop_by:
                    time.sleep(0.0001)
                parts = writing(pid)
                if parts or time.monotonic() >= deadline:
                    os.kill(pid, signal.SIGKILL)  # kills a stopped process too
                    return Kill(time.monotonic(), pid, parts, role)
                os.kill(pid, signal.SIGCONT)
        time.sleep(0.001 if workers else 0.002)
    return None


class Disk:
    """out/'s file system: a tmpfs of ``size`` bytes that a filler file can fill, or None."""

    def __init__(self, mountpoint: Path, size: int) -> None:
        self.mountpoint = mountpoint
        self.size = size
        self.filler = mountpoint / "filler"
        self.windows: list[tuple[float, float]] = []
        self._filled_at: float | None = None

    @staticmethod
    def mount(mountpoint: Path, size: int) -> Disk | str:
        """The mounted Disk, or why it could not be mounted."""
        mountpoint.mkdir(parents=True)
        if os.geteuid() != 0:
            return "not root"
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(mountpoint)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            return f"mount failed: {done.stderr.strip() or done.returncode}"
        return Disk(mountpoint, size)

    def unmount(self) -> None:
        subprocess.run(["umount", str(self.mountpoint)], check=False, capture_output=True)

    def fill(self) -> int:
        """Take every free byte (in shrinking writes until even one byte fails)."""
        self._filled_at = time.monotonic()
        taken = 0
        with open(self.filler, "wb", buffering=0) as filler:
            for chunk in (1 << 20, 1 << 16, 1 << 12, 1 << 8, 1):
                block = b"\0" * chunk
                while True:
                    try:
                        taken += filler.write(block) or 0
                    except OSError:
                        break
        return taken

    def free(self) -> None:
        self.filler.unlink()
        assert self._filled_at is not None
        self.windows.append((self._filled_at, time.monotonic()))
        self._filled_at = None

    def was_full(self, when: float, grace: float = 2.0) -> bool:
        """Whether a failure printed at ``when`` can come from a full disk: printed after
        the filler was made, and no later than ``grace`` seconds after it was removed (the
        worker reports it, the batch prints it)."""
        return any(start <= when <= end + grace for start, end in self.windows)


# --- checks -------------------------------------------------------------------------


@dataclass
class Check:
    """Named invariants, each true or false, with what was seen when false."""

    results: list[tuple[str, bool, str]] = field(default_factory=list)

    def __call__(self, name: str, ok: bool, detail: object = "") -> bool:
        self.results.append((name, bool(ok), "" if ok else str(detail)))
        return bool(ok)

    @property
    def failed(self) -> list[tuple[str, bool, str]]:
        return [result for result in self.results if not result[1]]


def hidden_files(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob(".*"))


def outputs_in(directory: Path) -> dict[str, Path]:
    """stem -> path of every visible output file."""
    return {p.stem: p for p in directory.iterdir() if not p.name.startswith(".")}


def same_pixels(one: Path, other: Path) -> bool:
    try:
        with Image.open(one) as a, Image.open(other) as b:
            return a.mode == b.mode and np.array_equal(np.asarray(a), np.asarray(b))
    except Exception:  # a partial or broken file
        return False


@dataclass
class Comparison:
    identical: list[str] = field(default_factory=list)  # stems, byte-identical to ref
    pixel_identical: list[str] = field(default_factory=list)  # same pixels, other bytes
    wrong: list[str] = field(default_factory=list)  # different or undecodable
    strays: list[str] = field(default_factory=list)  # no valid input of that stem


def compare(out: Path, ref: Path, inputs: list[Input], evidence: Path) -> Comparison:
    """Every output against the clean run's; a copy of each that differs goes to
    ``evidence`` (out/ may be a tmpfs, gone at the end)."""
    valid = {item.stem for item in inputs if item.valid}
    result = Comparison()
    for stem, path in sorted(outputs_in(out).items()):
        reference = ref / path.name
        if stem not in valid or not reference.is_file():
            result.strays.append(path.name)
        elif path.read_bytes() == reference.read_bytes():
            result.identical.append(stem)
            continue
        elif same_pixels(path, reference):
            result.pixel_identical.append(stem)
        else:
            result.wrong.append(path.name)
        evidence.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, evidence / path.name)
    return result


def save_log(
    directory: Path,
    run: Run,
    origin: float,
    kills: list[Kill] = (),  # type: ignore[assignment]
    windows: list[tuple[float, float]] = (),  # type: ignore[assignment]
) -> None:
    """The run's stderr, each line with its time (seconds from ``origin``), and the faults
    injected into it at their times: for diagnosing a failed invariant."""
    events = [(when, line) for when, line in run.lines]
    events += [(kill.at, f"## SIGKILL worker {kill.pid} ({kill.role}) writing {kill.parts}")
               for kill in kills]  # fmt: skip
    for begin, end in windows:
        events += [(begin, "## disk full"), (end, "## disk freed")]
    events.append((run.started, f"## started (exit {run.process.returncode})"))
    text = "".join(f"{when - origin:8.3f} {line}\n" for when, line in sorted(events))
    (directory / f"{run.name.replace(' ', '-')}.log").write_text(text)


def stray_lines(run: Run) -> list[str]:
    """stderr lines that are none of: a file's error, its hint, the two summary lines."""
    return [
        line for _, line in run.lines
        if not (FILE_ERROR.match(line) or FAILED_LIST.match(line) or SUMMARY.match(line)
                or line.startswith("hint: "))
    ]  # fmt: skip


def check_summary(check: Check, run: Run, total: int, failed: set[str], skipped: int) -> None:
    """The summary line and the failure list agree with the per-file error lines."""
    summaries = [SUMMARY.match(line) for _, line in run.lines]
    summary = [m for m in summaries if m]
    check(f"{run.name}: one summary line", len(summary) == 1, [line for _, line in run.lines
                                                              if SUMMARY.match(line)])  # fmt: skip
    if summary:
        succeeded, failed_count, skipped_count = (int(v) for v in summary[0].groups())
        check(f"{run.name}: summary counts {succeeded}/{failed_count}/{skipped_count} "
              f"= {total - len(failed) - skipped}/{len(failed)}/{skipped}",
              (succeeded, failed_count, skipped_count)
              == (total - len(failed) - skipped, len(failed), skipped),
              summary[0].group(0))  # fmt: skip
    listed = [FAILED_LIST.match(line) for _, line in run.lines]
    lists = [m for m in listed if m]
    if not failed:
        check(f"{run.name}: no failure list", not lists, lists)
        return
    if check(f"{run.name}: one failure list", len(lists) == 1, len(lists)):
        count, of, names = lists[0].groups()
        more = re.search(r" and (\d+) more$", names)
        shown = names[: more.start()] if more else names
        shown_set = set(shown.split(", "))
        check(f"{run.name}: failure list says {count} of {of}",
              (int(count), int(of)) == (len(failed), total), lists[0].group(0))  # fmt: skip
        check(f"{run.name}: failure list names failed files only", shown_set <= failed,
              shown_set - failed)  # fmt: skip
        check(f"{run.name}: failure list's 'and N more'",
              len(shown_set) + (int(more.group(1)) if more else 0) == len(failed),
              lists[0].group(0))  # fmt: skip


# --- the soak -----------------------------------------------------------------------


@dataclass
class Plan:
    """When each fault is injected: at run A's position in its inputs (see ``position``)."""

    kills_at: tuple[int, ...]
    double_kill_at: int | None
    concurrent_at: int
    full_disk_at: int
    full_disk_hits: int  # hold the disk full until this many ENOSPC failures are printed
    full_disk_hold: float  # ... or this many seconds


def plan_for(count: int, quick: bool) -> Plan:
    """Positions of run A (fractions of the inputs) at which each fault goes in; a kill also
    waits until the files retried after the last kill are done. They all come before run
    A reaches run B's slice (35% to 75% of the inputs), where its progress cannot be told
    from run B's, and early enough to leave it time for the rest."""
    if quick:
        return Plan(kills_at=(count * 4 // 100,), double_kill_at=count * 20 // 100,
                    concurrent_at=0, full_disk_at=count * 8 // 100,
                    full_disk_hits=1, full_disk_hold=3.0)  # fmt: skip
    return Plan(
        kills_at=(count * 4 // 100, count * 12 // 100, count * 30 // 100),
        double_kill_at=count * 20 // 100,
        concurrent_at=0,
        full_disk_at=count * 8 // 100,
        full_disk_hits=max(3, count // 50),
        full_disk_hold=5.0,
    )


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def soak(arguments: argparse.Namespace) -> tuple[dict[str, object], Check]:
    workdir: Path = arguments.workdir
    started = time.monotonic()
    check = Check()
    figures: dict[str, object] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "seed": arguments.seed,
        "jobs": arguments.jobs, "bank": arguments.bank, "sides": list(arguments.sides),
    }  # fmt: skip
    apply = ["apply", "in", "-f", arguments.bank, "-j", str(arguments.jobs)]

    say(f"making {arguments.files} inputs in {workdir / 'in'} (seed {arguments.seed})")
    inputs = make_inputs(workdir / "in", arguments.files, arguments.seed, arguments.sides)
    by_source = {item.source: item for item in inputs}
    valid = [item for item in inputs if item.valid]
    corrupt = {item.source for item in inputs if not item.valid}
    figures.update(files=len(inputs), valid=len(valid), corrupt=len(corrupt))

    # --- the clean reference run ---
    say("clean reference run into ref/")
    ref_run = start("reference", workdir, [*apply, "-o", "ref/{stem}.png"])
    code = ref_run.wait()
    reference_failures = ref_run.failures()
    check("reference: exit 1 (corrupt inputs fail)", code == (1 if corrupt else 0), code)
    check("reference: the corrupt inputs fail, and only they",
          set(reference_failures) == corrupt,
          {"unexpected": sorted(set(reference_failures) - corrupt),
           "missing": sorted(corrupt - set(reference_failures))})  # fmt: skip
    check("reference: nothing else on stderr", not stray_lines(ref_run), stray_lines(ref_run))
    check_summary(check, ref_run, len(inputs), set(reference_failures), 0)
    ref = workdir / "ref"
    sizes = {p.stem: p.stat().st_size for p in ref.iterdir() if not p.name.startswith(".")}
    check("reference: an output for every valid input",
          set(sizes) == {item.stem for item in valid},
          sorted({item.stem for item in valid} ^ set(sizes)))  # fmt: skip
    figures["reference_seconds"] = round(ref_run.seconds(), 1)
    if check.failed:
        return figures, check  # no reference to compare with: stop here

    # --- out/'s file system and the file-size limit ---
    # The file-size limit sits between two output sizes of the clean run: about 8% of the
    # valid files (at least one) have larger outputs, and exactly those must fail with EFBIG.
    ordered = sorted(set(sizes.values()), reverse=True)
    above = max(1, round(0.08 * len(valid)))
    larger = sorted(sizes.values(), reverse=True)[above - 1]
    below = next((s for s in ordered if s < larger), 0)
    fsize = (larger + below) // 2  # writing up to the limit is allowed, one byte more fails
    too_large = {f"in/{item.name}" for item in valid if sizes[item.stem] > fsize}
    disk: Disk | None = None
    if arguments.disk_full != "off":
        pages = sum(-(-size // 4096) * 4096 for size in sizes.values())
        mounted = Disk.mount(workdir / "fs", 2 * pages + (8 << 20))
        if isinstance(mounted, str):
            figures["disk_full"] = f"not injected ({mounted})"
            if arguments.disk_full == "tmpfs":
                check("tmpfs for the full disk", False, mounted)
                return figures, check
        else:
            disk = mounted
            (disk.mountpoint / "out").mkdir()
            (workdir / "out").symlink_to(disk.mountpoint / "out")
    else:
        figures["disk_full"] = "not injected (--disk-full off)"
    out = workdir / "out"
    out.mkdir(exist_ok=True)
    figures["file_size_limit"] = fsize
    say(
        f"faulty run into out/: RLIMIT_FSIZE {fsize} bytes ({len(too_large)} outputs larger), "
        + (f"out/ on a {disk.size >> 20} MiB tmpfs" if disk else "out/ on the work disk")
    )

    try:
        plan = plan_for(len(inputs), arguments.quick)
        run_a, run_b, kills, fills = inject(workdir, apply, inputs, plan, fsize, disk)
    finally:
        if disk is not None and disk.filler.exists():
            disk.free()
    code_a = run_a.wait()
    code_b = run_b.wait() if run_b else None
    logs = workdir / "logs"
    logs.mkdir(exist_ok=True)
    save_log(logs, ref_run, ref_run.started)
    save_log(logs, run_a, ref_run.started, kills=kills, windows=disk.windows if disk else [])
    if run_b:
        save_log(logs, run_b, ref_run.started)
    figures["faulty_seconds"] = round(run_a.seconds(), 1)

    # --- after the faulty runs ---
    killed_a = len(kills)
    failures_a = run_a.failures()
    failures_b = run_b.failures() if run_b else {}
    b_sources = set(run_b_sources(inputs, len(inputs))) if run_b else set()

    def explained(run: Run, source: str, when: float, message: str) -> str | None:
        """Which injected fault, if any, explains this failure (or 'corrupt')."""
        item = by_source.get(source)
        if item is None:
            return None
        if not item.valid and message == reference_failures[source][1]:
            return "corrupt"
        if disk_full_message(message) and disk is not None and disk.was_full(when):
            return "enospc"
        if EFBIG_TEXT in message and run is run_a and source in too_large:
            return "efbig"
        if DIED_TEXT in message and run is run_a and died_twice(source, when):
            return "died"
        return None

    def died_twice(source: str, when: float) -> bool:
        """Whether two kills before ``when`` can both have caught ``source`` in the pool.

        Any two can: which files a pool holds at a kill is convvol's business (its window
        of 4 × jobs, the retried files first), and estimates of it from the outside (the
        outputs seen so far) proved wrong when a kill fell in a disk-full window, while
        outputs were late. How many may die so is bounded by its own invariant below."""
        del source
        return sum(kill.at <= when for kill in kills) >= 2

    kinds_seen: dict[str, dict[str, int]] = {}
    for run, failures, sources in ((run_a, failures_a, set(by_source)),
                                   (run_b, failures_b, b_sources)):  # fmt: skip
        if run is None:
            continue
        causes = {source: explained(run, source, when, message)
                  for source, (when, message) in failures.items()}  # fmt: skip
        unexplained = {s: failures[s][1] for s, cause in causes.items() if cause is None}
        kinds_seen[run.name] = {kind: list(causes.values()).count(kind)
                                for kind in ("corrupt", "enospc", "efbig", "died")}  # fmt: skip
        kinds_seen[run.name]["unexplained"] = len(unexplained)
        check(f"{run.name}: every failure is a corrupt input or an injected fault",
              not unexplained, unexplained)  # fmt: skip
        check(f"{run.name}: every corrupt input named", corrupt & sources <= set(failures),
              sorted((corrupt & sources) - set(failures)))  # fmt: skip
        check(f"{run.name}: a failure line per file, once",
              run.failure_count() == len(failures), run.failure_count())  # fmt: skip
        check(f"{run.name}: exit status", (1 if failures else 0) == run.process.returncode,
              run.process.returncode)  # fmt: skip
        check(f"{run.name}: no hang", not run.hung, f"killed after {TIMEOUT[0]:g} s")
        check(f"{run.name}: nothing else on stderr (no traceback)", not stray_lines(run),
              stray_lines(run)[:20])  # fmt: skip
        check_summary(check, run, len(sources), set(failures), 0)
    check("run A: at most a window of files (4 × jobs) died twice per kill after the first",
          kinds_seen["run A"]["died"] <= 4 * arguments.jobs * max(0, len(kills) - 1),
          kinds_seen["run A"]["died"])  # fmt: skip
    efbig_missing = sorted(too_large - set(failures_a))
    check("run A: every output above the file-size limit failed", not efbig_missing,
          efbig_missing)  # fmt: skip

    present = outputs_in(out)
    compared = compare(out, ref, inputs, workdir / "evidence" / "after-faulty-run")
    hidden_after = hidden_files(out)
    # A valid input no run named as failed must have its output: a success is a file.
    claimed = [item.source for item in valid
               if item.source not in failures_a and item.stem not in present]  # fmt: skip
    check("after the faulty run: every success has its output", not claimed, claimed)
    check("after the faulty run: outputs have the clean run's pixels", not compared.wrong,
          compared.wrong)  # fmt: skip
    check("after the faulty run: no output without a valid input", not compared.strays,
          compared.strays)  # fmt: skip
    check("after the faulty run: no temporary or hidden file", not hidden_after, hidden_after)
    if disk is not None:
        extra = sorted(p.name for p in disk.mountpoint.iterdir() if p.name != "out")
        check("after the faulty run: nothing else on the tmpfs", not extra, extra)

    # --- resume ---
    say("resuming with --skip-existing")
    before = {stem: (p.stat().st_ino, p.stat().st_mtime_ns) for stem, p in present.items()}
    resume = start("resume", workdir, [*apply, "-o", TEMPLATE, "--skip-existing"])
    code_r = resume.wait()
    save_log(logs, resume, ref_run.started)
    failures_r = resume.failures()
    check("resume: exit status", code_r == (1 if corrupt else 0), code_r)
    check("resume: no hang", not resume.hung, f"killed after {TIMEOUT[0]:g} s")
    check("resume: fails exactly the corrupt inputs", set(failures_r) == corrupt,
          {"unexpected": sorted(set(failures_r) - corrupt),
           "missing": sorted(corrupt - set(failures_r))})  # fmt: skip
    check("resume: nothing else on stderr", not stray_lines(resume), stray_lines(resume)[:20])
    check_summary(check, resume, len(inputs), set(failures_r), len(present))
    after = {stem: (p.stat().st_ino, p.stat().st_mtime_ns) for stem, p in outputs_in(out).items()}
    rewritten = sorted(stem for stem, seen in before.items() if after.get(stem) != seen)
    check("resume: rewrites no output that was present", not rewritten, rewritten)
    final = compare(out, ref, inputs, workdir / "evidence" / "after-resume")
    hidden_final = hidden_files(out)
    correct = set(final.identical) | set(final.pixel_identical)
    lost = sorted(item.name for item in valid if item.stem not in correct)
    check("after the resume: no temporary or hidden file", not hidden_final, hidden_final)
    check("after the resume: no output without a valid input", not final.strays, final.strays)
    check("files lost: 0", not lost, lost)

    figures.update(
        faults={
            "workers_sigkilled": killed_a,
            "of_them_mid_write": sum(bool(k.parts) for k in kills),
            "double_kills": sum(k.role == "second of two" for k in kills),
            "disk_full_windows": len(fills),
            "disk_full_seconds": round(sum(end - begin for begin, end in fills), 2),
            "enospc_hits": {name: seen.get("enospc", 0) for name, seen in kinds_seen.items()},
            "efbig_hits": kinds_seen["run A"].get("efbig", 0),
            "efbig_expected": len(too_large),
            "died_twice": kinds_seen["run A"].get("died", 0),
            "concurrent_writer_files": len(b_sources),
            "concurrent_writer_exit": code_b,
        },
        run_a_exit=code_a,
        failures={
            name: {"listed": sum(seen.values()), **seen} for name, seen in kinds_seen.items()
        },
        outputs_after_faulty_run=len(present),
        outputs_identical_after_faulty_run=len(compared.identical),
        temporaries_after_faulty_run=len(hidden_after),
        resumed={
            "succeeded": len(inputs) - len(failures_r) - len(present),
            "skipped": len(present),
            "failed": len(failures_r),
        },
        outputs_final=len(outputs_in(out)),
        outputs_byte_identical=len(final.identical),
        outputs_pixel_identical_only=len(final.pixel_identical),
        # not an invariant (the pixels are right), but the encoding is deterministic, so
        # other bytes mean another code path wrote them: worth a look (see evidence/)
        notes=[
            f"same pixels as the clean run but other bytes (copies in evidence/): {stem}"
            for stem in sorted(set(compared.pixel_identical) | set(final.pixel_identical))
        ],
        outputs_wrong=len(final.wrong),
        temporaries_left=len(hidden_final),
        files_lost=len(lost),
        seconds=round(time.monotonic() - started, 1),
    )
    figures["known_bugs"] = known_bugs(
        kills=kills, hidden=hidden_after + hidden_final, runs=[r for r in (run_a, run_b) if r],
        failed_a=set(failures_a), by_stem={item.stem: item.source for item in inputs},
    )  # fmt: skip
    for name, wanted, got in (
        ("a worker SIGKILLed", len(plan.kills_at), sum(k.role == "single" for k in kills)),
        ("a double kill", 1 if plan.double_kill_at else 0,
         sum(k.role == "second of two" for k in kills)),
        ("a concurrent writer", 1, 1 if run_b else 0),
        ("a full disk hit", 1 if disk else 0,
         min(1, sum(seen.get("enospc", 0) for seen in kinds_seen.values()))),
        ("a file-size limit hit", 1, min(1, kinds_seen["run A"].get("efbig", 0))),
    ):  # fmt: skip
        check(f"injected: {name}", got >= wanted, f"{got} of {wanted}")
    return figures, check


KNOWN_BUGS = {
    "K1": "a file whose worker was killed while writing it, and whose second run failed "
    "too, leaves its .convvol-part file (removed only by the next run)",
    "K2": "a batch ending removes the .convvol-part files of another convvol writing the "
    "same outputs: that one fails the file ('No such file or directory') and leaves a "
    ".convvol-backup file that no run removes",
    "K3": "a worker dying while the batch submits work to a fresh pool crashes the batch "
    "('internal error: OSError: handle is closed', or 'ValueError: bad value(s) in "
    "fds_to_keep': no summary, the rest not done) or the pool's manager thread "
    "('RuntimeError: dictionary changed size during iteration', a traceback on stderr)",
    "K4": "a worker dying while the batch submits work to a fresh pool can hang the batch "
    "for ever (waiting in ProcessPoolExecutor.shutdown for a worker never told to stop)",
}


CRASHES = ("handle is closed", "fds_to_keep", "dictionary changed size during iteration")


def known_bugs(
    *, kills: list[Kill], hidden: list[str], runs: list[Run], failed_a: set[str],
    by_stem: dict[str, str],
) -> dict[str, list[str]]:  # fmt: skip
    """The known convvol bugs (KNOWN_BUGS, reproductions in docs/reliability.md) whose
    signature this soak saw, with the evidence: to tell them from new failures."""
    seen: dict[str, list[str]] = {}
    crashed = any(sign in line for sign in CRASHES for run in runs for _, line in run.lines)
    for name in sorted(set(hidden)):
        stem = name[1:].split(".", 1)[0]
        # a part-file of a file run A failed, after a kill: the kill may have landed just
        # after the look at the worker's open files, so it need not be in killed_parts
        if name.endswith(".convvol-part") and kills and by_stem.get(stem) in failed_a:
            seen.setdefault("K1", []).append(name)
        elif name.endswith(".convvol-part") and crashed:  # the crash skipped the clean-up
            seen.setdefault("K3", []).append(name)
        elif name.endswith(".convvol-part") and any(run.hung for run in runs):
            seen.setdefault("K4", []).append(name)  # the hung run was killed
        if name.endswith(".convvol-backup"):
            seen.setdefault("K2", []).append(name)
    for run in runs:
        for _, line in run.lines:
            if FILE_ERROR.match(line) and "cannot write: No such file or directory" in line:
                seen.setdefault("K2", []).append(f"{run.name}: {line}")
            if any(sign in line for sign in CRASHES):
                seen.setdefault("K3", []).append(f"{run.name}: {line}")
        if run.hung and any(kill.role == "second of two" for kill in kills):
            seen.setdefault("K4", []).append(f"{run.name} killed after {TIMEOUT[0]:g} s")
    return seen


def run_b_sources(inputs: list[Input], count: int) -> list[str]:
    """Run B's inputs: the files from 35% to 75% of the list, in reverse order, so that it
    meets run A (which goes in order) halfway and then redoes what A did."""
    low, high = count * 35 // 100, max(count * 75 // 100, count * 35 // 100 + 1)
    return [item.source for item in reversed(inputs[low:high])]


def inject(
    workdir: Path, apply: list[str], inputs: list[Input], plan: Plan, fsize: int,
    disk: Disk | None,
) -> tuple[Run, Run | None, list[Kill], list[tuple[float, float]]]:  # fmt: skip
    """Start run A and inject the faults of ``plan`` as its files get done.

    A kill waits until the files retried after the last kill are done (see ``settled``),
    so a single kill should cost no file. A double kill does not wait in between: the
    fresh pool's first worker is killed as soon as it appears, so the files retried once
    fail for good.
    """
    out = workdir / "out"
    run_a = start("run A", workdir, [*apply, "-o", TEMPLATE], fsize=fsize)
    run_b: Run | None = None
    kills: list[Kill] = []
    killed: set[int] = set()
    b_stems = {Path(source).stem for source in run_b_sources(inputs, len(inputs))}
    settle = 5 * int(apply[5])  # convvol's window of files (4 × jobs), and one per worker
    done_at_kill = -settle

    index = {item.stem: number for number, item in enumerate(inputs)}

    def seen() -> list[int]:
        """Indices of the inputs run A is known to have done: those it named as failed,
        and those with an output that only it writes (not in run B's slice)."""
        try:
            names = os.listdir(out)
        except OSError:
            names = []
        done = [index[Path(name).stem] for name in names
                if not name.startswith(".") and Path(name).stem not in b_stems]  # fmt: skip
        return done + [index[Path(source).stem] for source in run_a.failures()]

    def done() -> int:
        return len(seen())

    def position() -> int:
        """How far run A has gone in its inputs, which it takes in order (a window of
        4 × jobs at a time): the last one it is known to have done."""
        return max(seen(), default=-1) + 1

    retried: set[int] = set()  # the inputs that may have been in the pool at the last kill

    def settled() -> bool:
        """The files retried after the last kill are done: convvol's window holds the first
        files not done yet (4 × jobs of them; ``settle`` is taken, one more per worker), and
        ``settle`` more files are done since."""
        return retried <= set(seen()) and done() - done_at_kill >= settle

    def note(kill: Kill | None) -> Kill | None:
        nonlocal done_at_kill, retried
        if kill is not None:
            kills.append(kill)
            killed.add(kill.pid)
            done_at_kill = done()
            finished = set(seen())
            window = [i for i in range(len(inputs)) if i not in finished][:settle]
            retried = {i for i in window if inputs[i].stem not in b_stems}  # others: unseen
            say(f"SIGKILLed worker {kill.pid} ({kill.role})"
                + (f" while it wrote {', '.join(kill.parts)}" if kill.parts else ""))  # fmt: skip
        return kill

    def kill(double: bool) -> Callable[[], None]:
        def act() -> None:
            role = "first of two" if double else "single"
            workers = set(children(run_a.process.pid))
            if note(kill_worker(run_a, avoid=killed, patience=0.05, role=role)) and double:
                # the fresh pool's first worker, as soon as it appears
                note(kill_worker(run_a, avoid=workers | killed, patience=0.0,
                                 role="second of two"))  # fmt: skip

        return act

    def concurrent() -> None:
        nonlocal run_b
        sources = run_b_sources(inputs, len(inputs))
        run_b = start("run B", workdir, ["apply", *sources, "-f", apply[3], "-j", apply[5],
                                          "-o", TEMPLATE])  # fmt: skip
        say(f"second convvol (run B) started on {len(sources)} files")

    def enospc(run: Run | None) -> int:
        return sum(disk_full_message(line) for _, line in run.lines) if run else 0

    def full_disk() -> None:
        assert disk is not None
        before_a, before_b = enospc(run_a), enospc(run_b)
        taken = disk.fill()
        say(f"out/'s file system filled ({taken >> 10} KiB)")
        deadline = time.monotonic() + plan.full_disk_hold
        while time.monotonic() < deadline and run_a.process.poll() is None:
            hits_a, hits_b = enospc(run_a) - before_a, enospc(run_b) - before_b
            b_done = run_b is None or run_b.process.poll() is not None
            if hits_a >= 1 and (hits_b >= 1 or b_done) and hits_a + hits_b >= plan.full_disk_hits:
                break
            time.sleep(0.002)
        disk.free()
        say(
            f"out/'s file system freed ({enospc(run_a) - before_a} ENOSPC failures in run A, "
            f"{enospc(run_b) - before_b} in run B so far)"
        )

    events: list[tuple[int, str, Callable[[], None]]] = []
    for at in plan.kills_at:
        events.append((at, "kill", kill(False)))
    if plan.double_kill_at is not None:
        events.append((plan.double_kill_at, "double kill", kill(True)))
    events.append((plan.concurrent_at, "concurrent", concurrent))
    if disk is not None:
        events.append((plan.full_disk_at, "full disk", full_disk))
    events.sort(key=lambda event: event[0])

    def running() -> bool:  # and not past its time (a hang: wait() kills it)
        return run_a.process.poll() is None and time.monotonic() < run_a.started + TIMEOUT[0]

    def b_started() -> bool:
        """Run B is filtering (it has made or failed a file), or is gone."""
        if run_b is None or run_b.process.poll() is not None or run_b.failure_count():
            return True
        with contextlib.suppress(OSError):
            return any(Path(name).stem in b_stems for name in os.listdir(out)
                       if name.endswith(".convvol-part"))  # fmt: skip
        return False

    def ready(at: int, what: str) -> bool:
        if position() < at:
            return False
        if "kill" in what:
            return settled()
        return what != "full disk" or b_started()  # so that both runs meet the full disk

    for at, what, act in events:
        while running() and not ready(at, what):
            time.sleep(0.001)
        if not running():
            say(f"run A ended (or hangs) before '{what}' could be injected")
            break
        act()
    return run_a, run_b, kills, disk.windows if disk else []


# --- the report ---------------------------------------------------------------------


def table(figures: dict[str, object], check: Check) -> str:
    faults = figures.get("faults", {})
    assert isinstance(faults, dict)
    failures = figures.get("failures", {})
    assert isinstance(failures, dict)
    rows: list[tuple[str, object]] = [
        ("files", f"{figures.get('files')} ({figures.get('valid')} valid, "
                  f"{figures.get('corrupt')} corrupt)"),
        ("workers SIGKILLed", f"{faults.get('workers_sigkilled')} (of them mid-write: "
                              f"{faults.get('of_them_mid_write')}; double kills: "
                              f"{faults.get('double_kills')})"),
        ("disk full (tmpfs, ENOSPC)", figures.get("disk_full") or
         f"{faults.get('disk_full_windows')} window of {faults.get('disk_full_seconds')} s; "
         f"hits: {faults.get('enospc_hits')}"),
        ("file-size limit (EFBIG)", f"{faults.get('efbig_hits')} hits of "
                                    f"{faults.get('efbig_expected')} expected "
                                    f"(limit {figures.get('file_size_limit')} bytes)"),
        ("concurrent writer", f"1 more convvol on {faults.get('concurrent_writer_files')} of "
                              f"the files (exit {faults.get('concurrent_writer_exit')})"),
        ("failures listed", "; ".join(
            f"{name}: {seen['listed']} = {seen['corrupt']} corrupt + {seen['enospc']} ENOSPC"
            f" + {seen['efbig']} EFBIG + {seen['died']} died twice + {seen['unexplained']} "
            "unexplained"
            for name, seen in failures.items())),
        ("outputs after faulty run", f"{figures.get('outputs_after_faulty_run')} "
                                     f"({figures.get('outputs_identical_after_faulty_run')} "
                                     "byte-identical to the clean run)"),
        ("temporaries after faulty run", figures.get("temporaries_after_faulty_run")),
        ("resume (--skip-existing)", figures.get("resumed")),
        ("outputs at the end", f"{figures.get('outputs_final')} "
                               f"({figures.get('outputs_byte_identical')} byte-identical, "
                               f"{figures.get('outputs_pixel_identical_only')} same pixels "
                               f"only, {figures.get('outputs_wrong')} wrong)"),
        ("temporaries left", figures.get("temporaries_left")),
        ("files lost", figures.get("files_lost")),
        ("invariants", f"{len(check.results) - len(check.failed)} of {len(check.results)} hold"),
        ("seconds", f"{figures.get('seconds')} (reference {figures.get('reference_seconds')}, "
                    f"faulty run {figures.get('faulty_seconds')})"),
    ]  # fmt: skip
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=None, help="inputs (default 500, 100 quick)")
    parser.add_argument("--seed", type=int, default=13, help="seed of the inputs (default 13)")
    parser.add_argument("--workdir", type=Path, help="an empty or new directory to work in "
                        "(kept); default: a temporary one, removed unless --keep")  # fmt: skip
    parser.add_argument("--quick", action="store_true",
                        help="the short version: 100 files, one fault of each kind")  # fmt: skip
    parser.add_argument("--sides", type=int, nargs=2, metavar=("MIN", "MAX"),
                        help="image sides in pixels (default 16 128; 96 320 with --quick, "
                        "so that its few files last long enough for every fault)")  # fmt: skip
    parser.add_argument("--jobs", type=int, default=2, help="convvol's -j (default 2)")
    parser.add_argument("--bank", default=BANK, help=f"the bank (default {BANK}: RGB in and out)")
    parser.add_argument("--disk-full", choices=("auto", "tmpfs", "off"), default="auto",
                        help="fill out/'s file system: on a tmpfs (needs root: mount); auto "
                        "leaves it out when mounting fails, tmpfs makes that an error")  # fmt: skip
    parser.add_argument(
        "--timeout",
        type=float,
        help="seconds a convvol run may take before "
        "it counts as a hang and is killed (default 120; 30 with --quick)",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help="run convvol with --debug (an internal error prints its traceback)",
    )
    parser.add_argument("--rounds", type=int, default=1,
                        help="soak this many times, the seed one higher each round, and "
                        "sum up (default 1)")  # fmt: skip
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary work directory (it is kept anyway when an "
                        "invariant fails)")  # fmt: skip
    arguments = parser.parse_args(argv)
    if arguments.files is None:
        arguments.files = 100 if arguments.quick else 500
    if arguments.sides is None:
        arguments.sides = (96, 320) if arguments.quick else (16, 128)
    if not 1 <= arguments.sides[0] <= arguments.sides[1]:
        parser.error("--sides needs 1 <= MIN <= MAX")
    if arguments.files < 10:
        parser.error("--files must be at least 10")
    if arguments.rounds < 1:
        parser.error("--rounds must be at least 1")
    if arguments.debug:
        DEBUG.append("--debug")
    TIMEOUT[0] = arguments.timeout or (30.0 if arguments.quick else 120.0)
    if not sys.platform.startswith("linux"):
        parser.error("the soak reads /proc and uses RLIMIT_FSIZE: Linux only")

    # SIGTERM (a CI timeout) ends the soak through its finally blocks: runs killed, tmpfs
    # unmounted, work directory removed unless kept.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    keep = [arguments.keep]
    temporary = arguments.workdir is None
    rounds: list[dict[str, object]] = []
    with workspace(arguments.workdir, keep) as workdir:
        for number in range(arguments.rounds):
            if arguments.rounds > 1:
                arguments.workdir = workdir / f"round-{number + 1:02d}"
                arguments.workdir.mkdir()
                print(f"\n=== round {number + 1} of {arguments.rounds}", flush=True)
            else:
                arguments.workdir = workdir
            figures = one_round(arguments)
            figures["round"] = number + 1
            rounds.append(figures)
            keep[0] = keep[0] or bool(figures["invariants_failed"] or figures.get("notes"))
            arguments.seed += 1
        if arguments.rounds > 1:
            print()
            print(summary(rounds))
        if arguments.json:
            data = rounds[0] if arguments.rounds == 1 else {"rounds": rounds}
            arguments.json.write_text(json.dumps(data, indent=2) + "\n")
        if keep[0] and temporary:
            print(f"\nwork directory kept: {workdir}")
    return 1 if any(figures["invariants_failed"] for figures in rounds) else 0


def one_round(arguments: argparse.Namespace) -> dict[str, object]:
    """One soak in ``arguments.workdir``: its figures, with the invariants that failed."""
    workdir = arguments.workdir
    RUNS.clear()
    figures: dict[str, object] = {}
    check: Check | None = None
    try:
        figures, check = soak(arguments)
    finally:
        for run in RUNS:
            if run.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(run.process.pid, signal.SIGKILL)
                run.process.wait()
        fs = workdir / "fs"
        if fs.is_dir() and os.path.ismount(fs):
            if check is None or check.failed or figures.get("notes"):
                # out/ is on the tmpfs, gone once unmounted: keep what it held for a look
                shutil.copytree(fs / "out", workdir / "out-kept", dirs_exist_ok=True)
            subprocess.run(["umount", str(fs)], check=False, capture_output=True)
    assert check is not None
    figures["invariants_failed"] = [name for name, _, _ in check.failed]
    print()
    print(table(figures, check))
    notes = figures.get("notes") or []
    assert isinstance(notes, list)
    for note in notes:
        print(f"\nNOTE: {note}")
    if not check.failed:
        print("\nall invariants hold")
        return figures
    print("\nINVARIANTS THAT FAILED:")
    for name, _, detail in check.failed:
        print(f"  - {name}: {detail}")
    bugs = figures.get("known_bugs") or {}
    assert isinstance(bugs, dict)
    if bugs:
        print("\nKNOWN BUGS SEEN (reproductions in docs/reliability.md):")
        for key, evidence in bugs.items():
            print(f"  - {key}: {KNOWN_BUGS[key]}")
            for line in evidence[:5]:
                print(f"      {line}")
    print(f"\nwork directory: {workdir} (logs in {workdir / 'logs'})")
    return figures


def summary(rounds: list[dict[str, object]]) -> str:
    """One line per round and the totals, for --rounds."""

    def faults(figures: dict[str, object]) -> dict[str, Any]:
        value = figures.get("faults") or {}
        assert isinstance(value, dict)
        return value

    def number(value: object) -> int:
        return value if isinstance(value, int) else 0

    lines = ["round  seed  files  killed  ENOSPC  EFBIG  died  lost  invariants failed  known bugs"]
    bugs: dict[str, int] = {}
    for figures in rounds:
        f = faults(figures)
        enospc = sum((f.get("enospc_hits") or {}).values())
        failed = figures["invariants_failed"]
        assert isinstance(failed, list)
        found = figures.get("known_bugs") or {}
        assert isinstance(found, dict)
        known = sorted(found)
        for key in known:
            bugs[key] = bugs.get(key, 0) + 1
        lines.append(
            f"{figures['round']:>5}  {figures['seed']:>4}  {figures.get('files', 0):>5}  "
            f"{f.get('workers_sigkilled', 0):>6}  {enospc:>6}  {f.get('efbig_hits', 0):>5}  "
            f"{f.get('died_twice', 0):>4}  {figures.get('files_lost', '?'):>4}  "
            f"{len(failed):>17}  {', '.join(known) or '-'}"
        )
    total_files = sum(number(figures.get("files")) for figures in rounds)
    lost = sum(number(figures.get("files_lost")) for figures in rounds)
    clean = sum(1 for figures in rounds if not figures["invariants_failed"])
    lines.append(
        f"\n{len(rounds)} rounds, {total_files} files, "
        f"{sum(number(faults(r).get('workers_sigkilled')) for r in rounds)} workers SIGKILLed, "
        f"{sum(sum((faults(r).get('enospc_hits') or {}).values()) for r in rounds)} ENOSPC and "
        f"{sum(number(faults(r).get('efbig_hits')) for r in rounds)} EFBIG failures, "
        f"{len(rounds)} concurrent writers; files lost: {lost}; every invariant held in "
        f"{clean} of {len(rounds)} rounds"
        + ("; known bugs seen: " + ", ".join(f"{k} in {n}" for k, n in sorted(bugs.items()))
           if bugs else "")
    )  # fmt: skip
    return "\n".join(lines)


@contextlib.contextmanager
def workspace(workdir: Path | None, keep: list[bool]) -> Iterator[Path]:
    """``workdir`` (made, must be empty), or a temporary directory removed at the end
    unless ``keep[0]`` is true by then."""
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
        if any(workdir.iterdir()):
            raise SystemExit(f"soak: {workdir} is not empty")
        yield workdir.resolve()
        return
    made = Path(tempfile.mkdtemp(prefix="convvol-soak-"))
    try:
        yield made
    finally:
        if not keep[0]:
            shutil.rmtree(made, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
