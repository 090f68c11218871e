"""Trained CNN weights as banks: .npy, .npz, .safetensors, PyTorch, ONNX and Keras files.

A weight file is opened through the table :data:`WEIGHT_FORMATS` (suffix → reader and the
layout its 4-D tensors use); every reader gives the file's tensors in its own order
(:class:`TensorInfo`: name, shape, dtype, without reading the values) and one tensor's values
on demand. :func:`weight_bank` turns one conv layer of it (``FILE#TENSOR``; the first conv
weights by default) into an ordinary :class:`~convvol.bank.Bank`: its weights transposed
from the file's layout to N×C×kh×kw, a matching bias, PReLU slopes found next to it, and
grouped convolutions as filters that read their group's channels only.

Shapes are checked before any value is read, values before any bank is made: a tensor
beyond the kernel limit, the bank's size, the file's own bytes, or holding NaN is refused
with a BankError naming the file and the tensor.
"""

from __future__ import annotations

import io
import json
import math
import re
import tokenize
import warnings
import zipfile
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from convvol import kernels
from convvol.errors import BankError, did_you_mean
from convvol.io.formats import LAYOUTS, split_spec

LAYOUT_AXES = {"oihw": (0, 1, 2, 3), "hwio": (3, 2, 0, 1), "ohwi": (0, 3, 1, 2)}  # → N,C,kh,kw
MAX_HEADER_BYTES = 100 * 2**20  # a safetensors header, an .npy header: never this large
MAX_TENSOR_BYTES = 2**31  # the values of one tensor read into memory


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of a weight file, as its header describes it."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def looks_like_conv(self, layout: str) -> bool:
        """4-D numbers (or, for the ``hw`` layout, 2-D): what a conv layer's weights are."""
        dims = 2 if layout == "hw" else 4
        return len(self.shape) == dims and self.size > 0 and self.dtype != "bool"


@dataclass(frozen=True, eq=False)
class ConvLayer:
    """What a file says about one conv layer: its tensors and how it runs."""

    weight: str
    bias: str | None = None
    slope: str | None = None  # PReLU's per-filter slopes
    groups: int = 1
    defaults: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


class WeightFile:
    """A weight file's tensors; subclasses read one format each."""

    format = ""
    layout = "oihw"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.infos: dict[str, TensorInfo] = {}

    def read(self, name: str) -> np.ndarray:
        """The values of tensor ``name`` (any dtype; NumPy's own, native byte order)."""
        raise NotImplementedError

    def layer(self, name: str | None, layout: str) -> ConvLayer:
        """The conv layer ``name`` names (a tensor, or a prefix of one), else the first."""
        weight = self._find_weight(name, layout)
        shape = self.infos[weight].shape
        filters = _oihw_shape(shape, layout, f"{self.path}, tensor {weight!r}")[0]
        groups = 1
        if layout == "hwio" and "depthwise" in weight.lower():  # depthwise_kernel:0, Keras 3
            groups = shape[2]  # Keras' depthwise: kh×kw×C×multiplier
            filters = shape[2] * shape[3]
        names = list(self.infos)
        bias = next(
            (
                candidate
                for candidate in _bias_names(weight)
                if candidate in self.infos and self.infos[candidate].size == filters
            ),
            None,
        )
        slope = None
        for later in names[names.index(weight) + 1 :]:
            info = self.infos[later]
            if info.looks_like_conv(layout):
                break
            parts = later.lower().replace("_", "").replace("/", ".").split(".")  # p_re_lu
            if any("prelu" in part for part in parts) or "alpha" in parts[-1]:
                if info.size in (1, filters):
                    slope = later
                break
        defaults = MappingProxyType({"activation": "prelu"} if slope else {})
        return ConvLayer(weight, bias, slope, groups, defaults)

    def _find_weight(self, name: str | None, layout: str) -> str:
        convs = [n for n, info in self.infos.items() if info.looks_like_conv(layout)]
        if name is None:
            if not convs:
                raise BankError(
                    f"{self.path}: no tensor looks like conv weights ("
                    + ("2-D" if layout == "hw" else "4-D")
                    + f", {layout})",
                    hint=f"convvol list-tensors {self.path} lists what it holds",
                )
            return convs[0]
        if name in self.infos:
            return name
        starting = [n for n in convs if n.startswith(name) and n[len(name)] in "./:_"]
        if len(starting) == 1:
            return starting[0]
        raise BankError(
            f"{self.path}: no tensor named {name!r}"
            + (f" (several start with it: {', '.join(starting[:4])})" if starting else ""),
            hint=did_you_mean(name, self.infos)
            or f"convvol list-tensors {self.path} lists the tensors",
        )


