"""Running skconvnet on a Dask cluster (``pip install "skconvnet[dask]"``).

The estimators need nothing special to run under ``joblib.parallel_backend("dask")``:
they pickle without live Keras objects, and each worker builds its own model. Two
things are the cluster's business, and this module helps with both:

- thread pools: a worker started with ``--nthreads N`` should let the Keras backend
  use N threads, not every core of the machine (N workers would fight over them);
- code: a base registered with :func:`skconvnet.register_base` in the client must be
  registered in every worker too (import the module that registers it).

Examples
--------
>>> from dask.distributed import Client, LocalCluster  # doctest: +SKIP
>>> from skconvnet.scaling import SizeThreadPools  # doctest: +SKIP
>>> client = Client(LocalCluster(n_workers=2, threads_per_worker=1))  # doctest: +SKIP
>>> client.register_plugin(SizeThreadPools(imports=["my_bases"]))  # doctest: +SKIP
>>> with joblib.parallel_backend("dask"):  # doctest: +SKIP
...     search.fit(paths, labels)
"""

from __future__ import annotations

import importlib
import os
import warnings

import keras
from distributed.diagnostics.plugin import WorkerPlugin

__all__ = ["SizeThreadPools", "set_backend_threads"]


def set_backend_threads(n_threads):
    """Limit the Keras backend of this process to ``n_threads`` threads.

    TensorFlow accepts this only before it runs its first operation, and
    PyTorch at any time; JAX reads its thread settings only at import (set
    ``XLA_FLAGS`` in the worker's environment instead).

    Returns
    -------
    applied : bool
        False when the backend had already started and kept its pools.
    """
    os.environ["OMP_NUM_THREADS"] = str(n_threads)
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf  # the running backend's own module: the others need not exist

        try:
            tf.config.threading.set_intra_op_parallelism_threads(n_threads)
            tf.config.threading.set_inter_op_parallelism_threads(min(2, n_threads))
        except RuntimeError as exc:  # TensorFlow already initialised
            warnings.warn(f"TensorFlow's thread pools could not be resized: {exc}")
            return False
        return True
    if backend == "torch":
        import torch

        torch.set_num_threads(n_threads)
        return True
    return False


class SizeThreadPools(WorkerPlugin):
    """Dask worker plugin: backend thread pools sized to the worker, modules imported.

    Parameters
    ----------
    imports : sequence of str, default=()
        Modules each worker imports at start, e.g. the one that registers your
        bases (``"skconvnet.testing"`` registers the tiny test base).
    n_threads : int or None, default=None
        Threads per worker for the backend (None: the worker's own ``nthreads``).
    """

    name = "skconvnet-thread-pools"

    def __init__(self, imports=(), n_threads=None):
        self.imports = tuple(imports)
        self.n_threads = n_threads

    def setup(self, worker):
        n_threads = self.n_threads or worker.state.nthreads
        self.applied = set_backend_threads(n_threads)
        for module in self.imports:
            importlib.import_module(module)
