"""skconvnet.save / skconvnet.load: JSON + .keras, no pickle, tampering refused."""

from functools import partial
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pytest
from sklearn.exceptions import NotFittedError
from sklearn.preprocessing import StandardScaler

import skconvnet
from skconvnet import testing
from skconvnet import (
    ConvFeatureExtractor,
    FineTunedConvClassifier,
    UnsafeModelFileError,
    load,
    save,
)

from skconvnet.testing import make_shapes, tiny_extractor


# This module's tiny classifier: the shared one with these settings.
tiny_classifier = partial(testing.tiny_classifier, head_units=4, unfreeze=2, learning_rate=1e-5)


def _rewrite(path, *, record=None, keras_bytes=None, fix_digest=True):
    """Write a copy of a saved file with its JSON record or network replaced."""
    with zipfile.ZipFile(path) as archive:
        old_record = json.loads(archive.read("skconvnet.json"))
        old_bytes = archive.read("model.keras")
    record = old_record if record is None else record(old_record)
    keras_bytes = old_bytes if keras_bytes is None else keras_bytes
    if fix_digest:
        record["model_sha256"] = hashlib.sha256(keras_bytes).hexdigest()
    tampered = str(path) + ".tampered"
    with zipfile.ZipFile(tampered, "w") as archive:
        archive.writestr("skconvnet.json", json.dumps(record))
        archive.writestr("model.keras", keras_bytes)
    return tampered


@pytest.fixture
def saved_classifier(tmp_path):
    X, y = make_shapes(24)
    labels = np.array(["cat", "dog"])[y]
    clf = tiny_classifier().fit(X, labels)
    return clf, X, save(clf, tmp_path / "clf.skconvnet")


# --------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("params", [
    dict(random_state=0),                       # weights re-created from the seed
    dict(random_state=None),                    # weights only in the file
    dict(pooling="max", layer="block2_pool", image_shape=(16, 16, 3), background=(0, 0, 0)),
])
def test_extractor_round_trip_gives_identical_features(tmp_path, images, params):
    extractor = tiny_extractor(**params).fit(images)
    loaded = load(save(extractor, tmp_path / "extractor.skconvnet"))
    assert type(loaded) is ConvFeatureExtractor
    assert loaded.get_params() == extractor.get_params()
    assert loaded.feature_shape_ == extractor.feature_shape_
    np.testing.assert_array_equal(loaded.transform(images), extractor.transform(images))


def test_extractor_with_a_weights_file_loads_after_the_file_is_gone(tmp_path, images):
    base = skconvnet.testing.tiny_convnet(input_shape=(16, 16, 3))
    base.set_weights([np.full(w.shape, 0.01 * (i + 1), "float32")
                      for i, w in enumerate(base.get_weights())])
    weights_file = tmp_path / "mine.weights.h5"
    base.save_weights(weights_file)
    extractor = tiny_extractor(weights=str(weights_file)).fit(images)
    path = save(extractor, tmp_path / "extractor.skconvnet")
    os.remove(weights_file)
    np.testing.assert_array_equal(load(path).transform(images), extractor.transform(images))


def test_classifier_round_trip_gives_identical_predictions(saved_classifier):
    clf, X, path = saved_classifier
    loaded = load(path)
    assert type(loaded) is FineTunedConvClassifier
    np.testing.assert_array_equal(loaded.classes_, clf.classes_)
    assert loaded.classes_.dtype == clf.classes_.dtype
    assert loaded.history_ == clf.history_
    assert loaded.n_trainable_layers_ == clf.n_trainable_layers_
    np.testing.assert_array_equal(loaded.predict_proba(X), clf.predict_proba(X))
    np.testing.assert_array_equal(loaded.predict(X), clf.predict(X))


