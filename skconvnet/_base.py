"""What both estimators share: parameters, their resolution in ``fit``, the network state.

* One parameter table (:data:`SHARED_CONSTRAINTS`) and one docstring entry per
  shared parameter (:data:`SHARED_PARAMETER_DOCS`); each estimator adds its own.
* ``fit`` resolves everything once into a :class:`Resolved` record (the base's
  registry record, the weights' identity, the input size, the seed, the
  background colour, the cache key); ``predict``/``transform`` only read it, so
  a fitted estimator never needs its weights source again.
* One network-state protocol, :meth:`ConvEstimator._get_network_state` /
  :meth:`ConvEstimator._set_network_state`: pickling and :mod:`skconvnet.saving`
  both use it. No live Keras object is ever pickled.
"""

from __future__ import annotations

import inspect
import numbers
import os
from dataclasses import dataclass, replace

import keras
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from ._runtime import PRECISIONS, seeded
from .caching import model_key
from ._validation import (
    PATH,
    InstanceOf,
    Interval,
    Options,
    RandomStateSeed,
    fail,
    resolve_seed,
    validate_parameter_constraints,
)
from .exceptions import InvalidParameterError
from .images import image_source
from .networks import resolve_base
from .registry import get_base_spec
from .weights import check_weights, weights_identity

__all__ = ["ConvEstimator", "Resolved", "SHARED_CONSTRAINTS", "document_parameters"]

BACKGROUNDS = {"white": (255, 255, 255), "black": (0, 0, 0)}


class _RGBColour:
    """An ``(r, g, b)`` tuple or list of ints in [0, 255]."""

    def is_satisfied_by(self, value):
        return (isinstance(value, (tuple, list)) and len(value) == 3
                and all(isinstance(v, numbers.Integral) and not isinstance(v, bool)
                        and 0 <= v <= 255 for v in value))

    def __str__(self):
        return "an (r, g, b) tuple of ints in [0, 255]"

    def invalid_values(self):
        return [(0, 0, 256), (0, 0)]


class _ImageShape:
    """``(height, width)`` or ``(height, width, channels)`` of positive ints, one may be -1."""

    def is_satisfied_by(self, value):
        return (isinstance(value, (tuple, list)) and len(value) in (2, 3)
                and all(isinstance(d, numbers.Integral) and not isinstance(d, bool)
                        and (d > 0 or d == -1) for d in value))

    def __str__(self):
        return ("a tuple (height, width) or (height, width, channels) of positive ints "
                "(one may be -1)")

    def invalid_values(self):
        return [(0, 4), (2, 2, 2, 2)]


#: The constraints of the parameters both estimators have.
SHARED_CONSTRAINTS = {
    "base": [InstanceOf(str, "a registered base name (see skconvnet.list_bases())"),
             InstanceOf(keras.Model, "a keras.Model")],
    "weights": [Options(None), InstanceOf(str, "a named weights source"), PATH],
    "layer": [Options(None), InstanceOf(str, "a layer name"),
              InstanceOf(numbers.Integral, "an int index")],
    "input_size": [Interval(numbers.Integral, 1, None), Options(None)],
    "batch_size": [Interval(numbers.Integral, 1, None)],
    "precision": [Options(*PRECISIONS)],
    "cache": [Options(None, "memory"), InstanceOf((str, os.PathLike), "a folder path")],
    "image_shape": [Options(None), _ImageShape()],
    "background": [Options(*BACKGROUNDS), _RGBColour()],
    "random_state": [RandomStateSeed()],
    "verbose": [Interval(numbers.Integral, 0, None)],
}

