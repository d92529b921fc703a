"""One built network per signature, reused across fits: the engine under a grid search.

A grid search fits many networks that differ only in their weights and learning rates.
Building each anew costs a build, a trace of the train and predict steps per phase, and,
on TensorFlow, memory that is never given back: every trace leaves its graph (thousands of
ops) held from TensorFlow's C++ side, and optimizer slots created inside a traced step
leave their branch functions in the eager context (``benchmarks/README.md``, "Bounded
memory", has the measurements). So fits whose networks have the same *signature* (base,
weights, cut, unfreeze point, head, outputs, input size, precision, augmentation, seed)
lease one :class:`PooledNetwork` from :data:`NETWORK_POOL`:

* its variables (weights, BatchNormalization statistics, the random layers' seed states)
  are put back to the values they had when it was built, so a leased network starts
  exactly where a freshly built one would;
* its :class:`Trainer` per phase keeps its compiled model, optimizer and traced steps; the
  optimizer's slots and step count are zeroed and its learning rate (a variable, never a
  constant baked into the trace) set for each fit.

A lease is exclusive: two threads never train one network at once (the second builds
its own). Idle networks are kept up to :func:`set_network_pool_size` (least recently
used first out); :func:`clear_session` drops them all.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from contextlib import contextmanager

import keras
import numpy as np

__all__ = ["NETWORK_POOL", "NetworkPool", "PooledNetwork", "Trainer", "clear_session",
           "set_network_pool_size"]

DEFAULT_POOL_SIZE = 4


class Trainer:
    """A compiled model of one phase kind, reused: its optimizer is reset for every fit."""

    def __init__(self, model, make_optimizer, loss, metrics):
        self.model = model
        self.optimizer = make_optimizer()
        model.compile(optimizer=self.optimizer, loss=loss, metrics=metrics)
        if hasattr(self.optimizer, "start_schedule"):
            # Its schedule's variables are set before each fit, so they must exist now.
            self.optimizer.build(model.trainable_variables)

    def ready(self, learning_rate):
        """Zero the optimizer's slots and step count; set its learning rate."""
        rate = self.optimizer._learning_rate  # a variable; assigning it retraces nothing
        for variable in self.optimizer.variables:
            if variable is not rate:
                variable.assign(np.zeros(variable.shape, dtype=variable.dtype))
        self.optimizer.learning_rate = learning_rate
        return self.model


class PooledNetwork:
    """A built network, the snapshot of its initial variables, and what is kept with it
    (each phase's :class:`Trainer`, models over its layers)."""

    def __init__(self, network, model, *, snapshot=True, mutable=None):
        self.network, self.model = network, model
        # Only what training can change is snapshotted and restored (the frozen bottom of
        # a base never changes: restoring it would cost time for nothing).
        self.mutable = list(model.variables if mutable is None else mutable)
        self.initial = [np.array(v.numpy()) for v in self.mutable] if snapshot else None
        self.kept = {}
        self.owner = None  # the token of the fit whose weights it holds

    def restore_initial(self):
        """Put every variable back to its value at build time."""
        if self.initial is None:
            raise RuntimeError("This network was built for prediction; it has no initial state.")
        for variable, value in zip(self.mutable, self.initial):
            variable.assign(value)
        self.owner = None

    def keep(self, key, make):
        """What is kept under ``key``, made by ``make()`` on first use."""
        if key not in self.kept:
            self.kept[key] = make()
        return self.kept[key]


class NetworkPool:
    """Idle pooled networks by signature, at most ``max_idle`` of them (LRU)."""

    def __init__(self, max_idle=DEFAULT_POOL_SIZE):
        self.max_idle = max_idle
        self._idle = OrderedDict()  # (signature, serial) -> PooledNetwork
        self._serial = 0
        self._lock = threading.Lock()
        self.built = 0  # networks built (the benchmarks print it)

    def _take(self, signature):
        with self._lock:
            for key in reversed(self._idle):
                if key[0] == signature:
                    return self._idle.pop(key)
        return None

    def _give_back(self, signature, pooled):
        with self._lock:
            self._serial += 1
            self._idle[(signature, self._serial)] = pooled
            self._evict()

    def _evict(self):
        """Drop the least recently used idle networks beyond ``max_idle`` (lock held)."""
        while len(self._idle) > self.max_idle:
            self._idle.popitem(last=False)

    def resize(self, max_idle):
        """Keep at most ``max_idle`` idle networks from now on; return the previous bound."""
        with self._lock:
            previous, self.max_idle = self.max_idle, max_idle
            self._evict()
        return previous

    @contextmanager
    def lease(self, signature, build=None, model_of=None, *, snapshot=True, mutable_of=None):
        """Yield a :class:`PooledNetwork` for ``signature``, taken from the pool or built.

        ``build()`` makes the network, ``model_of(network)`` its whole model; with
        ``snapshot`` its initial variables are kept for :meth:`PooledNetwork.restore_initial`.
        ``signature=None`` means not poolable: the network is built and not kept.
        ``build=None`` takes an idle network only, and yields None where there is none.
        ``mutable_of(network)``: the variables training can change (default: all).
        """
        pooled = self._take(signature) if signature is not None else None
        if pooled is None:
            if build is None:
                yield None
                return
            network = build()
            pooled = PooledNetwork(network, model_of(network), snapshot=snapshot,
                                   mutable=mutable_of(network) if mutable_of else None)
            self.built += 1
        try:
            yield pooled
        except BaseException:
            pooled.owner = None  # half-trained: the next lease restores it anyway
            raise
        finally:
            if signature is not None and self.max_idle > 0:
                self._give_back(signature, pooled)

    def clear(self):
        with self._lock:
            self._idle.clear()


NETWORK_POOL = NetworkPool()


def set_network_pool_size(n_networks):
    """Keep at most ``n_networks`` idle built networks for reuse (default 4); 0 keeps none.

    Parameters
    ----------
    n_networks : int
        Each network kept costs its weights, its optimizer's slots and its traced steps
        (for EfficientNet-Lite0 about 100 MiB). A grid search reuses one network per
        grid point, so a handful is enough.

    Returns
    -------
    previous : int
        The size before the call.
    """
    if not isinstance(n_networks, (int, np.integer)) or isinstance(n_networks, bool) \
            or n_networks < 0:
        raise ValueError(f"n_networks must be an int >= 0; got {n_networks!r}.")
    return NETWORK_POOL.resize(int(n_networks))


def clear_session():
    """Drop every idle network kept for reuse, then clear Keras' own session.

    Fitted estimators keep working: they hold their weights, not the networks.

    Examples
    --------
    >>> import skconvnet
    >>> skconvnet.clear_session()
    """
    NETWORK_POOL.clear()
    keras.backend.clear_session()