def _conv_settings(node: Any) -> dict[str, Any]:
    """What an ONNX Conv node says about running it, as bank defaults: its zero padding,
    stride and dilation where they are the same on both axes (else left to the caller)."""
    attributes = {a.name: a for a in node.attribute}
    settings: dict[str, Any] = {}
    auto_pad = attributes["auto_pad"].s.decode() if "auto_pad" in attributes else "NOTSET"
    pads = list(attributes["pads"].ints) if "pads" in attributes else [0, 0, 0, 0]
    if auto_pad == "SAME_UPPER":  # convvol's same: an odd extra row at the bottom, too
        settings["padding"] = "same"
    elif auto_pad == "VALID":
        settings["padding"] = "valid"
    elif auto_pad == "NOTSET" and len(set(pads)) == 1 and len(pads) == 4 and 0 <= pads[0] < 2**31:
        settings["padding"] = "valid" if pads[0] == 0 else pads[0]
    if "padding" in settings and settings["padding"] != "valid":
        settings["border"] = "constant"  # ONNX pads with zeros
    for key, name in (("stride", "strides"), ("dilation", "dilations")):
        values = list(attributes[name].ints) if name in attributes else [1, 1]
        if len(values) == 2 and values[0] == values[1] and 1 <= values[0] <= 2**31 - 1:
            settings[key] = values[0]
    return settings


def _bias_names(weight: str) -> list[str]:
    """Where a layer's bias is, by each format's naming: conv1.weight → conv1.bias, …"""
    names = []
    swapped = re.sub(r"(depthwise_kernel|kernel|weight|weights)(:0)?$", r"bias\2", weight)
    if swapped != weight:
        names.append(swapped)
    if weight.endswith("/vars/0"):  # Keras 3: vars/0 is the kernel, vars/1 the bias
        names.append(weight[:-1] + "1")
    names += [f"{weight}.bias", f"{weight}_bias"]
    return names


def _checked_dtype(descr: object, where: str) -> np.dtype[Any]:
    try:
        dtype = np.dtype(descr)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise BankError(f"{where}: an unknown dtype {str(descr)[:40]!r}") from None
    if dtype.kind not in "biuf" or dtype.hasobject or dtype.subdtype is not None:
        raise BankError(f"{where}: holds {dtype}, not numbers")
    return dtype


def _checked_shape(shape: object, where: str) -> tuple[int, ...]:
    if (
        not isinstance(shape, tuple | list)
        or len(shape) > 8
        or not all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n < 2**40 for n in shape)
    ):
        raise BankError(f"{where}: an unusable shape {str(shape)[:60]}")
    return tuple(shape)


# --- NumPy ----------------------------------------------------------------------------


class NpyFile(WeightFile):
    """One array: N×C×kh×kw, or one kh×kw kernel (the ``hw`` layout). A bias saved beside
    it by the same naming (conv1.weight.npy → conv1.bias.npy) is one more tensor."""

    format = "npy"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.files: dict[str, Path] = {}
        candidates = [path.stem, *_bias_names(path.stem)]
        for name in candidates:
            file = path if name == path.stem else path.with_name(name + path.suffix)
            if name in self.files or not file.is_file():
                continue
            with file.open("rb") as stream:
                shape, dtype, start = _npy_header(stream, str(file))
            if file.stat().st_size < start + math.prod(shape) * dtype.itemsize:
                raise BankError(
                    f"{file}: declares a {'×'.join(map(str, shape))} {dtype} array, more than "
                    "the file holds"
                )
            self.files[name] = file
            self.infos[name] = TensorInfo(name, shape, str(dtype.newbyteorder("=")))
        self.layout = "hw" if len(self.infos[path.stem].shape) == 2 else "oihw"

    def read(self, name: str) -> np.ndarray:
        file = self.files[name]
        return _npy_values(file.read_bytes, str(file))


