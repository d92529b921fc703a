"""Models that leave Python: fitted estimators and pipelines as one ONNX graph.

``export(estimator, path)`` writes an ONNX file that takes uint8 images ``(n, h, w, 3)`` of any
size and does everything ``transform``/``predict`` do: resize to the model's input size,
the base's preprocessing, the network, and for classifiers the probabilities and labels. It
runs in onnxruntime with no TensorFlow, Keras or skconvnet installed.

How: the Keras network is exported by Keras itself (``Model.export(format="onnx")``, which
uses tf2onnx on TensorFlow and the backend's own exporter elsewhere). skl2onnx knows the rest
of scikit-learn; the converters registered here teach it the three skconvnet estimators by
embedding that network graph, so a ``Pipeline([ConvFeatureExtractor, StandardScaler,
LogisticRegression])`` converts as one graph. Needs ``pip install "skconvnet[export]"``.
"""

import importlib
import importlib.metadata
import json
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import keras
import numpy as np
from sklearn.base import is_classifier
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted

from ._fileio import atomic_write
from .extraction import ConvFeatureExtractor
from .finetune import FineTunedConvClassifier
from .regression import FineTunedConvRegressor

__all__ = ["ONNX_OPSET", "export", "to_onnx"]

#: The ONNX opset of exported graphs: 18 has ``Resize`` with ``antialias`` and ``axes``.
ONNX_OPSET = 18
_ML_OPSET = 3
_FORMATS = ("onnx", "saved_model")
_ESTIMATORS = (ConvFeatureExtractor, FineTunedConvClassifier, FineTunedConvRegressor)


def _package_version():
    try:
        return importlib.metadata.version("skconvnet")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout, not installed
        return "unknown"


def _require(module_name):
    """Import an optional dependency of the ``export`` extra, or say how to install it."""
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportError(
            f"Exporting to ONNX needs {module_name.split('.')[0]}: "
            'pip install "skconvnet[export]".'
        ) from exc


# --- the network graph ----------------------------------------------------------------------

def _export_network_file(model, size, path):
    """Keras' ONNX export of ``model``, float32 input ``(n, size, size, 3)``, to ``path``."""
    spec = keras.InputSpec(shape=(None, size, size, 3), dtype="float32")
    with warnings.catch_warnings():
        # Keras' tf2onnx patch probes ``np.object``, which numpy 2 warns about.
        warnings.filterwarnings("ignore", message=".*np.object", category=FutureWarning)
        model.export(str(path), format="onnx", input_signature=[spec],
                     opset_version=ONNX_OPSET, verbose=False)


def _export_through_tensorflow(model, size, path):
    """The same export in a TensorFlow process, for networks built on another backend.

    Keras exports JAX networks through jax2onnx and PyTorch ones through torch.onnx; the
    jax2onnx graph of a max-pooling network does not run in onnxruntime (jax2onnx 0.17
    writes ``MaxPool`` with a 4-D window: "Unsupported pooling size"), and torch.onnx
    needs fixed input shapes. TensorFlow is a dependency of skconvnet, so the network is
    saved in Keras' backend-neutral format and exported by tf2onnx in a child process.
    """
    saved = Path(path).with_suffix(".keras")
    model.save(saved)
    environment = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, "-m", "skconvnet.exporting", str(saved), str(size), str(path)],
        env=environment, capture_output=True, text=True, timeout=1800, check=False)
    if result.returncode != 0:
        raise RuntimeError("Exporting the network through TensorFlow failed:\n"
                           + result.stderr[-3000:])


def _network_graph(estimator):
    """The estimator's Keras network as an ONNX graph: float32 ``(n, s, s, 3)`` in [0, 255]."""
    onnx = _require("onnx")
    if estimator.precision != "float32":
        raise ValueError(
            f"Only float32 networks can be exported; this {type(estimator).__name__} has "
            f"precision={estimator.precision!r}. Refit it with precision='float32' (the "
            "weights are the same) and export that."
        )
    _require("tf2onnx")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "network.onnx"
        if keras.backend.backend() == "tensorflow":
            _export_network_file(estimator.model_, estimator.input_size_, path)
        else:
            _export_through_tensorflow(estimator.model_, estimator.input_size_, path)
        model = onnx.load(str(path))
    if len(model.graph.input) != 1 or len(model.graph.output) != 1:
        raise RuntimeError("The exported network has more than one input or output.")
    return model.graph


