"""skconvnet.export: fitted estimators and pipelines as ONNX graphs (and SavedModels).

onnxruntime must give what skconvnet gives: features within 1e-4, the same labels, the same
probabilities. The quick tests use the tiny base; the slow ones VGG16 (random weights) and
the offline EfficientNet-Lite0, as issue #20 asks.
"""

import json

import keras
import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

import skconvnet
from skconvnet import ConvFeatureExtractor, FineTunedConvClassifier, export
from skconvnet.exporting import ONNX_OPSET, to_onnx
from skconvnet.testing import (
    HAVE_LITE0,
    make_shapes,
    photo_patches,
    tiny_classifier,
    tiny_extractor,
    tiny_regressor,
)

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("skl2onnx")
pytest.importorskip("tf2onnx")


def run_onnx(path, images):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"images": images})


@pytest.fixture(scope="module")
def shapes():
    return make_shapes(24, size=16)


def test_extractor_features_match_transform(tmp_path, shapes):
    X, _ = shapes
    extractor = tiny_extractor().fit(X)
    path = export(extractor, tmp_path / "features.onnx")
    (features,) = run_onnx(path, X)
    assert features.shape == (len(X), extractor.n_features_out_)
    np.testing.assert_allclose(features, extractor.transform(X), atol=1e-4)


@pytest.mark.parametrize("labels", [np.array([0, 1]), np.array(["cat", "dog", "emu"])],
                         ids=["binary-int", "three-strings"])
def test_classifier_labels_and_probabilities_match(tmp_path, shapes, labels):
    X, y = shapes
    y = labels[np.arange(len(X)) % len(labels)] if len(labels) > 2 else labels[y]
    classifier = tiny_classifier(unfreeze=1).fit(X, y)
    predicted, probabilities = run_onnx(export(classifier, tmp_path / "c.onnx"), X)
    np.testing.assert_array_equal(predicted, classifier.predict(X))
    np.testing.assert_allclose(probabilities, classifier.predict_proba(X), atol=1e-5)


def test_regressor_predictions_match(tmp_path, shapes):
    X, y = shapes
    targets = np.column_stack([y * 3.0 + 10, -y + 0.5])
    regressor = tiny_regressor().fit(X, targets)
    (predicted,) = run_onnx(export(regressor, tmp_path / "r.onnx"), X)
    np.testing.assert_allclose(predicted, regressor.predict(X), atol=1e-4)


def test_a_whole_pipeline_is_one_graph(tmp_path, shapes):
    X, y = shapes
    pipe = make_pipeline(tiny_extractor(), StandardScaler(), PCA(4, random_state=0),
                         LogisticRegression()).fit(X, y)
    path = export(pipe, tmp_path / "pipe.onnx")
    predicted, probabilities = run_onnx(path, X)
    np.testing.assert_array_equal(predicted, pipe.predict(X))
    np.testing.assert_allclose(probabilities, pipe.predict_proba(X), atol=1e-5)


def test_images_of_another_size_are_resized_inside_the_graph(tmp_path):
    # Pillow (skconvnet) and ONNX Resize compute the same antialiased bilinear filter; Pillow
    # in fixed point, so pixels may differ by one grey level: features agree closely, not
    # exactly.
    X, _, _ = photo_patches(n_per_photo=4, size=40)
    extractor = tiny_extractor().fit(X)
    (features,) = run_onnx(export(extractor, tmp_path / "e.onnx"), X)
    expected = extractor.transform(X)
    assert np.abs(features - expected).max() <= 0.02 * np.abs(expected).max()


def test_metadata_names_classes_version_and_input(shapes):
    X, y = shapes
    classifier = tiny_classifier().fit(X, np.array(["no", "yes"])[y])
    model = to_onnx(classifier)
    metadata = {entry.key: entry.value for entry in model.metadata_props}
    assert json.loads(metadata["classes"]) == ["no", "yes"]
    assert metadata["input_size"] == "16"
    assert metadata["keras_backend"] == keras.backend.backend()
    assert "skconvnet_version" in metadata
    assert model.producer_name == "skconvnet"
    assert {o.domain: o.version for o in model.opset_import}.get("", ONNX_OPSET) == ONNX_OPSET
    assert [i.name for i in model.graph.input] == ["images"]


