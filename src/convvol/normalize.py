"""The input as a network sees it: per-channel mean and std, and channel order.

A bank's ``input:`` mapping (or ``--input-mean``/``--input-std``/``--input-norm``) says how a
network normalised its input before its first layer: ``(x − mean[k]) / std[k]`` on convvol's
[0, 1] values, channel k of the network taken from the volume's channel ``order`` (``rgb``,
or ``bgr`` for Caffe models). mean and std are listed in the network's channel order.

The map is affine per channel, so it is folded into the layer (:func:`fold`): weights divided
by std, the bias less each tap's share of the mean, channels permuted. That is exact for the
borders that copy pixels (reflect, symmetric, edge, wrap): a copied pixel normalises as the
pixel does. The network pads *after* normalising (zeros for PyTorch), so for the constant
border the padded area gets, per channel, the raw value that normalises to ``cval``
(``cval·std + mean``): the engine fills it per channel. Every path (in memory, strips, Dask,
batches) runs the folded plan, so all of them normalise alike.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from convvol.errors import ParameterError, did_you_mean

ORDERS = ("rgb", "bgr")
INPUT_KEYS = ("mean", "std", "order")


@dataclass(frozen=True)
class InputNorm:
    """``(x − mean) / std`` per channel on [0, 1] values, channels taken in ``order``."""

    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    order: str = "rgb"

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "mean", _numbers(self.mean, "mean"))
        set_(self, "std", _numbers(self.std, "std"))
        if any(value <= 0 for value in self.std):
            raise ParameterError(f"input std must be > 0; got {list(self.std)}")
        if len(self.mean) != len(self.std) and 1 not in (len(self.mean), len(self.std)):
            raise ParameterError(
                f"input mean has {len(self.mean)} values and std {len(self.std)}; give one "
                "value, or one per channel, for each"
            )
        if self.order not in ORDERS:
            raise ParameterError(
                f"input order must be rgb or bgr; got {self.order!r}",
                hint=did_you_mean(str(self.order), ORDERS),
            )

    def for_channels(self, channels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(mean, std, permutation) for a volume of ``channels`` channels: network channel k
        is volume channel ``permutation[k]``."""
        count = max(len(self.mean), len(self.std))
        if count not in (1, channels):
            raise ParameterError(
                f"the input normalisation has {count} values per channel list but the volume "
                f"has {channels} channels"
            )
        if self.order == "bgr" and channels < 3:
            raise ParameterError(f"input order bgr needs 3 channels; the volume has {channels}")
        mean = np.broadcast_to(np.asarray(self.mean, np.float64), (channels,))
        std = np.broadcast_to(np.asarray(self.std, np.float64), (channels,))
        permutation = np.arange(channels)
        if self.order == "bgr":
            permutation[:3] = [2, 1, 0]
        return mean, std, permutation

    def as_document(self) -> dict[str, object]:
        """The bank file's ``input:`` mapping."""
        return {"mean": list(self.mean), "std": list(self.std), "order": self.order}


def _numbers(values: object, what: str) -> tuple[float, ...]:
    if isinstance(values, int | float) and not isinstance(values, bool):
        values = (values,)
    if not isinstance(values, Sequence) or isinstance(values, str) or not values:
        raise ParameterError(f"input {what} must be a number or a list of numbers; got {values!r}")
    numbers = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int | float | np.floating):
            raise ParameterError(f"input {what} must hold numbers; got {value!r}")
        if not math.isfinite(float(value)):
            raise ParameterError(f"input {what} must hold finite numbers; got {value!r}")
        numbers.append(float(value))
    if len(numbers) > 4096:
        raise ParameterError(f"input {what} holds {len(numbers)} values (at most 4096)")
    return tuple(numbers)


# Presets (--input-norm): torchvision's ImageNet models; MTCNN's (255·x − 127.5) / 128.
PRESETS = {
    "imagenet": InputNorm(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
    "mtcnn": InputNorm(mean=(0.5,), std=(128 / 255,)),
}


def parse_input(document: object) -> InputNorm:
    """A bank's ``input:`` mapping (raises ParameterError; bank.py names the file)."""
    if isinstance(document, str):
        if document in PRESETS:
            return PRESETS[document]
        raise ParameterError(
            f"input must be a mapping or one of {', '.join(PRESETS)}; got {document!r}",
            hint=did_you_mean(document, PRESETS),
        )
    if not isinstance(document, Mapping):
        raise ParameterError(f"input must be a mapping with mean, std, order; got {document!r}")
    for key in document:
        if key not in INPUT_KEYS:
            raise ParameterError(
                f"unknown key {key!r} in input",
                hint=did_you_mean(str(key), INPUT_KEYS) or "input keys: mean, std, order",
            )
    return InputNorm(
        mean=document.get("mean", 0.0), std=document.get("std", 1.0),
        order=document.get("order", "rgb"),
    )  # fmt: skip


def fold(
    weights: np.ndarray, bias: np.ndarray, norm: InputNorm, cval: float, constant: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Fold ``norm`` into N×C×kh×kw ``weights`` and N ``bias``.

    Returns float32 (weights, bias, pad values): the pad values (one per volume channel:
    the raw value that normalises to ``cval``) only for a ``constant`` border, else None.
    """
    channels = weights.shape[1]
    mean, std, permutation = norm.for_channels(channels)
    network = weights.astype(np.float64)
    folded = np.empty_like(network)
    folded[:, permutation] = network / std[None, :, None, None]
    shift = (network * (mean / std)[None, :, None, None]).sum(axis=(1, 2, 3))
    new_bias = bias.astype(np.float64) - shift
    pads = None
    if constant:
        pads = np.empty(channels)
        pads[permutation] = cval * std + mean
    return (
        folded.astype(np.float32),
        new_bias.astype(np.float32),
        None if pads is None else pads.astype(np.float32),
    )


def parse_cli(mean: str | None, std: str | None, preset: str | None) -> InputNorm | None:
    """``--input-mean M,M,M --input-std S,S,S`` or ``--input-norm NAME`` (not both)."""
    if preset is not None:
        if mean is not None or std is not None:
            raise ParameterError("give --input-norm or --input-mean/--input-std, not both")
        return PRESETS[preset]
    if mean is None and std is None:
        return None
    return InputNorm(
        mean=_cli_numbers(mean, "--input-mean") if mean is not None else (0.0,),
        std=_cli_numbers(std, "--input-std") if std is not None else (1.0,),
    )


def _cli_numbers(text: str, option: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise ParameterError(
            f"{option} must be numbers separated by commas (0.485,0.456,0.406); got {text!r}"
        ) from None
