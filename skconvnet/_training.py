"""Training a classifier network in phases, as data: warm-up, then fine-tuning.

A :class:`Phase` says which layers train, at which rate, for how many epochs;
:func:`run_phases` runs a list of them and returns the history. What a phase
trains on depends on the route:

* :class:`FullNetworkInputs`: the whole network on the images (augmentation,
  no cache);
* :class:`CachedBottomInputs`: the frozen bottom's outputs, computed once per
  image through the cache; fine-tuning trains the top and head on them, and a
  warm-up (whole base frozen) trains the head alone on the base's outputs.

Both draw batches from the same :class:`TrainingBatches`, so the two routes see
the same batches in the same order. The models each phase trains come from the leased
:class:`~skconvnet._engine.PooledNetwork`, compiled and traced once per signature and
reused by every later fit of that signature.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import keras
import numpy as np

from ._engine import Trainer
from ._runtime import call_on_arrays
from .caching import cached_predict
from .networks import set_trainable_from

__all__ = [
    "ArraySource",
    "CachedBottomInputs",
    "FullNetworkInputs",
    "Phase",
    "TrainingBatches",
    "predict_through_cache",
    "run_phases",
]


@dataclass(frozen=True)
class Phase:
    """One training phase.

    Attributes
    ----------
    name : str
        ``"warmup"`` or ``"finetune"``, recorded in the history.
    trains_from : int or None
        Index of the first base layer trained (None: the head alone).
    learning_rate : float
    epochs : int
    """

    name: str
    trains_from: int | None
    learning_rate: float
    epochs: int


class ArraySource:
    """In-memory inputs of a model (cached frozen-layer outputs) as a source of batches."""

    flat_width = None

    def __init__(self, arrays):
        self.arrays = arrays

    def __len__(self):
        return len(self.arrays[0])

    def load(self, indices):
        chosen = [array[indices] for array in self.arrays]
        return (chosen[0] if len(chosen) == 1 else tuple(chosen)), {}


class TrainingBatches(keras.utils.PyDataset):
    """Training batches drawn from a source, reshuffled every epoch by our own generator.

    ``source`` may be swapped between phases (images, cached frozen outputs, the
    base's outputs) while the order keeps drawing from the same generator.
    Keras' own shuffle would draw from Python's global ``random``, which other
    threads (a Dask worker's event loop) also draw from: not reproducible there.
    """

    def __init__(self, source, indices, targets, weights, batch_size, seed, shuffle):
        super().__init__()
        self.source, self.indices = source, np.asarray(indices)
        self.targets, self.weights = targets, weights
        self.batch_size, self.shuffle = batch_size, shuffle
        self.rng = np.random.default_rng(seed)
        self.order = self.indices.copy()
        self.on_epoch_end()

    def __len__(self):
        return math.ceil(len(self.indices) / self.batch_size)

    def __getitem__(self, i):
        chosen = self.order[i * self.batch_size:(i + 1) * self.batch_size]
        images, _ = self.source.load(chosen)
        if self.weights is None:
            return images, self.targets[chosen]
        return images, self.targets[chosen], self.weights[chosen]

    def on_epoch_end(self):
        if self.shuffle:
            self.order = self.rng.permutation(self.indices)


def model_on_arrays(arrays, apply, name):
    """A model taking batches shaped like ``arrays`` (an :class:`ArraySource`) through ``apply``."""
    inputs = [keras.Input(array.shape[1:]) for array in arrays.arrays]
    inputs = inputs[0] if len(inputs) == 1 else inputs
    return keras.Model(inputs, apply(inputs), name=name)


def _whole_model(network):
    # Each phase trains its own Model object over the same layers, so each keeps the
    # traced step of its own trainable set.
    return keras.Model(network.model.inputs, network.model.outputs, name="finetuned")


class FullNetworkInputs:
    """Every phase trains the whole network on the images."""

    def __init__(self, network, source):
        self.network, self.source = network, source

    def for_phase(self, phase):
        """``(kind, make_model, data)``: what the phase trains, on what."""
        return ("full", phase.trains_from), lambda: _whole_model(self.network), self.source


class CachedBottomInputs:
    """Phases train on the frozen bottom's outputs, computed once per image via the cache."""

    def __init__(self, pooled, key, cache, source, batch_size, verbose):
        self.pooled, self.network, self.batch_size = pooled, pooled.network, batch_size
        self.bottom_outputs = ArraySource(cached_predict(self.network.frozen, key, source,
                                                         batch_size, cache, verbose=verbose))

    def for_phase(self, phase):
        """``(kind, make_model, data)``: what the phase trains, on what."""
        network = self.network
        if phase.trains_from is None and network.top is not None:
            # The whole base is frozen, so the head's inputs are fixed too: run the top
            # once and train the head alone on its outputs.
            top = self.pooled.keep(("model", "top"), lambda: model_on_arrays(
                self.bottom_outputs, network.top, "top"))
            data = ArraySource([call_on_arrays(top, self.bottom_outputs.arrays,
                                               self.batch_size)])
            return ("cached-head",), lambda: model_on_arrays(data, network.head, "head"), data
        # One phase at most trains this model: the fine-tuning one, or, where the whole
        # base is the frozen bottom (no top), the warm-up; predictions use it too.
        return (("cached-top", phase.trains_from),
                lambda: top_and_head_model(self.pooled, self.bottom_outputs),
                self.bottom_outputs)


def top_and_head_model(pooled, bottom_outputs):
    """The pooled network's ``bottom outputs -> top -> head`` model (built once, kept)."""
    return pooled.keep(("model", "top-and-head"), lambda: model_on_arrays(
        bottom_outputs, pooled.network.top_and_head, "finetuned_top"))


def predict_through_cache(pooled, key, cache, source, batch_size):
    """Predict with the frozen bottom's outputs from the cache (images seen before, in
    another fold, say, are not run again); only the trained top and head run."""
    arrays = ArraySource(cached_predict(pooled.network.frozen, key, source, batch_size, cache))
    return call_on_arrays(top_and_head_model(pooled, arrays), arrays.arrays, batch_size)


def _describe(phase, network):
    if phase.trains_from is None:
        what = "head"
    else:
        what = f"head and the top {network.n_layers_trained_from(phase.trains_from)} layers"
    return (f"{phase.name}: {phase.epochs} epoch{'s' * (phase.epochs > 1)} training the {what} "
            f"at learning rate {phase.learning_rate:g}")


def _metric(name):
    # Keras reads "accuracy" from the shapes: for several sigmoid outputs (multi-label) it
    # would pick categorical accuracy. Per-label accuracy is asked for by name, and recorded
    # in history_ as "accuracy" like the single-label one.
    if name == "binary_accuracy":
        return keras.metrics.BinaryAccuracy(name="accuracy")
    return name


def run_phases(pooled, phases, inputs, train, validation, *, loss, metrics, n_iter_no_change,
               verbose):
    """Train the leased network phase by phase; return the history, one record per epoch.

    Parameters
    ----------
    pooled : PooledNetwork
        The network (its weights as the fit starts) and the trainers it keeps.
    phases : list of Phase
        Phases with 0 epochs are skipped.
    inputs : FullNetworkInputs or CachedBottomInputs
        What each phase trains, on what.
    train, validation : TrainingBatches or None
        Their ``source`` is set to each phase's inputs.
    loss : str
    metrics : sequence of str
    n_iter_no_change : int or None
        Stop a phase after this many epochs without a better ``val_loss``.
    verbose : int

    Returns
    -------
    history : list of dict
        ``phase``, ``epoch`` (counting across phases) and Keras' metrics.
    """
    network, history = pooled.network, []
    for phase in phases:
        if phase.epochs == 0:
            continue
        set_trainable_from(network.base, phase.trains_from)
        kind, make_model, data = inputs.for_phase(phase)
        for batches in (train, validation):
            if batches is not None:
                batches.source = data
        if verbose:
            print(_describe(phase, network), flush=True)
        # The traced steps are specific to the batches' structure: targets' shape and
        # dtype, weights or none (TensorFlow would retrace, and relax shapes, otherwise).
        batch_structure = (train.targets.shape[1:], train.targets.dtype.str,
                           train.weights is None, validation is None)
        trainer = pooled.keep(
            ("trainer", kind, loss, tuple(metrics), batch_structure),
            lambda: Trainer(make_model(), keras.optimizers.RMSprop, loss,
                            [_metric(name) for name in metrics]))
        trained = trainer.ready(phase.learning_rate)
        callbacks = []
        if validation is not None and n_iter_no_change:
            callbacks.append(keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=n_iter_no_change, restore_best_weights=True))
        record = trained.fit(train, validation_data=validation, epochs=phase.epochs,
                             callbacks=callbacks, verbose=verbose, shuffle=False)
        for i in range(len(record.history.get("loss", []))):
            entry = {"phase": phase.name, "epoch": len(history)}
            entry.update({k: float(v[i]) for k, v in record.history.items()})
            history.append(entry)
    return history
