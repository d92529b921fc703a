"""Building Keras models from the registry: the base, cut and pooled.

Every model the estimators use has the same outline::

    image (size, size, 3) in [0, 255] -> ImagePreprocessing -> base (cut) -> pooling

The base stays a nested ``keras.Model``, so its layers keep their names
(``block5_conv1``), and trainability can be set layer by layer.
"""

from __future__ import annotations

import os
import urllib.error

import keras

from ._validation import InvalidParameterError
from .layers import ImagePreprocessing
from .registry import BaseSpec, get_base_spec

__all__ = ["WeightsUnavailableError", "resolve_base", "build_base", "cut_base", "pooling_layer"]

POOLING_OPTIONS = ("avg", "max", "flatten", None)
WEIGHT_SUFFIXES = (".weights.h5", ".h5", ".keras")


class WeightsUnavailableError(OSError):
    """Pretrained weights could not be obtained (no network, missing extra, bad file)."""


def resolve_base(base):
    """The registry record for ``base`` or ``None`` for a user's ``keras.Model``."""
    if isinstance(base, keras.Model):
        return None
    if isinstance(base, BaseSpec):
        return base
    return get_base_spec(base)


def is_weights_path(weights):
    """Whether ``weights`` names a weights file (by suffix) rather than a source."""
    return isinstance(weights, os.PathLike) or (
        isinstance(weights, str) and weights.lower().endswith(WEIGHT_SUFFIXES)
    )


def check_weights(estimator, spec, weights):
    """Validate ``weights`` against what the base offers; return it unchanged."""
    if weights is None:
        return None
    if is_weights_path(weights):
        path = os.fspath(weights)
        if not os.path.isfile(path):
            raise InvalidParameterError(
                f"The 'weights' parameter of {type(estimator).__name__} names a file that "
                f"does not exist: {path!r}."
            )
        return weights
    names = spec.weight_names if spec is not None else ()
    if isinstance(weights, str) and weights in names:
        return weights
    expected = ", ".join(repr(n) for n in names)
    raise InvalidParameterError(
        f"The 'weights' parameter of {type(estimator).__name__} must be "
        + (f"one of {expected}, " if names else "")
        + f"None or a path to a weights file ({', '.join(WEIGHT_SUFFIXES)}). "
        f"Got {weights!r} instead."
    )


def _looks_like_download_failure(exc):
    if isinstance(exc, (urllib.error.URLError, ConnectionError, TimeoutError)):
        return True
    text = str(exc)
    return "URL fetch failure" in text or "Name or service not known" in text


def build_base(spec, weights, input_size):
    """Build the ``include_top=False`` base of ``spec`` with the requested weights.

    Parameters
    ----------
    spec : BaseSpec
    weights : "imagenet", a name in ``spec.named_weights``, None or a path
    input_size : int

    Returns
    -------
    base : keras.Model
    """
    input_shape = (input_size, input_size, 3)
    load_from = None
    if isinstance(weights, str) and weights in spec.named_weights:
        load_from = spec.named_weights[weights]()
    elif weights is not None and weights != "imagenet":
        load_from = os.fspath(weights)

    if weights == "imagenet" and load_from is None:
        try:
            return spec.builder(include_top=False, weights="imagenet", input_shape=input_shape)
        except Exception as exc:  # Keras raises a bare Exception on a failed download
            if _looks_like_download_failure(exc):
                raise WeightsUnavailableError(
                    f"Could not download the ImageNet weights of base {spec.name!r}: no "
                    f"network? ({exc}). On a machine without internet, pass a local "
                    "weights file instead: weights='path/to/file.weights.h5' (or .h5, "
                    "or .keras)"
                    + (f", or one of the offline weights {list(spec.named_weights)}"
                       if spec.named_weights else "")
                    + "."
                ) from exc
            raise
    model = spec.builder(include_top=False, weights=None, input_shape=input_shape)
    if load_from is not None:
        load_weights_file(model, load_from, spec.name)
    return model


def load_weights_file(model, path, base_name):
    """Load a weights file into ``model`` with an error that names the file."""
    try:
        model.load_weights(path)
    except Exception as exc:  # Keras/h5py raise many types for a mismatched file
        raise WeightsUnavailableError(
            f"Could not load the weights file {os.fspath(path)!r} into base "
            f"{base_name!r}: {exc}. Expected a weights file saved from the same "
            "architecture with include_top=False."
        ) from exc


