"""How much memory this process may still take: the measure for refusing work up front.

A run's needs are estimated before anything large is allocated (see
:func:`convvol.pipeline.check_memory`) and compared with :func:`available_memory`, so a
result too large for the machine is a clear error instead of a killed process.
"""

from __future__ import annotations

import os
from pathlib import Path


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
