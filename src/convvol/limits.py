"""Limits on what a run may take: input sizes, memory budgets, sizes as users write them,
and how much memory this process may still take.

A run's needs are estimated before anything large is allocated (see
:func:`convvol.pipeline.check_memory`) and compared with :func:`available_memory`, so a
result too large for the machine is a clear error instead of a killed process. (The bank
format's own limits, on kernel sides and file sizes, are in :mod:`convvol.bank` and
:mod:`convvol.kernels`, with the format they bound.)
"""

from __future__ import annotations

import mmap
import os
import re
from collections.abc import Sequence
from pathlib import Path

from convvol.engine.cost import DEFAULT_MEMORY_LIMIT, available_threads
from convvol.errors import ParameterError

# Images of more pixels (width × height, from the header, before decoding) are refused
# unless the caller raises the limit: Pillow's own refusal threshold, 2 × 89,478,485
# (a 13,377² image: 2 GiB as float32 RGB). A .npy volume or a TIFF page stack may hold
# 4× as many values (H×W×C), as an RGBA image of that many pixels does.
DEFAULT_MAX_PIXELS = 178_956_970
VALUES_PER_PIXEL = 4
MIB = 2**20
# The budget of one file when --max-memory is not given.
DEFAULT_BUDGET = 1024 * MIB
# Bytes per unit, binary as memory is counted: 512M is 512 MiB.
SIZE_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
MAX_SIZE = 2**60  # 1 EiB: no size beyond it can be meant
# The largest single output a run may write unless the user says otherwise (--max-output,
# CONVVOL_MAX_OUTPUT): a typo in --padding must not start a multi-terabyte job.
DEFAULT_MAX_OUTPUT = 2**40
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)
# The engine's working set never shrinks below this per thread: its bands (8 MiB
# targets) then fall as with the default limit, so results stay identical.
_ENGINE_FLOOR_PER_THREAD = 8 * MIB


def parse_size(text: str, *, zero: bool = False) -> int:
    """Bytes from ``"512M"``, ``"2G"``, ``"1.5GiB"``, ``"64MB"`` or ``"1000000"``.

    Units are powers of 1024 (K, M, G, T, optionally followed by ``B`` or ``iB``). ``zero``
    allows 0 (a limit of 0 means none); sizes beyond :data:`MAX_SIZE` are refused.
    """
    match = _SIZE.match(str(text))
    if not match:
        raise ParameterError(
            f"{text!r} is not a size", hint="write bytes, or a number with K, M, G or T: 512M"
        )
    size = int(float(match.group(1)) * SIZE_UNITS[match.group(2).lower()])
    if size < 1 and not (zero and size == 0):
        raise ParameterError(f"{text!r} is not a size above zero")
    if size > MAX_SIZE:
        raise ParameterError(
            f"{text!r} is more than {size_text(MAX_SIZE)}", hint="check the number and its unit"
        )
    return size


