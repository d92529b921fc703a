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
import re
import tempfile
import zipfile

import keras
import numpy as np

from ._fileio import atomic_write, open_regular
from .exceptions import UnsafeModelFileError
from .extraction import ConvFeatureExtractor
from .finetune import FineTunedConvClassifier
from .regression import FineTunedConvRegressor
from .registry import get_base_spec

__all__ = ["UnsafeModelFileError", "load", "save"]

FORMAT = "skconvnet-estimator"
FORMAT_VERSION = 2
_ESTIMATORS = {cls.__name__: cls for cls in (
    ConvFeatureExtractor, FineTunedConvClassifier, FineTunedConvRegressor)}
# dtypes numpy may rebuild fitted arrays with: no object pickles, no records.
_ARRAY_KINDS = set("biufU")
_ARRAY_DTYPES = {np.dtype(code).str: np.dtype(code) for code in (
    "?", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8")}
#: Bounds on what a file may make ``load`` read, before it is read.
MAX_RECORD_BYTES = 16 * 2**20
MAX_NETWORK_BYTES = 4 * 2**30
MAX_COMPRESSION_RATIO = 200
MAX_DEPTH = 32


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


def _decode(value, depth=0):
    if depth > MAX_DEPTH:
        raise UnsafeModelFileError(f"values nested deeper than {MAX_DEPTH} levels.")
    if isinstance(value, list):
        return [_decode(v, depth + 1) for v in value]
    if isinstance(value, dict):
        if set(value) == {"tuple"} and isinstance(value["tuple"], list):
            return tuple(_decode(v, depth + 1) for v in value["tuple"])
        if set(value) == {"dict"} and isinstance(value["dict"], list) and all(
                isinstance(pair, list) and len(pair) == 2 for pair in value["dict"]):
            return {_hashable(_decode(k, depth + 1)): _decode(v, depth + 1)
                    for k, v in value["dict"]}
        if set(value) == {"ndarray", "dtype"} and isinstance(value["dtype"], str):
            dtype = value["dtype"]
            dtype = (object if dtype == "object" else _ARRAY_DTYPES.get(dtype)
                     or (np.dtype(dtype) if re.fullmatch(r"<U[0-9]{1,6}", dtype) else None))
            if dtype is None:
                raise UnsafeModelFileError(f"Refusing array dtype {value['dtype']!r}.")
            return np.array(value["ndarray"], dtype=dtype)
        raise UnsafeModelFileError(f"Unknown value in the model file: {_short(value)}.")
    return value


def _hashable(key):
    key = tuple(key) if isinstance(key, list) else key
    if not isinstance(key, (str, int, float, bool, tuple, type(None))):
        raise UnsafeModelFileError(f"a dict key {_short(key)} is not a plain value.")
    return key


def _short(value):
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


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
            f"skconvnet.save saves the estimators {sorted(_ESTIMATORS)}; got a {name}. Use "
            "joblib.dump for other objects."
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
    # Scratch files with one predictable name beside the target: a save killed midway
    # leaves only these, and the next save of the same path replaces them.
    with atomic_write(path, suffix=".model.keras", predictable=True) as keras_file:
        model.save(keras_file)
        with open(keras_file, "rb") as file:
            keras_bytes = file.read()
        os.remove(keras_file)  # read: nothing to rename onto the target
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
    with atomic_write(path, predictable=True) as partial:
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("skconvnet.json", json.dumps(record, indent=1))
            archive.writestr("model.keras", keras_bytes)
    return path


def load(path, *, cache=None):
    """Load an estimator written by :func:`save`, running no code from the file.

    Parameters
    ----------
    path : str or os.PathLike
        A file written by :func:`save`.
    cache : None, "memory" or path, default=None
        The loaded estimator's ``cache``. A file never chooses where the program
        writes: the ``cache`` it was saved with is not used.

    Returns
    -------
    estimator : ConvFeatureExtractor or FineTunedConvClassifier
        Fitted, giving the same outputs as the saved estimator.

    Raises
    ------
    UnsafeModelFileError
        For any file that is not exactly what :func:`save` writes: not a
        skconvnet model file, a class other than the package's estimators,
        invalid parameters or fitted attributes (checked against the network),
        altered after saving (digest mismatch), a network Keras' safe mode
        refuses (e.g. a ``Lambda`` layer), or members larger (or more
        compressed) than the bounds ``load`` reads. Memory stays bounded.
    """
    path = os.fspath(path)
    try:
        return _load(path, cache)
    except UnsafeModelFileError as exc:
        raise UnsafeModelFileError(f"Cannot load {path!r}: {exc}") from exc.__cause__
    except Exception as exc:  # any other failure of a malformed file is the same refusal
        raise UnsafeModelFileError(
            f"Cannot load {path!r}: not a file written by skconvnet.save, or damaged "
            f"({type(exc).__name__}: {_short(str(exc))})") from exc


def _read_members(path):
    """The JSON record and the network's bytes, each size bounded before it is read."""
    with open_regular(path) as handle, zipfile.ZipFile(handle) as archive:
        members = {info.filename: info for info in archive.infolist()}
        if set(members) != {"skconvnet.json", "model.keras"}:
            raise UnsafeModelFileError(
                f"not a file written by skconvnet.save (members {sorted(members)[:5]}).")
        for name, limit in (("skconvnet.json", MAX_RECORD_BYTES),
                            ("model.keras", MAX_NETWORK_BYTES)):
            info = members[name]
            if info.file_size > limit or (
                    info.file_size > MAX_COMPRESSION_RATIO * max(info.compress_size, 1) + 2**16):
                raise UnsafeModelFileError(
                    f"its member {name} declares {info.file_size:,} bytes from "
                    f"{info.compress_size:,} compressed (at most {limit:,} bytes and a "
                    f"compression ratio of {MAX_COMPRESSION_RATIO} are read).")
        return archive.read("skconvnet.json"), archive.read("model.keras")


def _load(path, cache):
    record_bytes, keras_bytes = _read_members(path)
    try:
        record = json.loads(record_bytes)
    except (ValueError, RecursionError) as exc:
        raise UnsafeModelFileError(f"not a file written by skconvnet.save ({exc}).") from exc
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise UnsafeModelFileError("not a file written by skconvnet.save (no format record).")
    if record.get("format_version") != FORMAT_VERSION:
        raise UnsafeModelFileError(f"format version {_short(record.get('format_version'))}; "
                                   f"this skconvnet reads version {FORMAT_VERSION}.")
    cls = _ESTIMATORS.get(record.get("estimator")) if isinstance(
        record.get("estimator"), str) else None
    if cls is None:
        raise UnsafeModelFileError(f"it names the class {_short(record.get('estimator'))}; "
                                   f"only {sorted(_ESTIMATORS)} can be loaded.")
    if hashlib.sha256(keras_bytes).hexdigest() != record.get("model_sha256"):
        raise UnsafeModelFileError(
            "the network (model.keras) does not match the digest recorded when the file was "
            "saved: the file was altered or damaged.")
    if not isinstance(record.get("params"), dict) or not isinstance(record.get("fitted"), dict):
        raise UnsafeModelFileError("its 'params' and 'fitted' records must be JSON objects.")
    estimator = _estimator_from_params(cls, record["params"], cache)
    fitted = {key: _decode(value) for key, value in record["fitted"].items()}
    allowed = estimator._fitted_attribute_names
    if not set(fitted) <= allowed:
        raise UnsafeModelFileError(
            f"fitted attributes must be public names ending in '_' among {sorted(allowed)}; "
            f"got {_short(sorted(map(str, set(fitted) - allowed)))}.")
    missing = estimator._required_fitted_names - set(fitted)
    if missing:
        raise UnsafeModelFileError(f"fitted attributes {sorted(missing)} are missing.")
    network = _safe_network(keras_bytes)
    for key, value in fitted.items():
        setattr(estimator, key, value)
    # The architecture comes from this package's code; the file gives only weights.
    try:
        estimator._set_network_state({"resolved": _decode(record.get("network")),
                                      "weights": network.get_weights()})
    except (ValueError, TypeError) as exc:
        raise UnsafeModelFileError(f"its network record is invalid: {exc}") from exc
    if estimator._resolved.spec.name != estimator.base:
        raise UnsafeModelFileError(
            f"its network record is of base {estimator._resolved.spec.name!r}, its parameters "
            f"of base {estimator.base!r}.")
    size = estimator._resolved.input_size
    if tuple(network.input_shape[1:]) != (size, size, 3):
        raise UnsafeModelFileError(
            f"its network takes inputs of shape {network.input_shape[1:]}, its record says "
            f"{size} x {size} x 3.")
    try:
        estimator.model_
    except ValueError as exc:
        raise UnsafeModelFileError(f"its weights do not fit the network its parameters "
                                   f"describe: {exc}") from exc
    try:
        estimator._check_fitted_state()
    except (ValueError, TypeError) as exc:
        raise UnsafeModelFileError(f"its fitted attributes do not fit its network: {exc}") \
            from exc
    return estimator


def _estimator_from_params(cls, encoded, cache):
    params = {key: _decode(value) for key, value in encoded.items()}
    unknown = set(params) - set(cls().get_params())
    if unknown:
        raise UnsafeModelFileError(f"unknown parameters {_short(sorted(unknown))} for "
                                   f"{cls.__name__}.")
    # A file never chooses where the program writes: the caller's cache, not the file's.
    estimator = cls(**{**params, "cache": cache})
    if not isinstance(estimator.base, str):
        raise UnsafeModelFileError(f"'base' must be a registered base name, got "
                                   f"{_short(estimator.base)}.")
    try:
        estimator._validate_params()
        get_base_spec(estimator.base)
    except ValueError as exc:
        raise UnsafeModelFileError(f"invalid parameters: {exc}") from exc
    return estimator


def _safe_network(keras_bytes):
    with tempfile.TemporaryDirectory() as scratch:
        keras_file = os.path.join(scratch, "model.keras")
        with open(keras_file, "wb") as file:
            file.write(keras_bytes)
        try:
            return keras.saving.load_model(keras_file, compile=False, safe_mode=True)
        except Exception as exc:  # Keras raises ValueError/TypeError/OSError alike
            raise UnsafeModelFileError(f"Keras refused the network in safe mode: {exc}") \
                from exc