def _embed(graph, scope, container, input_name, prefix):
    """Copy ``graph`` into the container, reading ``input_name``; returns its output's name."""
    onnx = _require("onnx")
    names = {graph.input[0].name: input_name}

    def renamed(name):
        if not name:  # an omitted optional input
            return name
        if name not in names:
            names[name] = scope.get_unique_variable_name(f"{prefix}_{name}")
        return names[name]

    for tensor in graph.initializer:
        container.add_initializer(renamed(tensor.name), tensor.data_type, list(tensor.dims),
                                  tensor)
    for node in graph.node:
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        version = ONNX_OPSET if node.domain in ("", "ai.onnx") else None
        container.add_node(node.op_type, [renamed(n) for n in node.input],
                           [renamed(n) for n in node.output], op_domain=node.domain,
                           op_version=version,
                           name=scope.get_unique_operator_name(f"{prefix}_{node.op_type}"),
                           **attributes)
    return renamed(graph.output[0].name)


def _images_to_network_input(scope, container, images, size):
    """uint8 ``(n, h, w, 3)`` -> float32 ``(n, size, size, 3)``, resized as skconvnet does.

    skconvnet resizes uint8 images with Pillow's bilinear filter, which widens its support
    when it shrinks (antialiasing), renormalises the weights at the borders and rounds to
    uint8; ONNX's ``Resize`` with ``antialias=1, exclude_outside=1`` is the same filter.
    Pillow computes in fixed point, so a resized pixel may differ by one grey level (measured
    on photo crops, 200 px to 96 and 160 px: at most 1). Images already at ``size`` pass
    through unchanged.
    """
    onnx_proto = _require("onnx").TensorProto
    as_float = scope.get_unique_variable_name("images_float")
    container.add_node("Cast", [images], [as_float], to=onnx_proto.FLOAT,
                       name=scope.get_unique_operator_name("Cast"))
    # roi and scales are given as empty tensors rather than omitted ("" inputs), which
    # skl2onnx's graph sorting does not accept.
    roi, scales, sizes = (scope.get_unique_variable_name(n)
                          for n in ("resize_roi", "resize_scales", "resize_sizes"))
    container.add_initializer(roi, onnx_proto.FLOAT, [0], [])
    container.add_initializer(scales, onnx_proto.FLOAT, [0], [])
    container.add_initializer(sizes, onnx_proto.INT64, [2], [size, size])
    resized = scope.get_unique_variable_name("images_resized")
    container.add_node("Resize", [as_float, roi, scales, sizes], [resized], op_version=ONNX_OPSET,
                       mode="linear", antialias=1, exclude_outside=1, axes=[1, 2],
                       coordinate_transformation_mode="half_pixel",
                       name=scope.get_unique_operator_name("Resize"))
    rounded = scope.get_unique_variable_name("images_rounded")
    container.add_node("Round", [resized], [rounded], name=scope.get_unique_operator_name("Round"))
    low, high = (scope.get_unique_variable_name(n) for n in ("pixel_min", "pixel_max"))
    container.add_initializer(low, onnx_proto.FLOAT, [], [0.0])
    container.add_initializer(high, onnx_proto.FLOAT, [], [255.0])
    pixels = scope.get_unique_variable_name("pixels")
    container.add_node("Clip", [rounded, low, high], [pixels],
                       name=scope.get_unique_operator_name("Clip"))
    return pixels


def _network_outputs(scope, operator, container):
    estimator = operator.raw_operator
    pixels = _images_to_network_input(scope, container, operator.inputs[0].full_name,
                                      estimator.input_size_)
    return _embed(_network_graph(estimator), scope, container, pixels,
                  prefix=type(estimator).__name__)


# --- skl2onnx converters: shapes, then graphs ------------------------------------------------

def _float_tensor(*dims):
    return _require("skl2onnx.common.data_types").FloatTensorType(list(dims))


def _extractor_shape(operator):
    n = operator.inputs[0].get_first_dimension()
    operator.outputs[0].type = _float_tensor(n, operator.raw_operator.n_features_out_)


def _convert_extractor(scope, operator, container):
    features = _network_outputs(scope, operator, container)
    container.add_node("Identity", [features], [operator.outputs[0].full_name],
                       name=scope.get_unique_operator_name("Identity"))


