"""Read a PyTorch state dict (``.pth``) without PyTorch.

Two on-disk layouts exist. The zip layout (PyTorch >= 1.6) holds ``data.pkl``
plus one raw file per storage under ``data/``. The legacy layout is a stream of
pickles: magic number, protocol version, system info, the object, the sorted
storage keys, then each storage as an int64 element count and its raw bytes.
In both, tensors are pickled as calls to ``torch._utils._rebuild_tensor_v2``
over a storage that is referenced by persistent id; we rebuild them as NumPy
arrays.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile

import numpy as np

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class PthFormatError(ValueError):
    """The file is not a PyTorch state dict this reader understands."""


class _StorageType:
    def __init__(self, name: str):
        if name not in _STORAGE_DTYPES:
            raise PthFormatError(f"unsupported tensor storage type torch.{name}")
        self.dtype = np.dtype(_STORAGE_DTYPES[name])


class _LazyStorage:
    """A storage whose bytes are filled in after the object pickle is read."""

    def __init__(self, dtype: np.dtype):
        self.dtype = dtype
        self.array: np.ndarray | None = None


class _Tensor:
    def __init__(self, storage: _LazyStorage, offset: int, size, stride):
        self.storage, self.offset = storage, int(offset)
        self.size, self.stride = tuple(size), tuple(stride)

    def materialise(self) -> np.ndarray:
        base = self.storage.array
        if base is None:
            raise PthFormatError("a tensor refers to a storage that the file does not contain")
        if not self.size:
            return base[self.offset].copy()
        item = base.itemsize
        view = np.lib.stride_tricks.as_strided(
            base[self.offset:], shape=self.size, strides=[s * item for s in self.stride]
        )
        return np.ascontiguousarray(view)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, *_unused):
    return _Tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, *_unused):
    return data


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, storages: dict):
        super().__init__(file)
        self._storages = storages

    def find_class(self, module, name):
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor_v2
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name.endswith("Storage"):
            return _StorageType(name)
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch" and name == "Size":
            return tuple
        raise PthFormatError(f"the pickle asks for {module}.{name}, which a state dict never needs")

    def persistent_load(self, pid):
        # ('storage', storage_type, key, location, numel[, view_metadata])
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise PthFormatError(f"unexpected persistent id {pid!r}")
        storage_type, key = pid[1], str(pid[2])
        if key not in self._storages:
            self._storages[key] = _LazyStorage(storage_type.dtype)
        return self._storages[key]


def _materialise(obj):
    if isinstance(obj, _Tensor):
        return obj.materialise()
    if isinstance(obj, dict):
        return collections.OrderedDict((k, _materialise(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_materialise(v) for v in obj)
    return obj


def _load_zip(path: str) -> dict:
    storages: dict = {}
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if not pkl:
            raise PthFormatError(f"{path}: zip archive without data.pkl")
        prefix = pkl[0][: -len("data.pkl")]
        obj = _Unpickler(io.BytesIO(zf.read(pkl[0])), storages).load()
        for key, storage in storages.items():
            member = f"{prefix}data/{key}"
            if member not in names:
                raise PthFormatError(f"{path}: storage {member} is missing")
            storage.array = np.frombuffer(zf.read(member), dtype=storage.dtype)
    return obj


def _load_legacy(path: str) -> dict:
    storages: dict = {}
    with open(path, "rb") as f:
        try:
            magic = pickle.load(f)
        except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not a .pth"
            raise PthFormatError(f"{path}: not a PyTorch file ({exc})") from exc
        if magic != _LEGACY_MAGIC:
            raise PthFormatError(f"{path}: not a PyTorch file (bad magic number)")
        pickle.load(f)  # protocol version
        sys_info = pickle.load(f)
        if not sys_info.get("little_endian", True):
            raise PthFormatError(f"{path}: big-endian tensors are not supported")
        obj = _Unpickler(f, storages).load()
        keys = pickle.load(f)
        for key in keys:
            (count,) = struct.unpack("<q", f.read(8))
            storage = storages[str(key)]
            nbytes = count * storage.dtype.itemsize
            raw = f.read(nbytes)
            if len(raw) != nbytes:
                raise PthFormatError(f"{path}: truncated (storage {key} is short)")
            storage.array = np.frombuffer(raw, dtype=storage.dtype)
    return obj


def load_state_dict(path: str | os.PathLike) -> "collections.OrderedDict[str, np.ndarray]":
    """Return the state dict stored in ``path`` as name -> NumPy array."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such weights file")
    obj = _load_zip(path) if zipfile.is_zipfile(path) else _load_legacy(path)
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise PthFormatError(f"{path}: holds a {type(obj).__name__}, not a state dict")
    return _materialise(obj)
