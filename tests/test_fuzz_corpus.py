"""Replay the fuzzers' corpora and every crash they found (fuzz/crashes/) in the ordinary run.

The checks are the fuzz targets' own (fuzz/targets.py): the loader and the reader raise
nothing but ConvvolError, and what they accept is finite float32. Atheris is not needed.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import pytest

FUZZ = Path(__file__).resolve().parents[1] / "fuzz"


def load_targets() -> object:
    spec = importlib.util.spec_from_file_location("fuzz_targets", FUZZ / "targets.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TARGETS = load_targets()
INPUTS = [
    pytest.param(target, path, id=f"{path.parent.parent.name}/{target}/{path.name}")
    for kind in ("crashes", "corpus")
    for target in ("bank", "volume", "tiff", "weights")
    for path in sorted((FUZZ / kind / target).glob("*"))
    if path.is_file() and not path.name.startswith(".")
]


def test_the_corpora_are_there() -> None:
    assert sum(1 for param in INPUTS if param.values[0] == "bank") >= 10
    assert sum(1 for param in INPUTS if param.values[0] == "volume") >= 10
    assert sum(1 for param in INPUTS if param.values[0] == "tiff") >= 10
    assert sum(1 for param in INPUTS if param.values[0] == "weights") >= 10


@pytest.mark.parametrize(("target", "path"), INPUTS)
def test_input_raises_only_convvol_errors(target: str, path: Path) -> None:
    check: Callable[[bytes], None] = getattr(TARGETS, f"check_{target}")
    check(path.read_bytes())