def _regressor_shape(operator):
    n = operator.inputs[0].get_first_dimension()
    operator.outputs[0].type = _float_tensor(n, operator.raw_operator.n_outputs_)


def _convert_regressor(scope, operator, container):
    estimator = operator.raw_operator
    onnx_proto = _require("onnx").TensorProto
    standardised = _network_outputs(scope, operator, container)
    scale, mean = (scope.get_unique_variable_name(n) for n in ("target_scale", "target_mean"))
    container.add_initializer(scale, onnx_proto.FLOAT, [estimator.n_outputs_],
                              np.asarray(estimator.target_scale_, np.float32).ravel().tolist())
    container.add_initializer(mean, onnx_proto.FLOAT, [estimator.n_outputs_],
                              np.asarray(estimator.target_mean_, np.float32).ravel().tolist())
    scaled = scope.get_unique_variable_name("scaled")
    container.add_node("Mul", [standardised, scale], [scaled],
                       name=scope.get_unique_operator_name("Mul"))
    container.add_node("Add", [scaled, mean], [operator.outputs[0].full_name],
                       name=scope.get_unique_operator_name("Add"))


def _label_type(classes):
    types = _require("skl2onnx.common.data_types")
    if np.asarray(classes).dtype.kind in "iub":
        return types.Int64TensorType([None])
    return types.StringTensorType([None])


def _parse_classifier(scope, model, inputs, custom_parsers=None):
    """A classifier's two outputs, as skl2onnx gives scikit-learn's: label, probabilities."""
    operator = scope.declare_local_operator(_ALIASES[FineTunedConvClassifier], model)
    operator.inputs = inputs
    label = scope.declare_local_variable("label", _label_type(model.classes_))
    probabilities = scope.declare_local_variable("probabilities", _float_tensor(None, None))
    operator.outputs.extend([label, probabilities])
    return operator.outputs


def _classifier_shape(operator):
    estimator = operator.raw_operator
    n = operator.inputs[0].get_first_dimension()
    operator.outputs[0].type = _label_type(estimator.classes_)
    operator.outputs[0].type.shape = [n]
    operator.outputs[1].type = _float_tensor(n, len(estimator.classes_))


def _convert_classifier(scope, operator, container):
    """Network -> probabilities as ``predict_proba`` makes them -> the most probable label."""
    estimator = operator.raw_operator
    onnx_proto = _require("onnx").TensorProto
    scores = _network_outputs(scope, operator, container)

    def node(op_type, inputs, **attributes):
        output = scope.get_unique_variable_name(op_type.lower())
        container.add_node(op_type, inputs, [output],
                           name=scope.get_unique_operator_name(op_type), **attributes)
        return output

    if estimator.n_outputs_ == 1:  # one sigmoid unit: P(classes_[1]); predict_proba adds 1 - p
        one = scope.get_unique_variable_name("one")
        container.add_initializer(one, onnx_proto.FLOAT, [], [1.0])
        scores = node("Concat", [node("Sub", [one, scores]), scores], axis=1)
    total = node("ReduceSum", [scores, _axes(scope, container)], keepdims=1)
    container.add_node("Div", [scores, total], [operator.outputs[1].full_name],
                       name=scope.get_unique_operator_name("Div"))
    best = node("ArgMax", [operator.outputs[1].full_name], axis=1, keepdims=0)
    classes = scope.get_unique_variable_name("classes")
    values = np.asarray(estimator.classes_)
    if values.dtype.kind in "iub":
        container.add_initializer(classes, onnx_proto.INT64, [len(values)],
                                  values.astype(np.int64).tolist())
    else:
        container.add_initializer(classes, onnx_proto.STRING, [len(values)],
                                  [str(v).encode() for v in values])
    container.add_node("Gather", [classes, best], [operator.outputs[0].full_name], axis=0,
                       name=scope.get_unique_operator_name("Gather"))


def _axes(scope, container):
    name = scope.get_unique_variable_name("axis_1")
    container.add_initializer(name, _require("onnx").TensorProto.INT64, [1], [1])
    return name


_ALIASES = {
    ConvFeatureExtractor: "SkconvnetConvFeatureExtractor",
    FineTunedConvClassifier: "SkconvnetFineTunedConvClassifier",
    FineTunedConvRegressor: "SkconvnetFineTunedConvRegressor",
}


