"""PyTorch ``.pt``/``.pth`` state dicts read without importing torch.

A state dict is a pickle, and unpickling runs whatever functions the file names. Here a
restricted unpickler resolves only the globals a state dict holds — ``collections.OrderedDict``,
``torch._utils._rebuild_tensor_v2`` and ``_rebuild_parameter``, and the ``torch.*Storage``
types — to convvol's own inert stand-ins; any other global (``os.system``, ``builtins.eval``,
``torch.load`` itself) is refused before anything is called. Tensors come back as
:class:`TensorRef`: a shape, strides and an offset into a storage whose bytes are read only
when asked for, and only within the file.

Both of torch.save's formats are read:

- the zip format (torch ≥ 1.6): ``ARCHIVE/data.pkl`` (protocol-2 pickle whose persistent ids
  are ``('storage', type, key, location, numel)``) and one ``ARCHIVE/data/KEY`` entry of raw
  little-endian bytes per storage;
- the legacy format: a pickled magic number, protocol version and system info, the pickled
  object (persistent ids ``('storage', type, key, location, numel, view)``), a pickled list of
  storage keys, then for each key an int64 element count and the storage's raw bytes.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import warnings
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from convvol.errors import BankError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
MAX_PICKLE_BYTES = 64 * 2**20  # data.pkl of a state dict is kilobytes; this bounds a bomb
MAX_STORAGE_BYTES = 2**31  # one storage: far beyond any first layer, well within a .pt's

# torch.*Storage → its element type (bfloat16 has none in NumPy: read as uint16, widened).
STORAGE_DTYPES = {
    "DoubleStorage": "<f8", "FloatStorage": "<f4", "HalfStorage": "<f2",
    "BFloat16Storage": "<u2", "LongStorage": "<i8", "IntStorage": "<i4",
    "ShortStorage": "<i2", "CharStorage": "i1", "ByteStorage": "u1", "BoolStorage": "?",
}  # fmt: skip


@dataclass(frozen=True)
class StorageType:
    """Stands in for ``torch.FloatStorage`` and its kin."""

    name: str

    @property
    def dtype(self) -> np.dtype[Any]:
        return np.dtype(STORAGE_DTYPES[self.name])


@dataclass(frozen=True)
class StorageRef:
    """A storage named by a persistent id: where its bytes are, not the bytes."""

    kind: StorageType
    key: str
    numel: int
    offset: int = 0  # elements into the root storage (legacy views)


@dataclass(frozen=True)
class TensorRef:
    """A tensor as ``_rebuild_tensor_v2`` describes it, its data read on demand."""

    storage: StorageRef
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    @property
    def dtype(self) -> str:
        return (
            "bfloat16"
            if self.storage.kind.name == "BFloat16Storage"
            else str(self.storage.kind.dtype.newbyteorder("="))
        )


def _rebuild_tensor(storage: object, offset: object, size: object, stride: object,
                    *rest: object) -> TensorRef:  # fmt: skip
    if not isinstance(storage, StorageRef):
        raise Refused("a tensor whose storage is not a storage")
    if not (_ints(size) and _ints(stride) and isinstance(offset, int)):
        raise Refused("a tensor whose size, stride or offset is not integers")
    assert isinstance(size, tuple)
    assert isinstance(stride, tuple)
    if len(size) != len(stride) or len(size) > 8 or offset < 0:
        raise Refused(f"a tensor of size {size} and stride {stride} at offset {offset}")
    if any(n < 0 for n in size) or any(s < 0 for s in stride):
        raise Refused(f"a tensor of size {size} and stride {stride}")
    return TensorRef(storage, offset, size, stride)


def _rebuild_parameter(data: object, *rest: object) -> object:
    return data


def _ints(value: object) -> bool:
    return isinstance(value, tuple) and all(
        isinstance(n, int) and not isinstance(n, bool) for n in value
    )


class Refused(Exception):
    """What the restricted unpickler will not do (becomes a BankError naming the file)."""


def _ordered_dict(*args: object) -> collections.OrderedDict[Any, Any]:
    if args:  # OrderedDict() is all a state dict pickles; items come by SETITEMS
        raise Refused("an OrderedDict built from arguments")
    return collections.OrderedDict()


# (module, name) → the stand-in: the only globals a state dict may name.
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): _ordered_dict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): StorageType(name) for name in STORAGE_DTYPES},
}


# Protocol 5's out-of-band buffers: never in a state dict, and their bytearray views can
# outlive a failed load.
REFUSED_OPCODES = {"BYTEARRAY8", "NEXT_BUFFER", "READONLY_BUFFER"}
# The unpickler's memo is an array as long as the largest index put into it: a state dict
# numbers its objects in order, so an index beyond this is an allocation bomb.
MAX_MEMO_INDEX = 2**22
MEMO_PUTS = {"PUT", "BINPUT", "LONG_BINPUT"}


def check_opcodes(stream: io.BytesIO) -> None:
    """Walk the pickle at ``stream``'s position without running it (pickletools parses,
    never calls), refusing the opcodes a state dict never has; the position is kept."""
    import pickletools

    start = stream.tell()
    try:
        for opcode, argument, _ in pickletools.genops(stream):
            if opcode.name in REFUSED_OPCODES:
                raise Refused(f"the pickle uses {opcode.name}, which a state dict never does")
            index = argument if isinstance(argument, int) else 0
            if opcode.name in MEMO_PUTS and index > MAX_MEMO_INDEX:
                raise Refused(
                    f"the pickle puts an object at memo index {argument:,}, which would "
                    "allocate gigabytes (a memo bomb?)"
                )
    finally:
        stream.seek(start)


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves only :data:`ALLOWED_GLOBALS`; storages become :class:`StorageRef`.

    ``stream`` is in memory: its pickle's opcodes are checked before it is loaded.
    """

    def __init__(self, stream: io.BytesIO, legacy: bool) -> None:
        check_opcodes(stream)
        super().__init__(stream, encoding="utf-8")
        self.legacy = legacy
        self.storages: dict[str, StorageRef] = {}

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except (KeyError, TypeError):
            raise Refused(
                f"the pickle names the global {module}.{name}, which a state dict does not "
                "hold; refused without running it"
            ) from None

    def persistent_load(self, pid: Any) -> StorageRef:
        if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            raise Refused(f"an unknown persistent id {str(pid)[:60]!r}")
        size = 6 if self.legacy else 5
        if len(pid) != size:
            raise Refused(f"a storage id of {len(pid)} items (expected {size})")
        _, kind, key, _location, numel, *view = pid
        if not isinstance(kind, StorageType) or not isinstance(key, str):
            raise Refused("a storage id without a storage type and key")
        if not isinstance(numel, int) or isinstance(numel, bool) or numel < 0:
            raise Refused(f"a storage of {numel!r} elements")
        if numel * kind.dtype.itemsize > MAX_STORAGE_BYTES:
            raise Refused(f"a storage of {numel:,} elements")
        root = self.storages.setdefault(key, StorageRef(kind, key, numel))
        if root.kind != kind or root.numel != numel:
            raise Refused(f"storage {key!r} described two ways")
        if view and view[0] is not None:  # legacy (view_key, offset, view_size)
            _, offset, view_size = _view(view[0])
            if offset + view_size > numel:
                raise Refused(f"a view of storage {key!r} beyond its {numel} elements")
            return StorageRef(kind, key, view_size, offset)
        return root