def _npy_header(stream: Any, where: str) -> tuple[tuple[int, ...], np.dtype[Any], int]:
    """(shape, dtype, offset of the values) of an .npy stream; refuses pickled objects."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(stream)
        reader = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        with warnings.catch_warnings():  # a Python 2 header parses, with numpy's warning
            warnings.simplefilter("ignore", UserWarning)
            shape, fortran, dtype = reader(stream, max_header_size=10_000)
    except (ValueError, SyntaxError, EOFError, OSError, tokenize.TokenError, RecursionError,
            MemoryError, zipfile.BadZipFile, zlib.error) as error:  # fmt: skip
        raise BankError(f"{where}: not a readable .npy array ({error})") from None
    del fortran
    return _checked_shape(shape, where), _checked_dtype(dtype, where), stream.tell()


def _npy_values(read: Callable[[], bytes], where: str) -> np.ndarray:
    data = read()
    stream = io.BytesIO(data)
    shape, dtype, start = _npy_header(stream, where)
    nbytes = math.prod(shape) * dtype.itemsize
    if len(data) < start + nbytes:
        raise BankError(f"{where}: declares {nbytes:,} bytes of values but holds fewer")
    try:
        with warnings.catch_warnings():  # as in _npy_header
            warnings.simplefilter("ignore", UserWarning)
            return np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, SyntaxError) as error:  # numpy parses the header as Python
        raise BankError(f"{where}: not a readable .npy array ({error})") from None


class NpzFile(WeightFile):
    """Named arrays (np.savez): each member read only when asked for."""

    format = "npz"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.archive = _open_zip(path)
        self.members: dict[str, zipfile.ZipInfo] = {}
        for info in self.archive.infolist():
            if not info.filename.endswith(".npy"):
                continue
            name = info.filename[:-4]
            where = f"{path}, array {name!r}"
            with self.archive.open(info) as member:
                shape, dtype, start = _npy_header(member, where)
            if info.file_size < start + math.prod(shape) * dtype.itemsize:
                raise BankError(
                    f"{where}: declares a {'×'.join(map(str, shape))} {dtype} array, more than "
                    "the file holds"
                )
            self.members[name] = info
            self.infos[name] = TensorInfo(name, shape, str(dtype.newbyteorder("=")))

    def read(self, name: str) -> np.ndarray:
        info = self.members[name]
        if info.file_size > MAX_TENSOR_BYTES:
            raise BankError(f"{self.path}, array {name!r}: larger than {MAX_TENSOR_BYTES:,} bytes")

        def read() -> bytes:
            with self.archive.open(info) as member:
                return member.read(info.file_size + 1)

        return _npy_values(read, f"{self.path}, array {name!r}")


def _open_zip(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as error:
        raise BankError(f"{path}: not a readable zip archive ({error})") from None


# --- safetensors ------------------------------------------------------------------------

SAFETENSORS_DTYPES = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4",
    "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?",
}  # fmt: skip


class SafetensorsFile(WeightFile):
    """The safetensors format, parsed here: an 8-byte little-endian header size, a JSON
    header (name → dtype, shape, data_offsets), then the values."""

    format = "safetensors"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        size = path.stat().st_size
        with path.open("rb") as stream:
            head = stream.read(8)
            if len(head) < 8:
                raise BankError(f"{path}: too short for a safetensors file")
            length = int.from_bytes(head, "little")
            if length > min(MAX_HEADER_BYTES, size - 8):
                raise BankError(
                    f"{path}: declares a header of {length:,} bytes, more than it holds"
                )
            try:
                header = json.loads(stream.read(length))
            except (ValueError, RecursionError) as error:
                raise BankError(f"{path}: its header is not JSON ({error})") from None
        if not isinstance(header, dict):
            raise BankError(f"{path}: its header is not a JSON object")
        self.start = 8 + length
        self.spans: dict[str, tuple[int, int, str]] = {}
        entries = []
        for name, entry in header.items():
            if name == "__metadata__":
                continue
            where = f"{path}, tensor {name!r}"
            if not isinstance(entry, dict) or entry.get("dtype") not in SAFETENSORS_DTYPES:
                raise BankError(f"{where}: an entry without a known dtype")
            shape = _checked_shape(entry.get("shape"), where)
            offsets = entry.get("data_offsets")
            if not (isinstance(offsets, list) and len(offsets) == 2
                    and all(isinstance(n, int) and n >= 0 for n in offsets)):  # fmt: skip
                raise BankError(f"{where}: data_offsets must be two integers")
            begin, end = offsets
            dtype = np.dtype(SAFETENSORS_DTYPES[entry["dtype"]])
            if end - begin != math.prod(shape) * dtype.itemsize or self.start + end > size:
                raise BankError(
                    f"{where}: a {'×'.join(map(str, shape))} {entry['dtype']} tensor at bytes "
                    f"{begin}..{end}, which the file does not hold"
                )
            self.spans[name] = (begin, end, entry["dtype"])
            entries.append((begin, name, shape, entry["dtype"]))
        for _, name, shape, kind in sorted(entries):  # the file's order: by their offsets
            text = "bfloat16" if kind == "BF16" else str(np.dtype(SAFETENSORS_DTYPES[kind]))
            self.infos[name] = TensorInfo(name, shape, text)

    def read(self, name: str) -> np.ndarray:
        begin, end, kind = self.spans[name]
        with self.path.open("rb") as stream:
            stream.seek(self.start + begin)
            data = stream.read(end - begin)
        values = np.frombuffer(data, SAFETENSORS_DTYPES[kind]).reshape(self.infos[name].shape)
        if kind == "BF16":
            return (values.astype(np.uint32) << 16).view(np.float32)
        return values.astype(values.dtype.newbyteorder("="))


# --- PyTorch ----------------------------------------------------------------------------


class TorchStateDict(WeightFile):
    """A state dict saved by torch.save, read by :mod:`convvol.io.torch_files`."""

    format = "pytorch"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        from convvol.io.torch_files import read_torch_file

        self.file = read_torch_file(path)
        for name, tensor in self.file.tensors.items():
            self.infos[name] = TensorInfo(name, tensor.shape, tensor.dtype)

    def read(self, name: str) -> np.ndarray:
        tensor = self.file.tensors[name]
        if math.prod(tensor.shape) * tensor.storage.kind.dtype.itemsize > MAX_TENSOR_BYTES:
            raise BankError(f"{self.path}, tensor {name!r}: larger than {MAX_TENSOR_BYTES:,} bytes")
        from convvol.io.torch_files import Refused

        try:
            return self.file.array(tensor)
        except Refused as error:
            raise BankError(f"{self.path}, tensor {name!r}: {error}") from None


# --- ONNX -------------------------------------------------------------------------------


def _text(value: str | bytes) -> str:
    """protobuf gives strings that are not UTF-8 as bytes: shown escaped."""
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else value


@dataclass(frozen=True)
class _OnnxNode:
    """What convvol reads of an ONNX node, its names as text."""

    op_type: str
    name: str
    input: tuple[str, ...]
    output: tuple[str, ...]
    attribute: tuple[Any, ...]

    @classmethod
    def of(cls, node: Any) -> _OnnxNode:
        return cls(_text(node.op_type), _text(node.name), tuple(map(_text, node.input)),
                   tuple(map(_text, node.output)), tuple(node.attribute))  # fmt: skip


class OnnxModel(WeightFile):
    """An ONNX model's initializers; Conv nodes say which are weights, bias, groups."""

    format = "onnx"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        try:
            import onnx
        except ImportError:
            raise BankError(
                f"{path}: reading ONNX models needs the onnx package",
                hint="pip install 'convvol[onnx]'",
            ) from None
        try:
            self.model = onnx.load(str(path), load_external_data=False)
        except Exception as error:  # protobuf's DecodeError and kin: not a model
            raise BankError(f"{path}: not a readable ONNX model ({type(error).__name__})") from None
        self.tensors = {_text(init.name): init for init in self.model.graph.initializer}
        for name, tensor in self.tensors.items():
            try:
                dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)
            except (KeyError, ValueError, TypeError):
                raise BankError(f"{path}, initializer {name!r}: an unknown data type") from None
            shape = _checked_shape(list(tensor.dims), f"{path}, initializer {name!r}")
            self.infos[name] = TensorInfo(name, shape, str(dtype))
        self.nodes = [_OnnxNode.of(node) for node in self.model.graph.node]

    def layer(self, name: str | None, layout: str) -> ConvLayer:
        convs = [node for node in self.nodes if node.op_type == "Conv" and len(node.input) >= 2]
        chosen = None
        for node in convs:
            if name is None or name in (node.name, node.input[1]):
                chosen = node
                break
        if chosen is None:
            if name is not None and name in self.infos:  # an initializer no Conv uses
                return super().layer(name, layout)
            if name is None:
                raise BankError(f"{self.path}: the model has no Conv node")
            choices = [n.name for n in convs] + [n.input[1] for n in convs]
            raise BankError(
                f"{self.path}: no Conv node or initializer named {name!r}",
                hint=did_you_mean(name, choices)
                or f"convvol list-tensors {self.path} lists the initializers",
            )
        if chosen.input[1] not in self.infos:
            raise BankError(f"{self.path}: Conv {chosen.name!r} has weights that are not stored")
        groups = next((int(a.i) for a in chosen.attribute if a.name == "group"), 1)
        bias = chosen.input[2] if len(chosen.input) > 2 and chosen.input[2] in self.infos else None
        defaults = _conv_settings(chosen)
        slope = None
        following = [n for n in self.nodes if chosen.output and chosen.output[0] in n.input[:1]]
        if len(following) == 1:  # the activation the network applies next
            after = following[0]
            if after.op_type == "PRelu" and len(after.input) > 1 and after.input[1] in self.infos:
                slope, defaults["activation"] = after.input[1], "prelu"
            elif after.op_type == "LeakyRelu":
                defaults["activation"] = "leaky_relu"
                defaults["slope"] = next((a.f for a in after.attribute if a.name == "alpha"), 0.01)
            elif after.op_type in ("Relu", "Sigmoid", "Tanh"):
                defaults["activation"] = after.op_type.lower()
        return ConvLayer(chosen.input[1], bias, slope, groups, MappingProxyType(defaults))

    def read(self, name: str) -> np.ndarray:
        from onnx import external_data_helper, numpy_helper

        tensor = self.tensors[name]
        info = self.infos[name]
        if info.size * np.dtype(info.dtype).itemsize > MAX_TENSOR_BYTES:
            raise BankError(f"{self.path}, initializer {name!r}: larger than the limit")
        if not external_data_helper.uses_external_data(tensor):
            try:
                return numpy_helper.to_array(tensor)
            except (ValueError, TypeError) as error:
                raise BankError(f"{self.path}, initializer {name!r}: {error}") from None
        entries = {_text(entry.key): _text(entry.value) for entry in tensor.external_data}
        return self._external(name, info, entries)

    def _external(self, name: str, info: TensorInfo, entries: dict[str, str]) -> np.ndarray:
        where = f"{self.path}, initializer {name!r}"
        location = entries.get("location", "")
        folder = self.path.resolve().parent
        target = (folder / location).resolve()
        if not location or Path(location).is_absolute() or not target.is_relative_to(folder):
            raise BankError(
                f"{where}: its external data {location!r} is outside the model's folder; refused",
                hint="keep external data files beside the model",
            )
        try:
            offset = int(entries.get("offset", 0))
            dtype = np.dtype(info.dtype).newbyteorder("<")
            nbytes = info.size * dtype.itemsize
            length = int(entries.get("length", nbytes))
        except ValueError:
            raise BankError(f"{where}: external data with a bad offset or length") from None
        if length != nbytes or offset < 0:
            raise BankError(f"{where}: external data of {length} bytes for {nbytes}")
        try:
            with target.open("rb") as stream:
                stream.seek(offset)
                data = stream.read(nbytes)
        except OSError as error:
            raise BankError(f"{where}: cannot read {location}: {error.strerror}") from None
        if len(data) < nbytes:
            raise BankError(f"{where}: {location} holds fewer bytes than the tensor declares")
        return np.frombuffer(data, dtype).reshape(info.shape).astype(dtype.newbyteorder("="))


