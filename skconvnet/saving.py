"""Save and load fitted estimators without pickle: JSON parameters + a ``.keras`` model.

A pickle (``joblib.dump``) runs code when it is loaded, so a pickled model from
someone else is as dangerous as their script. :func:`save` writes one zip file
holding ``skconvnet.json`` (the estimator's class, parameters and fitted
attributes, as plain JSON) and ``model.keras`` (the trained network in Keras'
own format). :func:`load` accepts only the package's estimator classes, decodes
the JSON without evaluating anything, validates the parameters as ``fit`` does,
loads the network with ``safe_mode=True`` (no lambdas, no arbitrary code) and
copies its weights into a network rebuilt by this package's code.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile

import keras
import numpy as np

from ._fileio import atomic_write
from .exceptions import UnsafeModelFileError
from .extraction import ConvFeatureExtractor
from .finetune import FineTunedConvClassifier
from .registry import get_base_spec

__all__ = ["UnsafeModelFileError", "load", "save"]

FORMAT = "skconvnet-estimator"
FORMAT_VERSION = 2
_ESTIMATORS = {cls.__name__: cls for cls in (ConvFeatureExtractor, FineTunedConvClassifier)}
# dtypes numpy may rebuild fitted arrays with: no object pickles, no records.
_ARRAY_KINDS = set("biufU")


# --------------------------------------------------------------------------- JSON
def _encode(value, where):
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float, np.integer, np.floating, np.bool_)):
        return value.item() if isinstance(value, np.generic) else value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, tuple):
        return {"tuple": [_encode(v, where) for v in value]}
    if isinstance(value, list):
        return [_encode(v, where) for v in value]
    if isinstance(value, dict):
        return {"dict": [[_encode(k, where), _encode(v, where)] for k, v in value.items()]}
    if isinstance(value, np.ndarray):
        kind = value.dtype.kind
        if kind == "O" and all(isinstance(v, str) for v in value.ravel()):
            return {"ndarray": value.tolist(), "dtype": "object"}
        if kind in _ARRAY_KINDS:
            return {"ndarray": value.tolist(), "dtype": value.dtype.str}
    raise TypeError(
        f"skconvnet.save cannot store {where}={value!r} (a {type(value).__name__}): only "
        "None, bools, numbers, strings, paths, and lists, tuples, dicts and arrays of "
        "those. Use joblib.dump for estimators holding other objects."
    )


def _decode(value):
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if isinstance(value, dict):
        if set(value) == {"tuple"}:
            return tuple(_decode(v) for v in value["tuple"])
        if set(value) == {"dict"}:
            return {_hashable(_decode(k)): _decode(v) for k, v in value["dict"]}
        if set(value) == {"ndarray", "dtype"}:
            dtype = np.dtype(value["dtype"]) if value["dtype"] != "object" else object
            if dtype is not object and dtype.kind not in _ARRAY_KINDS:
                raise UnsafeModelFileError(f"Refusing array dtype {value['dtype']!r}.")
            return np.array(value["ndarray"], dtype=dtype)
        raise UnsafeModelFileError(f"Unknown value in the model file: {value!r}.")
    return value


def _hashable(key):
    return tuple(key) if isinstance(key, list) else key


# --------------------------------------------------------------------------- save / load
def save(estimator, path):
    """Save a fitted skconvnet estimator to one file that loads without pickle.

    Parameters
    ----------
    estimator : ConvFeatureExtractor or FineTunedConvClassifier
        A fitted estimator whose ``base`` is a registered name (a ``keras.Model``
        base is code: share it with ``joblib`` and trust).
    path : str or os.PathLike
        The file to write (by convention ``*.skconvnet``); replaced atomically.

    Returns
    -------
    path : str
        The path written.

    See Also
    --------
    load : Read the file back.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> import skconvnet
    >>> import skconvnet.testing  # registers the tiny test base
    >>> X = np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    >>> extractor = skconvnet.ConvFeatureExtractor("tiny", weights=None, input_size=16,
    ...                                            random_state=0).fit(X)
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "extractor.skconvnet"
    >>> loaded = skconvnet.load(skconvnet.save(extractor, path))
    >>> bool(np.array_equal(loaded.transform(X), extractor.transform(X)))
    True
    """
    name = type(estimator).__name__
    if type(estimator) not in _ESTIMATORS.values():
        raise TypeError(
            f"skconvnet.save saves ConvFeatureExtractor and FineTunedConvClassifier "
            f"estimators; got a {name}. Use joblib.dump for other objects."
        )
    model = estimator.model_  # raises NotFittedError
    if not isinstance(estimator.base, str):
        raise TypeError(
            f"skconvnet.save needs a registered base name as {name}.base; got a "
            f"{type(estimator.base).__name__}. A keras.Model base is code: save it with "
            "model.save(...) and share the estimator with joblib.dump."
        )
    params = {key: _encode(value, key) for key, value in estimator.get_params().items()}
    fitted = {
        key: _encode(value, key) for key, value in vars(estimator).items()
        if key.endswith("_") and not key.startswith("_")
    }
    # The network state's weights travel as model.keras; its record as JSON.
    network = _encode(estimator._get_network_state()["resolved"], "network")
    path = os.fspath(path)
    with tempfile.TemporaryDirectory() as scratch:
        keras_file = os.path.join(scratch, "model.keras")
        model.save(keras_file)
        with open(keras_file, "rb") as file:
            keras_bytes = file.read()
    record = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "estimator": name,
        "params": params,
        "fitted": fitted,
        "network": network,
        "model_sha256": hashlib.sha256(keras_bytes).hexdigest(),
        "versions": {"keras": keras.__version__, "numpy": np.__version__},
    }
    with atomic_write(path) as partial:
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("skconvnet.json", json.dumps(record, indent=1))
            archive.writestr("model.keras", keras_bytes)
    return path


def load(path):
    """Load an estimator written by :func:`save`, running no code from the file.

    Parameters
    ----------
    path : str or os.PathLike
        A file written by :func:`save`.

    Returns
    -------
    estimator : ConvFeatureExtractor or FineTunedConvClassifier
        Fitted, giving the same outputs as the saved estimator.

    Raises
    ------
    UnsafeModelFileError
        When the file is not a skconvnet model file, names a class other than the
        package's estimators, holds invalid parameters, was altered after saving
        (digest mismatch) or holds a network Keras' safe mode refuses (e.g. a
        ``Lambda`` layer).
    """
    path = os.fspath(path)

    def refuse(reason):
        return UnsafeModelFileError(f"Cannot load {path!r}: {reason}")

    try:
        with zipfile.ZipFile(path) as archive:
            record = json.loads(archive.read("skconvnet.json"))
            keras_bytes = archive.read("model.keras")
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise refuse(f"not a file written by skconvnet.save ({exc}).") from exc
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise refuse("not a file written by skconvnet.save (no format record).")
    if record.get("format_version") != FORMAT_VERSION:
        raise refuse(f"format version {record.get('format_version')!r}; this skconvnet "
                     f"reads version {FORMAT_VERSION}.")
    cls = _ESTIMATORS.get(record.get("estimator"))
    if cls is None:
        raise refuse(f"it names the class {record.get('estimator')!r}; only "
                     f"{sorted(_ESTIMATORS)} can be loaded.")
    if hashlib.sha256(keras_bytes).hexdigest() != record.get("model_sha256"):
        raise refuse("the network (model.keras) does not match the digest recorded when "
                     "the file was saved: the file was altered or damaged.")

    if not isinstance(record.get("params"), dict) or not isinstance(record.get("fitted"), dict):
        raise refuse("its 'params' and 'fitted' records must be JSON objects.")
    params = {key: _decode(value) for key, value in record["params"].items()}
    unknown = set(params) - set(cls().get_params())
    if unknown:
        raise refuse(f"unknown parameters {sorted(unknown)} for {cls.__name__}.")
    estimator = cls(**params)
    if not isinstance(estimator.base, str):
        raise refuse(f"'base' must be a registered base name, got {estimator.base!r}.")
    try:
        estimator._validate_params()
        get_base_spec(estimator.base)
    except ValueError as exc:
        raise refuse(f"invalid parameters: {exc}") from exc
    fitted = {key: _decode(value) for key, value in record["fitted"].items()}
    if not all(isinstance(key, str) and key.endswith("_") and not key.startswith("_")
               for key in fitted):
        raise refuse("fitted attributes must be public names ending in '_'.")

    with tempfile.TemporaryDirectory() as scratch:
        keras_file = os.path.join(scratch, "model.keras")
        with open(keras_file, "wb") as file:
            file.write(keras_bytes)
        try:
            network = keras.saving.load_model(keras_file, compile=False, safe_mode=True)
        except Exception as exc:  # Keras raises ValueError/TypeError/OSError alike
            raise refuse(f"Keras refused the network in safe mode: {exc}") from exc
    for key, value in fitted.items():
        setattr(estimator, key, value)
    # The architecture comes from this package's code; the file gives only weights.
    try:
        estimator._set_network_state({"resolved": _decode(record.get("network")),
                                      "weights": network.get_weights()})
    except (ValueError, TypeError) as exc:
        raise refuse(f"its network record is invalid: {exc}") from exc
    if estimator._resolved.spec.name != estimator.base:
        raise refuse(f"its network record is of base {estimator._resolved.spec.name!r}, its "
                     f"parameters of base {estimator.base!r}.")
    try:
        estimator.model_
    except ValueError as exc:
        raise refuse(f"its weights do not fit the network its parameters describe: "
                     f"{exc}") from exc
    return estimator
