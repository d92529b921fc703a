"""Sphinx configuration: the API reference from the numpydoc docstrings, the user guide, and
the example gallery, executed at build time (sphinx-gallery).

Build, warnings as errors, without network::

    python -m sphinx -W -b html docs docs/_build/html

Cross-links to scikit-learn and Keras go through intersphinx inventories that this file
writes at build time into ``docs/_generated/`` (see ``_generate.py``): scikit-learn's is
generated from the installed package; Keras', numpy's and Python's are short hand-kept lists of
the targets the docs link to. No inventory is downloaded, so the build never touches the
network.
"""

import os
import sys
from pathlib import Path

# Before anything imports Keras: quiet TensorFlow's C++ log and draw without a display.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("MPLBACKEND", "agg")

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS))

import _generate  # noqa: E402  (docs/_generate.py, beside this file)

import skconvnet  # noqa: E402

project = "skconvnet"
author = "skconvnet developers"
copyright = "2026, skconvnet developers"
release = skconvnet.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "sphinx.ext.viewcode",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"

templates_path = ["_templates"]
exclude_patterns = ["_build", "_generated/*.txt", "Thumbs.db", ".DS_Store"]
html_theme = "pydata_sphinx_theme"
html_title = f"skconvnet {release}"
html_theme_options = {"navigation_with_keys": False, "show_toc_level": 2}
html_static_path = []

# The API reference: one page per public name, written by autosummary.
autosummary_generate = True
autodoc_typehints = "none"
autodoc_default_options = {"members": True}
numpydoc_show_class_members = False  # the class template lists the methods itself
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = True
numpydoc_xref_ignore = {"of", "or", "optional", "default", "shape", "n_samples", "n_features",
                        "n_classes", "n_images", "n_labels", "n_outputs", "n", "h", "w", "c",
                        "array-like", "ndarray", "like", "None", "str", "int", "float", "bool",
                        "dict", "list", "tuple", "callable", "path-like", "object", "estimator",
                        "instance", "sequence", "iterable", "file", "array", "matplotlib",
                        "Figure", "DataFrame"}
numpydoc_xref_aliases = {
    "Pipeline": "sklearn.pipeline.Pipeline",
    "keras.Model": "keras.Model",
    "RandomState": "numpy.random.RandomState",
}

# Offline intersphinx: inventories written by _generate before the build reads them.
intersphinx_mapping = {
    "sklearn": ("https://scikit-learn.org/stable/", str(_generate.sklearn_inventory())),
    "keras": ("https://keras.io/api/", str(_generate.keras_inventory())),
    "python": ("https://docs.python.org/3/", str(_generate.python_inventory())),
    "numpy": ("https://numpy.org/doc/stable/", str(_generate.numpy_inventory())),
}
intersphinx_timeout = 1

# Pages whose text comes from the package or from the measured tables: written fresh at
# every build, so what the guide shows is what the code prints and what the benchmarks hold.
_generate.user_guide_includes()

# The gallery: every examples/plot_*.py runs at build time; a failing example fails the build.
sphinx_gallery_conf = {
    "examples_dirs": str(DOCS.parent / "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "abort_on_example_error": True,
    "only_warn_on_example_error": False,
    "download_all_examples": False,
    "remove_config_comments": True,
    "min_reported_time": 1,
    "doc_module": ("skconvnet",),
    "backreferences_dir": "_generated/backreferences",
    "within_subsection_order": "FileNameSortKey",
}
