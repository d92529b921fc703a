"""Building the networks the estimators run: the base, cut, split, pooled, with a head.

Every network has the same outline::

    image (size, size, 3) in [0, 255] -> [augmentation] -> ImagePreprocessing
        -> base (cut; a frozen bottom and a trainable top) -> pooling -> [head]

The base stays a nested ``keras.Model``, so its layers keep their names
(``block5_conv1``), and trainability can be set layer by layer. Nothing here
reads an estimator: the estimators resolve their parameters and pass values.
"""

from __future__ import annotations

import os
import urllib.error
from dataclasses import dataclass, field

import keras

from ._runtime import precision_scope, reinitialize
from .augmentation import augmentation_layers
from .exceptions import InvalidParameterError, WeightsUnavailableError
from .layers import ImagePreprocessing
from .registry import BaseSpec, block_starts, get_base_spec
from .weights import load_weights_file

__all__ = [
    "FineTunedNetwork",
    "block_rate_scales",
    "build_base",
    "build_feature_network",
    "build_finetuned_network",
    "cut_base",
    "draw_initial_weights",
    "layer_index",
    "pooling_layer",
    "resolve_base",
    "set_trainable_from",
    "split_base",
    "unfreeze_start",
    "weighted_layers",
]


def resolve_base(base):
    """The registry record for ``base`` or ``None`` for a user's ``keras.Model``."""
    if isinstance(base, keras.Model):
        return None
    if isinstance(base, BaseSpec):
        return base
    return get_base_spec(base)


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


def layer_index(caller, model, layer, *, param="layer"):
    """Index in ``model.layers`` of ``layer`` (a name or an int), validated.

    ``caller`` (a class or function name) is named in messages.
    """
    names = [lyr.name for lyr in model.layers]
    n = len(names)
    if isinstance(layer, str):
        if layer not in names:
            close = [name for name in names if layer.lower() in name.lower()][:8]
            hint = f" Similar names: {close}." if close else ""
            raise InvalidParameterError(
                f"The {param!r} parameter of {caller} must name a layer of the base (see "
                f"skconvnet.inspect_base). Got {layer!r} instead.{hint}"
            )
        return names.index(layer)
    if isinstance(layer, int) and not isinstance(layer, bool):
        index = layer if layer >= 0 else n + layer
        if 1 <= index < n:
            return index
        raise InvalidParameterError(
            f"The {param!r} parameter of {caller} must be a layer index in [1, {n - 1}] or "
            f"[-{n - 1}, -1] for this base of {n} layers. Got {layer!r} instead."
        )
    raise InvalidParameterError(
        f"The {param!r} parameter of {caller} must be None, a layer name or an int index. "
        f"Got {layer!r} instead."
    )


def cut_base(caller, base, layer):
    """The part of ``base`` from its input up to ``layer`` (None: all of it)."""
    if layer is None:
        return base
    index = layer_index(caller, base, layer)
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


def _initial_base(spec, base_model, weights, size, seed, layer, caller, *, copy):
    """The cut base with its initial weights: built from ``spec``, or the user's model.

    Random initial weights (``weights=None``) are drawn again from ``seed``
    alone (see :func:`skconvnet._runtime.reinitialize`). A user's model is used
    as it is, or as a copy (``copy=True``, for a network that trains it).
    Returns the cut base and its preprocessing mode.
    """
    if spec is None:
        base = base_model
        if copy:
            base = keras.models.clone_model(base_model)
            base.set_weights(base_model.get_weights())
        preprocessing = "none"
    else:
        base = build_base(spec, weights, size)
        preprocessing = spec.preprocessing
        if weights is None and seed is not None:
            reinitialize(base.layers, seed)
    return cut_base(caller, base, layer), preprocessing


def build_feature_network(spec, base_model, *, weights, size, seed, layer, pooling, precision,
                          caller):
    """``image -> preprocessing -> cut base -> pooling`` as one model (the extractor's).

    Preprocessing runs in float32 whatever the dtype policy (mean subtraction
    in bfloat16 would lose the low bits of every pixel), and the features come
    out as float32.
    """
    with precision_scope(precision):
        base, preprocessing = _initial_base(spec, base_model, weights, size, seed, layer, caller,
                                            copy=False)
        inputs = keras.Input((size, size, 3), name="image")
        x = ImagePreprocessing(preprocessing, name="preprocessing", dtype="float32")(inputs)
        x = base(x)
        pool = pooling_layer(pooling, len(base.output.shape))
        if pool is not None:
            x = pool(x)
        if x.dtype != "float32":
            x = keras.layers.Activation("linear", dtype="float32", name="as_float32")(x)
        return keras.Model(inputs, x, name="features")


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


