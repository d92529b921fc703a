"""Files the package writes and hashes: the cache folder, digests, atomic writes."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
import tempfile
from pathlib import Path

__all__ = ["NotRegularFileError", "atomic_write", "cache_folder", "cache_home", "describe_os_error",
           "environment_number", "file_digest", "open_regular"]

_SPECIAL_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


class NotRegularFileError(OSError):
    """A path names a directory, FIFO, device or socket where a regular file was expected."""


def describe_os_error(exc):
    """Why a file could not be opened, in a few words: "permission denied", ..."""
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, NotRegularFileError):
        return exc.strerror
    return f"the file cannot be read ({exc.strerror or exc})"


def open_regular(path):
    """Open a regular file for binary reading; never block on a FIFO or a device.

    The file is opened non-blocking and checked with ``fstat`` on the open
    descriptor (no race between a check and the open), so a FIFO or
    ``/dev/zero`` is refused at once instead of hanging or streaming forever.

    Raises
    ------
    NotRegularFileError
        Naming what the path is instead (a directory, a FIFO, a device ...).
    OSError
        As ``open`` does (missing file, permission denied, ...).
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = next((name for test, name in _SPECIAL_KINDS if test(mode)), "a special file")
            raise NotRegularFileError(errno.EINVAL, f"it is {kind}, not a regular file",
                                      os.fspath(path))
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def cache_home():
    """The package's cache folder: ``$SKCONVNET_HOME`` or ``~/.cache/skconvnet``."""
    home = os.environ.get("SKCONVNET_HOME")
    return Path(home) if home else Path.home() / ".cache" / "skconvnet"


def cache_folder(*parts):
    """The folder ``parts`` inside :func:`cache_home`, created; a clear error when it cannot be.

    Raises
    ------
    OSError
        (``NotADirectoryError``, ``PermissionError``, ...) naming the folder,
        ``SKCONVNET_HOME`` and what to do, never a bare ``mkdir`` error.
    """
    folder = cache_home().joinpath(*parts)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=folder, prefix=".probe-")
        probe.close()
    except OSError as exc:
        setting = os.environ.get("SKCONVNET_HOME")
        where = f"SKCONVNET_HOME={setting!r}" if setting else "the default ~/.cache/skconvnet"
        raise type(exc)(exc.errno, f"Cannot use the cache folder {str(folder)!r} ({where}): "
                                   f"{exc.strerror or exc}. Set SKCONVNET_HOME to a writable "
                                   "folder.") from None
    return folder


def environment_number(name, default):
    """The positive number in environment variable ``name`` (``default`` when unset)."""
    text = os.environ.get(name)
    if text is None or not text.strip():
        return default
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (value > 0 and value != float("inf")):
        raise ValueError(f"The environment variable {name}={text!r} must be a positive number "
                         f"(default {default}).")
    return value


def file_digest(path, algorithm="sha256", chunk=1 << 20):
    """Hex digest of a file's bytes, read in chunks."""
    digest = hashlib.new(algorithm)
    with open_regular(path) as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_write(path, *, suffix=".tmp", predictable=False):
    """Yield a temporary path beside ``path``; rename it onto ``path`` when the block succeeds.

    Readers never see half a file: they see the old one or the new one. When
    the block raises (or the process is interrupted), the temporary file is
    removed and ``path`` is left as it was. ``suffix`` is the temporary file's
    ending, for writers that insist on one (Keras wants ``.weights.h5``).

    ``predictable=True`` names the temporary file ``.<name>.partial<suffix>``
    instead of a random name, for writers of one path at a time: a process
    killed midway (where no ``finally`` runs) leaves that one file, and the next
    write replaces it, so kills never pile up files. A block that consumes the
    temporary file itself (removes it) renames nothing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if predictable:
        tmp = str(path.with_name(f".{path.name}.partial{suffix}"))
        if os.path.exists(tmp):
            os.remove(tmp)
    else:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
        os.close(fd)
    try:
        yield tmp
        if os.path.exists(tmp):
            os.chmod(tmp, 0o644)  # mkstemp makes it private; caches and saved models are shared
            os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
