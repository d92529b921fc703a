"""Shared fixtures: the tiny registered base, synthetic images, image files."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from skconvnet.testing import make_shapes  # noqa: E402  (registers the "tiny" base too)


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