def test_a_failed_export_leaves_no_file(tmp_path, shapes):
    X, _ = shapes
    target = tmp_path / "model.onnx"
    with pytest.raises(NotFittedError):
        export(tiny_extractor(), target)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("make, error, match", [
    (lambda X, y: LogisticRegression().fit(X.reshape(len(X), -1), y), TypeError,
     "export takes a fitted ConvFeatureExtractor.*got LogisticRegression"),
    (lambda X, y: make_pipeline(FunctionTransformer(), tiny_extractor()).fit(X), TypeError,
     "Pipeline whose first step.*starting with FunctionTransformer"),
    (lambda X, y: tiny_classifier(), NotFittedError, "not fitted"),
    (lambda X, y: tiny_extractor(precision="bfloat16").fit(X), ValueError,
     "Only float32 networks can be exported.*precision='bfloat16'"),
    (lambda X, y: tiny_classifier().fit(X, np.column_stack([y, 1 - y])), ValueError,
     "single-label classifiers.*multi-label"),
])
def test_what_cannot_be_exported_says_why(tmp_path, shapes, make, error, match):
    X, y = shapes
    with pytest.raises(error, match=match):
        export(make(X, y), tmp_path / "m.onnx")


def test_an_unknown_format_is_named(tmp_path, shapes):
    X, _ = shapes
    with pytest.raises(ValueError, match=r"'format'.*\('onnx', 'saved_model'\).*'tflite'"):
        export(tiny_extractor().fit(X), tmp_path / "m", format="tflite")


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="SavedModel is TensorFlow's")
def test_saved_model_serves_labels_and_probabilities(tmp_path, shapes):
    import tensorflow as tf

    X, y = shapes
    classifier = tiny_classifier().fit(X, np.array(["a", "b"])[y])
    loaded = tf.saved_model.load(str(export(classifier, tmp_path / "sm", format="saved_model")))
    served = loaded.serve(tf.constant(X))
    np.testing.assert_array_equal(served["label"].numpy().astype(str), classifier.predict(X))
    np.testing.assert_allclose(served["probabilities"].numpy(), classifier.predict_proba(X),
                               atol=1e-5)
    with pytest.raises(TypeError, match="for a pipeline use format='onnx'"):
        export(make_pipeline(tiny_extractor(), LogisticRegression()).fit(X, y),
               tmp_path / "p", format="saved_model")


@pytest.mark.skipif(keras.backend.backend() == "tensorflow", reason="tested on other backends")
def test_saved_model_elsewhere_points_to_onnx(tmp_path, shapes):
    X, _ = shapes
    with pytest.raises(ValueError, match="needs the TensorFlow backend.*format='onnx'"):
        export(tiny_extractor().fit(X), tmp_path / "sm", format="saved_model")


@pytest.mark.slow
@pytest.mark.parametrize("base, weights, size", [
    ("vgg16", None, 48),
    pytest.param("efficientnet_lite0", "imagenet", 96, marks=pytest.mark.skipif(
        not HAVE_LITE0, reason="needs the [pretrained] extra")),
])
def test_real_bases_match_within_1e_4(tmp_path, base, weights, size):
    X, y, _ = photo_patches(n_per_photo=12, size=size, seed=1)
    common = dict(weights=weights, input_size=size, random_state=0)
    extractor = ConvFeatureExtractor(base, **common).fit(X)
    (features,) = run_onnx(export(extractor, tmp_path / "e.onnx"), X)
    np.testing.assert_allclose(features, extractor.transform(X), atol=1e-4)

    pipe = make_pipeline(ConvFeatureExtractor(base, **common), StandardScaler(),
                         LogisticRegression(max_iter=1000)).fit(X, y)
    predicted, probabilities = run_onnx(export(pipe, tmp_path / "p.onnx"), X)
    np.testing.assert_array_equal(predicted, pipe.predict(X))
    np.testing.assert_allclose(probabilities, pipe.predict_proba(X), atol=1e-4)

    classifier = FineTunedConvClassifier(base, warmup_epochs=1, epochs=1, unfreeze=2,
                                         learning_rate=1e-4, **common).fit(X, y)
    predicted, probabilities = run_onnx(export(classifier, tmp_path / "c.onnx"), X)
    np.testing.assert_array_equal(predicted, classifier.predict(X))
    np.testing.assert_allclose(probabilities, classifier.predict_proba(X), atol=1e-4)
    assert skconvnet.export is export
