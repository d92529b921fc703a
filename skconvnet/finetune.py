"""FineTunedConvClassifier: two-phase fine-tuning of a pretrained base as a classifier."""

from __future__ import annotations

import numbers

import numpy as np
from sklearn.base import ClassifierMixin
from sklearn.model_selection import train_test_split

from ._base import SHARED_CONSTRAINTS, ConvEstimator, document_parameters
from ._runtime import distribution_scope, predict_source, seeded
from ._targets import ClassWeights, encode_class_labels
from ._training import (
    CachedBottomInputs,
    FullNetworkInputs,
    Phase,
    TrainingBatches,
    run_phases,
)
from ._validation import HasMethods, InstanceOf, Interval, Options
from .augmentation import check_augment
from .exceptions import InvalidParameterError
from .networks import build_classifier_network

__all__ = ["FineTunedConvClassifier"]


_RATE = Interval(numbers.Real, 0.0, None, closed="right")


@document_parameters
class FineTunedConvClassifier(ClassifierMixin, ConvEstimator):
    """Fine-tune a pretrained convolutional base as a scikit-learn classifier.

    A new head (pooling, ``Dense(head_units, relu)``, ``Dropout``, output layer)
    is put on the base. Phase 1 (warm-up) trains the head with the base
    frozen; phase 2 unfreezes the top of the base and trains it with the head
    at a low learning rate. BatchNormalization layers of the base stay frozen,
    in inference mode, throughout.

    Parameters
    ----------
    {shared parameters}
    pooling : {"avg", "max", "flatten"}, default="avg"
        How the feature maps reach the head.
    head_units : int, default=256
        Width of the hidden Dense layer of the head; 0 for a linear head.
    dropout : float, default=0.5
        Dropout rate before the output layer.
    augment : None, "standard" or dict, default=None
        On-the-fly augmentation of training batches (never at predict time).
        ``"standard"`` is the seed recipe (rotation 40 degrees, shifts 0.2,
        shear 0.2, zoom 0.2, horizontal flip); a dict takes the keys
        ``rotation_range``, ``width_shift_range``, ``height_shift_range``,
        ``shear_range``, ``zoom_range``, ``horizontal_flip``.
    warmup_epochs : int, default=5
        Epochs of phase 1 (head only).
    epochs : int, default=10
        Epochs of phase 2 (top of the base and head); unused when ``unfreeze=0``.
    unfreeze : int, str, default=0
        What phase 2 trains: ``0`` nothing (phase 2 is skipped), an int N the top
        N layers of the base that have weights (BatchNormalization not counted),
        a layer name (that layer and all above it, e.g. ``"block5_conv1"``), or
        ``"all"``.
    learning_rate : float, default=1e-5
        RMSprop learning rate of phase 2.
    warmup_learning_rate : float, default=1e-3
        RMSprop learning rate of phase 1.
    distribution : None, "mirrored" or a distribution object, default=None
        Train one model on several devices of this machine (data parallel).
        ``"mirrored"`` uses every GPU (``tf.distribute.MirroredStrategy()`` on
        TensorFlow, ``keras.distribution.DataParallel()`` on JAX); or pass your
        own ``tf.distribute.Strategy`` or ``keras.distribution.Distribution``.
        ``batch_size`` is the global batch, split evenly over the replicas.
    class_weight : "balanced", dict or None, default=None
        ``"balanced"`` weights samples inversely to class frequency; a dict maps
        class labels to weights (missing classes weigh 1).
    validation_fraction : float or None, default=None
        Hold out this stratified fraction of the training data to monitor
        ``val_loss``/``val_accuracy`` (recorded in ``history_``).
    n_iter_no_change : int or None, default=None
        With ``validation_fraction``: stop a phase after this many epochs
        without a better ``val_loss`` and restore the best weights.
    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The class labels.
    model_ : keras.Model
        The trained network: augmentation, preprocessing, base, head.
    base_model_ : keras.Model
        The (cut) base inside ``model_``, with its trained weights.
    history_ : list of dict
        One record per epoch of both phases: ``phase`` ("warmup" or
        "finetune"), ``epoch`` (counting across phases), ``loss``,
        ``accuracy`` and, with a validation split, ``val_loss``,
        ``val_accuracy``.
    n_trainable_layers_ : int
        Layers of the base trained in phase 2.
    input_size_ : int
        The side images are resized to.
    n_features_in_ : int
        Values per row, only when fitted on a 2-D array of flattened images.

    See Also
    --------
    ConvFeatureExtractor : Frozen features for any scikit-learn classifier.

    Notes
    -----
    With ``cache`` and ``augment=None``, the outputs of the layers phase 2
    keeps frozen are computed once per image and the rest trains on them:
    folds and grid points over the same images share them, and the warm-up
    trains the head alone on the base's outputs. ``predict`` goes the same way
    until the classifier is pickled or ``cache`` changes, so scoring a fold
    reuses what other folds computed. A ``keras.Model`` base is copied, never
    trained in place.

    Determinism: on CPU, a fixed ``random_state`` gives identical predictions
    run to run. On GPU, cuDNN convolutions and reductions are not bitwise
    deterministic unless ``TF_DETERMINISTIC_OPS=1`` (TensorFlow) or the JAX
    equivalent is set, and results may differ in the last digits.

    Pickles (``joblib.dump``) hold the trained weights and run code when
    loaded; share models with :func:`skconvnet.save` instead.

    Examples
    --------
    >>> import numpy as np
    >>> from skconvnet import FineTunedConvClassifier
    >>> rng = np.random.default_rng(0)
    >>> X = rng.integers(0, 256, size=(8, 32, 32, 3), dtype=np.uint8)
    >>> y = np.array(["cat", "dog"] * 4)
    >>> clf = FineTunedConvClassifier("vgg16", weights=None, input_size=32, head_units=8,
    ...                               warmup_epochs=1, unfreeze=2, epochs=1,
    ...                               random_state=0).fit(X, y)
    >>> clf.predict_proba(X).shape
    (8, 2)
    """

    _parameter_constraints = {
        **SHARED_CONSTRAINTS,
        "pooling": [Options("avg", "max", "flatten")],
        "head_units": [Interval(numbers.Integral, 0, None)],
        "dropout": [Interval(numbers.Real, 0.0, 1.0, closed="left")],
        "augment": [Options(None, "standard"), InstanceOf(dict, "a dict")],
        "warmup_epochs": [Interval(numbers.Integral, 0, None)],
        "epochs": [Interval(numbers.Integral, 0, None)],
        "unfreeze": [Interval(numbers.Integral, 0, None),
                     InstanceOf(str, "a layer name of the base or 'all'")],
        "learning_rate": [_RATE],
        "warmup_learning_rate": [_RATE],
        "distribution": [Options(None, "mirrored"), HasMethods(
            "scope", description="a tf.distribute.Strategy or keras.distribution.Distribution "
                                 "(an object with a scope() method)")],
        "class_weight": [Options(None, "balanced"), ClassWeights()],
        "validation_fraction": [Interval(numbers.Real, 0.0, 1.0, closed="neither"),
                                Options(None)],
        "n_iter_no_change": [Interval(numbers.Integral, 1, None), Options(None)],
    }
    _fitted_attribute = "classes_"
    _required_fitted_names = frozenset({"input_size_", "classes_", "history_",
                                        "n_trainable_layers_"})
    _fitted_attribute_names = _required_fitted_names | {"n_features_in_"}

    def __init__(
        self,
        base="vgg16",
        *,
        weights="imagenet",
        layer=None,
        input_size=150,
        pooling="avg",
        head_units=256,
        dropout=0.5,
        augment=None,
        warmup_epochs=5,
        epochs=10,
        unfreeze=0,
        learning_rate=1e-5,
        warmup_learning_rate=1e-3,
        batch_size=32,
        precision="float32",
        distribution=None,
        class_weight=None,
        validation_fraction=None,
        n_iter_no_change=None,
        cache=None,
        image_shape=None,
        background="white",
        random_state=None,
        verbose=0,
    ):
        self._store_parameters(locals())

    def fit(self, X, y):
        """Train the head, then fine-tune the top of the base.

        Parameters
        ----------
        X : array-like or sequence of paths
            Images, in any form :class:`ConvFeatureExtractor` accepts.
        y : array-like of shape (n_images,)
            Class labels (ints, strings, bools); at least two classes.

        Returns
        -------
        self : FineTunedConvClassifier
            The fitted classifier.
        """
        resolved = self._resolve()
        source = self._source(X, resolved)
        targets = encode_class_labels(y, len(source), self.class_weight, type(self).__name__)
        with seeded(resolved.seed), distribution_scope(self.distribution):
            network = self._build_network(resolved, targets.n_outputs)
            resolved = self._cache_key_of(resolved, "finetune-bottom", self.layer,
                                          resolved.input_size, resolved.background,
                                          network.start, self.precision)
            inputs = self._phase_inputs(network, resolved, source)
            train, validation = self._batches(source, targets, resolved.seed)
            history = run_phases(network, self._phases(network), inputs, train, validation,
                                 loss=targets.loss, n_iter_no_change=self.n_iter_no_change,
                                 verbose=self.verbose)
        # Fit into locals, swap at the end: an exception or KeyboardInterrupt above
        # leaves a previously fitted classifier exactly as it was.
        self._network, self._resolved = network, resolved
        self._predictor = getattr(inputs, "predictor", None)
        self.__dict__.pop("_network_weights", None)
        self.classes_ = targets.classes
        self.history_ = history
        self.input_size_ = resolved.input_size
        self.n_trainable_layers_ = network.n_layers_trained_from(network.start)
        self._record_input_width(source)
        return self

    # ------------------------------------------------------------------ fit's steps
    def _resolve(self):
        resolved = super()._resolve()
        caller = type(self).__name__
        check_augment(caller, self.augment)
        if self.warmup_epochs == 0 and (self.epochs == 0 or self.unfreeze == 0):
            raise InvalidParameterError(
                f"{caller} would train nothing: warmup_epochs=0 and "
                f"{'epochs=0' if self.epochs == 0 else 'unfreeze=0'}. Set warmup_epochs >= 1, "
                "or unfreeze and epochs >= 1."
            )
        return resolved

    def _build_network(self, resolved, n_outputs=None):
        if n_outputs is None:  # rebuilding a fitted classifier
            n_outputs = 1 if len(self.classes_) == 2 else len(self.classes_)
        return build_classifier_network(
            resolved.spec, self.base, weights=resolved.weights, size=resolved.input_size,
            seed=resolved.seed, layer=self.layer, unfreeze=self.unfreeze, pooling=self.pooling,
            head_units=self.head_units, dropout=self.dropout, n_outputs=n_outputs,
            augment_settings=check_augment(type(self).__name__, self.augment),
            precision=self.precision, caller=type(self).__name__)

    def _network_model(self, network):
        return network.model

    def _keeps_weights(self):
        return True  # trained weights never come back from a source

    def _phase_inputs(self, network, resolved, source):
        """Train on the cached frozen bottom's outputs where the cache allows, else on images."""
        if self.cache is not None and network.frozen is not None and resolved.cache_key:
            return CachedBottomInputs(network, resolved.cache_key, self.cache, source,
                                      self.batch_size, self.verbose)
        return FullNetworkInputs(network, source)

    def _batches(self, source, targets, seed):
        """Training batches and, with ``validation_fraction``, a stratified held-out set."""
        indices, validation = np.arange(len(targets.encoded)), None
        if self.validation_fraction:
            indices, held_out = train_test_split(
                indices, test_size=self.validation_fraction, stratify=targets.encoded,
                random_state=seed if seed is not None else 0)
            validation = TrainingBatches(source, held_out, targets.encoded, None,
                                         self.batch_size, seed, shuffle=False)
        train = TrainingBatches(source, indices, targets.encoded, targets.sample_weight,
                                self.batch_size, seed, shuffle=True)
        return train, validation

    def _phases(self, network):
        phases = [Phase("warmup", None, self.warmup_learning_rate, self.warmup_epochs)]
        if network.start is not None:
            phases.append(Phase("finetune", network.start, self.learning_rate, self.epochs))
        return phases

    def _check_fitted_state(self):
        super()._check_fitted_state()
        classes, network = self.classes_, self._network
        if not (isinstance(classes, np.ndarray) and classes.ndim == 1 and len(classes) >= 2
                and len(np.unique(classes)) == len(classes)):
            raise ValueError("classes_ is not a 1-D array of at least 2 distinct labels.")
        outputs = int(network.model.output.shape[-1])
        if outputs != (1 if len(classes) == 2 else len(classes)):
            raise ValueError(f"{len(classes)} classes_ but the network has {outputs} outputs.")
        if self.n_trainable_layers_ != network.n_layers_trained_from(network.start):
            raise ValueError(f"n_trainable_layers_={self.n_trainable_layers_!r} but the network "
                             f"trains {network.n_layers_trained_from(network.start)}.")
        if not (isinstance(self.history_, list) and all(
                isinstance(entry, dict) and all(
                    isinstance(k, str) and isinstance(v, (str, int, float))
                    for k, v in entry.items()) for entry in self.history_)):
            raise ValueError("history_ is not a list of records of numbers.")

    # ------------------------------------------------------------------ prediction
    @property
    def base_model_(self):
        """The trained (cut) base: the layers of ``model_`` that came from ``base``."""
        self.model_  # rebuilds after unpickling
        return self._network.base

    def predict_proba(self, X):
        """Class probabilities.

        Parameters
        ----------
        X : array-like or sequence of paths
            Images.

        Returns
        -------
        proba : ndarray of shape (n_images, n_classes)
            Columns in the order of ``classes_``; rows sum to 1.
        """
        source = self._fitted_source(X)
        model = self.model_
        predictor = self.__dict__.get("_predictor")
        if predictor is not None and predictor.cache == self.cache:
            scores = predictor.predict(source, self.batch_size)
        else:
            scores = predict_source(model, source, self.batch_size)
        scores = scores.astype(np.float64)
        if scores.shape[1] == 1:
            scores = np.hstack([1.0 - scores, scores])
        return scores / scores.sum(axis=1, keepdims=True)

    def predict(self, X):
        """Predicted class labels: the most probable class of :meth:`predict_proba`.

        Parameters
        ----------
        X : array-like or sequence of paths
            Images, in any form ``fit`` accepts.

        Returns
        -------
        y_pred : ndarray of shape (n_images,)
        """
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.random_state is None
        # A convnet trained for an epoch or two on tiny inputs is no strong classifier:
        # scikit-learn's checks then test what it does, not how well.
        tags.classifier_tags.poor_score = True
        return tags