# --- Keras ------------------------------------------------------------------------------


# libhdf5 can loop for ever on a damaged file, inside one C call: Keras files are read in
# a child process that is killed after this many seconds.
HDF5_SECONDS = 60.0
HDF5_PRELOAD_BYTES = 64 * 2**20  # values of files this small come back with the listing


class KerasFile(WeightFile):
    """Keras weights: an HDF5 file (.h5: Keras 2's ``layer/layer/kernel:0``), or a .keras zip
    holding ``model.weights.h5`` (Keras 3's ``layers/NAME/vars/0``). Kernels are HWIO.

    libhdf5 runs in a child process (:func:`_hdf5_in_child`), so a file that makes it loop
    costs HDF5_SECONDS and a BankError, never a hung convvol.
    """

    format = "keras"
    layout = "hwio"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        try:
            import h5py  # noqa: F401  (here only to say what is missing; the child reads)
        except ImportError:
            raise BankError(
                f"{path}: reading Keras files needs the h5py package",
                hint="pip install 'convvol[keras]'",
            ) from None
        self.source: str | bytes = str(path)
        if zipfile.is_zipfile(path):
            archive = _open_zip(path)
            try:
                info = archive.getinfo("model.weights.h5")
            except KeyError:
                raise BankError(f"{path}: a .keras archive without model.weights.h5") from None
            if info.file_size > MAX_TENSOR_BYTES:
                raise BankError(f"{path}: model.weights.h5 inflates to {info.file_size:,} bytes")
            with archive.open(info) as member:
                self.source = member.read(info.file_size + 1)
        self.values: dict[str, np.ndarray] = {}
        for name, (shape, dtype, values) in _hdf5_in_child(path, self.source, None).items():
            if values is not None:
                self.values[name] = values
            where = f"{path}, dataset {name!r}"
            self.infos[name] = TensorInfo(
                name, _checked_shape(list(shape), where),
                str(_checked_dtype(dtype, where).newbyteorder("=")),
            )  # fmt: skip

    def read(self, name: str) -> np.ndarray:
        info = self.infos[name]
        if info.size * np.dtype(info.dtype).itemsize > MAX_TENSOR_BYTES:
            raise BankError(f"{self.path}, dataset {name!r}: larger than the limit")
        if name in self.values:
            return self.values[name]
        values = _hdf5_in_child(self.path, self.source, name)
        assert isinstance(values, np.ndarray)
        return values