def _view(view: object) -> tuple[str, int, int]:
    if (
        isinstance(view, tuple) and len(view) == 3 and isinstance(view[0], str)
        and all(isinstance(n, int) and n >= 0 for n in view[1:])
    ):  # fmt: skip
        return view[0], view[1], view[2]
    raise Refused("a storage view that is not (key, offset, size)")


def _flatten(obj: object, prefix: str = "") -> Iterator[tuple[str, TensorRef]]:
    """Tensors of a state dict, nested dicts (``{'state_dict': ...}``) named with dots."""
    if isinstance(obj, TensorRef):
        yield prefix, obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            if isinstance(key, str | int):
                yield from _flatten(value, f"{prefix}.{key}" if prefix else str(key))


@dataclass(frozen=True)
class TorchFile:
    """A state dict's tensors (in the file's order) and how to read a storage's bytes."""

    tensors: dict[str, TensorRef]
    read_storage: Callable[[StorageRef], bytes]

    def array(self, tensor: TensorRef) -> np.ndarray:
        """The tensor's values (a copy, native byte order; bfloat16 widened to float32)."""
        storage = tensor.storage
        dtype = storage.kind.dtype
        extent = tensor.offset + sum((n - 1) * s for n, s in zip(tensor.shape, tensor.stride,
                                                                  strict=True))  # fmt: skip
        if 0 in tensor.shape:
            return np.zeros(tensor.shape, dtype.newbyteorder("="))
        if extent >= storage.numel:
            raise Refused(
                f"a tensor of shape {tensor.shape} reaching element {extent} of a storage of "
                f"{storage.numel}"
            )
        raw = self.read_storage(storage)
        flat = np.frombuffer(raw, dtype, count=storage.numel, offset=storage.offset
                             * dtype.itemsize)  # fmt: skip
        view = np.lib.stride_tricks.as_strided(
            flat[tensor.offset :], tensor.shape, [s * dtype.itemsize for s in tensor.stride],
            writeable=False,
        )  # fmt: skip
        if storage.kind.name == "BFloat16Storage":
            return (view.astype(np.uint32) << 16).view(np.float32)
        return view.astype(dtype.newbyteorder("="))