def test_classifier_round_trip_keeps_tuples_dicts_and_augmentation(tmp_path):
    X, y = make_shapes(24, n_classes=3)
    clf = tiny_classifier(augment={"rotation_range": 20, "horizontal_flip": True},
                          class_weight={0: 1.0, 1: 2.0, 2: 0.5}, unfreeze="block3_conv",
                          background=(10, 20, 30)).fit(X, y)
    loaded = load(save(clf, tmp_path / "clf.skconvnet"))
    assert loaded.get_params() == clf.get_params()
    assert isinstance(loaded.background, tuple) and 1 in loaded.class_weight
    np.testing.assert_array_equal(loaded.predict_proba(X), clf.predict_proba(X))


def test_loading_in_a_new_process(saved_classifier, tmp_path):
    clf, X, path = saved_classifier
    np.save(tmp_path / "X.npy", X)
    code = (
        "import sys, numpy as np, skconvnet, skconvnet.testing;"
        f"clf = skconvnet.load({str(path)!r});"
        f"X = np.load({str(tmp_path / 'X.npy')!r});"
        f"np.save({str(tmp_path / 'p.npy')!r}, clf.predict_proba(X))"
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=300)
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), clf.predict_proba(X), rtol=1e-6)


OTHER_BACKEND = "jax" if keras.backend.backend() != "jax" else "tensorflow"


@pytest.mark.skipif(importlib.util.find_spec(OTHER_BACKEND) is None,
                    reason=f"needs {OTHER_BACKEND} (the jax extra) for the other backend")
def test_a_file_saved_on_one_backend_predicts_the_same_on_another(tmp_path):
    """Saved under this process's backend (TensorFlow in CI), loaded under JAX (or back)."""
    X, y = make_shapes(24)
    fitted = {
        "extractor": (tiny_extractor().fit(X), "transform"),
        "classifier": (testing.tiny_classifier(unfreeze=1).fit(X, y), "predict_proba"),
        "regressor": (testing.tiny_regressor(unfreeze=1).fit(X, y * 2.0 + 1), "predict"),
    }
    np.save(tmp_path / "X.npy", X)
    for name, (estimator, method) in fitted.items():
        save(estimator, tmp_path / f"{name}.skconvnet")
        np.save(tmp_path / f"{name}-expected.npy", getattr(estimator, method)(X))
    code = (
        "import sys, keras, numpy as np, skconvnet, skconvnet.testing\n"
        f"assert keras.backend.backend() == {OTHER_BACKEND!r}\n"
        f"X = np.load({str(tmp_path / 'X.npy')!r})\n"
        f"for name, method in {[(n, m) for n, (_, m) in fitted.items()]!r}:\n"
        f"    estimator = skconvnet.load({str(tmp_path)!r} + f'/{{name}}.skconvnet')\n"
        f"    np.save({str(tmp_path)!r} + f'/{{name}}-loaded.npy', getattr(estimator, method)(X))\n"
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND=OTHER_BACKEND)
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=600)
    for name in fitted:
        np.testing.assert_allclose(np.load(tmp_path / f"{name}-loaded.npy"),
                                   np.load(tmp_path / f"{name}-expected.npy"), atol=1e-4,
                                   err_msg=name)


def test_the_file_holds_json_and_a_keras_model_only(saved_classifier):
    _, _, path = saved_classifier
    with zipfile.ZipFile(path) as archive:
        assert sorted(archive.namelist()) == ["model.keras", "skconvnet.json"]
        record = json.loads(archive.read("skconvnet.json"))
    assert record["estimator"] == "FineTunedConvClassifier"
    assert record["params"]["unfreeze"] == 2
    assert record["fitted"]["classes_"] == {"ndarray": ["cat", "dog"], "dtype": "<U3"}


# --------------------------------------------------------------------------- refusals
def _lambda_network():
    inputs = keras.Input((4,))
    outputs = keras.layers.Lambda(lambda x: x * 2)(inputs)
    return keras.Model(inputs, outputs)


