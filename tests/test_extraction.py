"""ConvFeatureExtractor: the transformer API, pipelines, weights, cuts, pickling, errors."""

import subprocess
import sys
import textwrap

import joblib
import keras
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

from skconvnet.testing import make_shapes, tiny_extractor
from skconvnet import ConvFeatureExtractor, InvalidParameterError, WeightsUnavailableError
from skconvnet.registry import BaseSpec, register_base
from skconvnet.testing import tiny_convnet

# Every check passes; a check that cannot pass goes here with its reason.
CHECK_REASONS = {}


@parametrize_with_checks(
    [tiny_extractor(input_size=8, image_shape=(1, -1, 1))],
    expected_failed_checks=lambda est: CHECK_REASONS,
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_pipeline_on_arrays_and_on_paths_gives_the_same_features(image_files, images):
    y = np.arange(len(images)) % 2
    pipe = Pipeline([("features", tiny_extractor()),
                     ("clf", LogisticRegression(max_iter=1000))])
    pipe.fit(images, y)
    from_arrays = pipe[0].transform(images)
    from_paths = pipe[0].transform(image_files)
    np.testing.assert_allclose(from_arrays, from_paths, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(pipe.predict(images), pipe.predict(image_files))
    pipe_paths = clone(pipe).fit(image_files, y)
    np.testing.assert_array_equal(pipe_paths.predict(image_files), pipe.predict(image_files))


def test_pipeline_learns_shapes():
    # The 128 flattened random features of block2 separate the colours on TensorFlow and on
    # PyTorch for every seed tried (0-5: 0.95-1.0); the 32 of block3 gave 0.80 on PyTorch
    # with seed 0, the 8 average-pooled ones less.
    X, y = make_shapes(120, size=16)
    pipe = Pipeline([("features", tiny_extractor(layer="block2_pool", pooling="flatten")),
                     ("clf", LogisticRegression(max_iter=2000))]).fit(X[:80], y[:80])
    assert pipe.score(X[80:], y[80:]) >= 0.85


def test_transform_returns_float32_of_documented_width(images):
    extractor = tiny_extractor().fit(images)
    features = extractor.transform(images)
    assert features.dtype == np.float32 and features.shape == (10, 8)
    assert extractor.n_features_out_ == 8 and extractor.feature_shape_ == (8,)
    assert not hasattr(extractor, "n_features_in_")


@pytest.mark.parametrize(
    "pooling, shape", [("avg", (8,)), ("max", (8,)), ("flatten", (2 * 2 * 8,)),
                       (None, (2, 2, 8))],
)
def test_pooling(images, pooling, shape):
    extractor = tiny_extractor(pooling=pooling).fit(images)
    features = extractor.transform(images)
    assert features.shape == (10,) + shape
    assert extractor.n_features_out_ == int(np.prod(shape))


@pytest.mark.parametrize("layer", ["block2_pool", 8, -5])
def test_layer_cut_by_name_or_index(images, layer):
    extractor = tiny_extractor(layer=layer, pooling=None).fit(images)
    base = extractor.model_.layers[2]
    assert base.layers[-1].name == "block2_pool"
    assert extractor.feature_shape_ == (4, 4, 8)


def test_cut_features_equal_the_base_layer_output(images):
    extractor = tiny_extractor(layer="block1_relu", pooling="avg").fit(images)
    full = tiny_extractor(pooling=None).fit(images)
    base = full.model_.layers[2]
    sub = keras.Model(base.inputs, base.get_layer("block1_relu").output)
    pixels = images.astype("float32") / 127.5 - 1  # the tiny base's "tf" preprocessing
    expected = keras.ops.convert_to_numpy(sub(pixels)).mean(axis=(1, 2))
    np.testing.assert_allclose(extractor.transform(images), expected, rtol=1e-5, atol=1e-6)


def test_set_output_pandas_and_feature_names(images):
    pd = pytest.importorskip("pandas")
    extractor = tiny_extractor().set_output(transform="pandas").fit(images)
    frame = extractor.transform(images)
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns) == [f"convfeatureextractor{i}" for i in range(8)]
    with pytest.raises(ValueError, match="not available with pooling=None"):
        tiny_extractor(pooling=None).fit(images).get_feature_names_out()


def test_clone_and_params_round_trip():
    extractor = tiny_extractor(layer="block2_pool", pooling="max")
    copy = clone(extractor)
    assert copy.get_params() == extractor.get_params()
    copy.set_params(pooling="flatten", input_size=24)
    assert copy.pooling == "flatten" and copy.input_size == 24
    with pytest.raises(ValueError, match="Invalid parameter 'polling'"):
        copy.set_params(polling="avg")
    with pytest.raises(TypeError):
        ConvFeatureExtractor("tiny", None)  # keyword-only after base


def test_random_state_makes_random_weights_reproducible(images):
    a = tiny_extractor(random_state=3).fit_transform(images)
    b = tiny_extractor(random_state=3).fit_transform(images)
    c = tiny_extractor(random_state=4).fit_transform(images)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_refit_reuses_the_model_and_failed_fit_keeps_the_old_one(images):
    extractor = tiny_extractor().fit(images)
    model = extractor.model_
    before = extractor.transform(images)
    assert extractor.fit(images).model_ is model
    with pytest.raises(ValueError, match="Negative values"):
        extractor.fit(-np.ones((2, 16, 16, 3)))
    extractor.set_params(input_size=4)
    with pytest.raises(InvalidParameterError, match="input_size"):
        extractor.fit(images)
    extractor.set_params(input_size=16)
    np.testing.assert_array_equal(extractor.transform(images), before)


ROUND_TRIP = textwrap.dedent(
    """
    import sys, joblib, numpy as np
    import skconvnet.testing
    extractor = joblib.load(sys.argv[1])
    np.save(sys.argv[3], extractor.transform(np.load(sys.argv[2])))
    """
)


@pytest.mark.parametrize("random_state", [None, 0])
def test_joblib_round_trip_in_a_new_process(tmp_path, images, random_state):
    extractor = tiny_extractor(random_state=random_state).fit(images)
    expected = extractor.transform(images)
    joblib.dump(extractor, tmp_path / "ext.joblib")
    np.save(tmp_path / "X.npy", images)
    script = tmp_path / "load.py"
    script.write_text(ROUND_TRIP)
    subprocess.run(
        [sys.executable, str(script), str(tmp_path / "ext.joblib"), str(tmp_path / "X.npy"),
         str(tmp_path / "out.npy")],
        check=True, capture_output=True,
    )
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), expected)