def engine_memory_limit(budget: int | None) -> int | None:
    """The engine's working-set share of a budget: a quarter, at most the engine's default
    (256 MiB), at least 8 MiB per core. ``None`` (no budget) keeps the engine's default."""
    if budget is None:
        return None
    floor = _ENGINE_FLOOR_PER_THREAD * available_threads()
    return max(min(DEFAULT_MEMORY_LIMIT, budget // 4), floor)


def resident_bytes() -> int:
    """This process's resident memory now (0 where /proc is not there to ask)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * mmap.PAGESIZE
    except (OSError, IndexError, ValueError):
        return 0


def _meminfo() -> dict[str, int]:
    """/proc/meminfo in bytes (empty where there is none)."""
    values: dict[str, int] = {}
    try:
        text = Path("/proc/meminfo").read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError):
        return values
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        fields = rest.split()
        if fields and fields[0].isdigit():
            values[name] = int(fields[0]) * (1024 if fields[1:] == ["kB"] else 1)
    return values


def _cgroup_room() -> int | None:
    """Bytes left under this process's cgroup memory limit (v2 or v1), if it has one."""
    try:
        lines = Path("/proc/self/cgroup").read_text(encoding="ascii").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    candidates = []
    for line in lines:
        _, controllers, relative = [*line.split(":", 2), "", ""][:3]
        if controllers == "":  # v2: one unified hierarchy
            directory = Path("/sys/fs/cgroup") / relative.lstrip("/")
            candidates.append((directory / "memory.max", directory / "memory.current"))
        elif "memory" in controllers.split(","):
            directory = Path("/sys/fs/cgroup/memory") / relative.lstrip("/")
            candidates.append(
                (directory / "memory.limit_in_bytes", directory / "memory.usage_in_bytes")
            )
    for limit_file, usage_file in candidates:
        try:
            limit = limit_file.read_text(encoding="ascii").strip()
            used = usage_file.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            continue
        # "max" (v2) or a number near 2**63 (v1) means no limit.
        if limit.isdigit() and used.isdigit() and int(limit) < 2**62:
            return max(0, int(limit) - int(used))
    return None


def available_memory() -> int | None:
    """Bytes this process can still allocate without swapping others out, or None if unknown.

    Linux: MemAvailable plus free swap, within the cgroup's limit if there is one.
    Elsewhere: the machine's physical memory.
    """
    info = _meminfo()
    if "MemAvailable" in info:
        room: int | None = info["MemAvailable"] + info.get("SwapFree", 0)
    else:
        try:
            room = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (AttributeError, ValueError, OSError):
            room = None
    cgroup = _cgroup_room()
    if cgroup is not None:
        room = cgroup if room is None else min(room, cgroup)
    return room


def gib(size: int) -> str:
    """Bytes as GiB for messages: '12.3 GiB' (MiB below one GiB)."""
    if size < 2**30:
        return f"{size / 2**20:.0f} MiB"
    return f"{size / 2**30:.1f} GiB"


def size_text(size: int) -> str:
    """Bytes for messages, in the largest binary unit that keeps a digit before the point:
    '512 KiB', '77.2 GiB', '14.6 TiB'."""
    for unit, power in (("EiB", 60), ("PiB", 50), ("TiB", 40), ("GiB", 30), ("MiB", 20)):
        if size >= 2**power:
            return f"{size / 2**power:.1f} {unit}"
    return f"{size / 2**10:.0f} KiB" if size >= 2**10 else f"{size} bytes"


def _existing_ancestor(path: str) -> Path:
    """The nearest directory of ``path`` that exists (where its file would be made)."""
    current = Path(os.path.abspath(path)).parent
    while not current.exists() and current != current.parent:
        current = current.parent
    return current


def _mount_point(directory: Path) -> Path:
    """The directory at the top of ``directory``'s file system (for messages)."""
    try:
        device = directory.stat().st_dev
        while directory != directory.parent and directory.parent.stat().st_dev == device:
            directory = directory.parent
    except OSError:
        pass
    return directory


def check_output_sizes(sizes: Sequence[tuple[str, int]], max_output: int | None) -> None:
    """Refuse, before any work, an output of more than ``max_output`` bytes (0 or None:
    no cap), naming it: a typo in --padding must not start a multi-terabyte job."""
    for target, size in sizes:
        if max_output and size > max_output:
            raise ParameterError(
                f"{target}: the result would be {size_text(size)}, more than the "
                f"--max-output limit of {size_text(max_output)}",
                hint="if it is meant, raise --max-output (or CONVVOL_MAX_OUTPUT; 0: no "
                "limit); else check --padding, --dilation and --stride",
            )


def check_free_space(sizes: Sequence[tuple[str, int]]) -> None:
    """Refuse, before the first byte is written, local outputs that do not fit the free
    space of their file system (targets on one file system counted together), naming the
    first that does not fit."""
    needed: dict[int, int] = {}
    for target, size in sizes:
        directory = _existing_ancestor(target)
        try:
            device = directory.stat().st_dev
            stats = os.statvfs(directory)
        except (OSError, AttributeError):  # not there, or not a platform that says
            continue
        needed[device] = needed.get(device, 0) + size
        free = stats.f_bavail * stats.f_frsize
        if needed[device] > free:
            raise ParameterError(
                f"{target}: the result needs {size_text(needed[device])}, "
                f"{_mount_point(directory)} has {size_text(free)} free",
                hint="free some space, write elsewhere, or make the output smaller",
            )
