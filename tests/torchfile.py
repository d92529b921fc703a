"""Write PyTorch legacy-format files without PyTorch, to test the reader on known data."""

import collections
import io
import pickle
import struct
import sys
import types

import numpy as np

_MAGIC = 0x1950A86A20F9469CFC6C


def write_legacy_state_dict(path, arrays, extra_global=None, tensor_meta=None,
                            declared_numel=None, written_numel=None):
    """Save ``{name: ndarray}`` as ``torch.save`` (legacy format) would.

    ``extra_global`` (a ``(module, name)``) plants a reference to another
    callable, as a tampered file would. ``tensor_meta`` maps a name to the
    ``(offset, size, stride)`` the file claims for it (whatever the data);
    ``declared_numel`` / ``written_numel`` map a name to the element count its
    storage claims in the pickle / in the storage header.
    """
    tensor_meta = tensor_meta or {}
    declared_numel = declared_numel or {}
    written_numel = written_numel or {}
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called while writing")

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    storage_types = {}
    for name, dtype in (("FloatStorage", np.float32), ("LongStorage", np.int64)):
        cls = type(name, (), {"__module__": "torch", "__qualname__": name})
        setattr(torch, name, cls)
        storage_types[np.dtype(dtype)] = cls
    torch._utils = utils

    class Storage:
        def __init__(self, key, data):
            self.key, self.data = key, data

    class Tensor:
        def __init__(self, storage, shape, meta):
            self.storage, self.shape, self.meta = storage, shape, meta

        def __reduce__(self):
            stride = tuple(int(np.prod(self.shape[i + 1:])) for i in range(len(self.shape)))
            offset, size, stride = self.meta or (0, tuple(self.shape), stride)
            return (_rebuild_tensor_v2,
                    (self.storage, offset, size, stride, False, collections.OrderedDict()))

    class Planted:
        def __reduce__(self):
            module, name = extra_global
            return (getattr(sys.modules[module], name), ("echo planted",))

    storages = []
    state = collections.OrderedDict()
    for i, (name, array) in enumerate(arrays.items()):
        storage = Storage(str(i), np.ascontiguousarray(array).ravel())
        storage.declared = declared_numel.get(name, storage.data.size)
        storage.written = written_numel.get(name, storage.data.size)
        storages.append(storage)
        state[name] = Tensor(storage, array.shape, tensor_meta.get(name))
    if extra_global is not None:
        state["planted"] = Planted()

    class Writer(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, Storage):
                return ("storage", storage_types[obj.data.dtype], obj.key, "cpu", obj.declared)
            return None

    saved = {k: sys.modules.get(k) for k in ("torch", "torch._utils")}
    sys.modules["torch"], sys.modules["torch._utils"] = torch, utils
    try:
        buffer = io.BytesIO()
        for header in (_MAGIC, 1001, {"protocol_version": 1001, "little_endian": True}):
            pickle.dump(header, buffer, protocol=2)
        Writer(buffer, protocol=2).dump(state)
        pickle.dump([s.key for s in storages], buffer, protocol=2)
        for storage in storages:
            buffer.write(struct.pack("<q", storage.written))
            buffer.write(storage.data.astype(storage.data.dtype.newbyteorder("<")).tobytes())
    finally:
        for key, module in saved.items():
            if module is None:
                sys.modules.pop(key, None)
            else:
                sys.modules[key] = module
    with open(path, "wb") as handle:
        handle.write(buffer.getvalue())