def _register_converters():
    skl2onnx = _require("skl2onnx")
    skl2onnx.update_registered_converter(
        ConvFeatureExtractor, _ALIASES[ConvFeatureExtractor], _extractor_shape,
        _convert_extractor)
    skl2onnx.update_registered_converter(
        FineTunedConvRegressor, _ALIASES[FineTunedConvRegressor], _regressor_shape,
        _convert_regressor)
    skl2onnx.update_registered_converter(
        FineTunedConvClassifier, _ALIASES[FineTunedConvClassifier], _classifier_shape,
        _convert_classifier, parser=_parse_classifier)
    return skl2onnx


# --- checks and the public function ----------------------------------------------------------

def _steps(estimator):
    return [step for _, step in estimator.steps] if isinstance(estimator, Pipeline) else [estimator]


def _check_exportable(estimator):
    steps = _steps(estimator)
    ours = [step for step in steps if isinstance(step, _ESTIMATORS)]
    if not ours or steps[0] is not ours[0]:
        raise TypeError(
            "export takes a fitted ConvFeatureExtractor, FineTunedConvClassifier or "
            "FineTunedConvRegressor, or a Pipeline whose first step is one of them; got "
            f"{type(estimator).__name__}"
            + (f" starting with {type(steps[0]).__name__}" if isinstance(estimator, Pipeline)
               else "") + "."
        )
    for step in steps:
        if step != "passthrough" and step is not None:
            check_is_fitted(step)
    for step in ours:
        if getattr(step, "_multilabel", False):
            raise ValueError(
                "export supports single-label classifiers; this FineTunedConvClassifier was "
                "fitted on multi-label targets."
            )
        if getattr(step, "tta", 0):
            # The exported graph runs the network once per image: it would silently give
            # other predictions than the estimator's average over views.
            raise ValueError(
                f"export runs the network on the image alone; this {type(step).__name__} has "
                f"tta={step.tta!r} (predictions averaged over test-time views). Set tta=0 "
                "(set_params(tta=0), no refit needed) to export it."
            )
    return ours[0]


def _metadata(estimator, first):
    final = _steps(estimator)[-1]
    metadata = {
        "skconvnet_version": _package_version(),
        "keras_backend": keras.backend.backend(),
        "estimator": repr(estimator),
        "input": "uint8 images (n, h, w, 3), RGB, any h and w",
        "input_size": str(first.input_size_),
        "base": str(first.base) if isinstance(first.base, str) else "custom keras.Model",
    }
    if hasattr(final, "classes_"):
        metadata["classes"] = json.dumps(np.asarray(final.classes_).tolist())
    return metadata


def _final_options(estimator):
    """skl2onnx options: plain probability tensors from scikit-learn classifiers (no ZipMap)."""
    final = _steps(estimator)[-1]
    if is_classifier(final) and not isinstance(final, FineTunedConvClassifier):
        return {id(final): {"zipmap": False}}
    return None


def to_onnx(estimator):
    """The ``onnx.ModelProto`` that :func:`export` writes (see there)."""
    first = _check_exportable(estimator)
    skl2onnx = _register_converters()
    types = _require("skl2onnx.common.data_types")
    model = skl2onnx.to_onnx(
        estimator, initial_types=[("images", types.UInt8TensorType([None, None, None, 3]))],
        target_opset={"": ONNX_OPSET, "ai.onnx.ml": _ML_OPSET},
        options=_final_options(estimator))
    for key, value in _metadata(estimator, first).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.producer_name = "skconvnet"
    model.producer_version = _package_version()
    return model


