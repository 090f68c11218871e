"""convvol: convolution over volume for images, from the shell and from Python.

An RGB image is an H×W×3 volume; a filter is a kh×kw×C volume; a bank of N filters
turns a volume into an H'×W'×N volume, as one layer of a CNN does.

>>> import numpy as np, convvol
>>> volume = np.zeros((6, 6, 3), np.float32)
>>> convvol.convolve(volume, np.ones((1, 3, 3, 3)), padding="valid").shape
(4, 4, 1)
"""

from typing import TYPE_CHECKING, Any

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
from convvol.kernels import builtin_kernel
from convvol.pipeline import (
    LayerResult,
    RenderedResult,
    apply_bank,
    plan_stack,
    render_layers,
    run_layers,
)
from convvol.settings import LayerSettings, Settings

__version__ = "1.0.0"

if TYPE_CHECKING:
    from convvol.pictures import contact_sheet, kernel_heatmaps


def __getattr__(name: str) -> Any:
    """The picture makers, imported on first use: they pull in Pillow's drawing modules,
    which the command line's main job never needs (start-up time counts there)."""
    if name in ("contact_sheet", "kernel_heatmaps"):
        from convvol import pictures

        return getattr(pictures, name)
    raise AttributeError(f"module 'convvol' has no attribute {name!r}")


__all__ = [
    "Bank",
    "BankError",
    "ConvvolError",
    "Filter",
    "KernelError",
    "LayerPlan",
    "LayerResult",
    "LayerSettings",
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
    "kernel_heatmaps",
    "load_bank",
    "pixels_to_volume",
    "plan_layer",
    "plan_stack",
    "read_pixels",
    "read_volume",
    "render_layers",
    "run_layers",
    "write_volume",
]