def _hdf5_in_child(path: Path, source: str | bytes, name: str | None) -> Any:
    """Run :func:`_hdf5_read` in a child process (spawned: no fork of a threaded process),
    killed after HDF5_SECONDS; its errors become BankErrors naming ``path``."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_hdf5_child, args=(sender, source, name), daemon=True)
    child.start()
    sender.close()
    try:
        if not receiver.poll(HDF5_SECONDS):
            raise BankError(
                f"{path}: libhdf5 did not finish reading it in {HDF5_SECONDS:g} s (a damaged "
                "HDF5 file?); stopped"
            )
        try:
            outcome = receiver.recv()
        except (EOFError, OSError):
            raise BankError(f"{path}: libhdf5 crashed reading it (a damaged HDF5 file?)") from None
    finally:
        if child.is_alive():
            child.kill()
        child.join()
        receiver.close()
    if isinstance(outcome, str):
        raise BankError(f"{path}: {outcome}")
    return outcome


def _hdf5_child(connection: Any, source: str | bytes, name: str | None) -> None:
    """The child's whole life: read, send the outcome, end."""
    connection.send(_hdf5_read(source, name))
    connection.close()


def _hdf5_read(source: str | bytes, name: str | None) -> Any:
    """In the child: {dataset: (shape, dtype, values or None)} of the file (the values
    while they add up to HDF5_PRELOAD_BYTES), or dataset ``name``'s values; a problem as a
    message (text), never an exception h5py made."""
    try:
        import h5py

        handle = h5py.File(source if isinstance(source, str) else io.BytesIO(source), "r")
        if name is not None:
            try:
                return np.asarray(handle[name][()])
            except (OSError, ValueError, TypeError, RuntimeError, KeyError) as error:
                return f"dataset {name!r}: cannot read ({error})"
        found: dict[str, tuple[tuple[int, ...], Any, np.ndarray | None]] = {}
        budget = [HDF5_PRELOAD_BYTES]

        def visit(key: str | bytes, item: Any) -> None:
            if isinstance(key, bytes):  # h5py gives names that are not UTF-8 as bytes
                key = key.decode("utf-8", "backslashreplace")
            if isinstance(item, h5py.Dataset):
                values = None
                nbytes = item.size * item.dtype.itemsize if item.dtype.kind in "biuf" else -1
                if 0 <= nbytes <= budget[0]:
                    try:
                        values = np.asarray(item[()])
                        budget[0] -= nbytes
                    except (OSError, ValueError, TypeError, RuntimeError):
                        values = None  # read again when asked for, to say why it fails
                found[key] = (tuple(item.shape), item.dtype, values)

        handle.visititems(visit)
        return found
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as error:
        return f"not a readable HDF5 file ({error})"