def test_pickle_stores_weights_only_when_they_cannot_be_recreated(images):
    seeded = tiny_extractor(random_state=0).fit(images)
    unseeded = tiny_extractor(random_state=None).fit(images)
    assert seeded.__getstate__()["_network_state"]["weights"] is None
    assert unseeded.__getstate__()["_network_state"]["weights"] is not None
    assert "_network" not in unseeded.__getstate__()


def _save_tiny_weights(tmp_path, suffix, seed=7):
    keras.utils.set_random_seed(seed)
    model = tiny_convnet(input_shape=(16, 16, 3))
    path = tmp_path / f"tiny{suffix}"
    if suffix == ".keras":
        model.save(path)
    else:
        model.save_weights(path)
    return path, model


@pytest.mark.parametrize("suffix", [".weights.h5", ".keras"])
def test_weights_from_a_file(tmp_path, images, suffix):
    path, model = _save_tiny_weights(tmp_path, suffix)
    extractor = tiny_extractor(weights=str(path)).fit(images)
    for got, want in zip(extractor.model_.layers[2].get_weights(), model.get_weights()):
        np.testing.assert_array_equal(got, want)
    assert extractor.__getstate__()["_network_state"]["weights"] is not None


def test_weights_file_for_another_architecture_is_reported(tmp_path, images):
    keras.utils.set_random_seed(0)
    other = keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3))
    path = tmp_path / "vgg.weights.h5"
    other.save_weights(path)
    with pytest.raises(WeightsUnavailableError, match=r"vgg.weights.h5.*into base 'tiny'"):
        tiny_extractor(weights=str(path)).fit(images)


