"""FineTunedConvClassifier: two-phase fine-tuning of a pretrained base as a classifier."""

from __future__ import annotations

import contextlib
import math
import numbers
import warnings

import keras
import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import DataConversionWarning
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import check_is_fitted

from ._runtime import call_on_arrays, precision_scope, predict_source, reinitialize, seeded
from ._validation import InvalidParameterError, check_float, check_int, check_param
from .augmentation import augmentation_layers, check_augment
from .extraction import validate_image_params
from .images import check_flat_width, image_source
from .layers import ImagePreprocessing
from .caching import cached_predict, check_cache, model_key, weights_identity
from .models import (
    POOLING_OPTIONS,
    build_base,
    cut_base,
    layer_index,
    pooling_layer,
    split_base,
)

__all__ = ["FineTunedConvClassifier"]


class _Arrays:
    """Precomputed inputs (cached frozen-layer outputs) as a source of batches."""

    flat_width = None

    def __init__(self, arrays):
        self.arrays = arrays

    def __len__(self):
        return len(self.arrays[0])

    def load(self, indices):
        chosen = [array[indices] for array in self.arrays]
        return (chosen[0] if len(chosen) == 1 else tuple(chosen)), {}


class _Batches(keras.utils.PyDataset):
    """Training batches drawn from an image source, reshuffled every epoch.

    ``source`` may be swapped between phases (images, cached frozen outputs, the
    base's outputs) while the order keeps drawing from the same generator, so
    the cached and the uncached fit see the same batches.
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


def _model_on(arrays, apply, name):
    """A model taking batches of ``arrays`` (an :class:`_Arrays`) through ``apply``."""
    shapes = [array.shape[1:] for array in arrays.arrays]
    inputs = [keras.Input(shape) for shape in shapes]
    inputs = inputs[0] if len(inputs) == 1 else inputs
    return keras.Model(inputs, apply(inputs), name=name)


def _apply(layers):
    def apply(x):
        for layer in layers:
            x = layer(x)
        return x
    return apply


def _is_batchnorm(layer):
    return isinstance(layer, keras.layers.BatchNormalization)


def weighted_layers(base):
    """Indices of the base's layers with weights, BatchNormalization excluded."""
    return [i for i, layer in enumerate(base.layers) if layer.weights and not _is_batchnorm(layer)]


def set_trainable_from(base, start):
    """Freeze the base below layer index ``start`` (None: all of it); BN always frozen.

    Setting ``trainable=False`` on each BatchNormalization layer keeps it in
    inference mode during training (Keras 3: ``training=False`` alone is not
    enough, keras-team/keras#20285); the caller recompiles afterwards.
    """
    base.trainable = start is not None
    for i, layer in enumerate(base.layers):
        layer.trainable = start is not None and i >= start and not _is_batchnorm(layer)


