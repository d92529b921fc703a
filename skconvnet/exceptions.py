"""Every public error of the package, in one module that imports nothing of ours.

Each error also derives from the built-in a caller would naturally catch
(``ValueError``, ``OSError``), as scikit-learn's own errors do.
"""

import pickle

from sklearn.exceptions import ConvergenceWarning

__all__ = [
    "DatasetUnavailableError",
    "DivergenceWarning",
    "ImageReadError",
    "InvalidParameterError",
    "UnsafeFileError",
    "UnsafeModelFileError",
    "WeightsUnavailableError",
]


class InvalidParameterError(ValueError, TypeError):
    """A parameter has a bad type or value.

    Inherits from both ``ValueError`` and ``TypeError`` like scikit-learn's error
    of the same name, so callers can catch either.
    """


class WeightsUnavailableError(OSError):
    """Pretrained weights could not be obtained (no network, missing extra, bad file)."""


class ImageReadError(ValueError):
    """An image file could not be read; ``path`` names it and ``reason`` says why."""

    def __init__(self, path, reason):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"Cannot read image file {self.path!r}: {reason}")


class UnsafeFileError(pickle.UnpicklingError, ValueError):
    """A weights file is malformed, or asks for a Python object outside the tensor format."""


class UnsafeModelFileError(ValueError):
    """The file is not a valid skconvnet model file, or was altered after saving."""


class DatasetUnavailableError(OSError):
    """A dataset's source could not be reached or did not verify."""


class DivergenceWarning(ConvergenceWarning):
    """A training phase diverged (its loss became NaN, or ended far above its best); the
    best weights seen were kept. A :class:`~sklearn.exceptions.ConvergenceWarning`."""
