"""FineTunedConvClassifier: learning, what each phase may change, sklearn behaviour, errors."""

import gc
import pickle
import subprocess
import sys
import textwrap

import joblib
import keras
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils.estimator_checks import parametrize_with_checks

from skconvnet.testing import make_shapes, tiny_classifier
from skconvnet import InvalidParameterError
from skconvnet.images import image_source


def _base(clf):
    return clf.base_model_


def _base_weights(clf):
    return {layer.name: [w.copy() for w in layer.get_weights()]
            for layer in _base(clf).layers if layer.weights}


# The tiny base cut at block2 with flattened features: 128 random features, enough for a
# head to learn the coloured shapes from any random initialisation on every backend (the
# whole base's 8 pooled or 32 flattened ones are not, for some seeds on PyTorch). Measured
# over seeds 0-7 for each test that uses it, on TensorFlow and PyTorch.
WIDE_FEATURES = dict(layer="block2_pool", pooling="flatten")

CHECK_REASONS = {
    "check_sample_weight_equivalence_on_dense_data": (
        "minibatch gradient descent: a weight of 2 is not the same as a repeated image, "
        "which changes the batches (scikit-learn's SGD estimators fail it too); a weight of 0 "
        "is exactly the same as dropping the image (test_zero_weight_equals_dropping_the_image)"
    ),
    "check_class_weight_classifiers": (
        "the check's data has negative values (standard-scaled blobs), which are not "
        "pixels and are rejected; class_weight itself is tested in this module"
    ),
}


@parametrize_with_checks(
    [tiny_classifier(input_size=8, image_shape=(1, -1, 1), warmup_epochs=1, epochs=0)],
    expected_failed_checks=lambda est: CHECK_REASONS,
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_head_learns_coloured_shapes():
    X, y = make_shapes(120, size=16)
    # Cut at block2 (128 flattened features): seeds 0-7 give 0.97-1.0 on TensorFlow and
    # 0.93-1.0 on PyTorch; the whole base's 32 gave 0.75 on PyTorch with seed 0.
    clf = tiny_classifier(warmup_epochs=15, **WIDE_FEATURES).fit(X[:80], y[:80])
    assert clf.score(X[80:], y[80:]) >= 0.85


def test_unfreeze_zero_leaves_every_base_weight_unchanged(shapes):
    X, y = shapes
    reference = tiny_classifier(warmup_epochs=0, epochs=1, unfreeze=1)  # builds same init
    clf = tiny_classifier(unfreeze=0, warmup_epochs=2)
    keras.utils.set_random_seed(0)
    initial = _base_weights(clf.fit(X, y))
    # Re-running with the same seed but no training at all shows the starting point.
    with pytest.raises(InvalidParameterError, match="would train nothing"):
        tiny_classifier(warmup_epochs=0, unfreeze=0).fit(X, y)
    assert reference.unfreeze == 1
    start = _fresh_base_weights(clf)
    for name, weights in initial.items():
        for got, want in zip(weights, start[name]):
            np.testing.assert_array_equal(got, want)
    assert clf.n_trainable_layers_ == 0
    assert {entry["phase"] for entry in clf.history_} == {"warmup"}


def _fresh_base_weights(clf):
    """The base's weights right after building, before any training (same seed)."""
    base = clf._build_network(clf._resolve(), n_outputs=1).base
    return {layer.name: layer.get_weights() for layer in base.layers if layer.weights}


@pytest.mark.parametrize("unfreeze, changed", [
    (1, {"block3_conv"}),
    (2, {"block2_conv", "block3_conv"}),
    ("block2_conv", {"block2_conv", "block3_conv"}),
    ("all", {"block1_conv", "block2_conv", "block3_conv"}),
])
def test_unfreeze_changes_exactly_the_top_layers(shapes, unfreeze, changed):
    X, y = shapes
    # BatchNorm frozen: only the layers with weights below change (train_bn is tested in
    # test_recipe.py).
    clf = tiny_classifier(unfreeze=unfreeze, warmup_epochs=1, epochs=2, train_bn=False)
    clf.fit(X, y)
    start = _fresh_base_weights(clf)
    after = _base_weights(clf)
    moved = {name for name, weights in after.items()
             if any(not np.array_equal(a, b) for a, b in zip(weights, start[name]))}
    assert moved == changed
    assert clf.n_trainable_layers_ == len(changed)
    assert [e["phase"] for e in clf.history_] == ["warmup", "finetune", "finetune"]


def test_batchnorm_statistics_never_move_with_train_bn_false(shapes):
    X, y = shapes
    clf = tiny_classifier(unfreeze="all", warmup_epochs=2, epochs=2, train_bn=False).fit(X, y)
    start = _fresh_base_weights(clf)
    for layer in _base(clf).layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            assert not layer.trainable
            for got, want in zip(layer.get_weights(), start[layer.name]):
                np.testing.assert_array_equal(got, want)  # gamma, beta, moving stats


def test_augmentation_is_off_at_predict_time(shapes):
    X, y = shapes
    clf = tiny_classifier(augment="standard").fit(X, y)
    assert clf.model_.get_layer("augmentation") is not None
    np.testing.assert_array_equal(clf.predict_proba(X), clf.predict_proba(X))
    augmentation = clf.model_.get_layer("augmentation")
    images = X[:4].astype("float32")
    inference = augmentation(images, training=False)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(inference), images)
    changed = keras.ops.convert_to_numpy(augmentation(images, training=True))
    assert not np.array_equal(changed, images)


