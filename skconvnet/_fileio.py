"""Files the package writes and hashes: the cache folder, digests, atomic writes."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path

__all__ = ["atomic_write", "cache_home", "file_digest"]


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


@contextlib.contextmanager
def atomic_write(path, *, suffix=".tmp"):
    """Yield a temporary path beside ``path``; rename it onto ``path`` when the block succeeds.

    Readers never see half a file: they see the old one or the new one. When
    the block raises (or the process is interrupted), the temporary file is
    removed and ``path`` is left as it was. ``suffix`` is the temporary file's
    ending, for writers that insist on one (Keras wants ``.weights.h5``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o644)  # mkstemp makes it private; caches and saved models are shared
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