def test_missing_weights_file_is_a_parameter_error(images):
    with pytest.raises(InvalidParameterError, match=r"names a file that does not exist: 'x.h5'"):
        tiny_extractor(weights="x.h5").fit(images)


def _offline_builder(include_top=False, weights=None, input_shape=None):
    if weights == "imagenet":
        # Port 9 (discard) on loopback: refused at once, as on a machine with no network.
        keras.utils.get_file("offline.h5", origin="http://127.0.0.1:9/offline.h5",
                             cache_dir="/nonexistent-skconvnet-test")
    return tiny_convnet(input_shape=input_shape)


def test_imagenet_download_failure_says_what_to_do(images):
    register_base(BaseSpec("tiny_offline", builder=_offline_builder, preprocessing="tf",
                           default_size=16, min_size=8, feature_width=8,
                           block_pattern=r"^(block\d+)_"), overwrite=True)
    with pytest.raises(WeightsUnavailableError,
                       match=r"Could not download the ImageNet weights.*pass a local weights"):
        ConvFeatureExtractor("tiny_offline", weights="imagenet").fit(images)


def test_keras_model_as_base(images):
    keras.utils.set_random_seed(0)
    model = tiny_convnet(input_shape=(16, 16, 3))
    extractor = ConvFeatureExtractor(model, weights=None, layer="block2_pool").fit(images)
    assert extractor.input_size_ == 16 and extractor.transform(images).shape == (10, 8)
    with pytest.raises(InvalidParameterError, match="must match the input shape"):
        ConvFeatureExtractor(model, input_size=32).fit(images)


@pytest.mark.parametrize(
    "params, match",
    [
        (dict(base="vgg17"), r"Unknown base 'vgg17'. Expected one of \[.*'vgg16'"),
        (dict(base=3), r"'base' parameter .* Got 3 instead"),
        (dict(layer="block9_pool"), r"'layer' parameter .* Got 'block9_pool' instead"),
        (dict(layer=99), r"layer index in \[1, 12\].*Got 99 instead"),
        (dict(layer=0), r"Got 0 instead"),
        (dict(layer=1.5), r"'layer' parameter .* Got 1.5 instead"),
        (dict(input_size=4), r"'input_size' .* >= 8 for base 'tiny'.*Got 4 instead"),
        (dict(pooling="mean"), r"'pooling' parameter .* 'avg', 'max', 'flatten' or None. "
                               r"Got 'mean'"),
        (dict(batch_size=0), r"'batch_size' parameter .* >= 1. Got 0 instead"),
        (dict(weights="imagenet21k"), r"'weights' parameter .* 'imagenet'.*Got 'imagenet21k'"),
        (dict(on_error="ignore"), r"'on_error' parameter .* Got 'ignore'"),
        (dict(background="grey"), r"'background' parameter .* Got 'grey'"),
        (dict(image_shape=(0, 4)), r"'image_shape' parameter .* Got \(0, 4\)"),
        (dict(random_state=-1), r"'random_state' parameter .* Got -1"),
    ],
)
def test_bad_parameters_are_named_in_fit(images, params, match):
    extractor = tiny_extractor(**params)  # __init__ only stores
    with pytest.raises(ValueError, match=match):
        extractor.fit(images)


def test_bad_files_in_transform(tmp_path, image_files, images):
    extractor = tiny_extractor().fit(images)
    (tmp_path / "bad.jpg").write_text("hello")
    with pytest.raises(ValueError, match=r"bad.jpg.*not an image format"):
        extractor.transform(image_files[:2] + [str(tmp_path / "bad.jpg")])
    with pytest.raises(ValueError, match="no such file"):
        extractor.transform([str(tmp_path / "missing.png")])