def read_torch_file(path: Path) -> TorchFile:
    """Parse a .pt/.pth file (zip or legacy); raise BankError naming the file."""
    try:
        with warnings.catch_warnings():  # a malformed string's escapes warn: refuse it
            warnings.simplefilter("error")
            with path.open("rb") as stream:
                head = stream.read(4)
            if head[:2] == b"PK":
                return _read_zip(path)
            return _read_legacy(path)
    except Refused as error:
        raise BankError(f"{path}: {error}", hint=_PICKLE_HINT) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError,
            AttributeError, OverflowError, MemoryError, RecursionError, struct.error, Warning,
            zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError,
            UnicodeDecodeError) as error:  # fmt: skip
        raise BankError(
            f"{path}: not a PyTorch state dict convvol can read ({type(error).__name__}: "
            f"{str(error)[:120]})"
        ) from None
    except OSError as error:
        raise BankError(f"{path}: cannot read: {error.strerror or error}") from None


_PICKLE_HINT = (
    "convvol reads only plain state dicts (torch.save(model.state_dict(), ...)); "
    "save the weights that way, or as .safetensors"
)


def _read_zip(path: Path) -> TorchFile:
    archive = zipfile.ZipFile(path)
    names = archive.namelist()
    pickles = [name for name in names if name.endswith("data.pkl") and name.count("/") == 1]
    if len(pickles) != 1:
        raise ValueError("no ARCHIVE/data.pkl in the zip (is it a TorchScript or other zip?)")
    folder = pickles[0].rsplit("/", 1)[0]
    byteorder = f"{folder}/byteorder"
    if byteorder in names and _bounded(archive, byteorder, 16).strip() != b"little":
        raise Refused("a big-endian state dict")
    obj = RestrictedUnpickler(io.BytesIO(_bounded(archive, pickles[0], MAX_PICKLE_BYTES)),
                              legacy=False).load()  # fmt: skip
    tensors = dict(_flatten(obj))
    cache: dict[str, bytes] = {}

    def read_storage(storage: StorageRef) -> bytes:
        if storage.key not in cache:
            size = storage.numel * storage.kind.dtype.itemsize
            entry = f"{folder}/data/{storage.key}"
            if entry not in names:
                raise Refused(f"storage {storage.key!r} is missing from the zip")
            data = _bounded(archive, entry, size)
            if len(data) < size:
                raise Refused(
                    f"storage {storage.key!r} declares {size:,} bytes but holds {len(data):,}"
                )
            cache[storage.key] = data
        return cache[storage.key]

    return TorchFile(tensors, _refusing(path, read_storage))


