"""ConvFeatureExtractor: a pretrained convolutional base as a scikit-learn transformer."""

from __future__ import annotations

import numbers

import keras
import numpy as np
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from ._runtime import PRECISIONS, precision_scope, predict_source, reinitialize, seeded
from ._validation import (
    InvalidParameterError,
    check_int,
    check_param,
    check_random_state_param,
)
from .caching import cached_predict, check_cache, model_key, weights_identity
from .images import check_flat_width, image_source
from .models import (
    POOLING_OPTIONS,
    build_base,
    check_weights,
    cut_base,
    feature_model,
    resolve_base,
)

__all__ = ["ConvFeatureExtractor"]

_BACKGROUNDS = {"white": (255, 255, 255), "black": (0, 0, 0)}


def check_background(estimator, background):
    """``"white"``, ``"black"`` or an RGB triple of ints in [0, 255] -> RGB tuple."""
    if isinstance(background, str) and background in _BACKGROUNDS:
        return _BACKGROUNDS[background]
    if (
        isinstance(background, (tuple, list))
        and len(background) == 3
        and all(isinstance(v, numbers.Integral) and 0 <= v <= 255 for v in background)
    ):
        return tuple(int(v) for v in background)
    raise InvalidParameterError(
        f"The 'background' parameter of {type(estimator).__name__} must be 'white', "
        f"'black' or an (r, g, b) tuple of ints in [0, 255]. Got {background!r} instead."
    )


def check_input_size(estimator, spec, base, input_size):
    """The input size to use: validated against the base's minimum, or its default."""
    if spec is None:
        fixed = tuple(base.input_shape[1:3])
        if input_size is None:
            if None in fixed or fixed[0] != fixed[1]:
                raise InvalidParameterError(
                    f"The 'input_size' parameter of {type(estimator).__name__} must be set "
                    f"for a keras.Model base whose input shape {base.input_shape} has no "
                    "fixed square size. Got None instead."
                )
            return int(fixed[0])
        size = check_int(estimator, "input_size", input_size, low=1)
        if None not in fixed and fixed != (size, size):
            raise InvalidParameterError(
                f"The 'input_size' parameter of {type(estimator).__name__} must match the "
                f"input shape {base.input_shape} of the keras.Model base. Got {input_size!r} "
                "instead."
            )
        return size
    if input_size is None:
        return spec.default_size
    size = check_int(estimator, "input_size", input_size, low=1)
    if size < spec.min_size:
        raise InvalidParameterError(
            f"The 'input_size' parameter of {type(estimator).__name__} must be an int >= "
            f"{spec.min_size} for base {spec.name!r} (its minimum input size). "
            f"Got {input_size!r} instead."
        )
    return size


def validate_image_params(estimator, *, need_weights=True):
    """Validate the parameters both estimators share; resolve base, weights, size, seed.

    ``need_weights=False`` (rebuilding a fitted model whose trained weights are
    at hand) skips checking that the initial weights can be had, and gives None.

    Returns
    -------
    spec : BaseSpec or None (a keras.Model base)
    weights, input_size, seed, background
    """
    name = type(estimator).__name__
    if not isinstance(estimator.base, (str, keras.Model)):
        raise InvalidParameterError(
            f"The 'base' parameter of {name} must be a registered base name (see "
            f"skconvnet.list_bases()) or a keras.Model. Got {estimator.base!r} instead."
        )
    spec = resolve_base(estimator.base)
    weights = None
    if spec is not None and need_weights:
        weights = check_weights(estimator, spec, estimator.weights)
    check_int(estimator, "batch_size", estimator.batch_size, low=1)
    check_param(estimator, "precision", estimator.precision, tuple(PRECISIONS))
    check_int(estimator, "verbose", estimator.verbose, low=0)
    seed = check_random_state_param(estimator, estimator.random_state)
    background = check_background(estimator, estimator.background)
    image_shape = estimator.image_shape
    if image_shape is not None and not (
        isinstance(image_shape, (tuple, list))
        and len(image_shape) in (2, 3)
        and all(isinstance(d, numbers.Integral) and (d > 0 or d == -1) for d in image_shape)
    ):
        raise InvalidParameterError(
            f"The 'image_shape' parameter of {name} must be None or a tuple (height, "
            "width) or (height, width, channels) of positive ints (one may be -1). "
            f"Got {image_shape!r} instead."
        )
    base_model = estimator.base if spec is None else None
    size = check_input_size(estimator, spec, base_model, estimator.input_size)
    if estimator.layer is not None and not isinstance(estimator.layer, (str, numbers.Integral)):
        raise InvalidParameterError(
            f"The 'layer' parameter of {name} must be None, a layer name or an int index. "
            f"Got {estimator.layer!r} instead."
        )
    return spec, weights, size, seed, background


