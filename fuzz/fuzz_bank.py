#!/usr/bin/env python3
"""Fuzz the bank loader (YAML and JSON) with atheris: python fuzz/fuzz_bank.py CORPUS [flags].

Any exception but ConvvolError is a crash. See fuzz/run.py for the bounded run that
docs/errors.md documents.
"""

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent))

with atheris.instrument_imports(include=["convvol", "yaml", "json", "targets"]):
    import targets


def main() -> None:
    atheris.Setup(sys.argv, targets.check_bank)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
