#!/usr/bin/env python3
"""Fuzz the weight-file readers (.npy, .npz, .safetensors, PyTorch, ONNX, Keras) with atheris:
python fuzz/fuzz_weights.py CORPUS [flags]. The input's first byte picks the format.

Any exception but ConvvolError is a crash; nothing a pickle names may run. See fuzz/run.py.
"""

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent))

with atheris.instrument_imports(include=["convvol", "targets"]):
    import targets


def main() -> None:
    atheris.Setup(sys.argv, targets.check_weights)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
