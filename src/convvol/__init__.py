"""convvol: convolution over volume for images, from the shell and from Python.

An RGB image is an H×W×3 volume; a filter is a kh×kw×C volume; a bank of N filters
turns a volume into an H'×W'×N volume, as one layer of a CNN does.

>>> import numpy as np, convvol
>>> volume = np.zeros((6, 6, 3), np.float32)
>>> convvol.convolve(volume, np.ones((1, 3, 3, 3)), padding="valid").shape
(4, 4, 1)
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "1.0.0"

# Every public name and the module that defines it. They are imported on first use, so
# that importing convvol (and starting the command line) costs almost nothing until
# something is used: Ctrl-C in the first instant then meets the CLI's own handling.
_EXPORTS = {
    "Bank": "convvol.bank",
    "Filter": "convvol.bank",
    "bank_from_document": "convvol.bank",
    "load_bank": "convvol.bank",
    "LayerPlan": "convvol.engine",
    "convolve": "convvol.engine",
    "convolve_bands": "convvol.engine",
    "plan_layer": "convvol.engine",
    "BankError": "convvol.errors",
    "ConvvolError": "convvol.errors",
    "KernelError": "convvol.errors",
    "OutputError": "convvol.errors",
    "ParameterError": "convvol.errors",
    "VolumeError": "convvol.errors",
    "pixels_to_volume": "convvol.io",
    "read_pixels": "convvol.io",
    "read_volume": "convvol.io",
    "write_volume": "convvol.io",
    "builtin_kernel": "convvol.kernels",
    "LayerResult": "convvol.pipeline",
    "RenderedResult": "convvol.pipeline",
    "apply_bank": "convvol.pipeline",
    "plan_stack": "convvol.pipeline",
    "render_layers": "convvol.pipeline",
    "run_layers": "convvol.pipeline",
    "LayerSettings": "convvol.settings",
    "Settings": "convvol.settings",
    "MissingRule": "convvol.settings",
    "mark_missing": "convvol.masks",
    "contact_sheet": "convvol.pictures",
    "kernel_heatmaps": "convvol.pictures",
    "filter_patches": "convvol.pictures",
    "InputNorm": "convvol.normalize",
    "linear_to_srgb": "convvol.scaling",
    "list_tensors": "convvol.io.weights",
    "srgb_to_linear": "convvol.scaling",
}

if TYPE_CHECKING:
    from convvol.bank import Bank, Filter, bank_from_document, load_bank
    from convvol.engine import LayerPlan, convolve, convolve_bands, plan_layer
    from convvol.errors import (
        BankError,
        ConvvolError,
        KernelError,
        OutputError,
        ParameterError,
        VolumeError,
    )
    from convvol.io import pixels_to_volume, read_pixels, read_volume, write_volume
    from convvol.io.weights import list_tensors
    from convvol.kernels import builtin_kernel
    from convvol.masks import mark_missing
    from convvol.normalize import InputNorm
    from convvol.pictures import contact_sheet, filter_patches, kernel_heatmaps
    from convvol.pipeline import (
        LayerResult,
        RenderedResult,
        apply_bank,
        plan_stack,
        render_layers,
        run_layers,
    )
    from convvol.scaling import linear_to_srgb, srgb_to_linear
    from convvol.settings import LayerSettings, MissingRule, Settings


def __getattr__(name: str) -> Any:
    """A public name, imported from its module on first use."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'convvol' has no attribute {name!r}")
    value = getattr(import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


__all__ = [
    "Bank",
    "BankError",
    "ConvvolError",
    "Filter",
    "InputNorm",
    "KernelError",
    "LayerPlan",
    "LayerResult",
    "LayerSettings",
    "MissingRule",
    "OutputError",
    "ParameterError",
    "RenderedResult",
    "Settings",
    "VolumeError",
    "__version__",
    "apply_bank",
    "bank_from_document",
    "builtin_kernel",
    "contact_sheet",
    "convolve",
    "convolve_bands",
    "filter_patches",
    "kernel_heatmaps",
    "linear_to_srgb",
    "list_tensors",
    "load_bank",
    "mark_missing",
    "pixels_to_volume",
    "plan_layer",
    "plan_stack",
    "read_pixels",
    "read_volume",
    "render_layers",
    "run_layers",
    "srgb_to_linear",
    "write_volume",
]
