"""Shared fixtures: the tiny registered base, synthetic images, image files."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest
from PIL import Image

import skconvnet.testing  # noqa: F401  (registers the "tiny" base)


def make_shapes(n, size=16, n_classes=2, seed=0):
    """Learnable synthetic images: class k is a filled square of colour k on noise."""
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


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def images(rng):
    """Ten random 16x16 RGB uint8 images."""
    return rng.integers(0, 256, size=(10, 16, 16, 3), dtype=np.uint8)


@pytest.fixture
def shapes():
    """(X, y): 40 learnable 16x16 images of two classes."""
    return make_shapes(40)


@pytest.fixture
def image_files(tmp_path, images):
    """The ``images`` fixture written out as lossless PNG files; returns their paths."""
    paths = []
    for i, image in enumerate(images):
        path = tmp_path / f"img_{i:02d}.png"
        Image.fromarray(image).save(path)
        paths.append(str(path))
    return paths


def tiny_extractor(**params):
    from skconvnet import ConvFeatureExtractor

    defaults = dict(base="tiny", weights=None, input_size=16, random_state=0, batch_size=4)
    defaults.update(params)
    return ConvFeatureExtractor(**defaults)


@pytest.fixture
def model_calls(monkeypatch):
    """A list that records the number of images of every model pass the caches make."""
    import skconvnet.caching as caching

    calls = []
    original = caching.predict_source

    def counting(model, source, *args, **kwargs):
        calls.append(len(source))
        return original(model, source, *args, **kwargs)

    monkeypatch.setattr(caching, "predict_source", counting)
    return calls
