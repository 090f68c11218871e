#!/usr/bin/env python3
"""Fuzz the TIFF reader (tifffile and imagecodecs behind convvol's checks) with atheris:
python fuzz/fuzz_tiff.py CORPUS.

Any exception but ConvvolError is a crash. See fuzz/run.py for the bounded run that
docs/errors.md documents.
"""

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent))

with atheris.instrument_imports(include=["convvol", "tifffile", "targets"]):
    import targets


def main() -> None:
    atheris.Setup(sys.argv, targets.check_tiff)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