# suffix → (format, reader), for every one of formats.WEIGHT_SUFFIXES. The layout each
# reader's 4-D tensors use is its class's.
WEIGHT_FORMATS: dict[str, type[WeightFile]] = {
    ".npy": NpyFile,
    ".npz": NpzFile,
    ".safetensors": SafetensorsFile,
    ".pt": TorchStateDict,
    ".pth": TorchStateDict,
    ".onnx": OnnxModel,
    ".h5": KerasFile,
    ".hdf5": KerasFile,
    ".keras": KerasFile,
}


def open_weights(path: Path) -> WeightFile:
    """Open a weight file by its suffix (raises BankError)."""
    reader = WEIGHT_FORMATS.get(path.suffix.lower())
    if reader is None:
        raise BankError(
            f"{path}: not a weight file convvol reads",
            hint="weight files are " + ", ".join(WEIGHT_FORMATS),
        )
    if path.is_dir():
        raise BankError(f"{path}: is a directory, not a weight file")
    if not path.is_file():
        raise BankError(f"{path}: no such weight file")
    try:
        return reader(path)
    except OSError as error:
        raise BankError(f"{path}: cannot read: {error.strerror or error}") from None
    except READ_ERRORS as error:
        raise BankError(
            f"{path}: not a readable {reader.format} file ({type(error).__name__}: "
            f"{str(error)[:100]})"
        ) from None