class ConvFeatureExtractor(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Turn images into feature vectors with a pretrained convolutional base.

    The base (VGG16, ResNet, EfficientNet, ...) is cut at ``layer``, its feature
    maps are pooled into vectors, and each image is fed through it after the
    base's own preprocessing. Nothing is learned: ``fit`` only validates the
    parameters and builds the model, so the transformer fits in a
    :class:`~sklearn.pipeline.Pipeline` in front of any classifier.

    Parameters
    ----------
    base : str or keras.Model, default="vgg16"
        A registered base (see :func:`skconvnet.list_bases`) or a Keras model
        taking float32 RGB images in ``[0, 255]`` (include your own
        preprocessing in it).
    weights : str, path or None, default="imagenet"
        ``"imagenet"`` (Keras' download, needs internet on first use), a named
        offline source the base offers (e.g. ``"hed-bsds500"`` for VGG16), a path
        to a weights file (``.weights.h5``, ``.h5`` or ``.keras``) for the
        ``include_top=False`` base, or ``None`` for random initialisation.
        Ignored for a ``keras.Model`` base.
    layer : str, int or None, default=None
        Where to cut the base: ``None`` for its last convolutional output, a
        layer name (``"block4_pool"``) or an index into ``base.layers``
        (negative counts from the end). Early cuts suit domains far from
        ImageNet.
    pooling : {"avg", "max", "flatten"} or None, default="avg"
        How feature maps become vectors: global average, global max, flattened
        (``4 x 4 x 512 -> 8192``), or ``None`` to return the maps themselves.
    input_size : int or None, default=None
        Side of the square images fed to the base; every image is resized to
        it. ``None`` uses the base's default size (224 for VGG16).
    batch_size : int, default=32
        Images per forward pass.
    precision : {"float32", "bfloat16"}, default="float32"
        ``"bfloat16"`` runs the base under Keras' ``mixed_bfloat16`` policy
        (float32 weights, bfloat16 arithmetic): about twice as fast on CPUs
        with AVX-512 BF16/AMX and on recent GPUs, features within about 1% of
        float32 (see ``benchmarks/README.md``). Preprocessing and the returned
        features stay float32.
    cache : None, "memory" or path, default=None
        Keep the features of each image (keyed by its content, the base, its
        weights, the cut, pooling, size and precision) in this process
        (``"memory"``) or in a folder, so repeated ``transform`` calls on the
        same images, e.g. in a ``GridSearchCV`` over the downstream estimator,
        compute nothing. Used only when the weights can be re-created (not
        ``weights=None`` without ``random_state``, not a ``keras.Model`` base).
    image_shape : tuple of int or None, default=None
        Shape of one image when ``X`` is a 2-D array of flattened images, e.g.
        ``(28, 28)`` or ``(32, 32, 3)``; one entry may be ``-1`` (numpy reshape
        rules). ``None`` reads rows of ``s * s * 3`` values as square RGB images
        and rows of ``s * s`` values as square grayscale images, and raises for
        any other row length.
    background : {"white", "black"} or tuple of 3 ints, default="white"
        Colour that transparent pixels of image files are composited onto.
    on_error : {"raise", "skip"}, default="raise"
        What ``transform`` does with an unreadable image file: raise, or return
        a row of NaN for it and list it in ``failed_files_``.
    random_state : int, RandomState instance or None, default=None
        Seed of the random initialisation when ``weights=None``.
    verbose : int, default=0
        ``1`` shows a progress bar during ``transform``.

    Attributes
    ----------
    model_ : keras.Model
        The model used by ``transform``: preprocessing, the cut base, pooling.
    base_model_ : keras.Model
        The cut base inside ``model_``.
    input_size_ : int
        The side images are resized to.
    n_features_out_ : int
        Length of the feature vectors (product of the map shape when
        ``pooling`` is ``None`` or ``"flatten"``).
    feature_shape_ : tuple of int
        Shape of the output for one image.
    n_features_in_ : int
        Values per row, set only when fitted on a 2-D array of flattened images.
    failed_files_ : list of str
        Files the last ``transform`` could not read (``on_error="skip"``).

    See Also
    --------
    FineTunedConvClassifier : Train a new head on the base and fine-tune it.

    Notes
    -----
    The Keras model is not pickled: ``joblib.dump`` stores the parameters, and
    the weights only where they cannot be re-created from ``weights`` (random
    initialisation, a file path, a ``keras.Model`` base). Loading a pickle runs
    code; share models with :func:`skconvnet.save` instead.

    Images are resized to a square without keeping the aspect ratio, as Keras'
    ``flow_from_directory`` does.

    Examples
    --------
    >>> import numpy as np
    >>> from skconvnet import ConvFeatureExtractor
    >>> X = np.random.default_rng(0).integers(0, 256, size=(4, 32, 32, 3), dtype=np.uint8)
    >>> extractor = ConvFeatureExtractor("vgg16", weights=None, input_size=32,
    ...                                  random_state=0)
    >>> extractor.fit_transform(X).shape
    (4, 512)
    """

    def __init__(
        self,
        base="vgg16",
        *,
        weights="imagenet",
        layer=None,
        pooling="avg",
        input_size=None,
        batch_size=32,
        precision="float32",
        cache=None,
        image_shape=None,
        background="white",
        on_error="raise",
        random_state=None,
        verbose=0,
    ):
        self.base = base
        self.weights = weights
        self.layer = layer
        self.pooling = pooling
        self.input_size = input_size
        self.batch_size = batch_size
        self.precision = precision
        self.cache = cache
        self.image_shape = image_shape
        self.background = background
        self.on_error = on_error
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------
    def _validate_params(self, need_weights=True):
        spec, weights, size, seed, background = validate_image_params(
            self, need_weights=need_weights)
        check_param(self, "pooling", self.pooling, POOLING_OPTIONS)
        check_param(self, "on_error", self.on_error, ("raise", "skip"))
        check_cache(self, self.cache)
        return spec, weights, size, seed, background

    def _model_key(self, spec, size):
        base_key = spec.name if spec is not None else id(self.base)
        return (base_key, str(self.weights), self.layer, self.pooling, size, self.random_state,
                self.precision)

    def _cache_key(self, background):
        """Identity of the features, or None when they cannot be cached."""
        weights = weights_identity(self.weights, self.random_state)
        if not isinstance(self.base, str) or weights is None:
            return None
        return model_key("features", self.base, weights, self.random_state, self.layer,
                         self.pooling, self.input_size_, background, self.precision)

    def _build_model(self, spec, weights, size, seed):
        with seeded(seed), precision_scope(self.precision):
            if spec is None:
                base = self.base
                preprocessing = "none"
            else:
                base = build_base(spec, weights, size)
                preprocessing = spec.preprocessing
                if weights is None and seed is not None:
                    reinitialize(base.layers, seed)
            base = cut_base(self, base, self.layer)
            return feature_model(base, preprocessing, size, self.pooling)

    def fit(self, X, y=None):
        """Validate the parameters and build the model.

        Parameters
        ----------
        X : array-like or sequence of paths
            Images: an array ``(n, h, w[, c])`` of uint8 or float pixels in
            ``[0, 255]``, a 2-D array of flattened images (see ``image_shape``),
            or a list / array / Series of image file paths. Only its form is
            checked; nothing is learned from it.
        y : None
            Ignored.

        Returns
        -------
        self : ConvFeatureExtractor
            The fitted transformer.
        """
        spec, weights, size, seed, background = self._validate_params()
        source = image_source(X, size, image_shape=self.image_shape, background=background,
                              on_error=self.on_error)
        key = self._model_key(spec, size)
        model = getattr(self, "_model", None)
        if model is None or getattr(self, "_key", None) != key:
            model = self._build_model(spec, weights, size, seed)
        # Fit into locals, then swap: a failure above leaves a fitted estimator as it was.
        self._model, self._key = model, key
        self.input_size_ = size
        self.feature_shape_ = tuple(int(d) for d in model.output.shape[1:])
        self.n_features_out_ = int(np.prod(self.feature_shape_))
        if source.flat_width is not None:
            self.n_features_in_ = source.flat_width
        elif hasattr(self, "n_features_in_"):
            del self.n_features_in_
        return self

    @property
    def model_(self):
        """The Keras model, rebuilt on first use after unpickling."""
        check_is_fitted(self, "n_features_out_")
        if getattr(self, "_model", None) is None:
            saved = self.__dict__.get("_saved_weights")
            # Saved weights replace the initial ones: do not fetch or convert those.
            spec, weights, size, seed, _ = self._validate_params(need_weights=saved is None)
            model = self._build_model(spec, weights, size, seed)
            self.__dict__.pop("_saved_weights", None)
            if saved is not None:
                model.set_weights(saved)
            self._model, self._key = model, self._model_key(spec, size)
        return self._model

    @property
    def base_model_(self):
        """The (cut) base inside ``model_``: images after preprocessing -> feature maps."""
        return next(layer for layer in self.model_.layers if isinstance(layer, keras.Model))

    def transform(self, X):
        """Extract features.

        Parameters
        ----------
        X : array-like or sequence of paths
            Images, in any of the forms ``fit`` accepts.

        Returns
        -------
        features : ndarray of float32 of shape (n_images, n_features_out_)
            Or ``(n_images,) + feature_shape_`` when ``pooling=None``. Rows of
            unreadable files are NaN with ``on_error="skip"``.
        """
        check_is_fitted(self, "n_features_out_")
        model = self.model_
        background = check_background(self, self.background)
        source = image_source(X, self.input_size_, image_shape=self.image_shape,
                              background=background, on_error=self.on_error)
        check_flat_width(self, source)
        failed = {}

        def record(start, failures):
            for position, error in failures.items():
                failed[start + position] = error

        key = self._cache_key(background) if self.cache is not None else None
        if key is not None:
            features = cached_predict(model, key, source, self.batch_size, self.cache,
                                      verbose=self.verbose, on_failures=record)[0]
        else:
            features = predict_source(model, source, self.batch_size, verbose=self.verbose,
                                      on_failures=record)
        if self.on_error == "skip":
            for index in failed:
                features[index] = np.nan
            self.failed_files_ = [source.describe(i) for i in sorted(failed)]
        if self.pooling is None:
            return features
        return features.reshape(len(features), -1)

    # ------------------------------------------------------------------
    @property
    def _n_features_out(self):
        return self.n_features_out_

    def get_feature_names_out(self, input_features=None):
        """Output feature names: ``convfeatureextractor0``, ``convfeatureextractor1``, ...

        Parameters
        ----------
        input_features : None
            Ignored: image inputs have no feature names.

        Returns
        -------
        feature_names_out : ndarray of str
        """
        check_is_fitted(self, "n_features_out_")
        if self.pooling is None:
            raise ValueError(
                "get_feature_names_out is not available with pooling=None: the output "
                "is feature maps, not a table of features."
            )
        return super().get_feature_names_out(input_features)

    def __getstate__(self):
        state = self.__dict__.copy()
        model = state.pop("_model", None)
        state.pop("_key", None)
        if model is not None and not self._weights_recreatable():
            state["_saved_weights"] = model.get_weights()
        return state

    def _weights_recreatable(self):
        # Named weights (downloaded or converted) come back from their source;
        # random init comes back from its seed. Files may move, so keep those.
        if isinstance(self.base, keras.Model):
            return True  # the base itself is pickled as a parameter, weights included
        if self.weights is None:
            return self.random_state is not None and not isinstance(
                self.random_state, np.random.RandomState
            )
        return isinstance(self.weights, str) and not self.weights.endswith(
            (".h5", ".keras")
        )

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = True
        tags.input_tags.three_d_array = True
        tags.input_tags.positive_only = True
        tags.input_tags.allow_nan = False
        tags.transformer_tags.preserves_dtype = ["float32"]
        tags.non_deterministic = self.weights is None and self.random_state is None
        return tags
