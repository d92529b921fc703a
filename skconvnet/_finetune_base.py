"""What the fine-tuned estimators share: the recipe's parameters, fit, the network's scores.

:class:`FineTunedConvEstimator` is the base of :class:`FineTunedConvClassifier`
and :class:`FineTunedConvRegressor`. Its ``fit`` reads as the algorithm:
resolve the parameters, encode the targets (the subclass's job), build the
network, run the phases, set the fitted attributes. Subclasses say how targets
are encoded (:meth:`_encode_targets`) and how raw network outputs become
predictions.
"""

from __future__ import annotations

import numbers
from dataclasses import replace
from functools import partial

import numpy as np
from sklearn.base import clone
from sklearn.model_selection import KFold, StratifiedKFold, train_test_split
from sklearn.utils import _safe_indexing
from sklearn.utils.validation import _num_samples

from ._base import SHARED_CONSTRAINTS, SHARED_PARAMETER_DOCS, ConvEstimator
from ._engine import NETWORK_POOL
from ._runtime import distribution_scope, predict_source, seeded
from ._training import (
    LR_SCHEDULES,
    OPTIMIZERS,
    CachedBottomInputs,
    FullNetworkInputs,
    Phase,
    Recipe,
    TrainingBatches,
    ViewSource,
    predict_through_cache,
    run_phases,
)
from ._validation import HasMethods, InstanceOf, Interval, Options, resolve_seed
from .augmentation import TEST_TIME_VIEWS, check_augment
from .caching import model_key
from .exceptions import InvalidParameterError
from .networks import (build_finetuned_network, draw_initial_weights, set_trainable_from,
                       unfreeze_start)

__all__ = ["AUTO_FOLDS", "FINETUNE_CONSTRAINTS", "FINETUNE_PARAMETER_DOCS",
           "FineTunedConvEstimator"]

#: ``unfreeze="auto"`` compares depths by cross-validation on the training images, so that
#: every image is held out once: on a few hundred images a single held-out fifth was too
#: noisy to tell a 1-2 point difference (measured on the food photos).
AUTO_FOLDS = 2


def _auto_folds(n_images, stratify, seed):
    """``unfreeze="auto"``'s folds: stratified where every class has enough images."""
    random_state = 0 if seed is None else seed
    if stratify is not None and np.unique(stratify, return_counts=True)[1].min() >= AUTO_FOLDS:
        return list(StratifiedKFold(AUTO_FOLDS, shuffle=True, random_state=random_state)
                    .split(np.zeros(n_images), stratify))
    return list(KFold(AUTO_FOLDS, shuffle=True, random_state=random_state)
                .split(np.zeros(n_images)))


_RATE = Interval(numbers.Real, 0.0, None, closed="right")

#: The constraints of the parameters both fine-tuned estimators have.
FINETUNE_CONSTRAINTS = {
    **SHARED_CONSTRAINTS,
    "pooling": [Options("avg", "max", "flatten")],
    "head_units": [Interval(numbers.Integral, 0, None)],
    "dropout": [Interval(numbers.Real, 0.0, 1.0, closed="left")],
    "augment": [Options(None, "standard"), InstanceOf(dict, "a dict")],
    "warmup_epochs": [Interval(numbers.Integral, 0, None)],
    "epochs": [Interval(numbers.Integral, 0, None)],
    "unfreeze": [Interval(numbers.Integral, 0, None),
                 InstanceOf(str, "a layer name of the base, 'all' or 'auto'")],
    "learning_rate": [_RATE],
    "warmup_learning_rate": [_RATE],
    "distribution": [Options(None, "mirrored"), HasMethods(
        "scope", description="a tf.distribute.Strategy or keras.distribution.Distribution "
                             "(an object with a scope() method)")],
    "validation_fraction": [Interval(numbers.Real, 0.0, 1.0, closed="neither"), Options(None)],
    "n_iter_no_change": [Interval(numbers.Integral, 1, None), Options(None)],
    "optimizer": [Options(*OPTIMIZERS)],
    "weight_decay": [Interval(numbers.Real, 0.0, None), Options(None)],
    "lr_schedule": [Options(*LR_SCHEDULES)],
    "layer_lr_decay": [Interval(numbers.Real, 0.0, 1.0, closed="right")],
    "train_bn": [InstanceOf(bool, "a bool")],
    "ema_momentum": [Interval(numbers.Real, 0.0, 1.0, closed="neither"), Options(None)],
    "tta": [Interval(numbers.Integral, 0, len(TEST_TIME_VIEWS))],
}

