"""Run the fuzz targets for a bounded time, one after the other (opt-in; not part of CI).

    pip install -e '.[fuzz]'
    python fuzz/run.py --seconds 600          # 10 minutes on each entry point

Each target starts from its corpus (fuzz/corpus/bank, volume, tiff, weights) and libFuzzer
adds the new inputs it finds there. A crash (any exception but ConvvolError) stops that
target and leaves the input as crash-*; fix it, copy the input to fuzz/crashes/<target>/
(tests/test_fuzz_corpus.py replays it from then on), and run again. ``--merge`` shrinks a
grown corpus to the inputs that add coverage before it is committed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
TARGETS = ("bank", "volume", "tiff", "weights")
# libFuzzer runs a target again as a program of its own (for -merge=1), so the targets are
# executable scripts (#!/usr/bin/env python3): this Python comes first on the PATH.
ENV = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent),
                                              os.environ.get("PATH", "")])}  # fmt: skip


def fuzz(target: str, seconds: int, extra: list[str]) -> int:
    corpus = HERE / "corpus" / target
    artifacts = HERE / "artifacts" / target
    artifacts.mkdir(parents=True, exist_ok=True)
    command = [
        str(HERE / f"fuzz_{target}.py"), str(corpus),
        f"-max_total_time={seconds}", "-timeout=20", "-rss_limit_mb=3072",
        f"-artifact_prefix={artifacts}{os.sep}", "-print_final_stats=1", *extra,
    ]  # fmt: skip
    print("$", " ".join(command), flush=True)
    return subprocess.run(command, env=ENV, check=False).returncode


def merge(target: str) -> int:
    """Keep only the inputs that add coverage (libFuzzer's -merge=1), in place."""
    corpus = HERE / "corpus" / target
    with tempfile.TemporaryDirectory() as scratch:
        command = [str(HERE / f"fuzz_{target}.py"), "-merge=1", scratch, str(corpus)]
        print("$", " ".join(command), flush=True)
        code = subprocess.run(command, env=ENV, check=False).returncode
        kept = list(Path(scratch).iterdir())
        if code != 0 or not kept:  # never trade a corpus for an empty one
            print(f"merge of {corpus} failed; the corpus is left as it was", file=sys.stderr)
            return code or 1
        seeds = {p.name: p.read_bytes() for p in corpus.glob("seed-*")}
        shutil.rmtree(corpus)
        shutil.copytree(scratch, corpus)
        for name, data in seeds.items():  # the seeds stay, by name
            (corpus / name).write_bytes(data)
        print(f"{corpus}: {len(kept)} inputs that add coverage, and the seeds", flush=True)
        return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=60, help="per target (default 60)")
    parser.add_argument("--only", choices=TARGETS, help="run one target")
    parser.add_argument("--merge", action="store_true", help="minimise the corpora instead")
    args, extra = parser.parse_known_args()
    failed = 0
    for target in [args.only] if args.only else TARGETS:
        code = merge(target) if args.merge else fuzz(target, args.seconds, extra)
        failed |= code != 0
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