def _bounded(archive: zipfile.ZipFile, name: str, limit: int) -> bytes:
    """An entry's bytes, refusing one that declares or inflates to more than ``limit``."""
    info = archive.getinfo(name)
    if info.file_size > limit:
        raise Refused(
            f"zip entry {name!r} inflates to {info.file_size:,} bytes, more than the "
            f"{limit:,} it should hold (a zip bomb?)"
        )
    with archive.open(info) as entry:
        data = entry.read(limit + 1)
    if len(data) > limit:
        raise Refused(f"zip entry {name!r} inflates beyond the {limit:,} bytes it declares")
    return data


def _refusing(path: Path, read: Callable[[StorageRef], bytes]) -> Callable[[StorageRef], bytes]:
    """Storage reads raising BankError (they happen after read_torch_file returned)."""

    def guarded(storage: StorageRef) -> bytes:
        try:
            return read(storage)
        except Refused as error:
            raise BankError(f"{path}: {error}") from None
        except (OSError, zipfile.BadZipFile, EOFError, ValueError) as error:
            raise BankError(f"{path}: cannot read storage {storage.key!r}: {error}") from None

    return guarded


def _read_legacy(path: Path) -> TorchFile:
    size = path.stat().st_size
    with path.open("rb") as stream:
        # The pickles come first: they are read from memory, at most MAX_PICKLE_BYTES of
        # them (the unpickler never sees the file), then the storages from the file.
        window = io.BytesIO(stream.read(MAX_PICKLE_BYTES))
        magic = _small_pickle(window)
        if magic != LEGACY_MAGIC:
            raise ValueError("neither a zip nor a legacy torch.save file (no magic number)")
        protocol = _small_pickle(window)
        if protocol != 1001:
            raise Refused(f"legacy protocol {protocol!r} (convvol reads 1001)")
        info = _small_pickle(window)
        if isinstance(info, dict) and not info.get("little_endian", True):
            raise Refused("a big-endian state dict")
        unpickler = RestrictedUnpickler(window, legacy=True)
        obj = unpickler.load()
        keys = _small_pickle(window)
        stream.seek(window.tell())
        if not isinstance(keys, list) or not all(isinstance(key, str) for key in keys):
            raise Refused("the storage keys are not a list of texts")
        positions: dict[str, int] = {}
        for key in keys:  # int64 element count, then the bytes
            if key not in unpickler.storages:
                raise Refused(f"storage {key!r} is listed but used by no tensor")
            storage = unpickler.storages[key]
            (count,) = struct.unpack("<q", stream.read(8))
            if count != storage.numel:
                raise Refused(f"storage {key!r} declares {storage.numel} elements, holds {count}")
            positions[key] = stream.tell()
            end = stream.tell() + count * storage.kind.dtype.itemsize
            if end > size:
                raise Refused(
                    f"storage {key!r} of {count:,} elements runs past the end of the file"
                )
            stream.seek(end)
    missing = set(unpickler.storages) - set(positions)
    if missing:
        raise Refused(f"storage {sorted(missing)[0]!r} has no data in the file")

    def read_storage(storage: StorageRef) -> bytes:
        root = unpickler.storages[storage.key]
        with path.open("rb") as stream:
            stream.seek(positions[storage.key])
            return stream.read(root.numel * root.kind.dtype.itemsize)

    return TorchFile(dict(_flatten(obj)), _refusing(path, read_storage))


def _small_pickle(stream: io.BytesIO) -> object:
    """One of the legacy header's pickles: plain values only (no globals at all)."""
    return _HeaderUnpickler(stream, legacy=True).load()


class _HeaderUnpickler(RestrictedUnpickler):
    """The legacy header's pickles name no globals at all."""

    def find_class(self, module: str, name: str) -> Any:
        raise Refused(f"the header names the global {module}.{name}; refused without running it")