#: numpydoc entries of those parameters, after the shared ones.
FINETUNE_PARAMETER_DOCS = {
    **SHARED_PARAMETER_DOCS,
    "pooling": ('{"avg", "max", "flatten"}', "How the feature maps reach the head."),
    "head_units": ("int", """\
Width of the hidden Dense layer of the head; 0 for a linear head, whose weights
start at zero (as a linear probe's solver starts)."""),
    "dropout": ("float", "Dropout rate before the output layer."),
    "augment": ('None, "standard" or dict', """\
On-the-fly augmentation of training batches (never at predict time).
``"standard"`` is the seed recipe (rotation 40 degrees, shifts 0.2, shear 0.2,
zoom 0.2, horizontal flip); a dict takes the keys ``rotation_range``,
``width_shift_range``, ``height_shift_range``, ``shear_range``, ``zoom_range``,
``horizontal_flip``."""),
    "warmup_epochs": ("int", "Epochs of phase 1 (head only)."),
    "epochs": ("int", """\
Epochs of phase 2 (top of the base and head); unused when ``unfreeze=0``."""),
    "unfreeze": ("int or str", """\
What phase 2 trains: ``0`` nothing (phase 2 is skipped), an int N the top N
layers of the base that have weights (BatchNormalization not counted), a layer
name (that layer and all above it, e.g. ``"block5_conv1"``), ``"all"``, or
``"auto"``: compare ``0`` (the warm-up alone) with ``"all"`` by a 2-fold
cross-validation of the training images (stratified for classes), and fit on
all images with the one of higher mean held-out ``score`` (accuracy, R^2;
``0`` on a tie; a classifier chooses ``"all"`` only where it wins by more than
the standard error of the warm-up's accuracy, ``sqrt(p (1 - p) / n)``),
recorded in ``unfreeze_`` and ``unfreeze_scores_``. Costs
about two fine-tuning fits; chooses the head alone where the pretrained
features are already right for the task."""),
    "learning_rate": ("float", """\
Learning rate of phase 2 (its peak, with a schedule)."""),
    "warmup_learning_rate": ("float", """\
Learning rate of phase 1 (its peak, with a schedule)."""),
    "distribution": ('None, "mirrored" or a distribution object', """\
Train one model on several devices of this machine (data parallel).
``"mirrored"`` uses every GPU (``tf.distribute.MirroredStrategy()`` on
TensorFlow, ``keras.distribution.DataParallel()`` on JAX); or pass your own
``tf.distribute.Strategy`` or ``keras.distribution.Distribution``.
``batch_size`` is the global batch, split evenly over the replicas. With
``train_bn=True`` each replica normalises its part of the batch with its own
statistics (Keras' BatchNormalization is not synchronized)."""),
    "validation_fraction": ("float or None", """\
Hold out this fraction of the training data (stratified for single-label
classes) to monitor ``val_loss`` and the metrics (recorded in ``history_``)."""),
    "n_iter_no_change": ("int or None", """\
With ``validation_fraction``: stop a phase after this many epochs without a
better ``val_loss`` and restore the best weights."""),
    "optimizer": ('{"rmsprop", "adam", "adamw", "sgd"}', """\
Keras optimizer of both phases, with its defaults (``"sgd"``: momentum 0.9).
``"rmsprop"`` is the seed recipe's."""),
    "weight_decay": ("float or None", """\
Decoupled weight decay of the optimizer; None keeps the optimizer's default
(0.004 for ``"adamw"``, none for the others)."""),
    "lr_schedule": ('{"constant", "cosine", "one_cycle"}', """\
How the rate of each phase moves over its steps: ``"constant"``; ``"cosine"``
(from the rate down to 0); ``"one_cycle"`` (fastai's: up from rate/25 over the
first tenth of the steps, then down to rate/1e4). ``history_`` records each
epoch's mean rate."""),
    "layer_lr_decay": ("float", """\
Discriminative rates (timm's layer-wise decay): in phase 2 the base's last
block trains at ``layer_lr_decay`` times the head's rate, the block below at
its square, and so on down; 1 trains every layer at the same rate. Blocks are
those :func:`skconvnet.inspect_base` lists (one per layer for a user's model)."""),
    "train_bn": ("bool", """\
Whether the BatchNormalization layers phase 2 unfreezes train too (batch
statistics, scale and offset), as fastai's ``train_bn``; False keeps them in
inference mode with their pretrained statistics."""),
    "ema_momentum": ("float or None", """\
Keep an exponential moving average of the weights with this momentum (the Keras
optimizer's ``use_ema``) and end each phase on it; None for no average."""),
    "tta": ("int", f"""\
Test-time augmentation: predictions average the network's outputs for the
image and its first ``tta`` fixed views: horizontal
flip, centre crop ({7}/8 of each side), the flipped centre crop, then the four
corner crops (at most {len(TEST_TIME_VIEWS)}). Deterministic; through the
frozen-layer cache like plain predictions. 0: the image alone."""),
}


