"""One built network per signature, reused across fits: the engine under a grid search.

A grid search fits many networks that differ only in their weights and learning rates.
Building each anew costs a build, a trace of the train and predict steps per phase, and,
on TensorFlow, memory that is never given back: every trace leaves its graph (thousands of
ops) held from TensorFlow's C++ side, and optimizer slots created inside a traced step
leave their branch functions in the eager context (``benchmarks/README.md``, "Bounded
memory", has the measurements). So fits whose networks have the same *signature* (base,
weights, cut, head, outputs, input size, precision, augmentation, seed) lease one
:class:`PooledNetwork` from :data:`NETWORK_POOL`, each seeing it through the
:class:`NetworkView` of its own unfreeze depth:

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

__all__ = ["NETWORK_POOL", "NetworkPool", "NetworkView", "PooledNetwork", "Trainer",
           "clear_session", "set_network_pool_size"]

DEFAULT_POOL_SIZE = 4


class Trainer:
    """A compiled model of one phase kind, reused: its optimizer is reset for every fit."""

    def __init__(self, model, make_optimizer, loss, metrics):
        if getattr(model, "compiled", False):
            # Compiling it again would swap the other trainer's optimizer for this one's,
            # and that trainer would then train with an optimizer it never resets.
            raise RuntimeError(f"The model {model.name!r} is compiled by another trainer; give "
                               "each trainer a model of its own (over the same layers).")
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
    (each phase's :class:`Trainer`, models over its layers, its views)."""

    def __init__(self, network, model, *, snapshot=True):
        self.network, self.model = network, model
        self.variables = list(model.variables)
        self.initial = [np.array(v.numpy()) for v in self.variables] if snapshot else None
        self._index = {id(v): i for i, v in enumerate(self.variables)}
        # Which variables may differ from the snapshot: restoring only those keeps a fit
        # at a shallow depth from paying for the whole base (EfficientNet-Lite0's 245
        # variables took 0.3 s per fit of a search to put back on this machine).
        self._changed = set()
        self.kept = {}
        self.owner = None  # the token of the fit whose weights it holds

    def may_change(self, variables=None):
        """Say that ``variables`` (None: all) may be changed from now on."""
        if variables is None:
            self._changed = set(range(len(self.variables)))
        else:
            self._changed.update(self._index[id(v)] for v in variables)

    def restore_initial(self):
        """Put every variable back to its value at build time."""
        if self.initial is None:
            raise RuntimeError("This network was built for prediction; it has no initial state.")
        for i in sorted(self._changed):
            self.variables[i].assign(self.initial[i])
        self._changed = set()
        self.owner = None

    def keep(self, key, make):
        """What is kept under ``key``, made by ``make()`` on first use."""
        if key not in self.kept:
            self.kept[key] = make()
        return self.kept[key]

    def view(self, key, make_network, mutable_of):
        """The :class:`NetworkView` ``key`` of this network, made by ``make_network()``
        (a network over the same layers) on first use; ``mutable_of(network)``: the
        variables a fit through it can change."""
        def make():
            network = make_network()
            return NetworkView(self, key, network, mutable_of(network))
        return self.keep(("view", key), make)


class NetworkView:
    """A pooled network seen through other models over the same layers and variables
    (the fine-tuned networks: the same base and head cut at another depth).

    Building a network costs about a second (EfficientNet-Lite0); models over built
    layers cost milliseconds. So a search over ``unfreeze`` builds one network, and each
    depth is a view of it. A view has what a :class:`PooledNetwork` has; its weights,
    initial state and owner are the pooled network's, what it keeps is its own unless
    kept as shared (a model that does not depend on the view: the head alone).
    """

    def __init__(self, pooled, key, network, mutable):
        self.pooled, self.key, self.network = pooled, key, network
        self.model = network.model
        self.mutable = mutable

    @property
    def owner(self):
        return self.pooled.owner

    @owner.setter
    def owner(self, token):
        self.pooled.owner = token

    def restore_initial(self):
        """Put the network back to its initial state, for a fit through this view (which
        may change the view's mutable variables)."""
        self.pooled.restore_initial()
        self.pooled.may_change(self.mutable)

    def may_change(self, variables=None):
        self.pooled.may_change(variables)

    def set_weights(self, weights):
        """``model.set_weights(weights)`` (weights in this view's model's order)."""
        self.model.set_weights(weights)
        self.pooled.may_change()

    def keep(self, key, make, *, shared=False):
        """What is kept under ``key``, made by ``make()`` on first use: this view's own,
        or, with ``shared``, the one every view of the network uses."""
        return self.pooled.keep(key if shared else (("view", self.key), key), make)


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
    def lease(self, signature, build=None, model_of=None, *, snapshot=True):
        """Yield a :class:`PooledNetwork` for ``signature``, taken from the pool or built.

        ``build()`` makes the network, ``model_of(network)`` its whole model; with
        ``snapshot`` its initial variables are kept for :meth:`PooledNetwork.restore_initial`.
        ``signature=None`` means not poolable: the network is built and not kept.
        ``build=None`` takes an idle network only, and yields None where there is none.
        """
        pooled = self._take(signature) if signature is not None else None
        if pooled is None:
            if build is None:
                yield None
                return
            network = build()
            pooled = PooledNetwork(network, model_of(network), snapshot=snapshot)
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
        (for EfficientNet-Lite0 about 100 MiB). A grid search over ``unfreeze`` and
        the learning rates uses one network (other parameters of the head, the input
        size or the precision need one each), so a handful is enough.

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