def test_on_error_skip_returns_nan_rows_in_place(tmp_path, image_files, images):
    extractor = tiny_extractor(on_error="skip", batch_size=3).fit(images)
    bad = str(tmp_path / "corrupt.png")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    paths = image_files[:4] + [bad] + image_files[4:]
    features = extractor.transform(paths)
    assert extractor.failed_files_ == [bad]
    assert np.isnan(features[4]).all() and not np.isnan(np.delete(features, 4, 0)).any()
    np.testing.assert_allclose(np.delete(features, 4, 0), extractor.transform(image_files),
                               rtol=1e-5, atol=1e-6)
    assert extractor.failed_files_ == []  # the record is of the last transform


def test_transform_before_fit_raises(images):
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        tiny_extractor().transform(images)


def test_nan_pixels_are_rejected(images):
    X = images.astype(float)
    X[3, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"NaN or infinite pixel values \(first in image 3\)"):
        tiny_extractor().fit(images).transform(X)


def test_verbose_shows_one_progress_bar(images, capsys):
    tiny_extractor(verbose=1).fit(images).transform(images)
    out = capsys.readouterr().out
    assert "10/10" in out
    tiny_extractor(verbose=0).fit(images).transform(images)
    assert capsys.readouterr().out == ""


# --------------------------------------------------------------------------- precision, cache
def test_bfloat16_features_are_close_to_float32_and_the_policy_is_restored(images):
    import keras

    full = tiny_extractor().fit_transform(images)
    half_extractor = tiny_extractor(precision="bfloat16").fit(images)
    half = half_extractor.transform(images)
    assert keras.config.dtype_policy().name == "float32"
    assert half.dtype == np.float32
    conv = half_extractor.base_model_.get_layer("block1_conv")
    assert conv.dtype_policy.name == "mixed_bfloat16" and conv.kernel.dtype == "float32"
    assert half_extractor.model_.get_layer("preprocessing").dtype_policy.name == "float32"
    cosine = (full * half).sum(1) / (np.linalg.norm(full, axis=1) * np.linalg.norm(half, axis=1))
    assert cosine.min() > 0.99
    assert not np.array_equal(full, half)  # it did compute in bfloat16


def test_bad_precision():
    with pytest.raises(InvalidParameterError,
                       match=r"'precision' parameter .* 'float32' or 'bfloat16'. Got 'fp8'"):
        tiny_extractor(precision="fp8").fit(np.zeros((1, 16, 16, 3)))


@pytest.mark.parametrize("cache", ["memory", "folder"])
def test_feature_cache_makes_repeated_transforms_free(model_calls, tmp_path, images, cache):
    from skconvnet.caching import clear_memory_cache

    clear_memory_cache()
    cache = str(tmp_path / "features") if cache == "folder" else cache
    calls = model_calls
    plain = tiny_extractor().fit_transform(images)
    first = tiny_extractor(cache=cache).fit_transform(images)
    again = tiny_extractor(cache=cache).fit(images).transform(images[::-1])
    assert calls == [len(images)]  # the second transform computed nothing
    np.testing.assert_allclose(first, plain, rtol=1e-6)
    np.testing.assert_array_equal(again, first[::-1])
    tiny_extractor(cache=cache, pooling="max").fit_transform(images)  # another network
    assert calls == [len(images), len(images)]


def test_feature_cache_skips_unreadable_files_and_random_networks(model_calls, tmp_path,
                                                                  image_files, images):
    folder = tmp_path / "features"
    calls = model_calls
    paths = [image_files[0], str(tmp_path / "missing.png"), image_files[1]]
    extractor = tiny_extractor(cache=str(folder), on_error="skip").fit(paths)
    features = extractor.transform(paths)
    assert np.isnan(features[1]).all() and np.isfinite(features[[0, 2]]).all()
    assert extractor.failed_files_ == [paths[1]]
    assert len(list(folder.rglob("*.npz"))) == 2
    extractor.transform(paths)
    assert calls == [3, 1]  # only the unreadable file is tried again
    tiny_extractor(cache=str(tmp_path / "random"), random_state=None).fit_transform(images)
    assert not (tmp_path / "random").exists()  # a new random network each build: no cache
