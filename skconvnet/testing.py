"""A tiny registered base for fast tests (yours and ours).

Importing this module registers ``"tiny"``: three small convolutional blocks with
BatchNormalization, a few thousand weights, building in milliseconds. It is not
registered by default, so it never shows up in :func:`skconvnet.list_bases` of a
user who did not ask for it.
"""

import keras

from .registry import BaseSpec, register_base

__all__ = ["tiny_convnet", "TINY_BASE"]


def tiny_convnet(include_top=False, weights=None, input_shape=None, classes=10):
    """A VGG-shaped toy base: 3 blocks of conv + BN + ReLU + pool.

    Same signature as the ``keras.applications`` builders; ``weights`` must be
    None (there are no pretrained tiny weights).
    """
    if weights is not None:
        raise ValueError("tiny_convnet has no pretrained weights; use weights=None.")
    inputs = keras.Input(input_shape or (32, 32, 3))
    x = inputs
    for block, filters in enumerate((4, 8, 8), start=1):
        x = keras.layers.Conv2D(filters, 3, padding="same", name=f"block{block}_conv")(x)
        x = keras.layers.BatchNormalization(name=f"block{block}_bn")(x)
        x = keras.layers.Activation("relu", name=f"block{block}_relu")(x)
        x = keras.layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = keras.layers.Dense(classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, x, name="tiny")


TINY_BASE = register_base(
    BaseSpec(
        name="tiny",
        builder=tiny_convnet,
        preprocessing="tf",
        default_size=32,
        min_size=8,
        feature_width=8,
        block_pattern=r"^(block\d+)_",
    ),
    overwrite=True,
)
