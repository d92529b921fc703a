"""The package's shape: one-way layers, one parameter table per estimator, fitted state.

* Imports point down the layers of ``LAYERS`` (docs/user_guide/architecture.md): no
  cycle, no import of the package inside a function to dodge one.
* Every parameter has a constraint, a documented default, and a clear
  ``InvalidParameterError`` for a wrong value (scikit-learn's
  ``check_param_validation`` idea, values made from the table itself).
* A fitted estimator never needs its weights source again.
"""

import ast
import importlib
import inspect
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import joblib
import keras
import numpy as np
import pytest

import skconvnet
from skconvnet import (
    ConvFeatureExtractor,
    FineTunedConvClassifier,
    FineTunedConvRegressor,
    InvalidParameterError,
    inspect_base,
    load,
    plot_feature_maps,
    plot_history,
    save,
)
from skconvnet._validation import invalid_values
from skconvnet.testing import (
    make_shapes,
    tiny_classifier,
    tiny_convnet,
    tiny_extractor,
    tiny_regressor,
)

PACKAGE = Path(skconvnet.__file__).parent

#: The layers, bottom first: a module imports only from layers below its own.
LAYERS = [
    ["exceptions"],
    ["_fileio", "_validation"],
    ["images", "layers", "_runtime", "_engine"],
    ["registry", "augmentation"],
    ["_torch_legacy", "weights"],
    ["efficientnet_lite"],
    ["catalogue", "networks", "caching"],
    ["_training", "_targets"],
    ["_base"],
    ["_finetune_base"],
    ["extraction", "finetune", "regression"],
    ["saving", "exporting", "inspection", "plotting", "testing", "datasets", "scaling"],
    ["demo", "rate_finder"],
    ["cli"],
    ["__main__", "__init__"],
]
LAYER_OF = {module: depth for depth, modules in enumerate(LAYERS) for module in modules}


def _package_imports(tree):
    """(module imported, line, at module level?) for every import of a skconvnet module."""
    found = []

    def visit(node, top_level):
        for child in ast.iter_child_nodes(node):
            nested = top_level and not isinstance(
                child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.ImportFrom):
                if child.level == 1:
                    names = ([child.module.split(".")[0]] if child.module
                             else [alias.name for alias in child.names])
                elif (child.module or "").startswith("skconvnet"):
                    parts = child.module.split(".")
                    names = [parts[1]] if len(parts) > 1 else [a.name for a in child.names]
                else:
                    names = []
                found.extend((name, child.lineno, top_level) for name in names)
            elif isinstance(child, ast.Import):
                found.extend((alias.name.split(".")[1], child.lineno, top_level)
                             for alias in child.names if alias.name.startswith("skconvnet."))
            visit(child, nested)

    visit(tree, True)
    return found


def test_every_module_has_a_layer():
    modules = {path.stem for path in PACKAGE.glob("*.py")}
    assert modules == set(LAYER_OF)


@pytest.mark.parametrize("module", sorted(LAYER_OF))
def test_imports_point_down_the_layers(module):
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    for imported, line, top_level in _package_imports(tree):
        where = f"skconvnet/{module}.py:{line} imports {imported}"
        assert top_level, f"{where} inside a function"
        assert imported in LAYER_OF, where
        assert LAYER_OF[imported] < LAYER_OF[module], f"{where}, which is not below it"


def test_importing_any_module_first_works():
    # With one-way layers, each module imports cleanly on its own in a fresh process.
    code = "import importlib, sys; importlib.import_module('skconvnet.' + sys.argv[1])"
    for module in ("registry", "networks", "_training", "saving", "catalogue"):
        subprocess.run([sys.executable, "-c", code, module], check=True, capture_output=True,
                       env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})


# --------------------------------------------------------------------------- parameter tables
ESTIMATORS = [ConvFeatureExtractor, FineTunedConvClassifier, FineTunedConvRegressor]