def weight_bank(spec: str, *, layout: str | None = None) -> Any:
    """The :class:`~convvol.bank.Bank` of one conv layer of a weight file (``FILE#TENSOR``).

    ``layout`` forces how the tensor's axes are read (:data:`LAYOUTS`), else the format's.
    """
    from convvol.bank import MAX_BANK_WEIGHTS, MAX_FILTERS, NAME_PATTERN, Bank, Filter

    path, tensor = split_spec(spec)
    weights_file = open_weights(path)
    if layout is not None and layout not in LAYOUTS:
        raise BankError(f"layout must be one of {', '.join(LAYOUTS)}; got {layout!r}")
    layout = layout or weights_file.layout
    layer = weights_file.layer(tensor, layout)
    info = weights_file.infos[layer.weight]
    where = f"{path}, tensor {layer.weight!r}"
    shape = _oihw_shape(info.shape, layout, where)
    filters, depth, height, width = shape
    groups = layer.groups
    if layout == "hwio" and groups > 1:  # Keras depthwise: kh×kw×C×M → (C·M)×1×kh×kw
        filters, depth = info.shape[2] * info.shape[3], 1
    kernels.check_kernel_shape(height, width, where)
    if filters > MAX_FILTERS or filters * depth * groups * height * width > MAX_BANK_WEIGHTS:
        raise BankError(
            f"{where}: {filters}×{depth}×{height}×{width} is more than a bank holds "
            f"({MAX_FILTERS} filters, {MAX_BANK_WEIGHTS:,} weights)"
        )
    if groups < 1 or filters % groups:
        raise BankError(f"{where}: {filters} filters cannot form {groups} groups")
    values = _finite(_read(weights_file, layer.weight), where)
    if values.shape != info.shape:
        raise BankError(f"{where}: holds {values.shape}, not the {info.shape} it declares")
    if layout == "hw":
        oihw = values[None, None]
    elif layout == "hwio" and groups > 1:
        oihw = values.transpose(2, 3, 0, 1).reshape(filters, 1, height, width)
    else:
        oihw = values.transpose(LAYOUT_AXES[layout])
    bias = _vector(weights_file, layer.bias, filters, path)
    slopes = _vector(weights_file, layer.slope, filters, path)
    stem = _layer_stem(layer.weight)
    made = []
    for index in range(filters):
        name = f"{stem}_{index}"
        common: dict[str, Any] = {
            "name": name if NAME_PATTERN.match(name) else f"filter{index}",
            "bias": float(bias[index]) if bias is not None else 0.0,
            "slope": float(slopes[index]) if slopes is not None else None,
        }
        if layout == "hw":
            made.append(Filter(kernel=oihw[index, 0], **common))
        elif groups > 1:  # reads its group's channels only: the rest of the volume is zero
            first = index // (filters // groups) * depth
            layers = {first + c: oihw[index, c] for c in range(depth)}
            made.append(Filter(layers=MappingProxyType(layers), **common))
        else:
            made.append(Filter(weights=oihw[index], **common))
    provenance = {"file": path.name, "tensor": layer.weight, "format": weights_file.format,
                  "layout": layout}  # fmt: skip
    if layer.bias:
        provenance["bias"] = layer.bias
    if layer.slope:
        provenance["prelu"] = layer.slope
    if groups > 1:
        provenance["groups"] = str(groups)
    return Bank(
        name=stem,
        filters=tuple(made),
        description=f"{layer.weight} of {path.name} ({weights_file.format}, {layout})",
        defaults=layer.defaults,
        source=path,
        provenance=MappingProxyType(provenance),
    )


def _oihw_shape(shape: tuple[int, ...], layout: str, where: str) -> tuple[int, int, int, int]:
    if layout == "hw":
        if len(shape) != 2 or 0 in shape:
            raise BankError(
                f"{where}: is {'×'.join(map(str, shape)) or 'a scalar'}, but the hw layout is "
                "one non-empty 2-D kernel"
            )
        return (1, 1, shape[0], shape[1])
    if len(shape) != 4:
        raise BankError(
            f"{where}: is {len(shape)}-D ({'×'.join(map(str, shape))}); conv weights are 4-D",
            hint="a single 2-D kernel is read with --layout hw",
        )
    axes = LAYOUT_AXES[layout]
    oihw = (shape[axes[0]], shape[axes[1]], shape[axes[2]], shape[axes[3]])
    if 0 in oihw:
        raise BankError(f"{where}: is empty ({'×'.join(map(str, shape))})")
    return oihw


# What reading a damaged file's values may raise, beyond convvol's own errors.
READ_ERRORS = (OSError, EOFError, ValueError, TypeError, RuntimeError, NotImplementedError,
               MemoryError, zipfile.BadZipFile, zlib.error, tokenize.TokenError)  # fmt: skip


def _read(source: WeightFile, name: str) -> np.ndarray:
    try:
        return source.read(name)
    except READ_ERRORS as error:
        raise BankError(
            f"{source.path}, tensor {name!r}: cannot read its values ({type(error).__name__}: "
            f"{str(error)[:100]})"
        ) from None


