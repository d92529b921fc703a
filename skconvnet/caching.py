"""Cache of what frozen layers compute, per image.

The frozen part of a base gives the same output for the same image every
epoch, in every fold and for every grid point. :func:`cached_predict` computes
it once per image and keeps it under a key made of the network's identity
(base, weights, cut, input size, frozen boundary) and the image's content
(SHA-1 of its pixels or of its file's bytes):

* ``cache="memory"``: a process-wide store shared by all estimators (clones in
  a ``GridSearchCV`` included), least recently used entries evicted beyond
  ``SKCONVNET_MEMORY_CACHE_MB`` (default 2048);
* ``cache="/some/folder"``: one ``.npz`` file per image, written atomically
  (temporary file + rename), so processes can share the folder; an entry that
  fails to read is recomputed and rewritten, never used.
"""

from __future__ import annotations

import collections
import hashlib
import shutil
import threading
import zipfile
from pathlib import Path

import keras
import numpy as np

from ._fileio import atomic_write, environment_number, open_regular
from ._runtime import predict_source

__all__ = ["cached_predict", "clear_memory_cache", "model_key"]


def model_key(*parts):
    """A short stable digest of the network's identity."""
    return hashlib.sha1(repr(parts).encode()).hexdigest()[:20]


class _MemoryStore:
    def __init__(self):
        self.entries = collections.OrderedDict()
        self.nbytes = 0
        self.lock = threading.Lock()

    @property
    def limit(self):
        return int(environment_number("SKCONVNET_MEMORY_CACHE_MB", 2048) * 2**20)

    def get(self, key):
        with self.lock:
            value = self.entries.get(key)
            if value is not None:
                self.entries.move_to_end(key)
            return value

    def put(self, key, arrays):
        size = sum(a.nbytes for a in arrays)
        with self.lock:
            if key in self.entries:
                return
            self.entries[key] = arrays
            self.nbytes += size
            while self.nbytes > self.limit and len(self.entries) > 1:
                _, old = self.entries.popitem(last=False)
                self.nbytes -= sum(a.nbytes for a in old)

    def clear(self):
        with self.lock:
            self.entries.clear()
            self.nbytes = 0


_MEMORY = _MemoryStore()


def clear_memory_cache():
    """Empty the process-wide in-memory feature cache."""
    _MEMORY.clear()


class _FolderStore:
    def __init__(self, folder):
        self.folder = Path(folder)

    def _path(self, key):
        network, image = key
        return self.folder / network / image[:2] / f"{image}.npz"

    def get(self, key):
        path = self._path(key)
        try:
            with open_regular(path) as handle, np.load(handle, allow_pickle=False) as data:
                return [data[f"arr_{i}"] for i in range(len(data.files))]
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            return None  # corrupt, half-written, a folder: recompute, put replaces it

    def put(self, key, arrays):
        path = self._path(key)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)  # an entry replaced by a folder: make room for the file
        with atomic_write(path, suffix=".npz") as tmp:
            with open(tmp, "wb") as handle:
                np.savez(handle, *arrays)


def _store(cache):
    return _MEMORY if cache == "memory" else _FolderStore(cache)


class _Subset:
    """The images of ``source`` at ``indices``, as a source of their own."""

    def __init__(self, source, indices):
        self.source, self.indices = source, np.asarray(indices)

    def __len__(self):
        return len(self.indices)

    def load(self, positions):
        return self.source.load(self.indices[positions])

    def close(self):
        close = getattr(self.source, "close", None)
        if close is not None:
            close()


def cached_predict(model, network_key, source, batch_size, cache, *, verbose=0,
                   on_failures=None):
    """Outputs of ``model`` for every image of ``source``, computed once per image.

    Returns a list of arrays (one per model output), each ``(len(source), ...)``.
    Images the source could not read (``on_error="skip"``) are reported to
    ``on_failures(0, {index: error})`` and never stored.
    """
    store = _store(cache)
    image_keys = source.content_keys()
    # An entry that does not fit the network's outputs (another shape or dtype: a
    # stale or tampered file) counts as missing, is recomputed and replaced.
    shapes = [tuple(tensor.shape[1:]) for tensor in keras.tree.flatten(model.outputs)]

    def fits(arrays):
        return arrays is not None and len(arrays) == len(shapes) and all(
            array.dtype == np.float32 and array.shape == shape
            for array, shape in zip(arrays, shapes))

    found = [None if key is None else store.get((network_key, key)) for key in image_keys]
    found = [value if fits(value) else None for value in found]
    missing = [i for i, value in enumerate(found) if value is None]
    if missing:
        failed = {}

        def record(start, failures):
            for position, error in failures.items():
                failed[missing[start + position]] = error

        outputs = predict_source(model, _Subset(source, missing), batch_size, verbose=verbose,
                                 on_failures=record)
        outputs = outputs if isinstance(outputs, list) else [outputs]
        for row, i in enumerate(missing):
            arrays = [np.array(output[row]) for output in outputs]
            if i not in failed and image_keys[i] is not None:
                store.put((network_key, image_keys[i]), arrays)
            found[i] = arrays
        if failed and on_failures is not None:
            on_failures(0, failed)
    return [np.stack([value[k] for value in found]) for k in range(len(found[0]))]