#: numpydoc entries of the shared parameters (the default is read from ``__init__``).
SHARED_PARAMETER_DOCS = {
    "base": ("str or keras.Model", """\
A registered base (see :func:`skconvnet.list_bases`) or a Keras model taking
float32 RGB images in ``[0, 255]`` (include your own preprocessing in it)."""),
    "weights": ("str, path or None", """\
``"imagenet"`` (Keras' download, needs internet on first use), a named offline
source the base offers (e.g. ``"hed-bsds500"`` for VGG16), a path to a weights
file (``.weights.h5``, ``.h5`` or ``.keras``) for the ``include_top=False`` base,
or ``None`` for random initialisation. Ignored for a ``keras.Model`` base. A
fitted estimator never reads it again: deleting the file after ``fit`` is fine."""),
    "layer": ("str, int or None", """\
Where to cut the base: ``None`` for its last convolutional output, a layer name
(``"block4_pool"``) or an index into ``base.layers`` (negative counts from the
end). Early cuts suit domains far from ImageNet."""),
    "input_size": ("int or None", """\
Side of the square images fed to the base; every image is resized to it.
``None`` uses the base's default size (224 for VGG16)."""),
    "batch_size": ("int", """\
Images per forward pass (and per training step). Every prediction pass has
this shape: fewer images (a short last batch, a single image) are padded with
blank ones, so the network is traced once and an image gets the same result
whichever batch it is in, on a GPU too. A smaller value lowers the latency of
predicting a few images."""),
    "precision": ('{"float32", "bfloat16"}', """\
``"bfloat16"`` runs the network under Keras' ``mixed_bfloat16`` policy (float32
weights, bfloat16 arithmetic): faster only on hardware with bfloat16 units
(recent GPUs, CPUs with AVX-512 BF16 or AMX; see ``benchmarks/README.md``).
Preprocessing and the outputs stay float32."""),
    "cache": ('None, "memory" or path', """\
Keep what frozen layers compute for each image (keyed by its content and by
the network resolved in ``fit``: base, weights content, cut, size, precision)
in this process (``"memory"``) or in a folder (shareable between processes), so
the same images are never computed twice. Used only when the weights can be
re-created (not ``weights=None`` without ``random_state``, not a ``keras.Model``
base)."""),
    "image_shape": ("tuple of int or None", """\
Shape of one image when ``X`` is a 2-D array of flattened images, e.g.
``(28, 28)`` or ``(32, 32, 3)``; one entry may be ``-1`` (numpy reshape rules).
``None`` reads rows of ``s * s * 3`` values as square RGB images and rows of
``s * s`` values as square grayscale images, and raises for any other row
length."""),
    "background": ('{"white", "black"} or tuple of 3 ints', """\
Colour that transparent pixels of image files are composited onto."""),
    "random_state": ("int, RandomState instance or None", """\
Seeds the random initial weights (``weights=None``) and, when training,
shuffling, dropout and augmentation: the same seed and data give the same
results on CPU."""),
    "verbose": ("int", "``1`` shows progress bars (and a header per training phase)."),
}


def document_parameters(cls):
    """Fill the ``{parameters}`` line of ``cls.__doc__`` from ``cls._parameter_docs``.

    Each entry is ``name : type, default=<the default in cls.__init__>`` and its
    description, so the defaults in the docs cannot drift from the code, and
    estimators that share parameters share their documentation.
    """
    defaults = {name: p.default for name, p in inspect.signature(cls.__init__).parameters.items()}
    entries = []
    for name, (kind, text) in cls._parameter_docs.items():
        entries.append(f"    {name} : {kind}, default={defaults[name]!r}")
        entries.extend(f"        {line}" for line in text.splitlines())
    cls.__doc__ = cls.__doc__.replace("    {parameters}", "\n".join(entries))
    return cls


@dataclass(frozen=True)
class Resolved:
    """What ``fit`` resolved from the parameters; what ``predict``/``transform`` read.

    Attributes
    ----------
    spec : BaseSpec or None
        The base's registry record (None for a ``keras.Model`` base).
    weights : str or None
        The initial weights to build with: a checked source in ``fit``; after
        unpickling or loading only what can be re-created (a named source).
    weights_identity : tuple or None
        What the weights are (see :func:`skconvnet.weights.weights_identity`).
    input_size : int
    seed : int or None
    background : tuple of 3 ints
    cache_key : str or None
        The identity of the cached network outputs; None: never cached.
    """

    spec: object
    weights: object
    weights_identity: tuple | None
    input_size: int
    seed: int | None
    background: tuple
    cache_key: str | None = None

    @property
    def recreatable(self):
        """Whether a rebuild gets the same initial weights without the original source."""
        return self.spec is None or (self.weights_identity is not None
                                     and self.weights_identity[0] in ("named", "random"))

    def as_record(self):
        """Plain values only (no base spec, no weights path): for pickles and model files."""
        return {"base": None if self.spec is None else self.spec.name,
                "weights_identity": self.weights_identity, "input_size": self.input_size,
                "seed": self.seed, "background": self.background, "cache_key": self.cache_key}

    @classmethod
    def from_record(cls, record):
        """The inverse of :meth:`as_record`; raises ValueError for values of the wrong kind."""
        if not isinstance(record, dict) or set(record) != {
                "base", "weights_identity", "input_size", "seed", "background", "cache_key"}:
            raise ValueError(f"a network record needs exactly the keys of as_record(); got "
                             f"{sorted(record) if isinstance(record, dict) else record!r}.")
        identity = record["weights_identity"]
        if identity is not None and not (
                isinstance(identity, tuple) and len(identity) == 2
                and identity[0] in ("named", "random", "file")):
            raise ValueError(f"weights_identity {identity!r} is not a known identity.")
        size, seed = record["input_size"], record["seed"]
        if not Interval(numbers.Integral, 1, 4096).is_satisfied_by(size):
            raise ValueError(f"input_size {size!r} is not an int in [1, 4096].")
        if seed is not None and not RandomStateSeed().is_satisfied_by(seed):
            raise ValueError(f"seed {seed!r} is not an int in [0, 2**32 - 1].")
        if not _RGBColour().is_satisfied_by(record["background"]):
            raise ValueError(f"background {record['background']!r} is not an RGB colour.")
        key = record["cache_key"]
        if key is not None and not isinstance(key, str):
            raise ValueError(f"cache_key {key!r} is not a str.")
        spec = None if record["base"] is None else get_base_spec(record["base"])
        named = identity[1] if identity is not None and identity[0] == "named" else None
        return cls(spec=spec, weights=named, weights_identity=identity, input_size=size,
                   seed=seed, background=tuple(record["background"]), cache_key=key)


