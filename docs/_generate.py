"""What the documentation build writes before Sphinx reads the sources.

Everything goes to ``docs/_generated/`` (ignored by git) and is rewritten at every build:

* intersphinx inventories, so links to scikit-learn, Keras, numpy and Python work without
  network: scikit-learn's lists every public class and function of the installed package at
  the address its own site gives it (``modules/generated/<name>.html``), plus the glossary
  entries its inherited docstrings use; Keras' site is not built by Sphinx, so its inventory
  is a short hand-kept list of the pages the docs link to; numpy's and Python's hold only the
  targets numpydoc's type links point to (``array-like``, ``bool``, ``sequence``, ...);
* the text the user guide shows as program output (``inspect_base``, ``list_bases``), made by
  running the code, so the guide cannot drift from what the package prints.
"""

import contextlib
import io
import zlib
from pathlib import Path

import keras
import numpy as np
import sklearn
from sklearn.utils.discovery import all_displays, all_estimators, all_functions

from skconvnet import inspect_base
from skconvnet.cli import main as cli_main

GENERATED = Path(__file__).resolve().parent / "_generated"

# Keras objects the docs refer to, with their page under https://keras.io/api/.
KERAS_PAGES = {
    "keras.Model": "models/model/",
    "keras.layers.Layer": "layers/base_layer/",
    "keras.mixed_precision.DTypePolicy": "mixed_precision/policy/",
    "keras.distribution.DataParallel": "distribution/",
    "keras.wrappers.SKLearnClassifier": "utils/sklearn_wrappers/",
}

# The targets of numpydoc's default type links (numpydoc.xref.DEFAULT_LINKS), at their
# addresses under https://docs.python.org/3/ and https://numpy.org/doc/stable/.
PYTHON_TARGETS = [
    ("None", "py:data", "library/constants.html#None"),
    ("True", "py:data", "library/constants.html#True"),
    ("False", "py:data", "library/constants.html#False"),
    ("bltin-boolean-values", "std:label", "library/stdtypes.html#bltin-boolean-values"),
    ("list", "py:class", "library/stdtypes.html#list"),
    ("tuple", "py:class", "library/stdtypes.html#tuple"),
    ("str", "py:class", "library/stdtypes.html#str"),
    ("dict", "py:class", "library/stdtypes.html#dict"),
    ("float", "py:class", "library/functions.html#float"),
    ("int", "py:class", "library/functions.html#int"),
    ("callable", "py:function", "library/functions.html#callable"),
    ("iterable", "std:term", "glossary.html#term-iterable"),
    ("sequence", "std:term", "glossary.html#term-sequence"),
    ("generator", "std:term", "glossary.html#term-generator"),
    ("contextlib.contextmanager", "py:function",
     "library/contextlib.html#contextlib.contextmanager"),
    ("collections.namedtuple", "py:function",
     "library/collections.html#collections.namedtuple"),
]
NUMPY_TARGETS = [
    ("array_like", "std:term", "glossary.html#term-array_like"),
    ("arrays.scalars", "std:label", "reference/arrays.scalars.html#arrays-scalars"),
    ("numpy.ndarray", "py:class", "reference/generated/numpy.ndarray.html#numpy.ndarray"),
    ("numpy.random.RandomState", "py:class",
     "reference/random/legacy.html#numpy.random.RandomState"),
    ("numpy.inf", "py:data", "reference/constants.html#numpy.inf"),
    ("numpy.nan", "py:data", "reference/constants.html#numpy.nan"),
    ("numpy", "py:module", "reference/index.html#module-numpy"),
]
# Glossary entries and labels that scikit-learn's inherited docstrings (set_fit_request, ...)
# link to.
SKLEARN_TARGETS = [
    ("meta-estimator", "std:term", "glossary.html#term-meta-estimator"),
    ("metadata_routing", "std:label", "metadata_routing.html#metadata-routing"),
]


def _write_inventory(path, project, version, entries):
    """Write a Sphinx ``objects.inv`` (format 2) for ``(name, domain:role, uri)`` entries."""
    body = "".join(f"{name} {role} 1 {uri} -\n" for name, role, uri in sorted(entries))
    header = (
        "# Sphinx inventory version 2\n"
        f"# Project: {project}\n"
        f"# Version: {version}\n"
        "# The remainder of this file is compressed using zlib.\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header.encode() + zlib.compress(body.encode()))
    return path


def sklearn_inventory():
    """An inventory of the installed scikit-learn's public API, written offline."""
    entries = []
    for kind, found in (("class", all_estimators()), ("class", all_displays()),
                        ("function", all_functions())):
        for name, obj in found:
            public = ".".join(p for p in obj.__module__.split(".") if not p.startswith("_"))
            qualified = f"{public}.{name}"
            entries.append((qualified, f"py:{kind}",
                            f"modules/generated/{qualified}.html#{qualified}"))
    for name in ("BaseEstimator", "ClassifierMixin", "RegressorMixin", "TransformerMixin"):
        entries.append((f"sklearn.base.{name}", "py:class",
                        f"modules/generated/sklearn.base.{name}.html#sklearn.base.{name}"))
    entries.append(("sklearn.base.clone", "py:function",
                    "modules/generated/sklearn.base.clone.html#sklearn.base.clone"))
    entries.extend(SKLEARN_TARGETS)
    return _write_inventory(GENERATED / "sklearn-objects.inv", "scikit-learn",
                            sklearn.__version__, set(entries))


def keras_inventory():
    """An inventory of the few Keras pages the docs link to (keras.io is not Sphinx-built)."""
    entries = [(name, "py:class", page) for name, page in KERAS_PAGES.items()]
    return _write_inventory(GENERATED / "keras-objects.inv", "keras", keras.__version__,
                            entries)


def python_inventory():
    """Python's targets of numpydoc's type links."""
    return _write_inventory(GENERATED / "python-objects.inv", "Python", "3", PYTHON_TARGETS)


def numpy_inventory():
    """numpy's targets of numpydoc's type links."""
    return _write_inventory(GENERATED / "numpy-objects.inv", "NumPy", np.__version__,
                            NUMPY_TARGETS)


def _captured(function, *args, **kwargs):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        result = function(*args, **kwargs)
    return out.getvalue() if result is None else str(result)


def user_guide_includes():
    """Program output the user guide shows, written by running the package."""
    GENERATED.mkdir(parents=True, exist_ok=True)
    outputs = {
        "inspect-lite0.txt": lambda: _captured(inspect_base, "efficientnet_lite0",
                                               input_size=160),
        "inspect-vgg16.txt": lambda: _captured(inspect_base, "vgg16", input_size=150,
                                               layer="block4_pool"),
        "bases.txt": lambda: _captured(cli_main, ["bases"]),
    }
    for name, produce in outputs.items():
        (GENERATED / name).write_text(produce())