def test_a_network_with_code_is_refused_by_safe_mode(saved_classifier, tmp_path):
    _, _, path = saved_classifier
    keras_file = tmp_path / "evil.keras"
    _lambda_network().save(keras_file)
    tampered = _rewrite(path, keras_bytes=keras_file.read_bytes())
    with pytest.raises(UnsafeModelFileError, match="Keras refused the network in safe mode"):
        load(tampered)


@pytest.mark.parametrize("change, match", [
    (lambda r: {**r, "estimator": "os.system"},
     r"names the class 'os.system'; only \['ConvFeatureExtractor', 'FineTunedConvClassifier', "
     r"'FineTunedConvRegressor'\]"),
    (lambda r: {**r, "format": "pickle"}, "not a file written by skconvnet.save"),
    (lambda r: {**r, "format_version": 99}, "format version 99"),
    (lambda r: {**r, "params": {**r["params"], "evil": 1}}, r"unknown parameters \['evil'\]"),
    (lambda r: {**r, "params": {**r["params"], "pooling": "evil"}},
     "invalid parameters: The 'pooling' parameter of FineTunedConvClassifier must be"),
    (lambda r: {**r, "params": {**r["params"], "base": "vgg99"}},
     "invalid parameters: Unknown base 'vgg99'"),
    (lambda r: {**r, "fitted": {**r["fitted"], "_model": 1}}, "fitted attributes must be public"),
    (lambda r: {**r, "fitted": {**r["fitted"], "x_": {"ndarray": [1], "dtype": "|V8"}}},
     "Refusing array dtype"),
    (lambda r: {**r, "fitted": {**r["fitted"], "x_": {"__reduce__": "os.system"}}},
     "Unknown value in the model file"),
    (lambda r: {**r, "params": {**r["params"], "head_units": 8}},
     "its weights do not fit the network its parameters describe"),
])
def test_a_tampered_record_is_refused(saved_classifier, change, match):
    _, _, path = saved_classifier
    with pytest.raises(UnsafeModelFileError, match=match):
        load(_rewrite(path, record=change))


def test_altered_network_bytes_fail_the_digest(saved_classifier, tmp_path):
    _, _, path = saved_classifier
    with zipfile.ZipFile(path) as archive:
        keras_bytes = bytearray(archive.read("model.keras"))
    keras_bytes[len(keras_bytes) // 2] ^= 0xFF
    with pytest.raises(UnsafeModelFileError, match="does not match the digest"):
        load(_rewrite(path, keras_bytes=bytes(keras_bytes), fix_digest=False))


def test_files_that_are_not_model_files(tmp_path, images):
    pickled = tmp_path / "model.pkl"
    import joblib

    joblib.dump(tiny_extractor().fit(images), pickled)
    with pytest.raises(UnsafeModelFileError, match="not a file written by skconvnet.save"):
        load(pickled)
    empty_zip = tmp_path / "empty.skconvnet"
    zipfile.ZipFile(empty_zip, "w").close()
    with pytest.raises(UnsafeModelFileError, match="not a file written by skconvnet.save"):
        load(empty_zip)


def test_save_errors(tmp_path, images):
    with pytest.raises(NotFittedError):
        save(tiny_extractor(), tmp_path / "x")
    with pytest.raises(TypeError, match=r"saves the estimators \['ConvFeatureExtractor', "
                                        r"'FineTunedConvClassifier', 'FineTunedConvRegressor'\]; "
                                        "got a StandardScaler"):
        save(StandardScaler().fit([[0.0], [1.0]]), tmp_path / "x")
    model_base = ConvFeatureExtractor(skconvnet.testing.tiny_convnet(input_shape=(16, 16, 3)),
                                      weights=None).fit(images)
    with pytest.raises(TypeError, match="needs a registered base name"):
        save(model_base, tmp_path / "x")
    seeded = tiny_extractor(random_state=np.random.RandomState(0)).fit(images)
    with pytest.raises(TypeError, match="cannot store random_state=RandomState"):
        save(seeded, tmp_path / "x")
    assert os.listdir(tmp_path) == []  # nothing half-written left behind