# --------------------------------------------------------------------------
# Freezing
# --------------------------------------------------------------------------
def _is_batchnorm(layer):
    return isinstance(layer, keras.layers.BatchNormalization)


def weighted_layers(base):
    """Indices of the base's layers with weights, BatchNormalization excluded."""
    return [i for i, layer in enumerate(base.layers) if layer.weights and not _is_batchnorm(layer)]


def unfreeze_start(caller, base, unfreeze):
    """Index of the first base layer that fine-tuning trains, or None for none.

    ``unfreeze``: 0 (none), an int N (the top N layers with weights,
    BatchNormalization not counted), a layer name (that layer and all above) or
    ``"all"``.
    """
    if unfreeze == 0:
        return None
    if unfreeze == "all":
        return 0
    if isinstance(unfreeze, str):
        return layer_index(caller, base, unfreeze, param="unfreeze")
    weighted = weighted_layers(base)
    if unfreeze > len(weighted):
        raise InvalidParameterError(
            f"The 'unfreeze' parameter of {caller} must be at most {len(weighted)}, the number "
            f"of layers with weights in this base (BatchNormalization not counted), or 'all'. "
            f"Got {unfreeze!r} instead."
        )
    return weighted[-unfreeze]


def set_trainable_from(base, start, *, train_bn=False):
    """Freeze the base below layer index ``start`` (None: all of it).

    BatchNormalization layers above ``start`` train only with ``train_bn``:
    setting ``trainable=False`` on one keeps it in inference mode during
    training (Keras 3: ``training=False`` alone is not enough,
    keras-team/keras#20285), with its ImageNet statistics; a trainable one
    normalises with each batch's statistics and updates its moving ones.
    """
    base.trainable = start is not None
    for i, layer in enumerate(base.layers):
        layer.trainable = (start is not None and i >= start
                           and (train_bn or not _is_batchnorm(layer)))


def block_rate_scales(network, decay, start):
    """Discriminative rates: ``{id(variable): factor}`` for the base's layers from ``start``.

    The base's last block trains at ``decay`` times the head's rate, the block
    below at ``decay**2``, and so on down (timm's layer-wise decay). Blocks are
    the registry's (:func:`skconvnet.registry.block_starts`); a base without a
    record has one block per layer with weights. None where every rate is the
    same (``decay == 1`` or nothing of the base trains).
    """
    if decay == 1 or start is None:
        return None
    layers = network.base.layers
    if network.spec is not None:
        starts = [index for _, index in block_starts(network.base, network.spec)]
    else:
        starts = [i for i, layer in enumerate(layers) if layer.weights]
    scales = {}
    ends = starts[1:] + [len(layers)]
    for depth, (first, end) in enumerate(reversed(list(zip(starts, ends))), start=1):
        for layer in layers[max(first, start):end]:
            for variable in layer.weights:
                scales[id(variable)] = decay ** depth
    return scales


# --------------------------------------------------------------------------
# The fine-tuned estimators' network
# --------------------------------------------------------------------------
def apply_layers(layers, x):
    """``x`` through ``layers`` in turn."""
    for layer in layers:
        x = layer(x)
    return x