class FineTunedConvClassifier(ClassifierMixin, BaseEstimator):
    """Fine-tune a pretrained convolutional base as a scikit-learn classifier.

    A new head (pooling, ``Dense(head_units, relu)``, ``Dropout``, output layer)
    is put on the base. Phase 1 (warm-up) trains the head with the base
    frozen; phase 2 unfreezes the top of the base and trains it with the head
    at a low learning rate. BatchNormalization layers of the base stay frozen,
    in inference mode, throughout.

    Parameters
    ----------
    base : str or keras.Model, default="vgg16"
        A registered base (see :func:`skconvnet.list_bases`) or a Keras model
        taking RGB images in ``[0, 255]``; a model is copied, never trained in place.
    weights : str, path or None, default="imagenet"
        Initial weights of the base, as for :class:`ConvFeatureExtractor`.
    layer : str, int or None, default=None
        Where to cut the base (None: its last convolutional output).
    input_size : int or None, default=150
        Side of the square images fed to the base (None: the base's default).
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
    batch_size : int, default=32
        Images per training step and per forward pass.
    precision : {"float32", "bfloat16"}, default="float32"
        ``"bfloat16"`` trains and predicts under Keras' ``mixed_bfloat16``
        policy: float32 weights, bfloat16 arithmetic, float32 output layer.
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
    cache : None, "memory" or path, default=None
        With ``augment=None``, compute the outputs of the layers phase 2 keeps
        frozen once per image and train the rest on them: folds and grid points
        over the same images share them, and the warm-up trains the head alone
        on the base's outputs. ``predict`` goes the same way until the
        classifier is pickled or ``cache`` changes: scoring a fold reuses what
        other folds computed. ``"memory"`` keeps them in this process, a folder
        on disk (shareable between processes). Needs weights that can be
        re-created (not ``weights=None`` without ``random_state``).
    image_shape : tuple or None, default=None
        Shape of one image when ``X`` is 2-D (see :class:`ConvFeatureExtractor`).
    background : {"white", "black"} or tuple, default="white"
        Colour behind transparent pixels of image files.
    random_state : int, RandomState instance or None, default=None
        Seeds the head's initialisation, shuffling, dropout and augmentation:
        the same seed and data give the same predictions on CPU.
    verbose : int, default=0
        ``1`` shows Keras' progress bar for each epoch.

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
        self.base = base
        self.weights = weights
        self.layer = layer
        self.input_size = input_size
        self.pooling = pooling
        self.head_units = head_units
        self.dropout = dropout
        self.augment = augment
        self.warmup_epochs = warmup_epochs
        self.epochs = epochs
        self.unfreeze = unfreeze
        self.learning_rate = learning_rate
        self.warmup_learning_rate = warmup_learning_rate
        self.batch_size = batch_size
        self.precision = precision
        self.distribution = distribution
        self.class_weight = class_weight
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.cache = cache
        self.image_shape = image_shape
        self.background = background
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------
    def _validate_params(self, need_weights=True):
        resolved = validate_image_params(self, need_weights=need_weights)
        check_param(self, "pooling", self.pooling, [p for p in POOLING_OPTIONS if p])
        check_int(self, "head_units", self.head_units, low=0)
        check_float(self, "dropout", self.dropout, low=0.0, high=1.0, high_open=True)
        settings = check_augment(self, self.augment)
        check_int(self, "warmup_epochs", self.warmup_epochs, low=0)
        check_int(self, "epochs", self.epochs, low=0)
        check_float(self, "learning_rate", self.learning_rate, low=0.0, low_open=True)
        check_float(self, "warmup_learning_rate", self.warmup_learning_rate, low=0.0,
                    low_open=True)
        if not isinstance(self.class_weight, dict):
            check_param(self, "class_weight", self.class_weight, (None, "balanced", "a dict"))
        check_float(self, "validation_fraction", self.validation_fraction, low=0.0, high=1.0,
                    low_open=True, high_open=True, allow_none=True)
        check_int(self, "n_iter_no_change", self.n_iter_no_change, low=1, allow_none=True)
        check_cache(self, self.cache)
        if not (self.distribution in (None, "mirrored")
                or callable(getattr(self.distribution, "scope", None))):
            raise InvalidParameterError(
                f"The 'distribution' parameter of {type(self).__name__} must be None, "
                "'mirrored' or a tf.distribute.Strategy / keras.distribution.Distribution "
                f"(an object with a scope() method). Got {self.distribution!r} instead."
            )
        unfreeze = self.unfreeze
        if not (
            (isinstance(unfreeze, numbers.Integral) and not isinstance(unfreeze, bool)
             and unfreeze >= 0)
            or isinstance(unfreeze, str)
        ):
            raise InvalidParameterError(
                f"The 'unfreeze' parameter of {type(self).__name__} must be an int >= 0, "
                f"a layer name of the base or 'all'. Got {unfreeze!r} instead."
            )
        if self.warmup_epochs == 0 and (self.epochs == 0 or unfreeze == 0):
            raise InvalidParameterError(
                f"{type(self).__name__} would train nothing: warmup_epochs=0 and "
                f"{'epochs=0' if self.epochs == 0 else 'unfreeze=0'}. Set warmup_epochs >= 1, "
                "or unfreeze and epochs >= 1."
            )
        return resolved, settings

    def _unfreeze_start(self, base):
        """Index of the first base layer trained in phase 2, or None for none."""
        if self.unfreeze == 0:
            return None
        if self.unfreeze == "all":
            return 0
        if isinstance(self.unfreeze, str):
            return layer_index(self, base, self.unfreeze, param="unfreeze")
        weighted = weighted_layers(base)
        if self.unfreeze > len(weighted):
            raise InvalidParameterError(
                f"The 'unfreeze' parameter of {type(self).__name__} must be at most "
                f"{len(weighted)}, the number of layers with weights in this base "
                f"(BatchNormalization not counted), or 'all'. Got {self.unfreeze!r} instead."
            )
        return weighted[-self.unfreeze]

    def _build(self, spec, weights, size, seed, n_outputs, settings):
        """:meth:`_build_layers` under the dtype policy of ``precision``."""
        with precision_scope(self.precision):
            return self._build_layers(spec, weights, size, seed, n_outputs, settings)

    def _build_layers(self, spec, weights, size, seed, n_outputs, settings):
        """The network, its base and the frozen/trainable split of the base.

        Returns
        -------
        model : keras.Model
            ``image -> [augmentation] -> preprocessing -> bottom -> top -> head``;
            the bottom (the layers phase 2 keeps frozen) runs in inference mode.
        parts : dict
            ``base``, ``start`` (first layer trained in phase 2, or None),
            ``frozen`` (``image -> bottom outputs``, without augmentation; None when
            nothing is frozen), ``top`` (``bottom outputs -> base output``, or None),
            ``head_layers`` and ``head`` (a function applying top and head).
        """
        if spec is None:
            base = keras.models.clone_model(self.base)
            base.set_weights(self.base.get_weights())
            preprocessing = "none"
        else:
            base = build_base(spec, weights, size)
            preprocessing = spec.preprocessing
        base = cut_base(self, base, self.layer)
        start = self._unfreeze_start(base)
        bottom, top = split_base(base, start)

        head_layers = []
        pool = pooling_layer(self.pooling, len(base.output.shape))
        if pool is not None:
            head_layers.append(pool)
        if self.head_units:
            head_layers.append(
                keras.layers.Dense(self.head_units, activation="relu", name="head_dense"))
        if self.dropout:
            head_layers.append(keras.layers.Dropout(self.dropout, seed=seed, name="head_dropout"))
        activation = "sigmoid" if n_outputs == 1 else "softmax"
        # float32 probabilities whatever the policy (Keras' mixed-precision advice).
        head_layers.append(keras.layers.Dense(n_outputs, activation=activation, dtype="float32",
                                              name="predictions"))

        def head(x):
            return _apply(head_layers)(x if top is None else top(x))

        inputs = keras.Input((size, size, 3), name="image")
        x = inputs
        augmentation = augmentation_layers(settings, seed)
        if augmentation is not None:
            x = augmentation(x)
        x = ImagePreprocessing(preprocessing, name="preprocessing", dtype="float32")(x)
        frozen = None
        if bottom is not None:
            bottom.trainable = False
            x = bottom(x, training=False)
            if augmentation is None:
                frozen = keras.Model(inputs, x, name="frozen")
        model = keras.Model(inputs, head(x), name="finetuned")
        if seed is not None:
            reinitialize(head_layers, seed)
            if spec is not None and weights is None:
                reinitialize(base.layers, seed)
        return model, {"base": base, "start": start, "frozen": frozen, "top": top,
                       "head_layers": head_layers, "head": head}

    def _distribution_scope(self):
        """The scope models are built, compiled and trained in (none without distribution)."""
        distribution = self.distribution
        if distribution is None:
            return contextlib.nullcontext()
        if distribution == "mirrored":
            if keras.backend.backend() == "tensorflow":
                import tensorflow as tf

                distribution = tf.distribute.MirroredStrategy()
            else:
                distribution = keras.distribution.DataParallel()
        return distribution.scope()

    def _cache_key(self, spec, size, background, start):
        """Identity of the frozen bottom, or None when its outputs cannot be cached."""
        weights = weights_identity(self.weights, self.random_state)
        if spec is None or weights is None:
            return None
        return model_key("finetune-bottom", spec.name, weights, self.random_state, self.layer,
                         size, background, start, self.precision)

    # ------------------------------------------------------------------
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
        (spec, weights, size, seed, background), settings = self._validate_params()
        cache = check_cache(self, self.cache)
        source = image_source(X, size, image_shape=self.image_shape, background=background)
        y = self._check_targets(y, len(source))
        encoder = LabelEncoder().fit(y)
        targets = encoder.transform(y)
        n_classes = len(encoder.classes_)
        sample_weight = None
        if self.class_weight is not None:
            class_weight = self.class_weight
            if isinstance(class_weight, dict):
                class_weight = {encoder.transform([label])[0]: weight
                                for label, weight in class_weight.items()
                                if label in encoder.classes_}
            per_class = compute_class_weight(class_weight, classes=np.arange(n_classes),
                                             y=targets)
            sample_weight = per_class[targets].astype(np.float32)
        n_outputs = 1 if n_classes == 2 else n_classes
        loss = "binary_crossentropy" if n_outputs == 1 else "sparse_categorical_crossentropy"

        with seeded(seed), self._distribution_scope():
            model, parts = self._build(spec, weights, size, seed, n_outputs, settings)
            base, start, frozen = parts["base"], parts["start"], parts["frozen"]
            key = self._cache_key(spec, size, background, start)
            route = None
            if cache is not None and frozen is not None and key:
                # Train on the frozen bottom's outputs, computed once per image; predict
                # goes the same way, so scoring a fold reuses them too.
                bottom_outputs = _Arrays(cached_predict(frozen, key, source, self.batch_size,
                                                        cache, verbose=self.verbose))
                top_model = _model_on(bottom_outputs, parts["head"], "finetuned_top")
                route = (frozen, key, cache, top_model)
            indices = np.arange(len(targets))
            validation = None
            if self.validation_fraction:
                indices, held_out = train_test_split(
                    indices, test_size=self.validation_fraction, stratify=targets,
                    random_state=seed if seed is not None else 0)
                validation = _Batches(source, held_out, targets.astype(np.float32), None,
                                      self.batch_size, seed, shuffle=False)
            train = _Batches(source, indices, targets.astype(np.float32), sample_weight,
                             self.batch_size, seed, shuffle=True)
            phases = [("warmup", None, self.warmup_learning_rate, self.warmup_epochs)]
            if start is not None:
                phases.append(("finetune", start, self.learning_rate, self.epochs))
            history = []
            for phase, phase_start, rate, n_epochs in phases:
                if n_epochs == 0:
                    continue
                set_trainable_from(base, phase_start)
                if route is None:
                    trained, data = model, source
                elif phase_start is None and parts["top"] is not None:
                    # Warm-up keeps the whole base frozen, so the head's inputs are fixed
                    # too: run the top once and train the head alone on its outputs.
                    data = _Arrays([call_on_arrays(parts["top"], bottom_outputs.arrays,
                                                   self.batch_size)])
                    trained = _model_on(data, _apply(parts["head_layers"]), "head")
                else:
                    trained, data = top_model, bottom_outputs
                train.source = data
                if validation is not None:
                    validation.source = data
                if self.verbose:
                    what = "head" if phase_start is None else "head and the top {} layers".format(
                        sum(1 for i in weighted_layers(base) if i >= phase_start))
                    print(f"{phase}: {n_epochs} epoch{'s' * (n_epochs > 1)} training the {what} "
                          f"at learning rate {rate:g}", flush=True)
                trained.compile(optimizer=keras.optimizers.RMSprop(rate), loss=loss,
                                metrics=["accuracy"])
                callbacks = []
                if validation is not None and self.n_iter_no_change:
                    callbacks.append(keras.callbacks.EarlyStopping(
                        monitor="val_loss", patience=self.n_iter_no_change,
                        restore_best_weights=True))
                # _Batches reshuffles with its own generator; Keras' shuffle of the batch
                # order would draw from Python's global `random`, which other threads (a
                # Dask worker's event loop) also draw from: not reproducible there.
                record = trained.fit(train, validation_data=validation, epochs=n_epochs,
                                     callbacks=callbacks, verbose=self.verbose, shuffle=False)
                for i in range(len(record.history.get("loss", []))):
                    entry = {"phase": phase, "epoch": len(history)}
                    entry.update({k: float(v[i]) for k, v in record.history.items()})
                    history.append(entry)
        # Fit into locals, swap at the end: an exception or KeyboardInterrupt above
        # leaves a previously fitted classifier exactly as it was.
        self._model, self._base, self._cached_route = model, base, route
        self.classes_ = encoder.classes_
        self.history_ = history
        self.input_size_ = size
        self.n_trainable_layers_ = 0 if start is None else sum(
            1 for i in weighted_layers(base) if i >= start)
        if source.flat_width is not None:
            self.n_features_in_ = source.flat_width
        elif hasattr(self, "n_features_in_"):
            del self.n_features_in_
        return self

    def _check_targets(self, y, n_images):
        if y is None:
            raise ValueError(
                f"{type(self).__name__} requires y to be passed, but the target y is None."
            )
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            warnings.warn(
                "A column-vector y was passed when a 1d array was expected. Please change "
                "the shape of y to (n_samples,), for example using ravel().",
                DataConversionWarning, stacklevel=3,
            )
            y = y.ravel()
        if y.ndim != 1:
            raise ValueError(f"y must be 1-D (one label per image); got shape {y.shape}.")
        if len(y) != n_images:
            raise ValueError(
                f"X and y have inconsistent numbers of samples: {n_images} images but "
                f"{len(y)} labels."
            )
        if y.dtype.kind == "f" and np.isnan(y).any():
            raise ValueError(
                f"y contains NaN labels (at index {int(np.flatnonzero(np.isnan(y))[0])}); "
                "every image needs a label."
            )
        if y.dtype.kind == "O" and any(v is None or (isinstance(v, float) and math.isnan(v))
                                       for v in y):
            raise ValueError("y contains missing (None/NaN) labels; every image needs a label.")
        target_type = type_of_target(y)
        if target_type not in ("binary", "multiclass"):
            raise ValueError(
                f"Unknown label type: {target_type!r}. {type(self).__name__} needs class "
                "labels (ints, strings or bools), not continuous values."
            )
        if len(np.unique(y)) < 2:
            raise ValueError(
                f"{type(self).__name__} needs samples of at least 2 classes in the data, "
                f"but the data contains only one class: {np.unique(y)[0].tolist()!r}."
            )
        return y

    # ------------------------------------------------------------------
    @property
    def model_(self):
        """The trained Keras model, rebuilt from its saved weights after unpickling."""
        check_is_fitted(self, "classes_")
        if getattr(self, "_model", None) is None:
            (spec, _, size, seed, _), settings = self._validate_params(need_weights=False)
            n_outputs = 1 if len(self.classes_) == 2 else len(self.classes_)
            with seeded(seed):
                model, parts = self._build(spec, None, size, seed, n_outputs, settings)
            model.set_weights(self.__dict__.pop("_model_weights"))
            self._model, self._base = model, parts["base"]
        return self._model

    @property
    def base_model_(self):
        """The trained (cut) base: the layers of ``model_`` that came from ``base``."""
        self.model_  # rebuilds after unpickling
        return self._base

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
        check_is_fitted(self, "classes_")
        model = self.model_
        source = image_source(X, self.input_size_, image_shape=self.image_shape,
                              background=validate_image_params(self)[4])
        check_flat_width(self, source)
        route = getattr(self, "_cached_route", None)
        if route is not None and route[2] == self.cache:
            # The frozen bottom's outputs of images seen before (e.g. in another fold) come
            # from the cache; only the trained top and head run.
            frozen, key, cache, top_model = route
            arrays = cached_predict(frozen, key, source, self.batch_size, cache)
            scores = call_on_arrays(top_model, arrays, self.batch_size)
        else:
            scores = predict_source(model, source, self.batch_size)
        scores = scores.astype(np.float64)
        if scores.shape[1] == 1:
            scores = np.hstack([1.0 - scores, scores])
        return scores / scores.sum(axis=1, keepdims=True)

    def predict(self, X):
        """Predicted class labels.

        Parameters
        ----------
        X : array-like or sequence of paths
            Images.

        Returns
        -------
        y_pred : ndarray of shape (n_images,)
            Labels from ``classes_``.
        """
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]

    def __getstate__(self):
        state = self.__dict__.copy()
        model = state.pop("_model", None)
        state.pop("_base", None)
        state.pop("_cached_route", None)
        if model is not None:
            state["_model_weights"] = model.get_weights()
        return state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = True
        tags.input_tags.three_d_array = True
        tags.input_tags.positive_only = True
        tags.input_tags.allow_nan = False
        tags.non_deterministic = self.random_state is None
        return tags
