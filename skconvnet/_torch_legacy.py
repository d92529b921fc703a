"""Read PyTorch's legacy (non-zip) ``torch.save`` files without PyTorch, defensively.

The legacy format is five pickles (magic number, protocol version, system
info, the object, the storage keys) followed by the raw storages, each an
int64 element count and little-endian data. The file is untrusted input:

* The object pickle may only name an ordered dict, the tensor-rebuild
  function and storage types; any other global is refused, so nothing runs.
* Every number the file gives (storage sizes, tensor offsets, sizes and
  strides) is checked before it is used, in Python's unbounded ints: a
  storage must lie inside the file, every element a tensor's strides reach
  inside its storage, and the tensors copied out must add up to no more bytes
  than the file has (zero strides cannot blow a few bytes up into gigabytes).
  No array can reach memory outside the file.
* Whatever else is wrong with a file (truncation, wrong types, a planted
  attribute) raises :class:`~skconvnet.exceptions.UnsafeFileError`, which is
  also a ``ValueError``.
"""

from __future__ import annotations

import collections
import io
import math
import os
import pickle
import reprlib
import struct

import numpy as np

from ._fileio import describe_os_error, open_regular
from .exceptions import UnsafeFileError

__all__ = ["load_legacy_state_dict", "UnsafeFileError", "MAX_FILE_BYTES"]

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
#: Files larger than this are refused before they are read (the weights files
#: this reader is for are tens of megabytes).
MAX_FILE_BYTES = 2 * 2**30
_MAX_DIMS = 8
_short = reprlib.Repr()
_short.maxstring = _short.maxother = 60


def _refuse(reason):
    raise UnsafeFileError(reason)


class _StorageType:
    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)


class _Tensor:
    """A tensor waiting for its storage bytes."""

    def __init__(self, storage_key, offset, size, stride):
        self.storage_key, self.offset = storage_key, offset
        self.size, self.stride = size, stride


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    if not isinstance(storage, str):
        _refuse(f"a tensor refers to storage {_short.repr(storage)}, not a storage key.")
    if not (isinstance(size, tuple) and isinstance(stride, tuple) and len(size) == len(stride)
            and len(size) <= _MAX_DIMS and all(map(_is_int, size + stride))):
        _refuse(f"a tensor has size {_short.repr(size)} and stride {_short.repr(stride)}; "
                f"expected two tuples of at most {_MAX_DIMS} ints of the same length.")
    if not _is_int(storage_offset) or storage_offset < 0 or any(d < 0 for d in size):
        _refuse(f"a tensor has offset {_short.repr(storage_offset)} and size {size}; "
                "expected ints >= 0.")
    return _Tensor(storage, storage_offset, size, stride)


class _StateDict(collections.OrderedDict):
    """The state dict; only PyTorch's ``_metadata`` attribute may be set on it (and is dropped)."""

    def __setstate__(self, state):
        if not (isinstance(state, dict) and set(state) <= {"_metadata"}):
            _refuse(f"the state dict sets attributes {_short.repr(state)}; only '_metadata' "
                    "is part of the format.")


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file):
        super().__init__(file)
        self.storages = {}

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return _StateDict
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild_tensor_v2
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        _refuse(f"Refusing to load {module}.{name}: not part of a plain tensor file.")

    def persistent_load(self, saved_id):
        if not (isinstance(saved_id, tuple) and len(saved_id) >= 5 and saved_id[0] == "storage"):
            _refuse(f"Unexpected persistent id {_short.repr(saved_id)}.")
        _, storage_type, key, _location, numel = saved_id[:5]
        if not isinstance(storage_type, _StorageType):
            _refuse(f"Unexpected storage type {_short.repr(storage_type)}.")
        if not isinstance(key, str) or not _is_int(numel) or numel < 0:
            _refuse(f"a storage has key {_short.repr(key)} and {_short.repr(numel)} elements; "
                    "expected a str and an int >= 0.")
        known = self.storages.setdefault(key, (storage_type.dtype, numel))
        if known != (storage_type.dtype, numel):
            _refuse(f"storage {key!r} is declared twice, differently.")
        return key


def _load_pickle(stream, unpickler=None):
    try:
        return (unpickler or _RestrictedUnpickler(stream)).load()
    except UnsafeFileError:
        raise
    except Exception as exc:  # any malformed pickle (RecursionError, MemoryError too)
        _refuse(f"a pickle in the file is malformed or truncated ({type(exc).__name__}: "
                f"{_short.repr(str(exc))}).")