@dataclass
class FineTunedNetwork:
    """A fine-tuned estimator's network and the parts training routes through.

    Attributes
    ----------
    model : keras.Model
        ``image -> [augmentation] -> preprocessing -> bottom -> top -> head``;
        the bottom runs in inference mode.
    base : keras.Model
        The cut base (its layers are ``bottom`` and ``top``'s).
    start : int or None
        Index in ``base.layers`` of the first layer fine-tuning trains; None when
        it trains none.
    frozen : keras.Model or None
        ``image -> bottom outputs`` without augmentation, whose outputs can be
        cached; None when nothing stays frozen or the network augments.
    top : keras.Model or None
        ``bottom outputs -> base output``; None when the whole base is the bottom.
    head_layers : list of keras.layers.Layer
        Pooling, hidden Dense, Dropout, output layer.
    spec : BaseSpec or None
        The base's registry record (None for a user's model).
    preprocessing : ImagePreprocessing
    augmentation : keras.Sequential or None
    precision : str
        The dtype policy's name (see :func:`skconvnet._runtime.precision_scope`).
    input_size : int
        The side of the square images the network takes.
    """

    model: keras.Model
    base: keras.Model
    start: int | None
    frozen: keras.Model | None
    top: keras.Model | None
    head_layers: list = field(default_factory=list)
    spec: BaseSpec | None = None
    preprocessing: keras.layers.Layer | None = None
    augmentation: keras.layers.Layer | None = None
    precision: str = "float32"
    input_size: int | None = None

    def at_cut(self, start):
        """The same layers and weights, with fine-tuning training from ``start`` (an index
        of ``base.layers``, or None): only the models over them are new, so moving the cut
        costs milliseconds where building the network costs a second."""
        if start == self.start:
            return self
        return _assemble(self.base, start, self.input_size, self.preprocessing,
                         self.augmentation, self.head_layers, self.spec, self.precision)

    def top_and_head(self, x):
        """``x`` (bottom outputs) through the top of the base and the head."""
        return apply_layers(self.head_layers, x if self.top is None else self.top(x))

    def head(self, x):
        """``x`` (base outputs) through the head alone."""
        return apply_layers(self.head_layers, x)

    def n_layers_trained_from(self, start):
        """Layers of the base with weights (BN not counted) at index ``start`` or above."""
        if start is None:
            return 0
        return sum(1 for i in weighted_layers(self.base) if i >= start)


def _head_layers(pooling, feature_ndim, head_units, dropout, n_outputs, activation, seed):
    layers = []
    pool = pooling_layer(pooling, feature_ndim)
    if pool is not None:
        layers.append(pool)
    if head_units:
        layers.append(keras.layers.Dense(head_units, activation="relu", name="head_dense"))
    if dropout:
        layers.append(keras.layers.Dropout(dropout, seed=seed, name="head_dropout"))
    # float32 outputs whatever the policy (Keras' mixed-precision advice). A linear head
    # starts from zero, as a linear probe's solver does: the warm-up is then a convex
    # problem started from the same point for every seed. From random weights its 20
    # epochs ended 0.03 apart from seed to seed and below the probe (benchmarks/README.md).
    layers.append(keras.layers.Dense(n_outputs, activation=activation, dtype="float32",
                                     kernel_initializer="glorot_uniform" if head_units
                                     else "zeros", name="predictions"))
    return layers


def build_finetuned_network(spec, base_model, *, weights, size, seed, layer, unfreeze, pooling,
                            head_units, dropout, n_outputs, activation, augment_settings,
                            precision, caller):
    """A fine-tuned network (see :class:`FineTunedNetwork`), under ``precision``'s policy.

    ``activation`` is the output layer's: "sigmoid", "softmax" or "linear".
    """
    with precision_scope(precision):
        base, preprocessing = _initial_base(spec, base_model, weights, size, None, layer, caller,
                                            copy=True)
        head_layers = _head_layers(pooling, len(base.output.shape), head_units, dropout,
                                   n_outputs, activation, seed)
        augmentation = augmentation_layers(augment_settings, seed)
        preprocessing = ImagePreprocessing(preprocessing, name="preprocessing", dtype="float32")
    network = _assemble(base, unfreeze_start(caller, base, unfreeze), size, preprocessing,
                        augmentation, head_layers, spec, precision)
    if seed is not None:
        draw_initial_weights(network, seed, random_base=spec is not None and weights is None)
    return network


def _assemble(base, start, size, preprocessing, augmentation, head_layers, spec, precision):
    """The :class:`FineTunedNetwork` of these layers with the cut at ``start``."""
    with precision_scope(precision):
        bottom, top = split_base(base, start)
        inputs = keras.Input((size, size, 3), name="image")
        x = inputs if augmentation is None else augmentation(inputs)
        x = preprocessing(x)
        frozen = None
        if bottom is not None:
            bottom.trainable = False
            x = bottom(x, training=False)
            if augmentation is None:
                frozen = keras.Model(inputs, x, name="frozen")
        network = FineTunedNetwork(model=None, base=base, start=start, frozen=frozen, top=top,
                                   head_layers=head_layers, spec=spec,
                                   preprocessing=preprocessing, augmentation=augmentation,
                                   precision=precision, input_size=size)
        network.model = keras.Model(inputs, network.top_and_head(x), name="finetuned")
    return network


def draw_initial_weights(network, seed, *, random_base):
    """Draw the head's random initial weights (and the base's, for ``random_base``) from
    ``seed`` alone (see :func:`skconvnet._runtime.reinitialize`)."""
    reinitialize(network.head_layers, seed)
    if random_base:
        reinitialize(network.base.layers, seed)