def layer_index(estimator, model, layer, *, param="layer"):
    """Index in ``model.layers`` of ``layer`` (name or int), validated."""
    names = [lyr.name for lyr in model.layers]
    n = len(names)
    if isinstance(layer, str):
        if layer not in names:
            close = [name for name in names if layer.lower() in name.lower()][:8]
            hint = f" Similar names: {close}." if close else ""
            raise InvalidParameterError(
                f"The {param!r} parameter of {type(estimator).__name__} must name a layer "
                f"of the base (see skconvnet.inspect_base). Got {layer!r} instead.{hint}"
            )
        return names.index(layer)
    if isinstance(layer, int) and not isinstance(layer, bool):
        index = layer if layer >= 0 else n + layer
        if 1 <= index < n:
            return index
        raise InvalidParameterError(
            f"The {param!r} parameter of {type(estimator).__name__} must be a layer index "
            f"in [1, {n - 1}] or [-{n - 1}, -1] for this base of {n} layers. "
            f"Got {layer!r} instead."
        )
    raise InvalidParameterError(
        f"The {param!r} parameter of {type(estimator).__name__} must be None, a layer "
        f"name or an int index. Got {layer!r} instead."
    )


def cut_base(estimator, base, layer):
    """The part of ``base`` from its input up to ``layer`` (None: all of it)."""
    if layer is None:
        return base
    index = layer_index(estimator, base, layer)
    if index == len(base.layers) - 1:
        return base
    output = base.layers[index].output
    return keras.Model(base.inputs, output, name=f"{base.name}_to_{base.layers[index].name}")


def pooling_layer(pooling, feature_ndim, name="pool"):
    """Keras layer reducing feature maps to vectors, or None when nothing to do."""
    if pooling is None or feature_ndim == 2:
        return None
    if pooling == "avg":
        return keras.layers.GlobalAveragePooling2D(name=name)
    if pooling == "max":
        return keras.layers.GlobalMaxPooling2D(name=name)
    return keras.layers.Flatten(name=name)


def feature_model(base, preprocessing, input_size, pooling, name="features"):
    """``image -> preprocessing -> base -> pooling`` as one functional model.

    Preprocessing runs in float32 whatever the dtype policy (mean subtraction
    in bfloat16 would lose the low bits of every pixel), and the features come
    out as float32.
    """
    inputs = keras.Input((input_size, input_size, 3), name="image")
    x = ImagePreprocessing(preprocessing, name="preprocessing", dtype="float32")(inputs)
    x = base(x)
    pool = pooling_layer(pooling, len(base.output.shape))
    if pool is not None:
        x = pool(x)
    if x.dtype != "float32":
        x = keras.layers.Activation("linear", dtype="float32", name="as_float32")(x)
    return keras.Model(inputs, x, name=name)


def split_base(base, start):
    """Split ``base`` into a frozen bottom (layers before ``start``) and a top.

    Parameters
    ----------
    base : keras.Model
    start : int or None
        Index in ``base.layers`` of the first layer of the top; ``None`` (or past
        the end) puts every layer in the bottom.

    Returns
    -------
    bottom : keras.Model or None
        ``base.input -> the tensors crossing the cut`` (one, or several where a
        skip connection crosses it); None when nothing is below the cut.
    top : keras.Model or None
        ``crossing tensors -> base.output``, sharing the layers (and weights) of
        ``base``; None when nothing is above the cut.
    """
    n_layers = len(base.layers)
    if start is None or start >= n_layers:
        return base, None
    if start <= 1:  # only the input layer below the cut
        return None, base
    produced = {}
    for layer in base.layers[:start]:
        for tensor in keras.tree.flatten(layer.output):
            produced[id(tensor)] = tensor
    crossing, seen = [], set()
    for layer in base.layers[start:]:
        for tensor in keras.tree.flatten(layer.input):
            if id(tensor) in produced and id(tensor) not in seen:
                seen.add(id(tensor))
                crossing.append(tensor)
    outputs = crossing[0] if len(crossing) == 1 else crossing
    bottom = keras.Model(base.inputs, outputs, name=f"{base.name}_frozen")
    top = keras.Model(outputs, base.output, name=f"{base.name}_top")
    return bottom, top