def _trainable_part(network):
    """The variables of ``network`` that a fit can change: all but the frozen bottom's."""
    start = network.start if network.start is not None else len(network.base.layers)
    constant = {id(v) for layer in network.base.layers[:start] for v in layer.variables}
    return [v for v in network.model.variables if id(v) not in constant]


class FineTunedConvEstimator(ConvEstimator):
    """The base of the fine-tuned estimators (not public).

    Subclasses define ``_encode_targets(y, n_images, sample_weight)``
    returning a :class:`skconvnet._targets.Targets`, ``_set_target_attributes
    (targets)`` and the public prediction methods built on :meth:`_scores`.
    """

    _parameter_constraints = FINETUNE_CONSTRAINTS
    _parameter_docs = FINETUNE_PARAMETER_DOCS
    _fitted_attribute = "n_outputs_"
    _required_fitted_names = frozenset({"input_size_", "history_", "n_trainable_layers_",
                                        "n_outputs_", "out_activation_"})
    _fitted_attribute_names = _required_fitted_names | {"n_features_in_", "unfreeze_",
                                                        "unfreeze_scores_"}

    def fit(self, X, y, sample_weight=None):
        """Train the head, then fine-tune the top of the base.

        Parameters
        ----------
        X : array-like or sequence of paths
            Images, in any form :class:`ConvFeatureExtractor` accepts.
        y : array-like of shape (n_images,) or (n_images, n_outputs)
            Targets (see the class's description).
        sample_weight : array-like of shape (n_images,) or None, default=None
            Non-negative weights of the images' losses, multiplied with any
            class weights. An image of weight 0 is left out of training.

        Returns
        -------
        self : object
            The fitted estimator.
        """
        self._resolve()  # every parameter checked before the first candidate trains
        unfreeze, scores = self.unfreeze, None
        if unfreeze == "auto":
            unfreeze, scores = self._choose_unfreeze(X, y, sample_weight)
        self._fit(X, y, sample_weight, phases_of=self._phases, unfreeze=unfreeze)
        if scores is None:
            self.__dict__.pop("unfreeze_scores_", None)
        else:
            self.unfreeze_scores_ = scores
        return self

    def _choose_unfreeze(self, X, y, sample_weight):
        """``unfreeze="auto"``: the warm-up alone (0) or fine-tuning every layer ("all"),
        whichever scores higher (``score``: accuracy, R^2) on held-out images in a 2-fold
        cross-validation of the training data, the warm-up alone unless fine-tuning wins
        by more than :meth:`_noise_of_score`; returns it and both mean scores."""
        n_images = _num_samples(X)
        seed = resolve_seed(self.random_state)
        folds = _auto_folds(n_images, self._stratification_of(y), seed)
        weights = None if sample_weight is None else np.asarray(sample_weight)
        scores = {}
        for unfreeze in (0, "all"):
            fold_scores = []
            for train, held_out in folds:
                candidate = clone(self).set_params(unfreeze=unfreeze)
                candidate.fit(_safe_indexing(X, train), _safe_indexing(y, train),
                              None if weights is None else weights[train])
                fold_scores.append(candidate.score(
                    _safe_indexing(X, held_out), _safe_indexing(y, held_out),
                    None if weights is None else weights[held_out]))
            scores[str(unfreeze)] = float(np.mean(fold_scores))
        margin = self._noise_of_score(scores["0"], n_images)
        return ("all" if scores["all"] > scores["0"] + margin else 0), scores

    def _stratification_of(self, y):
        """What to stratify ``unfreeze="auto"``'s split on (None: do not)."""
        return None

    def _noise_of_score(self, score, n_held_out):
        """By how much fine-tuning must beat the warm-up's held-out ``score`` (on
        ``n_held_out`` images) for ``unfreeze="auto"`` to choose it: 0 (a strict win)."""
        return 0.0

    def _fit(self, X, y, sample_weight, *, phases_of, unfreeze=None, callbacks_of=None):
        """``fit`` with ``unfreeze`` resolved (not "auto"), running the phases
        ``phases_of(network)`` (the learning-rate finder runs its sweep this way), with
        the Keras callbacks ``callbacks_of(phase)``."""
        unfreeze = self.unfreeze if unfreeze is None else unfreeze
        resolved = self._resolve()
        source = self._source(X, resolved)
        targets = self._encode_targets(y, len(source), sample_weight)
        signature = self._network_signature(resolved, targets.n_outputs, targets.activation)
        with seeded(resolved.seed), distribution_scope(self.distribution), NETWORK_POOL.lease(
                signature, lambda: self._build_network(resolved, targets.n_outputs,
                                                       targets.activation, unfreeze),
                self._network_model) as pooled:
            pooled = self._at_depth(pooled, unfreeze)
            self._start_from_initial_weights(pooled, resolved)
            network = pooled.network
            resolved = self._cache_key_of(resolved, "finetune-bottom", self.layer,
                                          resolved.input_size, resolved.background,
                                          network.start, self.precision)
            mixing = self._batch_mixing(resolved.seed)
            inputs = self._phase_inputs(pooled, resolved, source, mixing)
            train, validation = self._batches(source, targets, resolved.seed, mixing)
            history = run_phases(pooled, phases_of(network), inputs, train, validation,
                                 loss=targets.loss, metrics=targets.metrics,
                                 n_iter_no_change=self.n_iter_no_change, recipe=self._recipe(),
                                 caller=type(self).__name__, callbacks_of=callbacks_of,
                                 verbose=self.verbose)
            token = object()
            weights = pooled.model.get_weights() if signature is not None else None
            pooled.owner = token
        # Fit into locals, swap at the end: an exception or KeyboardInterrupt above
        # leaves a previously fitted estimator exactly as it was. The estimator keeps its
        # weights; the network goes back to the pool for the next fit (unless it cannot
        # be pooled: then the estimator keeps the network itself).
        self._resolved, self._weights_token = resolved, token
        if signature is None:
            self._network = network
            self.__dict__.pop("_network_weights", None)
        else:
            self._network_weights = weights
            self.__dict__.pop("_network", None)
        self._set_target_attributes(targets)
        self.n_outputs_, self.out_activation_ = targets.n_outputs, targets.activation
        self.history_ = history
        self.input_size_ = resolved.input_size
        self.n_trainable_layers_ = network.n_layers_trained_from(network.start)
        self.unfreeze_ = unfreeze
        self._record_input_width(source)
        return self

    # ------------------------------------------------------------------ fit's steps
    def _resolve(self):
        resolved = super()._resolve()
        caller = type(self).__name__
        check_augment(caller, self.augment)
        if self.unfreeze == "auto" and (self.warmup_epochs == 0 or self.epochs == 0):
            raise InvalidParameterError(
                f"unfreeze='auto' makes {caller} compare the warm-up alone with fine-tuning, "
                f"so it needs warmup_epochs >= 1 and epochs >= 1; got warmup_epochs="
                f"{self.warmup_epochs!r} and epochs={self.epochs!r}. Set unfreeze to a depth "
                "instead.")
        if self.warmup_epochs == 0 and (self.epochs == 0 or self.unfreeze == 0):
            raise InvalidParameterError(
                f"{caller} would train nothing: warmup_epochs=0 and "
                f"{'epochs=0' if self.epochs == 0 else 'unfreeze=0'}. Set warmup_epochs >= 1, "
                "or unfreeze and epochs >= 1."
            )
        return resolved

    def _fitted_unfreeze(self):
        """The depth ``fit`` trained (``unfreeze`` itself unless it was "auto")."""
        return getattr(self, "unfreeze_", self.unfreeze)

    def _build_network(self, resolved, n_outputs=None, activation=None, unfreeze=None):
        if n_outputs is None:  # rebuilding a fitted estimator: as training left it
            network = self._build_network(resolved, self.n_outputs_, self.out_activation_,
                                          self._fitted_unfreeze())
            set_trainable_from(network.base, network.start, train_bn=self.train_bn)
            return network
        if unfreeze is None:
            unfreeze = self._fitted_unfreeze()
        return build_finetuned_network(
            resolved.spec, self.base, weights=resolved.weights, size=resolved.input_size,
            seed=resolved.seed, layer=self.layer, unfreeze=unfreeze, pooling=self.pooling,
            head_units=self.head_units, dropout=self.dropout, n_outputs=n_outputs,
            activation=activation, augment_settings=check_augment(type(self).__name__,
                                                                  self.augment),
            precision=self.precision, caller=type(self).__name__)

    def _network_model(self, network):
        return network.model

    def _at_depth(self, pooled, unfreeze):
        """The view of the leased network that trains the top ``unfreeze`` layers of its
        base (see :class:`skconvnet._engine.NetworkView`)."""
        network = pooled.network
        start = unfreeze_start(type(self).__name__, network.base, unfreeze)
        return pooled.view(start, lambda: network.at_cut(start), mutable_of=_trainable_part)

    def _network_signature(self, resolved, n_outputs, activation):
        """What makes two fits' networks interchangeable (see :mod:`skconvnet._engine`):
        not ``unfreeze``, since every depth is a view of one network. None where the
        network cannot be shared: a user's keras.Model base, weights without an
        identity, a distribution strategy."""
        if (resolved.spec is None or resolved.weights_identity is None
                or self.distribution is not None):
            return None
        augment = check_augment(type(self).__name__, self.augment)
        return (type(self).__name__, resolved.spec.name, resolved.weights_identity,
                repr(self.layer), self.pooling, self.head_units,
                float(self.dropout), n_outputs, activation,
                repr(sorted(augment.items())) if augment else None, resolved.input_size,
                self.precision, resolved.seed)

    def _start_from_initial_weights(self, pooled, resolved):
        """A leased network as a fresh build would be: its initial variables, and without
        a seed, head weights (and random base weights) drawn anew."""
        pooled.restore_initial()
        if resolved.seed is None:
            pooled.may_change()  # the head, and a random base, drawn anew
            draw_initial_weights(pooled.network, int(np.random.randint(2**31 - 1)),
                                 random_base=resolved.spec is not None and resolved.weights is None)

    def _keeps_weights(self):
        return True  # trained weights never come back from a source

    def _uses_cache(self, network, resolved):
        return self.cache is not None and network.frozen is not None and bool(resolved.cache_key)

    def _recipe(self):
        """The training recipe of the parameters (see :class:`skconvnet._training.Recipe`)."""
        return Recipe(optimizer=self.optimizer, weight_decay=self.weight_decay,
                      layer_lr_decay=float(self.layer_lr_decay),
                      train_bn=self.train_bn, ema_momentum=self.ema_momentum)

    def _batch_mixing(self, seed):
        """What mixes training batches (a :class:`BatchMixing`), or None."""
        return None

    def _phase_inputs(self, pooled, resolved, source, mixing=None):
        """Train on the cached frozen bottom's outputs where the cache allows (images
        mixed batch by batch need the whole network), else on images."""
        if self._uses_cache(pooled.network, resolved) and not mixing:
            return CachedBottomInputs(pooled, resolved.cache_key, self.cache, source,
                                      self.batch_size, self.verbose)
        augments = check_augment(type(self).__name__, self.augment) is not None
        return FullNetworkInputs(pooled, source, self.batch_size,
                                 precompute_warmup=not (augments or mixing))

    def _batches(self, source, targets, seed, mixing=None):
        """Training batches of the images with weight > 0 and, with ``validation_fraction``,
        a held-out set (stratified where the targets are single-label classes); ``mixing``
        mixes the training batches only."""
        indices, validation = targets.trained, None
        if self.validation_fraction:
            stratify = targets.encoded[indices] if targets.stratify else None
            indices, held_out = train_test_split(
                indices, test_size=self.validation_fraction, stratify=stratify,
                random_state=seed if seed is not None else 0)
            validation = TrainingBatches(source, held_out, targets.encoded, None,
                                         self.batch_size, seed, shuffle=False)
        train = TrainingBatches(source, indices, targets.encoded, targets.sample_weight,
                                self.batch_size, seed, shuffle=True, mix=mixing)
        return train, validation

    def _phases(self, network):
        phases = [Phase("warmup", None, self.warmup_learning_rate, self.warmup_epochs,
                        self.lr_schedule)]
        if network.start is not None:
            phases.append(Phase("finetune", network.start, self.learning_rate, self.epochs,
                                self.lr_schedule))
        return phases

    # ------------------------------------------------------------------ prediction
    def _check_fitted_state(self):
        super()._check_fitted_state()
        network = self._network
        outputs = int(network.model.output.shape[-1])
        if outputs != self.n_outputs_:
            raise ValueError(f"n_outputs_={self.n_outputs_!r} but the network has {outputs} "
                             "outputs.")
        if self.n_trainable_layers_ != network.n_layers_trained_from(network.start):
            raise ValueError(f"n_trainable_layers_={self.n_trainable_layers_!r} but the network "
                             f"trains {network.n_layers_trained_from(network.start)}.")
        if not (isinstance(self.history_, list) and all(
                isinstance(entry, dict) and all(
                    isinstance(k, str) and isinstance(v, (str, int, float))
                    for k, v in entry.items()) for entry in self.history_)):
            raise ValueError("history_ is not a list of records of numbers.")

    @property
    def base_model_(self):
        """The trained (cut) base: the layers of ``model_`` that came from ``base``."""
        self.model_  # rebuilds after unpickling
        return self._network.base

    def _scores(self, X):
        """The network's raw outputs for ``X``, float64 ``(n_images, n_outputs_)``.

        Through a pooled network of the same signature (loaded with this estimator's
        weights unless it still holds them), and through the frozen-layer cache where
        the estimator has one; through the estimator's own network once it has one
        (after ``model_`` was used, or where networks cannot be pooled).
        """
        source = self._fitted_source(X)
        resolved = self._resolved
        signature = self._network_signature(resolved, self.n_outputs_, self.out_activation_)
        unfreeze = self._fitted_unfreeze()
        if signature is None or "_network" in self.__dict__ or \
                "_network_weights" not in self.__dict__:
            return self._averaged_over_views(source, lambda view_source, view: predict_source(
                self.model_, view_source, self.batch_size))
        # A network that trained this signature (idle in the pool, perhaps still holding
        # these very weights, as after fit in a grid search), else one built for prediction
        # only: its initial state is not a fit's, so it is pooled apart.
        with NETWORK_POOL.lease(signature) as pooled:
            if pooled is not None:
                return self._averaged_over_views(source, partial(
                    self._scores_with, self._at_depth(pooled, unfreeze)))
        with NETWORK_POOL.lease(("predict",) + signature, lambda: self._rebuild(resolved),
                                self._network_model, snapshot=False) as pooled:
            return self._averaged_over_views(source, partial(
                self._scores_with, self._at_depth(pooled, unfreeze)))

    def _averaged_over_views(self, source, predict):
        """``predict(source, view)`` for the images (view None) and, with ``tta``, the mean
        over them and their first ``tta`` test-time views, as float64."""
        scores = np.asarray(predict(source, None), dtype=np.float64)
        views = TEST_TIME_VIEWS[:self.tta]
        for view in views:
            scores += np.asarray(predict(ViewSource(source, view), view), dtype=np.float64)
        return scores / (1 + len(views)) if views else scores

    def _scores_with(self, pooled, source, view=None):
        token = self.__dict__.setdefault("_weights_token", object())
        if pooled.owner is not token:
            pooled.set_weights(self._network_weights)
            pooled.owner = token
        resolved = self._resolved
        if self._uses_cache(pooled.network, resolved):
            key = resolved.cache_key if view is None else model_key(resolved.cache_key, view.name)
            return predict_through_cache(pooled, key, self.cache, source, self.batch_size)
        return predict_source(pooled.model, source, self.batch_size)

    def _rebuild(self, resolved):
        with seeded(resolved.seed):
            return self._build_network(replace(resolved, weights=None))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.random_state is None
        return tags