@pytest.mark.parametrize("Estimator", ESTIMATORS)
def test_the_table_and_the_docs_cover_every_parameter(Estimator):
    defaults = {name: p.default for name, p in
                inspect.signature(Estimator.__init__).parameters.items() if name != "self"}
    assert set(Estimator._parameter_constraints) == set(defaults)
    for name, default in defaults.items():
        entry = re.search(rf"^    {name} : (.+), default=(.+)$", Estimator.__doc__, re.M)
        assert entry, f"{Estimator.__name__}.{name} is not documented"
        kind, documented_default = entry.groups()
        if isinstance(default, (int, float)) and not isinstance(default, bool):
            assert float(documented_default) == default, name
        else:
            assert documented_default.strip("'\"") == str(default).strip("'\""), name
        for constraint in Estimator._parameter_constraints[name]:
            for option in getattr(constraint, "values", ()):
                if isinstance(option, str):
                    assert option in kind, f"{name}: {option!r} missing from {kind!r}"


def _invalid_cases():
    for Estimator in ESTIMATORS:
        for name, constraints in Estimator._parameter_constraints.items():
            for value in invalid_values(constraints):
                yield pytest.param(Estimator, name, value,
                                   id=f"{Estimator.__name__}-{name}-{value!r}")


@pytest.mark.parametrize("Estimator, name, value", _invalid_cases())
def test_every_parameter_rejects_a_bad_value_clearly(Estimator, name, value):
    X, y = make_shapes(8)
    if Estimator is FineTunedConvRegressor:
        estimator = tiny_regressor(**{name: value})  # __init__ only stores
    elif Estimator is ConvFeatureExtractor:
        estimator = tiny_extractor(**{name: value})
    else:
        estimator = tiny_classifier(**{name: value})
    message = rf"The '{name}' parameter of {Estimator.__name__} must be .+ Got .+ instead"
    with pytest.raises(InvalidParameterError, match=message):
        estimator.fit(X, y)


@pytest.mark.parametrize("function, arguments", [
    (inspect_base, dict(base="tiny")),
    (plot_history, dict(classifier=None)),
    (plot_feature_maps, dict(estimator=None, image=None)),
])
def test_functions_reject_bad_values_clearly(function, arguments):
    for name, constraints in function._parameter_constraints.items():
        for value in invalid_values(constraints):
            message = rf"The '{name}' parameter of {function.__name__} must be .+ Got .+ instead"
            with pytest.raises(InvalidParameterError, match=message):
                function(**{**arguments, name: value})


# --------------------------------------------------------------------------- fitted state
@pytest.fixture
def weights_file(tmp_path):
    keras.utils.set_random_seed(3)
    path = tmp_path / "mine.weights.h5"
    tiny_convnet(input_shape=(16, 16, 3)).save_weights(path)
    return path


def _estimators(weights_file, cache_dir):
    X, y = make_shapes(24)
    return {
        "extractor": (tiny_extractor(weights=str(weights_file)).fit(X), "transform"),
        "extractor with cache": (tiny_extractor(weights=str(weights_file),
                                                cache=str(cache_dir)).fit(X), "transform"),
        "classifier": (tiny_classifier(weights=str(weights_file), unfreeze=1).fit(X, y),
                       "predict_proba"),
        "classifier with cache": (tiny_classifier(weights=weights_file, unfreeze=1,
                                                  cache="memory").fit(X, y), "predict_proba"),
    }


RUN_PICKLE = textwrap.dedent("""
    import sys, joblib, numpy as np
    import skconvnet.testing
    estimator = joblib.load(sys.argv[1])
    np.save(sys.argv[3], getattr(estimator, sys.argv[4])(np.load(sys.argv[2])))
""")


