#!/usr/bin/env python3
"""Fuzz the volume reader (images and .npy) with atheris: python fuzz/fuzz_volume.py CORPUS.

Any exception but ConvvolError is a crash. See fuzz/run.py for the bounded run that
docs/errors.md documents.
"""

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent))

with atheris.instrument_imports(include=["convvol", "PIL", "targets"]):
    import targets


def main() -> None:
    atheris.Setup(sys.argv, targets.check_volume)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