def export(estimator, path, *, format="onnx"):
    """Write a fitted estimator or pipeline as a model that runs without Python's ML stack.

    Parameters
    ----------
    estimator : ConvFeatureExtractor, FineTunedConvClassifier, FineTunedConvRegressor or Pipeline
        Fitted. A ``Pipeline`` must start with a ConvFeatureExtractor (or end with a
        fine-tuned estimator); its other steps are converted by skl2onnx (StandardScaler,
        PCA, LogisticRegression, SVC, ... everything skl2onnx knows).
    path : str or path-like
        The file to write (``.onnx``), or for ``format="saved_model"`` the folder.
    format : {"onnx", "saved_model"}, default="onnx"
        ``"onnx"``: one ONNX graph (opset 18). Input ``images``: uint8 ``(n, h, w, 3)``
        RGB of any size, resized inside the graph to the model's input size as
        skconvnet resizes them. Outputs: the features (extractor), ``label`` and
        ``probabilities`` (classifiers; columns in ``classes_`` order), or the predictions
        (regressor). The model's metadata holds ``classes`` (JSON), the skconvnet
        version, the input size and the base. ``"saved_model"``: a TensorFlow SavedModel
        of the same computation, for TensorFlow Serving (TensorFlow backend only,
        skconvnet estimators only).

    Returns
    -------
    path : pathlib.Path
        Where the model was written.

    Raises
    ------
    TypeError
        If ``estimator`` is not a skconvnet estimator or a pipeline starting with one.
    ValueError
        If the format is unknown, the estimator was fitted with ``precision="bfloat16"``
        or on multi-label targets.
    sklearn.exceptions.NotFittedError
        If a step is not fitted.

    Examples
    --------
    >>> import tempfile
    >>> import numpy as np
    >>> import onnxruntime
    >>> from skconvnet import export
    >>> from skconvnet.testing import make_shapes, tiny_classifier
    >>> X, y = make_shapes(24)
    >>> clf = tiny_classifier().fit(X, y)
    >>> path = export(clf, tempfile.mkdtemp() + "/shapes.onnx")
    >>> labels, proba = onnxruntime.InferenceSession(path).run(None, {"images": X})
    >>> bool((labels == clf.predict(X)).all())
    True
    >>> float(np.abs(proba - clf.predict_proba(X)).max()) < 1e-5
    True
    """
    if format not in _FORMATS:
        raise ValueError(f"The 'format' parameter of export must be one of {_FORMATS}; "
                         f"got {format!r}.")
    path = Path(path)
    if format == "saved_model":
        return _export_saved_model(estimator, path)
    model = to_onnx(estimator)
    with atomic_write(path) as partial:
        Path(partial).write_bytes(model.SerializeToString())
    return path


def _export_saved_model(estimator, path):
    """The same computation as a TensorFlow SavedModel, endpoint ``serve``."""
    if keras.backend.backend() != "tensorflow":
        raise ValueError(
            "format='saved_model' needs the TensorFlow backend (KERAS_BACKEND=tensorflow); "
            f"this process runs {keras.backend.backend()!r}. Use format='onnx' instead."
        )
    if isinstance(estimator, Pipeline) or not isinstance(estimator, _ESTIMATORS):
        raise TypeError("format='saved_model' takes a fitted skconvnet estimator (for a "
                        f"pipeline use format='onnx'); got {type(estimator).__name__}.")
    _check_exportable(estimator)
    tf = _require("tensorflow")
    size, model = estimator.input_size_, estimator.model_
    outputs_of = _SAVED_MODEL_OUTPUTS[type(estimator)]

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)])
    def serve(images):
        pixels = tf.image.resize(tf.cast(images, tf.float32), (size, size), method="bilinear",
                                 antialias=True)
        pixels = tf.clip_by_value(tf.round(pixels), 0.0, 255.0)
        return outputs_of(tf, estimator, model(pixels, training=False))

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", serve)
    archive.write_out(str(path), verbose=False)
    return path


def _features(tf, estimator, outputs):
    return {"features": outputs}


def _predictions(tf, estimator, outputs):
    scale = tf.constant(np.asarray(estimator.target_scale_, np.float32).ravel())
    mean = tf.constant(np.asarray(estimator.target_mean_, np.float32).ravel())
    return {"predictions": outputs * scale + mean}


def _labels_and_probabilities(tf, estimator, outputs):
    if estimator.n_outputs_ == 1:
        outputs = tf.concat([1.0 - outputs, outputs], axis=1)
    probabilities = outputs / tf.reduce_sum(outputs, axis=1, keepdims=True)
    values = np.asarray(estimator.classes_)
    classes = tf.constant(values if values.dtype.kind in "iub" else values.astype(str))
    return {"label": tf.gather(classes, tf.argmax(probabilities, axis=1)),
            "probabilities": probabilities}


_SAVED_MODEL_OUTPUTS = {
    ConvFeatureExtractor: _features,
    FineTunedConvClassifier: _labels_and_probabilities,
    FineTunedConvRegressor: _predictions,
}


if __name__ == "__main__":  # the TensorFlow child of _export_through_tensorflow
    _saved, _size, _target = sys.argv[1:4]
    _export_network_file(keras.saving.load_model(_saved, safe_mode=True), int(_size), _target)
