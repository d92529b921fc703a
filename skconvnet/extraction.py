"""ConvFeatureExtractor: a pretrained convolutional base as a scikit-learn transformer."""

from __future__ import annotations

import keras
import numpy as np
from sklearn.base import ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from ._base import SHARED_CONSTRAINTS, SHARED_PARAMETER_DOCS, ConvEstimator, document_parameters
from ._runtime import predict_source, seeded
from ._validation import Options
from .caching import cached_predict
from .networks import build_feature_network

__all__ = ["ConvFeatureExtractor"]


@document_parameters
class ConvFeatureExtractor(ClassNamePrefixFeaturesOutMixin, TransformerMixin, ConvEstimator):
    """Turn images into feature vectors with a pretrained convolutional base.

    The base (VGG16, ResNet, EfficientNet, ...) is cut at ``layer``, its feature
    maps are pooled into vectors, and each image is fed through it after the
    base's own preprocessing. Nothing is learned: ``fit`` only validates the
    parameters and builds the model, so the transformer fits in a
    :class:`~sklearn.pipeline.Pipeline` in front of any classifier.

    Parameters
    ----------
    {parameters}

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
    The Keras model is not pickled: ``joblib.dump`` stores the parameters, what
    ``fit`` resolved, and the weights only where they cannot be re-created
    (a weights file, random initialisation without an int seed). Loading a
    pickle runs code; share models with :func:`skconvnet.save` instead.

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

    _parameter_constraints = {
        **SHARED_CONSTRAINTS,
        "pooling": [Options("avg", "max", "flatten", None)],
        "on_error": [Options("raise", "skip")],
    }
    _parameter_docs = {
        **SHARED_PARAMETER_DOCS,
        "pooling": ('{"avg", "max", "flatten"} or None', """\
How feature maps become vectors: global average, global max, flattened
(``4 x 4 x 512 -> 8192``), or ``None`` to return the maps themselves."""),
        "on_error": ('{"raise", "skip"}', """\
What ``transform`` does with an unreadable image file: raise, or return a row
of NaN for it and list it in ``failed_files_``."""),
    }
    _fitted_attribute = "n_features_out_"
    _required_fitted_names = frozenset({"input_size_", "feature_shape_", "n_features_out_"})
    _fitted_attribute_names = _required_fitted_names | {"n_features_in_", "failed_files_"}

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
        self._store_parameters(locals())

    def fit(self, X, y=None):
        """Validate the parameters and build the network.

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
        resolved = self._resolve()
        source = self._source(X, resolved, on_error=self.on_error)
        resolved = self._cache_key_of(resolved, "features", self.layer, self.pooling,
                                      resolved.input_size, resolved.background, self.precision)
        # A refit with the same resolved network (weights compared by content) reuses it.
        network_key = (resolved, self.layer, self.pooling, self.precision,
                       id(self.base) if resolved.spec is None else None)
        network = self.__dict__.get("_network")
        if network is None or self.__dict__.get("_network_key") != network_key:
            with seeded(resolved.seed):
                network = self._build_network(resolved)
        # Fit into locals, then swap: a failure above leaves a fitted estimator as it was.
        self._network, self._network_key, self._resolved = network, network_key, resolved
        self.__dict__.pop("_network_weights", None)
        self.input_size_ = resolved.input_size
        self.feature_shape_ = tuple(int(d) for d in network.output.shape[1:])
        self.n_features_out_ = int(np.prod(self.feature_shape_))
        self._record_input_width(source)
        return self

    def _build_network(self, resolved):
        return build_feature_network(
            resolved.spec, self.base, weights=resolved.weights, size=resolved.input_size,
            seed=resolved.seed, layer=self.layer, pooling=self.pooling, precision=self.precision,
            caller=type(self).__name__)

    def _network_model(self, network):
        return network

    def _check_fitted_state(self):
        super()._check_fitted_state()
        shape = tuple(int(d) for d in self.model_.output.shape[1:])
        if self.feature_shape_ != shape or self.n_features_out_ != int(np.prod(shape)):
            raise ValueError(f"feature_shape_={self.feature_shape_!r} and n_features_out_="
                             f"{self.n_features_out_!r}, but the network outputs {shape}.")
        failed = self.__dict__.get("failed_files_", [])
        if not (isinstance(failed, list) and all(isinstance(f, str) for f in failed)):
            raise ValueError("failed_files_ is not a list of str.")

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
        source = self._fitted_source(X, on_error=self.on_error)
        model = self.model_
        failed = {}

        def record(start, failures):
            for position, error in failures.items():
                failed[start + position] = error

        key = self._resolved.cache_key
        if self.cache is not None and key is not None:
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

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float32"]
        tags.non_deterministic = self.weights is None and self.random_state is None
        return tags