def _finite(values: np.ndarray, where: str) -> np.ndarray:
    with np.errstate(invalid="ignore", over="ignore"):  # checked just below
        values = np.asarray(values, np.float64)
    if not np.isfinite(values).all():
        bad = int(np.size(values) - np.isfinite(values).sum())
        raise BankError(f"{where}: holds NaN or infinite values ({bad} of {values.size})")
    if np.abs(values).max(initial=0) > float(np.finfo(np.float32).max):
        raise BankError(f"{where}: values beyond float32's range")
    return values


def _vector(source: WeightFile, name: str | None, count: int, path: Path) -> np.ndarray | None:
    if name is None:
        return None
    values = _finite(_read(source, name), f"{path}, tensor {name!r}").reshape(-1)
    return np.broadcast_to(values, (count,)) if values.size == 1 else values


def _layer_stem(weight: str) -> str:
    """A bank name from a tensor's: conv1.weight → conv1, model/conv1/kernel:0 → conv1."""
    stem = re.sub(r"[./](depthwise_kernel|kernel|weight|weights)(:0)?$", "", weight)
    stem = re.sub(r"/vars/0$", "", stem)
    parts = [part for part in stem.split("/") if part]
    stem = parts[-1] if parts else stem
    stem = re.sub(r"[^\w.+-]", "_", stem).strip("._")
    return stem or "weights"


def list_tensors(path: Path) -> tuple[str, str, list[tuple[TensorInfo, bool]]]:
    """(format, layout, [(tensor, looks like conv weights)]) of a weight file."""
    source = open_weights(path)
    convs = None
    if isinstance(source, OnnxModel):
        convs = {n.input[1] for n in source.nodes if n.op_type == "Conv" and len(n.input) > 1}
    rows = [
        (info, info.name in convs if convs is not None else info.looks_like_conv(source.layout))
        for info in source.infos.values()
    ]
    return source.format, source.layout, rows


def file_sha256(path: Path) -> str:
    """The hex SHA-256 of a file, read in chunks."""
    import hashlib

    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(2**20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _number_text(value: float) -> str:
    """The shortest text that reads back as the same float32 (YAML 1.1 needs the dot)."""
    number = np.float32(value)
    if number == 0:
        return "0.0"
    if 1e-4 <= abs(number) < 1e6:
        return np.format_float_positional(number, unique=True, trim="0")
    return np.format_float_scientific(number, unique=True, trim="0")


def _matrix_text(layer: np.ndarray) -> str:
    return "[" + ", ".join(
        "[" + ", ".join(_number_text(v) for v in row) + "]" for row in layer
    ) + "]"  # fmt: skip


def bank_yaml(bank: Any, provenance: Mapping[str, str]) -> str:
    """An imported bank as an ordinary, editable bank file (YAML), ``provenance`` in it."""
    import yaml

    from convvol.bank import channel_names

    header: dict[str, Any] = {"name": bank.name, "description": bank.description,
                              "provenance": dict(provenance)}  # fmt: skip
    if bank.defaults:
        header["defaults"] = dict(bank.defaults)
    if bank.input is not None:
        header["input"] = bank.input.as_document()
    where = f"{provenance.get('file', '')}#{provenance.get('tensor', '')}"
    facts = [f"{key} {provenance[key]}" for key in ("format", "layout", "sha256")
             if key in provenance]  # fmt: skip
    lines = [
        f"# Imported by convvol import-bank from {where}",
        "# (" + ", ".join(facts) + ").",
        "# An ordinary bank: edit it freely; `convvol validate` checks it.",
        yaml.safe_dump(header, sort_keys=False, allow_unicode=True, width=100).rstrip(),
        "filters:",
    ]
    for filt in bank.filters:
        lines.append(f"  - name: {filt.name}")
        if filt.bias:
            lines.append(f"    bias: {_number_text(filt.bias)}")
        if filt.slope is not None:
            lines.append(f"    slope: {_number_text(filt.slope)}")
        if filt.kernel is not None:
            lines.append(f"    kernel: {_matrix_text(filt.kernel)}")
        elif filt.layers is not None:
            lines.append("    channels:")
            lines += [f"      {c}: {_matrix_text(layer)}" for c, layer in filt.layers.items()]
        else:
            lines.append("    weights:")
            names = channel_names(len(filt.weights))
            lines += [
                f"      - {_matrix_text(layer)}  # {names[c]}"
                for c, layer in enumerate(filt.weights)
            ]
    return "\n".join(lines) + "\n"