class ConvEstimator(BaseEstimator):
    """The base of the package's estimators (not public): shared parameters and state.

    Subclasses define ``_parameter_constraints`` (the shared table plus their
    own), ``_fitted_attribute`` (an attribute ``fit`` always sets),
    ``_build_network(resolved)`` (called under the seed) and
    ``_network_model(network)`` (the Keras model of what it built).
    """

    _parameter_constraints = SHARED_CONSTRAINTS
    _parameter_docs = SHARED_PARAMETER_DOCS
    #: Public fitted attributes: those ``fit`` always sets, and all it may set.
    _required_fitted_names = frozenset({"input_size_"})
    _fitted_attribute_names = frozenset({"input_size_", "n_features_in_"})

    def _store_parameters(self, parameters):
        """``__init__``'s only work: keep each of its arguments under its own name.

        Called as ``self._store_parameters(locals())``; nothing is validated or
        converted (that is ``fit``'s job), as scikit-learn requires.
        """
        for name, value in parameters.items():
            if name not in ("self", "__class__"):
                setattr(self, name, value)

    # ------------------------------------------------------------ resolution
    def _validate_params(self):
        """Check every parameter against the table, in scikit-learn's voice."""
        validate_parameter_constraints(self._parameter_constraints, self.get_params(deep=False),
                                       type(self).__name__)

    def _resolve(self):
        """Validate the parameters and resolve what they mean, once, in ``fit``."""
        self._validate_params()
        caller = type(self).__name__
        spec = resolve_base(self.base)
        weights = None if spec is None else check_weights(caller, spec, self.weights)
        seed = resolve_seed(self.random_state)
        background = self.background
        background = BACKGROUNDS[background] if isinstance(background, str) else tuple(background)
        cache = self.cache
        if cache not in (None, "memory") and os.path.exists(cache) and not os.path.isdir(cache):
            raise InvalidParameterError(
                f"The 'cache' parameter of {caller} must be None, 'memory' or a folder path; "
                f"{os.fspath(cache)!r} is a file. Got {cache!r} instead.")
        return Resolved(spec=spec, weights=weights,
                        weights_identity=None if spec is None else weights_identity(weights, seed),
                        input_size=self._check_input_size(spec), seed=seed,
                        background=background)

    def _check_input_size(self, spec):
        """The input size: the parameter checked against the base, or the base's own."""
        caller, input_size = type(self).__name__, self.input_size
        if spec is None:
            fixed = tuple(self.base.input_shape[1:3])
            if input_size is None:
                if None in fixed or fixed[0] != fixed[1]:
                    fail(caller, "input_size", "set for a keras.Model base whose input shape "
                         f"{self.base.input_shape} has no fixed square size", input_size)
                return int(fixed[0])
            if None not in fixed and fixed != (input_size, input_size):
                raise InvalidParameterError(
                    f"The 'input_size' parameter of {caller} must match the input shape "
                    f"{self.base.input_shape} of the keras.Model base. Got {input_size!r} "
                    "instead.")
            return int(input_size)
        if input_size is None:
            return spec.default_size
        if input_size < spec.min_size:
            fail(caller, "input_size", f"an int >= {spec.min_size} for base {spec.name!r} (its "
                 "minimum input size)", input_size)
        return int(input_size)

    def _cache_key_of(self, resolved, *parts):
        """``resolved`` with the cache key of ``parts`` (None when not cacheable)."""
        if resolved.spec is None or resolved.weights_identity is None:
            return resolved
        return replace(resolved, cache_key=model_key(resolved.spec.name,
                                                     resolved.weights_identity, *parts))

    # ------------------------------------------------------------ inputs
    def _source(self, X, resolved, **kwargs):
        return image_source(X, resolved.input_size, image_shape=self.image_shape,
                            background=resolved.background, **kwargs)

    def _record_input_width(self, source):
        """``n_features_in_``: set for a 2-D ``X`` of flattened images, removed otherwise."""
        if source.flat_width is not None:
            self.n_features_in_ = source.flat_width
        elif hasattr(self, "n_features_in_"):
            del self.n_features_in_

    def _fitted_source(self, X, **kwargs):
        """``X`` as a source for a fitted estimator; a 2-D X must keep fit's row length."""
        check_is_fitted(self, self._fitted_attribute)
        source = self._source(X, self._resolved, **kwargs)
        expected = getattr(self, "n_features_in_", None)
        if expected is not None and source.flat_width not in (None, expected):
            raise ValueError(
                f"X has {source.flat_width} features, but {type(self).__name__} is "
                f"expecting {expected} features as input."
            )
        return source

    # ------------------------------------------------------------ network state
    @property
    def model_(self):
        """The fitted Keras network (rebuilt on first use after unpickling or loading)."""
        check_is_fitted(self, self._fitted_attribute)
        network = self.__dict__.get("_network")
        if network is None:
            # Once the estimator has its own network, that network is what predicts and
            # what is saved: the weights it was built from are not needed twice.
            saved = self.__dict__.pop("_network_weights", None)
            resolved = self._resolved
            if saved is not None:  # trained weights replace the initial ones: build none
                resolved = replace(resolved, weights=None)
            with seeded(resolved.seed):
                network = self._build_network(resolved)
            if saved is not None:
                self._network_model(network).set_weights(saved)
            self._network = network
        return self._network_model(network)

    def _check_fitted_state(self):
        """Raise ValueError where a public fitted attribute disagrees with the network.

        For state that came from outside (a model file): each attribute's type,
        range and consistency with the network and the resolved record.
        """
        size = self.input_size_
        if not (isinstance(size, int) and size == self._resolved.input_size):
            raise ValueError(f"input_size_={size!r} but the network takes "
                             f"{self._resolved.input_size}.")
        width = self.__dict__.get("n_features_in_")
        if width is not None and not Interval(numbers.Integral, 1, 2**31).is_satisfied_by(width):
            raise ValueError(f"n_features_in_={width!r} is not a positive int.")

    def _keeps_weights(self):
        """Whether the network state must hold the weights (they cannot be re-created)."""
        return not self._resolved.recreatable

    def _get_network_state(self):
        """The fitted network as plain data: the resolved record and, where needed, weights."""
        check_is_fitted(self, self._fitted_attribute)
        weights = None
        if self._keeps_weights():
            network = self.__dict__.get("_network")
            weights = (self._network_model(network).get_weights() if network is not None
                       else self.__dict__["_network_weights"])
        return {"resolved": self._resolved.as_record(), "weights": weights}

    def _set_network_state(self, state):
        """Restore what :meth:`_get_network_state` gave; the network is rebuilt lazily."""
        self._resolved = Resolved.from_record(state["resolved"])
        self.__dict__.pop("_network", None)
        if state.get("weights") is not None:
            self._network_weights = state["weights"]

    def __getstate__(self):
        state = dict(super().__getstate__())  # object's own is self.__dict__, not a copy
        fitted = "_resolved" in state
        for private in ("_network", "_network_key", "_network_weights", "_resolved",
                        "_weights_token"):
            state.pop(private, None)  # live Keras objects never travel
        if fitted:
            state["_network_state"] = self._get_network_state()
        return state

    def __setstate__(self, state):
        network_state = state.pop("_network_state", None)
        super().__setstate__(state)
        if network_state is not None:
            self._set_network_state(network_state)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = True
        tags.input_tags.three_d_array = True
        tags.input_tags.positive_only = True
        tags.input_tags.allow_nan = False
        return tags