def _read_storages(stream, data, keys, declared, path):
    if not (isinstance(keys, list) and all(isinstance(key, str) for key in keys)):
        _refuse(f"{path!s}: the storage key list is {_short.repr(keys)}, not a list of str.")
    storages = {}
    for key in keys:
        if key not in declared or key in storages:
            _refuse(f"{path!s}: storage {key!r} is not declared by a tensor, or listed twice.")
        dtype, numel = declared[key]
        header = stream.read(8)
        if len(header) != 8:
            _refuse(f"{path!s} is truncated (storage {key!r}).")
        (count,) = struct.unpack("<q", header)
        start = stream.tell()
        if count != numel or count * dtype.itemsize > len(data) - start:
            _refuse(f"{path!s}: storage {key!r} holds {count} elements where {numel} were "
                    f"declared and {(len(data) - start) // dtype.itemsize} fit in the file.")
        storages[key] = np.frombuffer(data, dtype=dtype.newbyteorder("<"), count=count,
                                      offset=start)
        stream.seek(start + count * dtype.itemsize)
    return storages


def _tensor_array(name, tensor, storages, budget):
    """The tensor's elements, copied out of its storage after every bound is checked.

    ``budget`` is how many bytes may still be copied: the file's size minus what
    earlier tensors took, so tensors repeating one storage (zero strides, or
    many views) cannot grow memory beyond the file.
    """
    storage = storages.get(tensor.storage_key)
    if storage is None:
        _refuse(f"tensor {name!r} refers to storage {tensor.storage_key!r}, which the file "
                "does not hold.")
    count = math.prod(tensor.size)
    if count == 0:
        return np.zeros(tensor.size, dtype=storage.dtype)
    if any(s < 0 for s, d in zip(tensor.stride, tensor.size) if d > 1):
        _refuse(f"tensor {name!r} has strides {tensor.stride}; expected strides >= 0.")
    # Python ints: no overflow. The furthest element must lie inside the storage.
    last = tensor.offset + sum((d - 1) * s for d, s in zip(tensor.size, tensor.stride) if d > 1)
    if last >= len(storage):
        _refuse(f"tensor {name!r} (offset {tensor.offset}, size {tensor.size}, strides "
                f"{tensor.stride}) does not lie inside its storage of {len(storage)} elements.")
    if count * storage.dtype.itemsize > budget:
        _refuse(f"tensor {name!r} ({count:,} elements) would take more bytes than the file "
                "holds: its tensors repeat their storage.")
    # Every index the view can reach is in [offset, last], inside the storage (checked above).
    strides = tuple(s * storage.itemsize if d > 1 else 0
                    for d, s in zip(tensor.size, tensor.stride))
    view = np.lib.stride_tricks.as_strided(storage[tensor.offset:], shape=tensor.size,
                                           strides=strides, writeable=False)
    return np.array(view)


def load_legacy_state_dict(path):
    """Read a legacy ``torch.save`` state dict into ``{name: ndarray}``.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    state : dict of str to ndarray
        In file order; each array a copy of bytes of the file.

    Raises
    ------
    UnsafeFileError
        (A ``ValueError``.) If the file is not a legacy PyTorch file, is
        truncated or malformed, references anything beyond plain tensors,
        or describes a tensor outside its storage.
    """
    try:
        handle = open_regular(path)
    except OSError as exc:
        _refuse(f"cannot read {path!s}: {describe_os_error(exc)}.")
    with handle:
        # read(n) allocates n bytes up front: ask for what the file has, not the cap.
        size = os.fstat(handle.fileno()).st_size
        data = handle.read(min(size, MAX_FILE_BYTES) + 1)
    if len(data) > MAX_FILE_BYTES:
        _refuse(f"{path!s} has more than the {MAX_FILE_BYTES:,} bytes this reader accepts for "
                "a weights file.")
    stream = io.BytesIO(data)
    if _load_pickle(stream) != _MAGIC:
        _refuse(f"{path!s} is not a legacy PyTorch file (bad magic number).")
    if _load_pickle(stream) != _PROTOCOL:
        _refuse(f"{path!s}: unsupported PyTorch protocol version.")
    info = _load_pickle(stream)
    if not isinstance(info, dict) or info.get("little_endian", True) is not True:
        _refuse(f"{path!s}: the system record is {_short.repr(info)}; only little-endian files "
                "are supported.")
    unpickler = _RestrictedUnpickler(stream)
    state = _load_pickle(stream, unpickler)
    if type(state) not in (_StateDict, dict):
        _refuse(f"{path!s} holds a {type(state).__name__}, not a state dict.")
    storages = _read_storages(stream, data, _load_pickle(stream), unpickler.storages, path)
    result, budget = {}, len(data)
    for name, tensor in dict.items(state):  # the dict's own items, whatever was planted
        if not isinstance(name, str) or not isinstance(tensor, _Tensor):
            _refuse(f"entry {_short.repr(name)} is not a named tensor.")
        result[name] = _tensor_array(name, tensor, storages, budget)
        budget -= result[name].nbytes
    return result
