"""Batch workers reuse the memory their last file freed (batch.reuse_freed_memory)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from convvol.batch import reuse_freed_memory

GLIBC = "glibc" in (os.confstr("CS_GNU_LIBC_VERSION") or "") if hasattr(os, "confstr") else False

# A worker's files: images of a few sizes, each allocated, written and freed in turn.
FILES = """
import resource, sys
import numpy as np
from convvol.batch import reuse_freed_memory
if sys.argv[1] == "reuse":
    assert reuse_freed_memory()
def image(mib):
    pixels = np.empty(mib * 2**20, np.uint8)
    pixels.fill(1)
    del pixels
image(30)  # the first and largest file: its pages are new in any case
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for mib in (18, 24, 20, 30):
    image(mib)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", FILES, mode], capture_output=True, text=True,
                          check=True)  # fmt: skip
    return int(done.stdout.strip())


@pytest.mark.skipif(not GLIBC, reason="the setting is glibc's")
def test_later_files_reuse_the_pages_of_earlier_ones():
    fresh = page_faults("default")
    if fresh < 500:  # transparent huge pages, say: little to save here
        pytest.skip(f"this system faulted only {fresh} pages without the setting")
    assert page_faults("reuse") < fresh / 10


@pytest.mark.skipif(GLIBC, reason="on glibc it is set")
def test_elsewhere_nothing_is_set():
    assert reuse_freed_memory() is False