def test_fitted_estimators_never_need_their_weights_file_again(tmp_path, weights_file):
    X_new, _ = make_shapes(10, seed=5)  # images fit never saw: the network must run
    np.save(tmp_path / "X.npy", X_new)
    (tmp_path / "run.py").write_text(RUN_PICKLE)
    fitted = _estimators(weights_file, tmp_path / "cache")
    expected, pickles, files = {}, {}, {}
    for name, (estimator, method) in fitted.items():
        expected[name] = getattr(estimator, method)(X_new)
        pickles[name] = tmp_path / f"{name}.joblib"
        joblib.dump(estimator, pickles[name])
        files[name] = save(estimator, tmp_path / f"{name}.skconvnet")
    os.remove(weights_file)
    for name, (estimator, method) in fitted.items():
        X_again, _ = make_shapes(10, seed=6)
        getattr(estimator, method)(X_again)  # same process, new images
        np.testing.assert_allclose(getattr(estimator, method)(X_new), expected[name],
                                   atol=1e-5, err_msg=name)
        np.testing.assert_allclose(getattr(load(files[name]), method)(X_new), expected[name],
                                   atol=1e-5, err_msg=name)
        out = tmp_path / f"{name}.npy"
        subprocess.run([sys.executable, str(tmp_path / "run.py"), str(pickles[name]),
                        str(tmp_path / "X.npy"), str(out), method], check=True,
                       capture_output=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        np.testing.assert_allclose(np.load(out), expected[name], atol=1e-5, err_msg=name)


def test_weights_file_overwritten_in_place_is_a_new_network(tmp_path, weights_file, images):
    extractor = tiny_extractor(weights=str(weights_file), cache=str(tmp_path / "cache"))
    before = extractor.fit(images).transform(images)
    keras.utils.set_random_seed(4)
    tiny_convnet(input_shape=(16, 16, 3)).save_weights(weights_file)  # same path, new content
    after = extractor.fit(images).transform(images)
    fresh = tiny_extractor(weights=str(weights_file)).fit(images).transform(images)
    np.testing.assert_allclose(after, fresh, atol=1e-6)
    assert not np.allclose(before, after)


def test_set_params_after_fit_never_files_features_under_another_key(tmp_path, images):
    cache = str(tmp_path / "cache")
    extractor = tiny_extractor(random_state=0, cache=cache).fit(images)
    extractor.set_params(random_state=1)  # not refitted: the seed-0 network still runs
    extractor.transform(images)
    reference = tiny_extractor(random_state=1).fit(images).transform(images)
    shared = tiny_extractor(random_state=1, cache=cache).fit(images).transform(images)
    np.testing.assert_allclose(shared, reference, atol=1e-6)


# --- the documentation agrees with the code --------------------------------------------------

DOCS = Path(__file__).resolve().parent.parent / "docs"
PUBLIC_MODULES = ["skconvnet", "skconvnet.datasets", "skconvnet.exceptions", "skconvnet.exporting",
                  "skconvnet.scaling", "skconvnet.testing"]


@pytest.mark.skipif(not DOCS.is_dir(), reason="needs the repository's docs/ folder")
@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_every_public_name_is_in_the_api_reference(module_name):
    module = importlib.import_module(module_name)
    reference = (DOCS / "api.rst").read_text()
    listed = set(re.findall(r"^   ([\w.]+)$", reference, flags=re.M))
    prefix = module_name.removeprefix("skconvnet").lstrip(".")
    missing = []
    for name in module.__all__:
        obj = getattr(module, name)
        if not callable(obj):
            continue  # constants (HAVE_LITE0, TINY_BASE) are described in their module
        # A name re-exported by the package may be listed under the package instead.
        candidates = {f"{prefix}.{name}" if prefix else name, name,
                      f"{obj.__module__.removeprefix('skconvnet.')}.{name}"}
        if not candidates & listed:
            missing.append(name)
    assert not missing, f"{module_name}: not in docs/api.rst: {missing}"


@pytest.mark.skipif(not DOCS.is_dir(), reason="needs the repository's docs/ folder")
def test_the_architecture_page_draws_the_layers_the_tests_check():
    page = (DOCS / "user_guide" / "architecture.md").read_text()
    diagram = page.split("```")[1]
    # The left column of each line names modules; read the names in order, top to bottom.
    modules = []
    for line in diagram.splitlines():
        left = line[:42].split()
        modules.extend(name for name in left if re.fullmatch(r"_?[a-z_]+", name))
    expected = [name for layer in reversed(LAYERS[:-1]) for name in layer]  # no entry points
    assert modules == expected
