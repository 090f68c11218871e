#!/usr/bin/env python
"""Benchmark convvol.convolve against OpenCV, PyTorch, SciPy and a naive NumPy loop.

Run from the repository root:

    python benchmarks/bench.py              # the full run (about 15 minutes on 2 cores)
    python benchmarks/bench.py --quick      # small sizes, fewer repeats: a smoke test
    python benchmarks/bench.py --only W1,W3 --no-e2e --markdown

Every implementation of every workload runs in a fresh child process (this script with
a hidden ``--_child`` flag), so each one's peak RSS is its own. In the child: build the
seeded inputs, set up, one warm-up call, then the median of ``--repeats`` timed calls
(time.perf_counter), then a float64 check of the output at a grid of sample points that
covers every border row and column. See benchmarks/README.md for how to read the output.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import typing
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np

MIB = 1024 * 1024
RESULT_MARK = "@@BENCH-RESULT@@ "
TOLERANCE = 1e-4  # max |out − ref| / Σ|w_n| (inputs are in [0, 1)); float32 sums are ~1e-6
W5_REPEATS = 3  # W5 only: fewer timed runs (printed)
W5_CAP_S = 60.0  # W5 only: total timed seconds per implementation, at least one run
SAFETY_CAP_S = 300.0  # W1–W4: never cut below --repeats unless the runs would take longer
CHILD_TIMEOUT_S = 1200.0
DEFAULT_METHODS = ("direct", "gemm", "fft", "separable")  # 'auto' is the default row


# ---------------------------------------------------------------------------- workloads


@dataclass(frozen=True)
class Workload:
    key: str
    title: str
    height: int
    width: int
    channels: int
    filters: int
    ksize: int
    seed: int
    quick_hw: tuple[int, int]
    depthwise_gauss: bool = False
    sigma: float = 0.0

    def dims(self, quick: bool) -> tuple[int, int]:
        return self.quick_hw if quick else (self.height, self.width)


WORKLOADS = {
    w.key: w
    for w in [
        Workload(
            "W1",
            "1920×1080×3, 4 filters 3×3×3 (HD frame, small bank)",
            1080,
            1920,
            3,
            4,
            3,
            101,
            (540, 960),
        ),
        Workload(
            "W2",
            "4096×4096×3, 16 filters 5×5×3 (large image, wide bank)",
            4096,
            4096,
            3,
            16,
            5,
            102,
            (768, 768),
        ),
        Workload(
            "W3",
            "2048×2048×3, 1 dense filter 31×31×3 (large kernel)",
            2048,
            2048,
            3,
            1,
            31,
            103,
            (384, 384),
        ),
        # OpenCV's default sigma for a 15-tap Gaussian: 0.3·((15 − 1)/2 − 1) + 0.8 = 2.6
        Workload(
            "W4",
            "2048×2048×3, 15×15 Gaussian per channel (depthwise, σ=2.6)",
            2048,
            2048,
            3,
            3,
            15,
            104,
            (512, 512),
            depthwise_gauss=True,
            sigma=2.6,
        ),
        Workload(
            "W5",
            "8192×8192×3, 8 filters 3×3×3 (768 MiB in, 2 GiB out)",
            8192,
            8192,
            3,
            8,
            3,
            105,
            (1536, 1536),
        ),
    ]
}


def gaussian_1d(ksize: int, sigma: float) -> np.ndarray:
    """exp(−x²/2σ²) normalised to sum 1 (the formula of cv2.getGaussianKernel and scipy)."""
    x = np.arange(ksize, dtype=np.float64) - (ksize - 1) / 2
    g = np.exp(-(x * x) / (2 * sigma * sigma))
    return g / g.sum()


def make_inputs(wl: Workload, quick: bool) -> tuple[np.ndarray, np.ndarray]:
    """The seeded H×W×C float32 volume in [0, 1) and N×C×kh×kw float32 weights."""
    height, width = wl.dims(quick)
    volume = np.random.default_rng(wl.seed).random((height, width, wl.channels), np.float32)
    k = wl.ksize
    if wl.depthwise_gauss:
        g = gaussian_1d(k, wl.sigma)
        weights = np.zeros((wl.channels, wl.channels, k, k), np.float32)
        for c in range(wl.channels):
            weights[c, c] = np.outer(g, g)
    else:
        rng = np.random.default_rng(wl.seed + 1000)
        weights = rng.standard_normal((wl.filters, wl.channels, k, k)).astype(np.float32)
    return volume, weights


def flops(wl: Workload, quick: bool) -> float:
    """Useful floating-point work: 2·H'·W'·N·C·kh·kw (depthwise: 2·H·W·C·kh·kw)."""
    height, width = wl.dims(quick)
    taps = wl.ksize * wl.ksize
    if wl.depthwise_gauss:
        return 2.0 * height * width * wl.channels * taps
    return 2.0 * height * width * wl.filters * wl.channels * taps


def traffic_bytes(wl: Workload, quick: bool) -> tuple[int, int]:
    height, width = wl.dims(quick)
    return height * width * wl.channels * 4, height * width * wl.filters * 4


# ---------------------------------------------------------------------- correctness


def _mirror(index: np.ndarray, size: int) -> np.ndarray:
    """numpy.pad 'reflect' (= OpenCV BORDER_REFLECT_101 = scipy 'mirror') index mapping."""
    if size == 1:
        return np.zeros_like(index)
    period = 2 * (size - 1)
    folded = index % period
    return np.where(folded < size, folded, period - folded)


def sample_axis(size: int, reach: int, rng: np.random.Generator, count: int) -> np.ndarray:
    """Every row (column) within the kernel's reach of both borders, plus random ones."""
    edge = list(range(min(size, reach + 2))) + list(range(max(0, size - reach - 2), size))
    inner = rng.integers(0, size, count).tolist()
    return np.unique(np.array(edge + inner + [size // 2], dtype=np.int64))


def check_output(out: object, volume: np.ndarray, weights: np.ndarray) -> dict:
    """Compare ``out`` (H×W×N) to a float64 'same'/reflect correlation at a sample grid."""
    if not isinstance(out, np.ndarray):
        return {"ok": False, "text": f"FAIL: returned {type(out).__name__}"}
    height, width, _ = volume.shape
    n_filters, _, kh, kw = weights.shape
    if out.shape != (height, width, n_filters):
        return {"ok": False, "text": f"FAIL: shape {out.shape} ≠ {(height, width, n_filters)}"}
    rng = np.random.default_rng(7)
    rows = sample_axis(height, kh // 2, rng, 24)
    cols = sample_axis(width, kw // 2, rng, 24)
    sy = _mirror(rows[:, None] + np.arange(kh) - kh // 2, height)  # R×kh
    sx = _mirror(cols[:, None] + np.arange(kw) - kw // 2, width)  # Q×kw
    w64 = weights.astype(np.float64)
    ref = np.empty((rows.size, cols.size, n_filters))
    for r, src_rows in enumerate(sy):
        patch = volume[src_rows[:, None, None], sx[None, :, :], :].astype(np.float64)  # kh×Q×kw×C
        ref[r] = np.einsum("iqjc,ncij->qn", patch, w64)
    got = out[rows[:, None], cols[None, :], :].astype(np.float64)
    scale = np.abs(w64).sum(axis=(1, 2, 3))  # Σ|w_n|: the largest |output| for inputs in [0, 1]
    with np.errstate(invalid="ignore"):
        err = np.abs(got - ref) / np.where(scale > 0, scale, 1.0)
    worst = float(np.nanmax(err)) if np.isfinite(got).all() else float("inf")
    dtype_note = "" if out.dtype == np.float32 else f" (dtype {out.dtype})"
    ok = worst <= TOLERANCE
    return {"ok": ok, "err": worst, "text": f"{'PASS' if ok else 'FAIL'} {worst:.1e}{dtype_note}"}


# -------------------------------------------------------------------- implementations


class Skip(Exception):
    """This implementation does not apply here, or its library is missing."""


@dataclass
class Impl:
    key: str
    label: str
    needs: tuple[str, ...] = ()  # importable modules
    only: tuple[str, ...] | None = None  # workload keys it runs on
    only_reason: str = ""
    # kernel_only: not the HWC float32 → HWC float32 contract (excluded from 'fastest anchor')
    kernel_only: bool = False
    is_convvol: bool = False
    method: str | None = None


def _setup_convvol(volume, weights, wl, method):
    import convvol

    if method is None:
        return (lambda: convvol.convolve(volume, weights)), None, {}
    kwargs = {"method": method}
    try:  # let an inapplicable forced method say so before timing
        probe = volume[: min(64, volume.shape[0]), : min(64, volume.shape[1])]
        convvol.convolve(probe, weights, **kwargs)
    except Exception as error:
        raise Skip(f"method={method!r} refused: {type(error).__name__}: {error}") from None
    return (lambda: convvol.convolve(volume, weights, **kwargs)), None, {}


def _setup_naive(volume, weights, wl, method):
    _, _, kh, kw = weights.shape
    tap_weights = np.ascontiguousarray(weights.transpose(2, 3, 1, 0))  # kh×kw×C×N
    height, width, _ = volume.shape

    def run():
        padded = np.pad(volume, ((kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)), mode="reflect")
        out = np.zeros((height, width, weights.shape[0]), np.float32)
        for i in range(kh):
            for j in range(kw):
                out += padded[i : i + height, j : j + width] @ tap_weights[i, j]
        return out

    return run, None, {}


def _setup_opencv(volume, weights, wl, method):
    import cv2

    n_filters, channels = weights.shape[:2]
    layers = [
        [np.ascontiguousarray(weights[n, c]) for c in range(channels)] for n in range(n_filters)
    ]
    used = [[c for c in range(channels) if np.any(layers[n][c])] for n in range(n_filters)]

    def run():
        planes = cv2.split(volume)
        outs = []
        for n in range(n_filters):
            acc = None
            for c in used[n]:
                resp = cv2.filter2D(
                    planes[c], cv2.CV_32F, layers[n][c], borderType=cv2.BORDER_REFLECT_101
                )
                if acc is None:
                    acc = resp
                else:
                    acc += resp
            outs.append(acc if acc is not None else np.zeros(volume.shape[:2], np.float32))
        return cv2.merge(outs) if n_filters > 1 else outs[0][:, :, None]

    return run, None, {"threads": f"cv2 {cv2.getNumThreads()}"}


def _setup_opencv_sep(volume, weights, wl, method):
    import cv2

    g = gaussian_1d(wl.ksize, wl.sigma).astype(np.float32)
    run = lambda: cv2.sepFilter2D(volume, cv2.CV_32F, g, g, borderType=cv2.BORDER_REFLECT_101)  # noqa: E731
    return run, None, {"threads": f"cv2 {cv2.getNumThreads()}"}


def _setup_opencv_gauss(volume, weights, wl, method):
    import cv2

    k = wl.ksize
    run = lambda: cv2.GaussianBlur(volume, (k, k), wl.sigma, borderType=cv2.BORDER_REFLECT_101)  # noqa: E731
    return run, None, {"threads": f"cv2 {cv2.getNumThreads()}"}


def _torch_parts(weights, depthwise):
    import torch

    torch.set_grad_enabled(False)
    if depthwise:  # groups=C: one kh×kw layer per channel, the diagonal of the dense weights
        w = np.ascontiguousarray(
            np.stack([weights[c, c] for c in range(weights.shape[0])])[:, None]
        )
        groups = weights.shape[0]
    else:
        w, groups = weights, 1
    return torch, torch.from_numpy(np.ascontiguousarray(w)), groups


def _setup_torch(volume, weights, wl, method, *, depthwise=False, copies=True):
    torch, w_t, groups = _torch_parts(weights, depthwise)
    import torch.nn.functional as F

    _, _, kh, kw = weights.shape
    pad = (kw // 2, kw // 2, kh // 2, kh // 2)
    info = {"threads": f"torch {torch.get_num_threads()}"}
    if copies:

        def run():
            x = torch.from_numpy(volume).permute(2, 0, 1).unsqueeze(0).contiguous()  # HWC → NCHW
            y = F.conv2d(F.pad(x, pad, mode="reflect"), w_t, groups=groups)
            return y[0].permute(1, 2, 0).contiguous().numpy()  # NCHW → HWC

        return run, None, info
    x_nchw = torch.from_numpy(volume).permute(2, 0, 1).unsqueeze(0).contiguous()
    run = lambda: F.conv2d(F.pad(x_nchw, pad, mode="reflect"), w_t, groups=groups)  # noqa: E731
    return run, (lambda y: y[0].permute(1, 2, 0).contiguous().numpy()), info


def _setup_scipy(volume, weights, wl, method):
    from scipy import ndimage

    n_filters, channels = weights.shape[:2]
    used = [[c for c in range(channels) if np.any(weights[n, c])] for n in range(n_filters)]

    def run():
        out = np.zeros((volume.shape[0], volume.shape[1], n_filters), np.float32)
        for n in range(n_filters):
            for c in used[n]:
                out[:, :, n] += ndimage.correlate(
                    volume[:, :, c], weights[n, c], mode="mirror", output=np.float32
                )
        return out

    return run, None, {}


def _setup_scipy_gauss(volume, weights, wl, method):
    from scipy import ndimage

    radius = wl.ksize // 2
    run = lambda: ndimage.gaussian_filter(  # noqa: E731
        volume,
        sigma=(wl.sigma, wl.sigma, 0.0),
        mode="mirror",
        truncate=radius / wl.sigma,
        output=np.float32,
    )
    return run, None, {}


def _setup_scipy_sep(volume, weights, wl, method):
    from scipy import ndimage

    g = gaussian_1d(wl.ksize, wl.sigma)

    def run():  # along rows then columns; each channel is filtered on its own
        tmp = ndimage.correlate1d(volume, g, axis=0, mode="mirror", output=np.float32)
        return ndimage.correlate1d(tmp, g, axis=1, mode="mirror", output=np.float32)

    return run, None, {}


def _setup_fft(volume, weights, wl, method):
    from scipy import signal

    n_filters, _, kh, kw = weights.shape
    # correlation = convolution with the kernel rotated 180° in space; HWC kernel layout
    kernels = [
        np.ascontiguousarray(weights[n].transpose(1, 2, 0)[::-1, ::-1]) for n in range(n_filters)
    ]

    def run():
        padded = np.pad(volume, ((kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)), mode="reflect")
        out = np.empty((volume.shape[0], volume.shape[1], n_filters), np.float32)
        for n in range(n_filters):
            resp = signal.fftconvolve(padded, kernels[n], mode="valid", axes=(0, 1))
            out[:, :, n] = resp.sum(axis=2)
        return out

    return run, None, {}


SETUPS = {
    "naive": _setup_naive,
    "opencv": _setup_opencv,
    "opencv_sep": _setup_opencv_sep,
    "opencv_gauss": _setup_opencv_gauss,
    "torch": _setup_torch,
    "torch_nc": lambda *a: _setup_torch(*a, copies=False),
    "torch_dw": lambda *a: _setup_torch(*a, depthwise=True),
    "torch_dw_nc": lambda *a: _setup_torch(*a, depthwise=True, copies=False),
    "scipy": _setup_scipy,
    "scipy_gauss": _setup_scipy_gauss,
    "scipy_sep": _setup_scipy_sep,
    "fft": _setup_fft,
}

ANCHORS = [
    Impl("opencv", "OpenCV filter2D per (filter, channel) + sum", ("cv2",)),
    Impl("opencv_sep", "OpenCV sepFilter2D (3-channel image)", ("cv2",), ("W4",)),
    Impl("opencv_gauss", "OpenCV GaussianBlur (3-channel image)", ("cv2",), ("W4",)),
    Impl("torch", "PyTorch conv2d, HWC→HWC (incl. copies, F.pad)", ("torch",)),
    Impl(
        "torch_nc", "PyTorch conv2d, NCHW in/out (F.pad + conv only)", ("torch",), kernel_only=True
    ),
    Impl("torch_dw", "PyTorch conv2d groups=3, HWC→HWC (incl. copies)", ("torch",), ("W4",)),
    Impl(
        "torch_dw_nc",
        "PyTorch conv2d groups=3, NCHW (pad + conv only)",
        ("torch",),
        ("W4",),
        kernel_only=True,
    ),
    Impl("scipy", "scipy.ndimage.correlate per (filter, channel)", ("scipy",)),
    Impl("scipy_gauss", "scipy.ndimage.gaussian_filter (σ, radius 7)", ("scipy",), ("W4",)),
    Impl("scipy_sep", "scipy.ndimage.correlate1d rows, then columns", ("scipy",), ("W4",)),
    Impl(
        "fft",
        "scipy.signal.fftconvolve (np.pad reflect, valid)",
        ("scipy",),
        ("W3",),
        "FFT pays off only for large kernels: run on W3 only",
    ),
    Impl(
        "naive",
        "NumPy naive loop over taps (np.pad + window @ W)",
        (),
        ("W1", "W3"),
        "minutes on the big workloads: run on W1 and W3 only",
    ),
]


def discover_methods() -> tuple[list[str] | None, str]:
    """The forced methods to time, if convvol.convolve takes ``method=``; else None."""
    import convvol

    try:
        params = inspect.signature(convvol.convolve).parameters
    except (TypeError, ValueError):
        return None, "convvol.convolve has no inspectable signature"
    if "method" not in params:
        return None, "convvol.convolve takes no method= yet: timing the default engine only"
    names: list[str] = []
    try:
        hint = typing.get_type_hints(convvol.convolve).get("method")
        names = [a for a in typing.get_args(hint) if isinstance(a, str)]
    except Exception:  # unresolvable annotations: fall through
        names = []
    source = "its Literal annotation"
    if not names:
        settings = sys.modules.get("convvol.settings")
        public = getattr(settings, "METHODS", None) if settings else None
        if isinstance(public, dict | tuple | list | frozenset | set):
            names = [str(m) for m in public]
            source = "convvol.settings.METHODS"
    if not names:
        names, source = list(DEFAULT_METHODS), "the planned list"
    forced = [m for m in names if m != "auto"]
    return forced, f"convvol.convolve takes method=: timing each of {forced} (from {source})"


# ------------------------------------------------------------------------------ child


def _status_kib(field_name: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    return 0


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def child_main(spec: dict) -> None:
    wl = WORKLOADS[spec["workload"]]
    quick = spec["quick"]
    result: dict = {"notes": []}
    volume, weights = make_inputs(wl, quick)
    try:
        if spec["impl"] == "convvol":
            run, to_hwc, info = _setup_convvol(volume, weights, wl, spec.get("method"))
        else:
            run, to_hwc, info = SETUPS[spec["impl"]](volume, weights, wl, None)
    except Skip as skip:
        print(RESULT_MARK + json.dumps({"skip": str(skip)}), flush=True)
        return
    result.update(info)
    setup_peak = _status_kib("VmHWM")
    reset = _reset_peak()
    base = _status_kib("VmRSS") if reset else setup_peak

    t0 = time.perf_counter()
    out = run()  # warm-up
    warm = time.perf_counter() - t0
    runs = spec["repeats"]
    if wl.key == "W5":
        runs = min(runs, W5_REPEATS)
        if warm * runs > W5_CAP_S:
            runs = max(1, int(W5_CAP_S // warm))
        if runs < spec["repeats"]:
            result["notes"].append(f"W5: {runs} run{'s' if runs > 1 else ''}")
    elif warm * runs > SAFETY_CAP_S:
        runs = max(1, int(SAFETY_CAP_S // warm))
        result["notes"].append(f"only {runs} runs: {warm:.0f} s each is over the safety cap")
    times = []
    for _ in range(runs):
        out = None  # one output alive at a time: the peak is one call's
        t0 = time.perf_counter()
        out = run()
        times.append(time.perf_counter() - t0)
    work_peak = _status_kib("VmHWM")
    result.update(
        {
            "warmup": warm,
            "times": times,
            "median": statistics.median(times),
            "peak_mib": max(setup_peak, work_peak) / 1024,
            "delta_mib": max(0, work_peak - base) / 1024,
            "check": check_output(to_hwc(out) if to_hwc else out, volume, weights),
        }
    )
    print(RESULT_MARK + json.dumps(result), flush=True)


def run_child(spec: dict) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--_child", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"error": f"TIMEOUT after {CHILD_TIMEOUT_S:.0f} s"}
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_MARK):
            return json.loads(line[len(RESULT_MARK) :])
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    if proc.returncode < 0:
        tail = f"killed by signal {-proc.returncode} (out of memory?) {tail}"
    return {"error": f"ERROR (exit {proc.returncode}): {tail[:160]}"}


# ------------------------------------------------------------------------ formatting


def render(headers: list[str], rows: list[list[str]], markdown: bool, right: set[int]) -> str:
    if markdown:
        lines = [
            "| " + " | ".join(headers) + " |",
            "|" + "|".join("---:" if i in right else "---" for i in range(len(headers))) + "|",
        ]
        lines += [
            "| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows
        ]
        return "\n".join(lines)
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]

    def fmt(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return "\n".join([fmt(headers), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows])


def heading(text: str, markdown: bool, level: int = 2) -> str:
    if markdown:
        return "\n" + "#" * (level + 1) + " " + text + "\n"
    bar = "=" if level == 1 else "-"
    return "\n" + text + "\n" + bar * len(text)


def note(text: str, markdown: bool) -> str:
    return ("- " if markdown else "  ") + text


def fmt_s(seconds: float) -> str:
    if seconds >= 100:
        return f"{seconds:.0f}"
    if seconds >= 10:
        return f"{seconds:.1f}"
    if seconds >= 0.1:
        return f"{seconds:.2f}"
    return f"{seconds:.4f}"


def speed_text(anchor_s: float, convvol_s: float) -> str:
    ratio = anchor_s / convvol_s
    if ratio >= 1:
        return f"convvol {ratio:.1f}× faster"
    return f"convvol {1 / ratio:.1f}× slower"


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -------------------------------------------------------------------- machine section


def version_of(*dists: str) -> str | None:
    for dist in dists:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def _loadavg() -> str:
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg()) + " (1 / 5 / 15 min)"
    except OSError:
        return "unknown"


def machine_section(quick: bool, markdown: bool) -> tuple[list[str], dict]:
    lines = [heading("Machine", markdown, 1)]
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        cpu = platform.processor() or "unknown"
    cores = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            mem = f"{int(f.readline().split()[1]) / MIB:.1f} GiB"
    except OSError:
        pass
    lines.append(
        note(
            f"CPU: {cpu}; {cores} logical cores ({usable} usable); memory {mem}; "
            f"{platform.system()} {platform.release()}",
            markdown,
        )
    )
    lines.append(note(f"Python {platform.python_version()}", markdown))
    lines.append(
        note(
            f"load average at start: {_loadavg()} (other work on the machine skews "
            "every number below)",
            markdown,
        )
    )
    versions = []
    for label, dists in [
        ("convvol", ("convvol",)),
        ("numpy", ("numpy",)),
        ("scipy", ("scipy",)),
        (
            "opencv",
            (
                "opencv-python-headless",
                "opencv-python",
                "opencv-contrib-python-headless",
                "opencv-contrib-python",
            ),
        ),
        ("torch", ("torch",)),
        ("pillow", ("pillow", "Pillow")),
    ]:
        versions.append(f"{label} {version_of(*dists) or 'not installed'}")
    lines.append(note("Libraries: " + ", ".join(versions), markdown))
    blas = "unknown"
    try:
        config = np.show_config(mode="dicts")
        dep = config["Build Dependencies"]["blas"]
        blas = f"{dep.get('name')} {dep.get('version')} ({dep.get('openblas configuration', '')})"
    except Exception:
        pass
    threads = "OpenBLAS default (all cores unless OPENBLAS_NUM_THREADS/OMP_NUM_THREADS are set)"
    try:
        import threadpoolctl

        threads = "; ".join(
            f"{i['internal_api']} {i['num_threads']} threads"
            for i in threadpoolctl.threadpool_info()
        )
    except ImportError:
        env = {
            k: os.environ[k]
            for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
            if k in os.environ
        }
        if env:
            threads = f"environment {env}"
    lines.append(note(f"numpy BLAS: {blas}; threads: {threads}", markdown))

    # float32 GEMM peak, BLAS threads as configured
    n = 2048 if quick else 4096
    rng = np.random.default_rng(0)
    a = rng.random((n, n), np.float32)
    b = rng.random((n, n), np.float32)
    c = np.empty((n, n), np.float32)
    np.matmul(a, b, out=c)
    gemm_times = []
    for _ in range(3 if quick else 5):
        t0 = time.perf_counter()
        np.matmul(a, b, out=c)
        gemm_times.append(time.perf_counter() - t0)
    gemm = 2.0 * n**3 / statistics.median(gemm_times) / 1e9
    del a, b, c
    # copy bandwidth: np.copyto of a 1 GiB float32 array, read + write bytes counted
    size = (256 if quick else 1024) * MIB
    src = np.ones(size // 4, np.float32)
    dst = np.zeros_like(src)
    np.copyto(dst, src)
    copy_times = []
    for _ in range(3 if quick else 5):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        copy_times.append(time.perf_counter() - t0)
    bandwidth = 2.0 * size / statistics.median(copy_times) / 1e9
    del src, dst
    lines.append(
        note(
            f"float32 GEMM peak: {gemm:.0f} GFLOP/s (median np.matmul {n}×{n}, "
            f"BLAS threads as configured)",
            markdown,
        )
    )
    lines.append(
        note(
            f"copy bandwidth: {bandwidth:.1f} GB/s (median np.copyto of "
            f"{size // MIB} MiB, read + write counted; one thread)",
            markdown,
        )
    )
    return lines, {"gemm": gemm, "bandwidth": bandwidth}


# ---------------------------------------------------------------- workloads section


@dataclass
class Row:
    impl: Impl
    result: dict = field(default_factory=dict)


def workload_section(wl: Workload, args, methods, machine: dict) -> tuple[list[str], dict]:
    md = args.markdown
    height, width = wl.dims(args.quick)
    lines = [
        heading(f"{wl.key}: {wl.title}" + (f" [quick: {width}×{height}]" if args.quick else ""), md)
    ]
    impls = [Impl("convvol", "convvol.convolve (default)", is_convvol=True)]
    impls += [
        Impl("convvol", f"convvol.convolve method={m!r}", is_convvol=True, method=m)
        for m in (methods or [])
    ]
    impls += ANCHORS
    rows: list[Row] = []
    skipped: list[str] = []
    for impl in impls:
        if impl.only is not None and wl.key not in impl.only:
            if impl.only_reason:
                skipped.append(f"{impl.label}: {impl.only_reason}")
            continue
        missing = [m for m in impl.needs if importlib.util.find_spec(m) is None]
        if missing:
            skipped.append(f"{impl.label}: skipped, {', '.join(missing)} not installed")
            continue
        log(f"[{wl.key}] {impl.label} ...")
        spec = {
            "workload": wl.key,
            "quick": args.quick,
            "impl": impl.key,
            "method": impl.method,
            "repeats": args.repeats,
        }
        t0 = time.perf_counter()
        result = run_child(spec)
        log(
            f"[{wl.key}] {impl.label}: "
            f"{result.get('median', result.get('skip') or result.get('error'))}"
            f"  ({time.perf_counter() - t0:.1f} s wall)"
        )
        if "skip" in result:
            skipped.append(f"{impl.label}: {result['skip']}")
            continue
        rows.append(Row(impl, result))

    total_flops = flops(wl, args.quick)
    base = next(
        (r for r in rows if r.impl.is_convvol and r.impl.method is None and "median" in r.result),
        None,
    )
    base_s = base.result["median"] if base else None
    table = []
    for row in rows:
        res = row.result
        label = row.impl.label + (" *" if row.impl.kernel_only else "")
        if "median" not in res:
            table.append([label, "—", "—", "—", "—", "—", "—", "—", res.get("error", "?")])
            continue
        med = res["median"]
        if base_s is None or row is base:
            ratio, versus = "1.00" if row is base else "—", "—"
        else:
            ratio, versus = f"{med / base_s:.2f}", speed_text(med, base_s)
        notes = list(res.get("notes", []))
        check = res["check"]["text"] + (" " + "; ".join(notes) if notes else "")
        table.append(
            [
                label,
                fmt_s(med),
                str(len(res["times"])),
                ratio,
                versus,
                f"{total_flops / med / 1e9:.1f}",
                f"{res['peak_mib']:.0f}",
                f"{res['delta_mib']:.0f}",
                check,
            ]
        )
    headers = [
        "implementation",
        "median s",
        "runs",
        "t / t(convvol)",
        "vs convvol",
        "GFLOP/s",
        "peak RSS MiB",
        "+RSS MiB",
        "check",
    ]
    lines.append(render(headers, table, md, {1, 2, 3, 5, 6, 7}))

    bytes_in, bytes_out = traffic_bytes(wl, args.quick)
    traffic_s = (bytes_in + bytes_out) / (machine["bandwidth"] * 1e9)
    compute_s = total_flops / (machine["gemm"] * 1e9)
    work = "depthwise useful work 2·H·W·3·15·15" if wl.depthwise_gauss else "2·H'·W'·N·C·kh·kw"
    lines.append(
        note(
            f"work: {total_flops / 1e9:.1f} GFLOP ({work}); lower bounds: memory "
            f"traffic (in {bytes_in / MIB:.0f} MiB + out {bytes_out / MIB:.0f} MiB) / "
            f"copy bandwidth = {fmt_s(traffic_s)} s; work / GEMM peak = "
            f"{fmt_s(compute_s)} s",
            md,
        )
    )
    summary: dict = {
        "key": wl.key,
        "convvol": base_s,
        "bound": max(traffic_s, compute_s),
        "convvol_peak": base.result["peak_mib"] if base else None,
    }
    passing = [
        r
        for r in rows
        if not r.impl.is_convvol and "median" in r.result and r.result["check"]["ok"]
    ]
    contract = [r for r in passing if not r.impl.kernel_only]
    if base_s is not None and contract:
        best = min(contract, key=lambda r: r.result["median"])
        summary.update(best=best.impl.label, best_s=best.result["median"])
        lines.append(
            note(
                f"convvol / fastest anchor = {base_s / best.result['median']:.2f} "
                f"(fastest: {best.impl.label}, {fmt_s(best.result['median'])} s); "
                "< 1.0 means convvol wins",
                md,
            )
        )
        fastest_any = min(passing, key=lambda r: r.result["median"])
        if fastest_any.impl.kernel_only:
            lines.append(
                note(
                    f"counting kernel-only rows (*) too: "
                    f"{base_s / fastest_any.result['median']:.2f} "
                    f"({fastest_any.impl.label})",
                    md,
                )
            )
    if base_s is not None:
        lines.append(
            note(f"convvol at {base_s / max(traffic_s, compute_s):.1f}× the larger lower bound", md)
        )
    if any(r.impl.kernel_only for r in rows):
        lines.append(
            note(
                "* kernel-only: input already NCHW, output left NCHW (no HWC copies); "
                "not counted as 'fastest anchor'",
                md,
            )
        )
    if wl.key == "W5" and any(len(r.result.get("times", ())) < args.repeats for r in rows):
        lines.append(
            note(
                f"W5 only: at most {W5_REPEATS} timed runs instead of {args.repeats}, "
                f"and fewer (≥ 1) when the warm-up says they would take over "
                f"{W5_CAP_S:.0f} s in all, to bound the run time",
                md,
            )
        )
    threads = sorted({r.result["threads"] for r in rows if "threads" in r.result})
    if threads:
        lines.append(
            note("threads: " + ", ".join(threads) + "; scipy.ndimage is single-threaded", md)
        )
    failed = [r.impl.label for r in rows if "check" in r.result and not r.result["check"]["ok"]]
    if failed:
        lines.append(note("WRONG RESULTS: " + ", ".join(failed), md))
    lines += [note("skipped: " + s, md) for s in skipped]
    return lines, summary


# ---------------------------------------------------------------------- end to end

SHARPEN = [[0, -1, 0], [-1, 5, -1], [0, -1, 0]]


def make_photo(path: Path, size: int) -> np.ndarray:
    """A seeded photo-like RGB image: smooth gradients, soft blobs and sensor-like noise."""
    rng = np.random.default_rng(2024)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / np.float32(size)
    image = np.empty((size, size, 3), np.uint8)
    blobs = [
        (rng.random(), rng.random(), 0.03 + 0.12 * rng.random(), rng.random(3) - 0.5)
        for _ in range(12)
    ]
    for c in range(3):
        plane = 0.45 + 0.25 * np.sin(2 * np.pi * (0.6 + 0.3 * c) * xx + 1.7 * c) * np.cos(
            2 * np.pi * (0.4 + 0.2 * c) * yy
        )
        plane += 0.2 * (xx if c != 1 else yy)
        for by, bx, radius, tint in blobs:
            plane += tint[c] * 0.6 * np.exp(-((yy - by) ** 2 + (xx - bx) ** 2) / (2 * radius**2))
        plane += rng.normal(0.0, 0.03, plane.shape).astype(np.float32)
        image[:, :, c] = np.clip(plane * 255 + 0.5, 0, 255).astype(np.uint8)
    from PIL import Image

    Image.fromarray(image, "RGB").save(path)  # Pillow's default PNG compression
    return image


def sharpen_reference(image: np.ndarray) -> np.ndarray:
    p = image.astype(np.int32)
    interior = 5 * p[1:-1, 1:-1] - p[:-2, 1:-1] - p[2:, 1:-1] - p[1:-1, :-2] - p[1:-1, 2:]
    return np.clip(interior, 0, 255)


def find_imagemagick() -> list[str] | None:
    """IM7's magick, or IM6's convert (never a stand-in script of the same name)."""
    candidates = [
        shutil.which("magick"),
        "/usr/bin/convert",
        shutil.which("convert"),
        shutil.which("convert-im6.q16"),
    ]
    for cand in candidates:
        if not cand or not os.path.exists(cand):
            continue
        try:
            with open(cand, "rb") as f:
                if b"Stands in for ImageMagick" in f.read(4096):
                    continue
            version = subprocess.run(
                [cand, "-version"], capture_output=True, text=True, timeout=20
            ).stdout
        except (OSError, subprocess.SubprocessError):
            continue
        if "ImageMagick" in version:
            return [os.path.realpath(cand)]
    return None


def e2e_section(args) -> list[str]:
    md = args.markdown
    size = 1024 if args.quick else 4096
    runs = 1 if args.quick else 3
    lines = [heading(f"End to end: sharpen a {size}×{size} RGB PNG (3×3, depthwise)", md)]
    from PIL import Image

    with tempfile.TemporaryDirectory(prefix="convvol-bench-") as tmp_name:
        tmp = Path(tmp_name)
        src = tmp / "in.png"
        log(f"[e2e] making the {size}×{size} test photo ...")
        image = make_photo(src, size)
        reference = sharpen_reference(image)
        bank = tmp / "sharpen3.yaml"
        bank.write_text(
            "name: sharpen3\ndescription: depthwise 3×3 sharpen (RGB in, RGB out)\n"
            "filters:\n  - name: sharpen\n    kernel: "
            + json.dumps(SHARPEN)
            + "\n    depthwise: true\n"
        )
        matrix = tmp / "sharpen.mat"
        matrix.write_text("3 3 1 0\n" + "\n".join(" ".join(map(str, r)) for r in SHARPEN) + "\n")
        kernel_im = "3x3: " + " ".join(",".join(map(str, r)) for r in SHARPEN)
        flat = [v for r in SHARPEN for v in r]
        py = sys.executable
        tools: list[tuple[str, list[str] | None, str]] = []
        tools.append(
            (
                "convvol CLI (python -m convvol apply)",
                [py, "-m", "convvol", "apply", str(src), "-f", str(bank), "-o", "{out}", "-q"],
                "",
            )
        )
        magick = find_imagemagick()
        tools.append(
            (
                "ImageMagick -morphology Convolve",
                [*magick, str(src), "-morphology", "Convolve", kernel_im, "{out}"]
                if magick
                else None,
                "ImageMagick (convert/magick) not installed",
            )
        )
        vips = shutil.which("vips")
        tools.append(
            (
                "libvips: vips conv",
                [vips, "conv", str(src), "{out}", str(matrix)] if vips else None,
                "vips not installed (apt-get install libvips-tools)",
            )
        )
        has_cv2 = importlib.util.find_spec("cv2") is not None
        cv_code = (
            f"import sys, cv2, numpy as np; k = np.array({SHARPEN!r}, np.float32); "
            "cv2.imwrite(sys.argv[2], cv2.filter2D(cv2.imread(sys.argv[1]), -1, k, "
            "borderType=cv2.BORDER_REFLECT_101))"
        )
        tools.append(
            (
                "OpenCV imread/filter2D/imwrite (python -c)",
                [py, "-c", cv_code, str(src), "{out}"] if has_cv2 else None,
                "cv2 not installed",
            )
        )
        pil_code = (
            "import sys; from PIL import Image, ImageFilter; Image.open(sys.argv[1])"
            f".filter(ImageFilter.Kernel((3, 3), {flat!r}, scale=1)).save(sys.argv[2])"
        )
        tools.append(
            ("Pillow ImageFilter.Kernel (python -c)", [py, "-c", pil_code, str(src), "{out}"], "")
        )

        # pip byte-compiles a package when it installs it; an editable install under
        # PYTHONDONTWRITEBYTECODE would compile convvol's modules on every run instead.
        import compileall

        import convvol

        compileall.compile_dir(Path(convvol.__file__).parent, quiet=1)
        table, skipped, base_s = [], [], None
        for label, cmd, why in tools:
            if cmd is None:
                skipped.append(f"{label}: skipped, {why}")
                continue
            out = tmp / f"out-{len(table)}.png"
            argv = [str(out) if a == "{out}" else a for a in cmd]
            log(f"[e2e] {label} ...")
            times, error = [], None
            for attempt in range(runs + 1):  # one warm-up, then the timed runs
                out.unlink(missing_ok=True)
                t0 = time.perf_counter()
                proc = subprocess.run(argv, capture_output=True, text=True)
                elapsed = time.perf_counter() - t0
                if proc.returncode != 0:
                    error = (proc.stderr.strip().splitlines() or ["?"])[-1][:120]
                    break
                if attempt:
                    times.append(elapsed)
            if error:
                table.append([label, "—", "—", "—", "—", f"FAIL: exit {proc.returncode}: {error}"])
                continue
            med = statistics.median(times)
            if label.startswith("convvol"):
                base_s = med
            try:
                with Image.open(out) as result:
                    fmt, dims, mode = result.format, result.size, result.mode
                    pixels = np.asarray(result.convert("RGB")).astype(np.int32)
                valid = fmt == "PNG" and dims == (size, size) and mode == "RGB"
                diff = np.abs(pixels[1:-1, 1:-1] - reference)
                worst = int(diff.max())
                check = ("PASS" if valid and worst <= 1 else "FAIL") + (
                    f" {fmt} {dims[0]}×{dims[1]} {mode}, interior max|Δ| = {worst}/255"
                )
            except Exception as exc:  # not a readable image
                check = f"FAIL: unreadable output ({type(exc).__name__}: {exc})"
            versus = (
                "—" if base_s is None or label.startswith("convvol") else speed_text(med, base_s)
            )
            table.append(
                [
                    label,
                    fmt_s(med),
                    str(len(times)),
                    versus,
                    f"{out.stat().st_size / MIB:.1f}",
                    check,
                ]
            )
        lines.append(
            render(
                ["command", "median s", "runs", "vs convvol", "out MiB", "check"],
                table,
                md,
                {1, 2, 4},
            )
        )
        lines.append(
            note(
                f"input: {src.stat().st_size / MIB:.1f} MiB PNG (Pillow default "
                "compression), seeded gradients + blobs + noise; each command is one "
                "warm-up, then the median of the timed runs, process start included "
                "(convvol's modules byte-compiled first, as pip does on install)",
                md,
            )
        )
        lines.append(
            note(
                "check: the output is a PNG of the input's size, and its interior "
                "(borders differ by tool) matches an exact integer sharpen within 1 "
                "level; PNG encoders and compression levels differ, see 'out MiB'",
                md,
            )
        )
        lines += [note("skipped: " + s, md) for s in skipped]
    return lines


# ------------------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small sizes and 3 repeats: a smoke test in under a minute",
    )
    parser.add_argument("--only", default="", help="comma-separated workloads, e.g. W1,W3")
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timed runs per implementation after one warm-up (default 5; 3 with --quick)",
    )
    parser.add_argument(
        "--markdown", action="store_true", help="print the tables as GitHub markdown"
    )
    parser.add_argument(
        "--e2e",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the end-to-end command-line section (default: on)",
    )
    parser.add_argument("--_child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._child:
        child_main(json.loads(args._child))
        return
    if args.repeats is None:
        args.repeats = 3 if args.quick else 5
    if args.repeats < 1:
        parser.error("--repeats must be ≥ 1")
    keys = [k.strip().upper() for k in args.only.split(",") if k.strip()] or list(WORKLOADS)
    unknown = [k for k in keys if k not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workload(s) {unknown}; choose from {list(WORKLOADS)}")

    started = time.perf_counter()
    md = args.markdown
    print(
        heading(
            "convvol benchmark"
            + (" (--quick: small sizes, smoke test only)" if args.quick else ""),
            md,
            1,
        ).lstrip("\n")
    )
    print(note(f"command: python benchmarks/bench.py {' '.join(sys.argv[1:])}".rstrip(), md))
    print(
        note(
            f"timing: one warm-up, then the median of {args.repeats} runs "
            "(time.perf_counter), each implementation in a fresh child process; peak RSS is "
            "the child's VmHWM (inputs included), +RSS the rise over its RSS just before "
            "the warm-up",
            md,
        )
    )
    print(
        note(
            f"check: float64 'same'/reflect correlation at a sample grid covering every "
            f"border row and column; PASS if max |out − ref| / Σ|w_n| ≤ {TOLERANCE:g} "
            "(the number shown)",
            md,
        )
    )
    methods, method_note = discover_methods()
    print(note(method_note, md))
    lines, machine = machine_section(args.quick, md)
    print("\n".join(lines), flush=True)

    summaries = []
    for key in keys:
        lines, summary = workload_section(WORKLOADS[key], args, methods, machine)
        summaries.append(summary)
        print("\n".join(lines), flush=True)

    rows = []
    for s in summaries:
        if s.get("convvol") is None:
            rows.append([s["key"], "—", "—", "—", "—", "—"])
            continue
        best = s.get("best_s")
        rows.append(
            [
                s["key"],
                fmt_s(s["convvol"]),
                f"{s['convvol_peak']:.0f}",
                s.get("best", "—"),
                fmt_s(best) if best else "—",
                f"{s['convvol'] / best:.2f}" if best else "—",
            ]
        )
    print(heading("Summary", md))
    print(
        render(
            [
                "workload",
                "convvol s",
                "convvol peak RSS MiB",
                "fastest anchor",
                "anchor s",
                "convvol / fastest",
            ],
            rows,
            md,
            {1, 2, 4, 5},
        )
    )
    print(note("convvol / fastest < 1.0 means convvol wins", md), flush=True)

    if args.e2e:
        print("\n".join(e2e_section(args)), flush=True)
    print(
        "\n"
        + note(
            f"total wall time: {time.perf_counter() - started:.0f} s; load average "
            f"at the end: {_loadavg()}",
            md,
        )
    )


if __name__ == "__main__":
    main()
