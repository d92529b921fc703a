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
:class:`~skconvnet._engine.NetworkView`, compiled and traced once per network and depth
and reused by every later fit.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import keras
import numpy as np

from ._engine import Trainer
from ._runtime import call_on_arrays, predict_source
from .caching import cached_predict
from .exceptions import DivergenceWarning
from .networks import apply_layers, block_rate_scales, set_trainable_from

__all__ = [
    "ArraySource",
    "BatchMixing",
    "CachedBottomInputs",
    "DivergenceGuard",
    "FullNetworkInputs",
    "LR_SCHEDULES",
    "OPTIMIZERS",
    "Phase",
    "Recipe",
    "TrainingBatches",
    "ViewSource",
    "predict_through_cache",
    "recalibrate_batchnorm",
    "run_phases",
    "epoch_rates",
    "scheduled_rate",
]

#: The optimizers of the ``optimizer`` parameter (SGD with Nesterov-free momentum 0.9).
OPTIMIZERS = {
    "rmsprop": (keras.optimizers.RMSprop, {}),
    "adam": (keras.optimizers.Adam, {}),
    "adamw": (keras.optimizers.AdamW, {}),
    "sgd": (keras.optimizers.SGD, {"momentum": 0.9}),
}
#: The schedules of the ``lr_schedule`` parameter.
LR_SCHEDULES = ("constant", "cosine", "one_cycle")
# one_cycle, after fastai's fit_one_cycle: the first tenth of the steps climbs (half a
# cosine) from rate/25 to the rate, the rest anneals (half a cosine) to rate/1e4.
_ONE_CYCLE_WARMUP, _ONE_CYCLE_START_DIV, _ONE_CYCLE_END_DIV = 0.1, 25.0, 1e4
# The divergence guard: a phase diverged when its loss became NaN or infinite, or when
# its last epoch's loss ended above both twice the best loss seen and that loss + 0.2.
_DIVERGED_FACTOR, _DIVERGED_MARGIN = 2.0, 0.2


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
        The peak rate (see :func:`scheduled_rate`).
    epochs : int
    schedule : str
        One of :data:`LR_SCHEDULES`, or ``"range_test"`` (the learning-rate
        finder's sweep, geometric from ``min_rate`` to ``learning_rate``).
    min_rate : float or None
        Where ``"range_test"`` starts.
    """

    name: str
    trains_from: int | None
    learning_rate: float
    epochs: int
    schedule: str = "constant"
    min_rate: float | None = None


def scheduled_rate(schedule, peak, step, n_steps, low=None, ops=None):
    """The learning rate of step ``step`` (0-based) of a phase of ``n_steps`` steps
    (``low``: where ``"range_test"`` starts).

    With ``ops=keras.ops`` the same formula on tensors (inside a compiled step, where
    ``step`` is the optimizer's iteration count); with None, on Python floats.
    """
    if schedule == "constant":
        return peak
    if ops is None:
        ops = _PythonOps
    if schedule == "range_test":  # geometric, ends on the peak
        return low * ops.power(peak / low, step / ops.maximum(n_steps - 1.0, 1.0))
    progress = step / n_steps
    if schedule == "cosine":
        return peak * 0.5 * (1.0 + ops.cos(math.pi * progress))
    if schedule != "one_cycle":
        raise ValueError(f"Unknown learning-rate schedule {schedule!r}.")
    low, end = peak / _ONE_CYCLE_START_DIV, peak / _ONE_CYCLE_END_DIV
    climb = progress / _ONE_CYCLE_WARMUP
    rest = (progress - _ONE_CYCLE_WARMUP) / (1.0 - _ONE_CYCLE_WARMUP)
    return ops.where(progress < _ONE_CYCLE_WARMUP,
                     low + (peak - low) * 0.5 * (1.0 - ops.cos(math.pi * climb)),
                     end + (peak - end) * 0.5 * (1.0 + ops.cos(math.pi * rest)))


class _PythonOps:
    """The few ``keras.ops`` functions :func:`scheduled_rate` uses, on Python floats."""

    power, cos, maximum = staticmethod(math.pow), staticmethod(math.cos), staticmethod(max)

    @staticmethod
    def where(condition, if_true, if_false):
        return if_true if condition else if_false


def epoch_rates(phase, steps_per_epoch):
    """The mean scheduled rate of each epoch of ``phase`` (recorded in ``history_``)."""
    n_steps = phase.epochs * steps_per_epoch
    return [float(np.mean([scheduled_rate(phase.schedule, phase.learning_rate, step, n_steps,
                                          phase.min_rate)
                           for step in range(epoch * steps_per_epoch,
                                             (epoch + 1) * steps_per_epoch)]))
            for epoch in range(phase.epochs)]


@dataclass(frozen=True)
class Recipe:
    """How every phase trains, beyond its layers, rate and epochs (the estimators'
    recipe parameters, resolved once in ``fit``).

    Attributes
    ----------
    optimizer : str
        A key of :data:`OPTIMIZERS`.
    weight_decay : float or None
        Decoupled weight decay; None leaves the optimizer's own default.
    layer_lr_decay : float
        Each block of the base down from the top trains at this factor of the rate
        of the block above (the head at the full rate); 1 for one rate.
    train_bn : bool
        Whether unfrozen BatchNormalization layers train (batch statistics).
    label_smoothing : float
    ema_momentum : float or None
        Keep the exponential moving average of the weights (and end on it).
    """

    optimizer: str = "rmsprop"
    weight_decay: float | None = None
    layer_lr_decay: float = 1.0
    train_bn: bool = False
    label_smoothing: float = 0.0
    ema_momentum: float | None = None

    def trace_key(self):
        """What a compiled training step depends on (the rate does not: it is a variable)."""
        return (self.optimizer, self.weight_decay, self.layer_lr_decay, self.train_bn,
                self.label_smoothing, self.ema_momentum)

    def make_optimizer(self, schedule="constant", rate_scales=None):
        """A fresh optimizer of the recipe, with ``schedule`` (see :func:`scheduled_rate`)
        computed inside its step and ``rate_scales`` (``id(variable)`` -> factor)."""
        optimizer_class, options = OPTIMIZERS[self.optimizer]
        options = dict(options)
        if self.weight_decay is not None:
            options["weight_decay"] = self.weight_decay
        if self.ema_momentum is not None:
            options.update(use_ema=True, ema_momentum=self.ema_momentum)
        if schedule == "constant" and not rate_scales:
            return optimizer_class(**options)
        return _recipe_optimizer_class(optimizer_class)(schedule=schedule,
                                                        rate_scales=rate_scales, **options)

    def loss(self, name):
        """The Keras loss for the targets' loss ``name`` (smoothed labels where asked)."""
        if not self.label_smoothing:
            return name
        if name == "categorical_crossentropy":
            return keras.losses.CategoricalCrossentropy(label_smoothing=self.label_smoothing)
        if name == "binary_crossentropy":
            return keras.losses.BinaryCrossentropy(label_smoothing=self.label_smoothing)
        raise ValueError(f"label_smoothing does not apply to the loss {name!r}.")


_RECIPE_CLASSES = {}


def _recipe_optimizer_class(optimizer_class):
    """``optimizer_class`` with a scheduled rate and a rate factor per variable.

    The schedule is computed from the optimizer's own iteration count inside the
    compiled step, from variables of the optimizer (the phase's length, the range
    test's start): a callback that assigned the rate between steps would be
    ignored by JAX, whose ``fit`` carries the optimizer's state through an epoch.
    The per-variable factors (discriminative rates) scale the rate passed to
    ``update_step``, which every backend's ``apply`` calls once per variable: so
    they work on TensorFlow, JAX and PyTorch, for any optimizer, adaptive ones
    included (scaling gradients would not: Adam and RMSprop divide it out).
    """
    if optimizer_class not in _RECIPE_CLASSES:
        class RecipeOptimizer(optimizer_class):
            def __init__(self, schedule="constant", rate_scales=None, **options):
                super().__init__(**options)
                self.schedule = schedule
                self.rate_scales = dict(rate_scales or {})

            def build(self, variables):
                super().build(variables)
                self._scale_of_index = [float(self.rate_scales.get(id(v), 1.0))
                                        for v in variables]
                self.schedule_steps = self.add_variable((), "ones", name="schedule_steps")
                self.schedule_low = self.add_variable((), "ones", name="schedule_low")

            def start_schedule(self, n_steps, low=None):
                """Set the phase's length (in steps) and the range test's start."""
                self.schedule_steps.assign(float(n_steps))
                self.schedule_low.assign(float(low or 1.0))

            def _get_current_learning_rate(self):
                peak = super()._get_current_learning_rate()
                step = keras.ops.cast(self.iterations, peak.dtype)
                return scheduled_rate(self.schedule, peak, step, self.schedule_steps,
                                      self.schedule_low, ops=keras.ops)

            def update_step(self, gradient, variable, learning_rate):
                scale = self._scale_of_index[self._get_variable_index(variable)]
                if scale != 1.0:
                    learning_rate = learning_rate * scale
                super().update_step(gradient, variable, learning_rate)

        RecipeOptimizer.__name__ = f"Recipe{optimizer_class.__name__}"
        _RECIPE_CLASSES[optimizer_class] = RecipeOptimizer
    return _RECIPE_CLASSES[optimizer_class]


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


class BatchMixing:
    """MixUp and CutMix (Keras' layers) on training batches: images and one-hot targets.

    With both, each batch is mixed by one of them, drawn at random. Drawn from
    ``seed`` alone, so fits are reproducible; never applied to predictions.
    """

    def __init__(self, mixup, cutmix, seed):
        self.layers = []
        if mixup:
            self.layers.append(keras.layers.MixUp(alpha=mixup, seed=seed))
        if cutmix:
            self.layers.append(keras.layers.CutMix(factor=cutmix, seed=seed))
        self.rng = np.random.default_rng(seed)

    def __bool__(self):
        return bool(self.layers)

    def __call__(self, images, targets):
        layer = self.layers[int(self.rng.integers(len(self.layers)))]
        one_column = targets.ndim == 1
        mixed = layer({"images": np.asarray(images, dtype=np.float32),
                       "labels": targets[:, None] if one_column else targets}, training=True)
        labels = keras.ops.convert_to_numpy(mixed["labels"]).astype(np.float32)
        return (keras.ops.convert_to_numpy(mixed["images"]).astype(np.float32),
                labels[:, 0] if one_column else labels)


class TrainingBatches(keras.utils.PyDataset):
    """Training batches drawn from a source, reshuffled every epoch by our own generator.

    ``source`` may be swapped between phases (images, cached frozen outputs, the
    base's outputs) while the order keeps drawing from the same generator.
    Keras' own shuffle would draw from Python's global ``random``, which other
    threads (a Dask worker's event loop) also draw from: not reproducible there.
    ``mix`` (a :class:`BatchMixing`, training batches of images only) mixes each
    batch's images and targets.
    """

    def __init__(self, source, indices, targets, weights, batch_size, seed, shuffle, mix=None):
        super().__init__()
        self.source, self.indices = source, np.asarray(indices)
        self.targets, self.weights = targets, weights
        self.batch_size, self.shuffle, self.mix = batch_size, shuffle, mix
        self.rng = np.random.default_rng(seed)
        self.order = self.indices.copy()
        self.on_epoch_end()

    def __len__(self):
        return math.ceil(len(self.indices) / self.batch_size)

    def __getitem__(self, i):
        chosen = self.order[i * self.batch_size:(i + 1) * self.batch_size]
        images, _ = self.source.load(chosen)
        targets = self.targets[chosen]
        if self.mix:
            images, targets = self.mix(images, targets)
        if self.weights is None:
            return images, targets
        return images, targets, self.weights[chosen]

    def on_epoch_end(self):
        if self.shuffle:
            self.order = self.rng.permutation(self.indices)


class DivergenceGuard(keras.callbacks.Callback):
    """Stops a phase whose loss becomes NaN or infinite, and, where it diverged (see
    ``_DIVERGED_FACTOR``), puts back the best weights seen: the phase's starting
    weights (loss of the first batch) or an epoch's end (that epoch's mean loss,
    ``val_loss`` where there is one)."""

    def __init__(self, phase, caller):
        super().__init__()
        self.phase, self.caller = phase, caller
        self.diverged = None
        self.kept_start = False  # whether the phase's starting weights were put back

    def on_train_begin(self, logs=None):
        self.best_weights, self.best_loss, self.best_at = self.model.get_weights(), None, None
        self.last_loss = None

    def on_train_batch_end(self, batch, logs=None):
        if self.best_loss is None:  # the first batch: the loss of the starting weights
            self.best_loss = self.last_loss = float(logs["loss"])
            self.best_at = "its start"
            if not math.isfinite(self.best_loss):
                self.best_loss = math.inf

    def on_epoch_end(self, epoch, logs=None):
        loss = float(logs["loss"])
        self.last_loss = loss
        if not math.isfinite(loss):
            self.diverged = "became NaN" if math.isnan(loss) else "became infinite"
            self.model.stop_training = True
            return
        monitored = float(logs.get("val_loss", loss))
        if math.isfinite(monitored) and monitored < self.best_loss:
            self.best_loss, self.best_at = monitored, f"epoch {epoch + 1}"
            self.best_weights = self.model.get_weights()

    def network_broke(self, inputs):
        """Whether the model's weights, or its outputs for ``inputs``, are NaN or infinite."""
        if not all(np.isfinite(w).all() for w in self.model.get_weights()):
            return True
        outputs = keras.tree.flatten(self.model(inputs, training=False))
        return not all(np.isfinite(keras.ops.convert_to_numpy(o)).all() for o in outputs)

    def on_train_end(self, logs=None):
        if self.diverged is None and self.last_loss is not None and self.last_loss > max(
                _DIVERGED_FACTOR * self.best_loss, self.best_loss + _DIVERGED_MARGIN):
            self.diverged = f"ended at {self.last_loss:.3g}"
        if self.diverged is None:
            return
        self.model.set_weights(self.best_weights)
        self.kept_start = self.best_at in (None, "its start")
        kept = self.best_at or "its start"
        if self.best_loss is not None and math.isfinite(self.best_loss):
            kept += f", of loss {self.best_loss:.3g}"
        warnings.warn(
            f"{self.caller}: the {self.phase.name} phase diverged at learning rate "
            f"{self.phase.learning_rate:g} (its loss {self.diverged}); kept the weights of "
            f"{kept}. Lower the phase's learning rate (skconvnet.suggest_learning_rate finds "
            "one).", DivergenceWarning, stacklevel=2)


class ViewSource:
    """A source of images seen through a test-time view (see
    :data:`skconvnet.augmentation.TEST_TIME_VIEWS`)."""

    def __init__(self, source, view):
        self.source, self.view = source, view
        self.flat_width = source.flat_width

    def __len__(self):
        return len(self.source)

    def content_keys(self):
        return self.source.content_keys()

    def load(self, indices):
        images, failures = self.source.load(indices)
        return self.view(images), failures


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
    """Phases train the whole network on the images.

    With ``precompute_warmup`` (no augmentation or mixing: each image looks the same
    every epoch), a warm-up, whose base is frozen, trains the head alone on the base's
    (pooled) outputs, computed once per fit: one pass through the base instead of one
    per epoch, so a long warm-up costs little.
    """

    def __init__(self, pooled, source, batch_size, precompute_warmup=False):
        self.pooled, self.network, self.source = pooled, pooled.network, source
        self.batch_size, self.precompute_warmup = batch_size, precompute_warmup

    def for_phase(self, phase):
        """``(kind, make_model, data)``: what the phase trains, on what."""
        network = self.network
        if phase.trains_from is None and self.precompute_warmup:
            # The head's first layers that compute the same in training as at predict
            # time (pooling) run with the base; from the first layer with weights or
            # training-time randomness (Dropout) on, the head trains on the features.
            n_fixed = next((i for i, layer in enumerate(network.head_layers)
                            if not _fixed_in_training(layer)), len(network.head_layers))
            features = self.pooled.keep(("model", "warmup-features"), lambda: _features_model(
                network, network.head_layers[:n_fixed]), shared=True)
            data = ArraySource([np.asarray(predict_source(features, self.source,
                                                          self.batch_size))])
            trained = network.head_layers[n_fixed:]
            return (("precomputed-head",),
                    lambda: model_on_arrays(data, lambda x: apply_layers(trained, x), "head"),
                    data)
        return ("full", phase.trains_from), lambda: _whole_model(network), self.source

    def base_outputs_in_training(self, images):
        """The base's outputs for a batch of images (no augmentation), in training mode."""
        return self.network.base(self.network.preprocessing(images), training=True)


#: The kinds of phase model that train the head alone on the base's outputs: the same
#: model at every unfreeze depth, so kept once per network (see NetworkView.keep).
_HEAD_ALONE = ("precomputed-head", "cached-head")


def _fixed_in_training(layer):
    """Whether ``layer`` computes in training what it computes at predict time, with no
    weights to train: pooling, flattening; not Dropout or noise (a seed generator)."""
    return not layer.weights and not hasattr(layer, "seed_generator")


def _features_model(network, fixed_head_layers):
    """``image -> preprocessing -> base (inference mode) -> fixed_head_layers``."""
    inputs = keras.Input(network.model.input.shape[1:], name="image")
    x = network.preprocessing(inputs)
    x = apply_layers(fixed_head_layers, network.base(x, training=False))
    return keras.Model(inputs, x, name="warmup_features")


class CachedBottomInputs:
    """Phases train on the frozen bottom's outputs, computed once per image via the cache."""

    def __init__(self, pooled, key, cache, source, batch_size, verbose):
        self.pooled, self.network, self.batch_size = pooled, pooled.network, batch_size
        self.bottom_outputs = ArraySource(cached_predict(self.network.frozen, key, source,
                                                         batch_size, cache, verbose=verbose))
        self.source = self.bottom_outputs

    def base_outputs_in_training(self, bottom_outputs):
        """The top's outputs for a batch of frozen-bottom outputs, in training mode."""
        if isinstance(bottom_outputs, tuple):  # several tensors cross the cut
            bottom_outputs = list(bottom_outputs)
        return self.network.top(bottom_outputs, training=True)

    def for_phase(self, phase):
        """``(kind, make_model, data)``: what the phase trains, on what."""
        network = self.network
        if phase.trains_from is None:
            # The whole base is frozen, so the head's inputs are fixed too: run the top
            # (if any) once and train the head alone on its outputs, the base's outputs
            # whatever the depth (so every depth's warm-up uses one traced step).
            data = self.bottom_outputs
            if network.top is not None:
                top = self.pooled.keep(("model", "top"), lambda: model_on_arrays(
                    self.bottom_outputs, network.top, "top"))
                data = ArraySource([call_on_arrays(top, self.bottom_outputs.arrays,
                                                   self.batch_size)])
            return ("cached-head",), lambda: model_on_arrays(data, network.head, "head"), data
        # A model of its own for each trainer: compiling a model another trainer compiled
        # would swap that trainer's optimizer (the one kept for prediction is never compiled).
        return (("cached-top", phase.trains_from),
                lambda: _top_and_head_on(self.bottom_outputs, network),
                self.bottom_outputs)


def _top_and_head_on(bottom_outputs, network):
    """A new ``bottom outputs -> top -> head`` model over ``network``'s layers."""
    return model_on_arrays(bottom_outputs, network.top_and_head, "finetuned_top")


def top_and_head_model(pooled, bottom_outputs):
    """The pooled network's ``bottom outputs -> top -> head`` model for predictions
    (built once, kept, never compiled)."""
    return pooled.keep(("model", "top-and-head"),
                       lambda: _top_and_head_on(bottom_outputs, pooled.network))


def predict_through_cache(pooled, key, cache, source, batch_size):
    """Predict with the frozen bottom's outputs from the cache (images seen before, in
    another fold, say, are not run again); only the trained top and head run."""
    arrays = ArraySource(cached_predict(pooled.network.frozen, key, source, batch_size, cache))
    return call_on_arrays(top_and_head_model(pooled, arrays), arrays.arrays, batch_size)


def recalibrate_batchnorm(network, inputs, indices, batch_size):
    """Set the moving statistics of the base's trainable BatchNormalization layers to
    their average over the training images, with the trained weights.

    Keras' moving averages (momentum 0.99 in most bases) forget the pretrained
    statistics over a few hundred steps; a fine-tuning phase on a small set is
    shorter, so predictions (inference mode) would normalise with statistics of
    weights that no longer exist: measured on Fashion-MNIST, 1.0 training accuracy in
    training mode against 0.81 in inference mode. One pass without augmentation,
    the momentum of batch k set to k / (k + 1), makes each moving statistic the mean
    of the batches' statistics (as PyTorch's cumulative BatchNorm does).
    """
    layers = [layer for layer in network.base.layers
              if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable]
    if not layers:
        return
    momenta = [layer.momentum for layer in layers]
    try:
        for k, start in enumerate(range(0, len(indices), batch_size)):
            for layer in layers:
                layer.momentum = k / (k + 1)
            batch, _ = inputs.source.load(np.asarray(indices[start:start + batch_size]))
            inputs.base_outputs_in_training(batch)
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum


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
               recipe=Recipe(), caller="", callbacks_of=None, verbose=0):
    """Train the leased network phase by phase; return the history, one record per epoch.

    Parameters
    ----------
    pooled : NetworkView
        The network at the fit's depth (its weights as the fit starts) and the trainers
        it keeps.
    phases : list of Phase
        Phases with 0 epochs are skipped.
    inputs : FullNetworkInputs or CachedBottomInputs
        What each phase trains, on what.
    train, validation : TrainingBatches or None
        Their ``source`` is set to each phase's inputs.
    loss : str
        The targets' Keras loss (see :meth:`Recipe.loss`).
    metrics : sequence of str
    n_iter_no_change : int or None
        Stop a phase after this many epochs without a better ``val_loss``.
    recipe : Recipe
    caller : str
        The estimator named in warnings.
    callbacks_of : callable or None
        ``callbacks_of(phase)``: more Keras callbacks for that phase (the
        learning-rate finder's recorder).
    verbose : int

    Returns
    -------
    history : list of dict
        ``phase``, ``epoch`` (counting across phases), ``learning_rate`` (the
        epoch's mean rate) and Keras' metrics.
    """
    network, history = pooled.network, []
    for phase in phases:
        if phase.epochs == 0:
            continue
        set_trainable_from(network.base, phase.trains_from, train_bn=recipe.train_bn)
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
            ("trainer", kind, loss, tuple(metrics), batch_structure, recipe.trace_key(),
             phase.schedule),
            lambda: Trainer(
                make_model(),
                lambda: recipe.make_optimizer(phase.schedule, block_rate_scales(
                    network, recipe.layer_lr_decay, phase.trains_from)),
                recipe.loss(loss), [_metric(name) for name in metrics]),
            shared=kind[0] in _HEAD_ALONE)
        trained = trainer.ready(phase.learning_rate)
        if hasattr(trained.optimizer, "start_schedule"):
            trained.optimizer.start_schedule(phase.epochs * len(train), phase.min_rate)
        phase_callbacks = []
        if validation is not None and n_iter_no_change:
            phase_callbacks.append(keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=n_iter_no_change, restore_best_weights=True))
        if callbacks_of is not None:
            phase_callbacks.extend(callbacks_of(phase))
        guard = None
        if phase.schedule != "range_test":  # the finder's sweep is meant to blow up
            guard = DivergenceGuard(phase, caller)
            phase_callbacks.append(guard)
        record = keras.callbacks.History()  # ours: it keeps the epochs of a fit that raised
        phase_callbacks.append(record)
        try:
            trained.fit(train, validation_data=validation, epochs=phase.epochs,
                        callbacks=phase_callbacks, verbose=verbose, shuffle=False)
        except (RuntimeError, ValueError):
            # Some backends' losses refuse NaN predictions (PyTorch's binary cross-entropy
            # raises) before the guard sees a NaN loss: the weights tell.
            if guard is None or not guard.network_broke(train[0][0]):
                raise
            guard.diverged = "became NaN"
            guard.on_train_end()
        # Statistics for the trained weights; not where the guard put back the phase's
        # starting weights, whose statistics are those the phase started with.
        if recipe.train_bn and phase.trains_from is not None and not (
                guard is not None and guard.kept_start):
            recalibrate_batchnorm(network, inputs, train.indices, train.batch_size)
        rates = epoch_rates(phase, len(train))
        for i in range(len(record.history.get("loss", []))):
            entry = {"phase": phase.name, "epoch": len(history), "learning_rate": rates[i]}
            entry.update({k: float(v[i]) for k, v in record.history.items()
                          if k != "learning_rate"})
            history.append(entry)
    return history
