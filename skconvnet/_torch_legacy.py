"""Read PyTorch's legacy (non-zip) ``torch.save`` files without PyTorch.

The legacy format is five pickles (magic number, protocol version, system
info, the object, the storage keys) followed by the raw storages, each an
int64 element count and little-endian data. The object pickle only needs an
ordered dict, the tensor-rebuild function and storage types; the unpickler
below allows those names and nothing else, so a tampered file cannot run code.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct

import numpy as np

from .exceptions import UnsafeFileError

__all__ = ["load_legacy_state_dict", "UnsafeFileError"]

_MAGIC = 0x1950A86A20F9469CFC6C
_PROTOCOL = 1001
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


class _StorageType:
    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)


class _Tensor:
    """A tensor waiting for its storage bytes."""

    def __init__(self, storage_key, offset, size, stride):
        self.storage_key, self.offset = storage_key, offset
        self.size, self.stride = tuple(size), tuple(stride)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    return _Tensor(storage, storage_offset, size, stride)


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file):
        super().__init__(file)
        self.storages = {}

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild_tensor_v2
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        raise UnsafeFileError(
            f"Refusing to load {module}.{name}: not part of a plain tensor file."
        )

    def persistent_load(self, saved_id):
        if not (isinstance(saved_id, tuple) and saved_id and saved_id[0] == "storage"):
            raise UnsafeFileError(f"Unexpected persistent id {saved_id!r}.")
        _, storage_type, key, _location, numel = saved_id[:5]
        if not isinstance(storage_type, _StorageType):
            raise UnsafeFileError(f"Unexpected storage type {storage_type!r}.")
        self.storages.setdefault(key, (storage_type.dtype, int(numel)))
        return key


def load_legacy_state_dict(path):
    """Read a legacy ``torch.save`` state dict into ``{name: ndarray}``.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    state : dict of str to ndarray
        In file order.

    Raises
    ------
    UnsafeFileError
        If the file references anything beyond plain tensors.
    ValueError
        If the file is not a legacy PyTorch file or is truncated.
    """
    with open(path, "rb") as handle:
        data = handle.read()
    stream = io.BytesIO(data)

    def header():
        return _RestrictedUnpickler(stream).load()

    try:
        if header() != _MAGIC:
            raise ValueError(f"{path!s} is not a legacy PyTorch file (bad magic number).")
        if header() != _PROTOCOL:
            raise ValueError(f"{path!s}: unsupported PyTorch protocol version.")
        info = header()
        if not info.get("little_endian", True):
            raise ValueError(f"{path!s}: big-endian files are not supported.")
        unpickler = _RestrictedUnpickler(stream)
        state = unpickler.load()
        keys = _RestrictedUnpickler(stream).load()
    except (EOFError, struct.error) as exc:
        raise ValueError(f"{path!s} is truncated ({exc}).") from None
    storages = {}
    for key in keys:
        dtype, _ = unpickler.storages[key]
        (numel,) = struct.unpack("<q", stream.read(8))
        raw = stream.read(numel * dtype.itemsize)
        if len(raw) != numel * dtype.itemsize:
            raise ValueError(f"{path!s} is truncated (storage {key}).")
        storages[key] = np.frombuffer(raw, dtype=dtype.newbyteorder("<"))
    result = {}
    for name, tensor in state.items():
        if not isinstance(tensor, _Tensor):
            raise UnsafeFileError(f"Entry {name!r} is not a tensor.")
        storage = storages[tensor.storage_key]
        itemsize = storage.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            storage[tensor.offset:],
            shape=tensor.size,
            strides=tuple(s * itemsize for s in tensor.stride),
            writeable=False,
        )
        result[name] = np.array(view)
    return result