def test_augment_dict_settings(shapes):
    X, y = shapes
    clf = tiny_classifier(augment={"horizontal_flip": True, "zoom_range": 0.1}).fit(X, y)
    names = [layer.name for layer in clf.model_.get_layer("augmentation").layers]
    assert names == ["flip", "zoom"]


@pytest.mark.parametrize("labels", [
    np.array(["cat", "dog"]), np.array([3, 7]), np.array([True, False]),
])
def test_binary_labels_of_any_type(shapes, labels):
    X, y = shapes
    y = labels[y]
    clf = tiny_classifier().fit(X, y)
    proba = clf.predict_proba(X)
    assert proba.shape == (len(X), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert set(clf.predict(X)) <= set(labels)
    np.testing.assert_array_equal(clf.classes_, np.sort(labels))


def test_multiclass():
    X, y = make_shapes(60, size=16, n_classes=3)
    labels = np.array(["red", "blue", "green"])[y]
    clf = tiny_classifier(warmup_epochs=8, **WIDE_FEATURES).fit(X, labels)
    proba = clf.predict_proba(X)
    assert proba.shape == (60, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert clf.score(X, labels) > 0.6  # seeds 0-7: 0.68-1.0 (TensorFlow), 0.67-1.0 (PyTorch)
    np.testing.assert_array_equal(clf.classes_[proba.argmax(1)], clf.predict(X))


def test_same_random_state_same_predictions(shapes):
    X, y = shapes
    a = tiny_classifier(augment="standard", unfreeze=2).fit(X, y).predict_proba(X)
    b = tiny_classifier(augment="standard", unfreeze=2).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(a, b)


def test_clone_keeps_settings_and_refit_starts_from_scratch(shapes):
    X, y = shapes
    clf = tiny_classifier(augment={"zoom_range": 0.1}, unfreeze="block2_conv",
                          class_weight="balanced")
    copy = clone(clf)
    assert copy.get_params() == clf.get_params()
    assert not hasattr(copy, "classes_")
    first = clf.fit(X, y).predict_proba(X)
    second = clf.fit(X, y).predict_proba(X)  # from the initial weights again, not from the last fit
    np.testing.assert_array_equal(first, second)


def test_class_weight_balanced_and_dict(shapes):
    X, y = shapes
    keep = np.r_[np.flatnonzero(y == 0), np.flatnonzero(y == 1)[:5]]  # 20 vs 5 images

    def minority_probability(class_weight):
        clf = tiny_classifier(class_weight=class_weight, warmup_epochs=6, pooling="flatten")
        return clf.fit(X[keep], y[keep]).predict_proba(X)[:, 1].mean()

    unweighted = minority_probability(None)
    # weighting the minority class up pushes its predicted probability up
    assert minority_probability("balanced") > unweighted + 0.05
    assert minority_probability({0: 1.0, 1: 10.0}) > minority_probability("balanced")


def test_history_records_both_phases_with_validation(shapes):
    X, y = shapes
    clf = tiny_classifier(unfreeze=1, warmup_epochs=3, epochs=2, validation_fraction=0.25).fit(X, y)
    assert [e["phase"] for e in clf.history_] == ["warmup"] * 3 + ["finetune"] * 2
    assert [e["epoch"] for e in clf.history_] == list(range(5))
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(clf.history_[0])


def test_early_stopping_stops_and_restores(shapes):
    X, y = shapes
    clf = tiny_classifier(warmup_epochs=30, warmup_learning_rate=0.5, validation_fraction=0.25,
                          n_iter_no_change=1).fit(X, y)
    assert len(clf.history_) < 30


def test_grid_search_and_cross_val_score(shapes):
    X, y = shapes
    grid = GridSearchCV(tiny_classifier(), {"unfreeze": [0, 1, 2], "learning_rate": [1e-3, 1e-4]},
                        cv=2).fit(X, y)
    assert grid.best_params_["unfreeze"] in (0, 1, 2)
    assert len(grid.cv_results_["mean_test_score"]) == 6
    scores = cross_val_score(tiny_classifier(), X, y, cv=2)
    assert scores.shape == (2,)


def test_grid_search_with_two_jobs(shapes):
    # Worker processes know only the built-in bases ("tiny" is registered by the tests).
    X, y = make_shapes(24, size=32)
    clf = tiny_classifier(base="mobilenetv2", input_size=32, warmup_epochs=1)
    grid = GridSearchCV(clf, {"unfreeze": [0, 1]}, cv=2, n_jobs=2, error_score="raise")
    grid.fit(X, y)
    assert grid.predict_proba(X).shape == (len(X), 2)


ROUND_TRIP = textwrap.dedent(
    """
    import sys, joblib, numpy as np
    import skconvnet.testing
    model = joblib.load(sys.argv[1])
    np.save(sys.argv[3], model.predict_proba(np.load(sys.argv[2])))
    """
)


def test_joblib_round_trip_in_a_new_process_inside_pipeline_and_search(tmp_path, shapes):
    X, y = shapes
    fitted = {
        "clf": tiny_classifier(unfreeze=1, augment="standard").fit(X, y),
        "pipe": Pipeline([("id", FunctionTransformer()), ("clf", tiny_classifier())]).fit(X, y),
        "grid": GridSearchCV(tiny_classifier(), {"unfreeze": [0, 1]}, cv=2).fit(X, y),
    }
    np.save(tmp_path / "X.npy", X)
    (tmp_path / "load.py").write_text(ROUND_TRIP)
    for name, model in fitted.items():
        joblib.dump(model, tmp_path / f"{name}.joblib")
        subprocess.run([sys.executable, str(tmp_path / "load.py"), str(tmp_path / f"{name}.joblib"),
                        str(tmp_path / "X.npy"), str(tmp_path / f"{name}.npy")],
                       check=True, capture_output=True)
        np.testing.assert_array_equal(np.load(tmp_path / f"{name}.npy"), model.predict_proba(X))


def test_failed_fit_leaves_the_fitted_classifier_as_it_was(shapes):
    X, y = shapes
    clf = tiny_classifier().fit(X, y)
    before = clf.predict_proba(X)
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        clf.fit(X, y[:-1])

    class Interrupt(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            raise KeyboardInterrupt

    original_fit = keras.Model.fit

    def interrupted_fit(self, *args, **kwargs):
        kwargs["callbacks"] = list(kwargs.get("callbacks") or []) + [Interrupt()]
        return original_fit(self, *args, **kwargs)

    keras.Model.fit = interrupted_fit
    try:
        with pytest.raises(KeyboardInterrupt):
            clf.set_params(warmup_epochs=3).fit(X, y)
    finally:
        keras.Model.fit = original_fit
    np.testing.assert_array_equal(clf.predict_proba(X), before)


def test_models_of_earlier_fits_are_released(shapes):
    import weakref

    X, y = shapes
    clf = tiny_classifier(warmup_epochs=1)
    refs = []
    for _ in range(3):
        clf.fit(X, y)
        refs.append(weakref.ref(clf.model_))
    gc.collect()
    assert sum(ref() is not None for ref in refs) == 1


@pytest.mark.parametrize("params, y_change, match", [
    (dict(), lambda y: y[:-1], r"inconsistent numbers of samples: \[40, 39\]"),
    (dict(), lambda y: np.zeros_like(y), r"at least 2 classes .* only one class: 0"),
    (dict(), lambda y: np.where(y == 0, np.nan, 1.0), r"NaN labels \(at index"),
    (dict(), lambda y: y + 0.5, r"Unknown label type: continuous"),
    (dict(unfreeze="block9_conv"), None, r"'unfreeze' parameter .* Got 'block9_conv' instead"),
    (dict(unfreeze=4), None, r"'unfreeze' .* at most 3, the number of layers with weights.*Got 4"),
    (dict(unfreeze=-1), None, r"'unfreeze' .* Got -1 instead"),
    (dict(epochs=-1), None, r"'epochs' parameter .* >= 0. Got -1 instead"),
    (dict(warmup_epochs=-2), None, r"'warmup_epochs' parameter .* Got -2 instead"),
    (dict(batch_size=0), None, r"'batch_size' parameter .* Got 0 instead"),
    (dict(augment={"rotation": 10}), None, r"unknown key\(s\) \['rotation'\]; the allowed keys"),
    (dict(augment="heavy"), None, r"'augment' parameter .* Got 'heavy' instead"),
    (dict(augment={"zoom_range": 2.0}), None, r"augment\['zoom_range'\] .* \[0, 1\]. Got 2.0"),
    (dict(learning_rate=0), None, r"'learning_rate' parameter .* \(0.0, inf\]. Got 0 instead"),
    (dict(dropout=1.0), None, r"'dropout' parameter .* Got 1.0 instead"),
    (dict(pooling=None), None, r"'pooling' parameter .* Got None instead"),
    (dict(class_weight="auto"), None, r"'class_weight' parameter .* Got 'auto' instead"),
    (dict(input_size=4), None, r"'input_size' .* >= 8 for base 'tiny'"),
    (dict(base="vgg17"), None, r"Unknown base 'vgg17'"),
])
def test_bad_input_gets_a_clear_error(shapes, params, y_change, match):
    X, y = shapes
    if y_change is not None:
        y = y_change(y)
    with pytest.raises(ValueError, match=match):
        tiny_classifier(**params).fit(X, y)


def test_unseen_label_at_score_time_counts_as_wrong(shapes):
    X, y = shapes
    clf = tiny_classifier(warmup_epochs=8, **WIDE_FEATURES).fit(X, y)
    predicted = clf.predict(X)
    assert (predicted == y).mean() > 0.6  # seeds 0-7: 0.95-1.0 (TensorFlow), 0.90-1.0 (PyTorch)
    unseen = np.where(y == 1, 5, y)  # label 5 was never seen in fit
    assert clf.score(X, unseen) == pytest.approx(((predicted == y) & (y == 0)).mean())


@pytest.mark.parametrize("unfreeze", [0, 2, "block2_conv"])
def test_cache_trains_on_frozen_outputs_with_the_same_result(shapes, tmp_path, unfreeze):
    from skconvnet.caching import clear_memory_cache

    clear_memory_cache()
    X, y = shapes
    plain = tiny_classifier(unfreeze=unfreeze).fit(X, y).predict_proba(X)
    for cache in ("memory", str(tmp_path / "cache")):
        cached = tiny_classifier(unfreeze=unfreeze, cache=cache).fit(X, y)
        np.testing.assert_allclose(cached.predict_proba(X), plain, atol=1e-4)
    files = list((tmp_path / "cache").rglob("*.npz"))
    assert len(files) == len(X)


def test_cache_is_reused_across_fits_and_rebuilds_corrupt_entries(shapes, tmp_path, model_calls):
    X, y = shapes
    calls = model_calls
    folder = tmp_path / "cache"
    first = tiny_classifier(unfreeze=1, cache=str(folder)).fit(X, y).predict_proba(X)
    tiny_classifier(unfreeze=1, cache=str(folder), learning_rate=1e-4).fit(X, y)
    assert calls == [len(X)]  # the second fit computed nothing
    entry = sorted(folder.rglob("*.npz"))[0]
    entry.write_bytes(entry.read_bytes()[:50])  # a half-written file
    again = tiny_classifier(unfreeze=1, cache=str(folder)).fit(X, y).predict_proba(X)
    assert calls == [len(X), 1]
    np.testing.assert_allclose(again, first, atol=1e-6)


@pytest.mark.parametrize("unfreeze", [0, 2])
def test_predict_goes_through_the_cache_and_matches_the_full_network(
        shapes, model_calls, unfreeze):
    from skconvnet._runtime import predict_source
    from skconvnet.caching import clear_memory_cache

    clear_memory_cache()
    X, y = shapes
    seen, unseen = X[:30], X[30:]
    clf = tiny_classifier(unfreeze=unfreeze, cache="memory").fit(seen, y[:30])
    assert model_calls == [30]
    proba = clf.predict_proba(X)
    assert model_calls == [30, 10]  # only the images fit has not seen go through the bottom
    clf.predict_proba(X)
    assert model_calls == [30, 10]
    full = predict_source(clf.model_, image_source(X, 16), 8)
    full = np.hstack([1 - full, full])
    np.testing.assert_allclose(proba, full, atol=1e-5)
    # Without the fit's cached route (unpickled), the full network gives the same answer.
    restored = pickle.loads(pickle.dumps(clf))
    np.testing.assert_allclose(restored.predict_proba(unseen), proba[30:], atol=1e-5)
    clf.set_params(cache=None)  # a changed parameter turns the route off
    np.testing.assert_allclose(clf.predict_proba(unseen), proba[30:], atol=1e-5)
    assert model_calls == [30, 10]


def test_cache_is_skipped_with_augmentation(shapes, tmp_path):
    X, y = shapes
    tiny_classifier(augment={"horizontal_flip": True}, cache=str(tmp_path / "c")).fit(X, y)
    assert not (tmp_path / "c").exists()


def test_bad_cache_value(shapes):
    X, y = shapes
    with pytest.raises(ValueError, match=r"'cache' parameter .* Got 3 instead"):
        tiny_classifier(cache=3).fit(X, y)


def test_bfloat16_training_learns_and_keeps_float32_outputs(shapes):
    X, y = shapes
    # A long constant-rate warm-up, BatchNorm frozen, the wide features: seeds 0-5 scored
    # 0.97-1.0 on PyTorch and 1.0 on TensorFlow and JAX (the whole base's pooled features:
    # 0.62-1.0, 0.82-1.0 and 0.68-1.0).
    clf = tiny_classifier(precision="bfloat16", unfreeze=1, warmup_epochs=15, train_bn=False,
                          lr_schedule="constant", **WIDE_FEATURES).fit(X, y)
    assert keras.config.dtype_policy().name == "float32"
    assert clf.model_.get_layer("predictions").dtype_policy.name == "float32"
    assert clf.base_model_.get_layer("block2_conv").dtype_policy.name == "mixed_bfloat16"
    proba = clf.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert clf.score(X, y) > 0.7
    with pytest.raises(InvalidParameterError, match=r"'precision' parameter .* Got 'half'"):
        tiny_classifier(precision="half").fit(X, y)
