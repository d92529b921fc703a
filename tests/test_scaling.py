"""Beyond one process: GridSearchCV on a Dask LocalCluster, one fit over two devices."""

from functools import partial
import os
import subprocess
import sys
import textwrap

import joblib
import keras
import numpy as np
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline

from skconvnet._runtime import distribution_scope
from skconvnet.testing import make_shapes
from skconvnet import testing
from skconvnet import ConvFeatureExtractor, InvalidParameterError

distributed = pytest.importorskip("distributed")


# This module's tiny classifier: the shared one with these settings.
tiny_classifier = partial(testing.tiny_classifier, head_units=8, dropout=0.0, epochs=2,
                          learning_rate=1e-5)


@pytest.fixture(scope="module")
def client():
    from skconvnet.scaling import SizeThreadPools

    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None, silence_logs=40)
    client = distributed.Client(cluster)
    client.register_plugin(SizeThreadPools(imports=["skconvnet.testing"]))
    yield client
    client.close()
    cluster.close()


@pytest.fixture
def photo_files(tmp_path):
    X, y = make_shapes(32)
    paths = []
    for i, image in enumerate(X):
        paths.append(str(tmp_path / f"{i:02d}.png"))
        Image.fromarray(image).save(paths[-1])
    return paths, y


def test_workers_have_their_own_thread_pools_and_the_tiny_base(client):
    def probe():
        import keras

        from skconvnet import list_bases

        threads = None
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            threads = tf.config.threading.get_intra_op_parallelism_threads()
        return threads, "tiny" in list_bases(), os.getpid()

    results = client.run(probe)
    assert len(results) == 2
    # TensorFlow's pools are sized by the plugin; JAX reads XLA_FLAGS at import instead
    # (scaling.set_backend_threads says so and returns False there).
    threads = 1 if keras.backend.backend() == "tensorflow" else None
    assert {r[:2] for r in results.values()} == {(threads, True)}
    assert len({r[2] for r in results.values()}) == 2 and os.getpid() not in \
        {r[2] for r in results.values()}


def test_grid_search_on_dask_matches_the_serial_search(client, photo_files, tmp_path):
    paths, y = photo_files
    cv = StratifiedKFold(2, shuffle=True, random_state=0)
    grid = {"unfreeze": [0, 2], "learning_rate": [1e-3, 1e-4]}
    # log loss, not accuracy: on 32 images one flipped prediction would move accuracy by 1/16,
    # while workers (1 thread) and this process (2) differ in float summation order.
    serial = GridSearchCV(tiny_classifier(cache=str(tmp_path / "serial-cache")), grid,
                          cv=cv, scoring="neg_log_loss").fit(paths, y)
    # the paths travel, the workers read the files; a folder cache is shared by both workers
    shared = tiny_classifier(cache=str(tmp_path / "shared-cache"))
    with joblib.parallel_backend("dask"):
        on_dask = GridSearchCV(shared, grid, cv=cv, n_jobs=-1, scoring="neg_log_loss").fit(
            paths, y)
    np.testing.assert_allclose(on_dask.cv_results_["mean_test_score"],
                               serial.cv_results_["mean_test_score"], atol=1e-3)
    assert np.ptp(serial.cv_results_["mean_test_score"]) > 0.002  # the grid points differ
    assert on_dask.best_params_ == serial.best_params_
    np.testing.assert_allclose(on_dask.predict_proba(paths), serial.predict_proba(paths),
                               atol=1e-4)
    serial_entries = sorted(p.name for p in (tmp_path / "serial-cache").rglob("*.npz"))
    shared_entries = sorted(p.name for p in (tmp_path / "shared-cache").rglob("*.npz"))
    # one frozen network per unfreeze value, 32 images each, written once by whichever worker
    assert shared_entries == serial_entries and len(shared_entries) == 2 * 32


def test_feature_pipeline_search_on_dask(client, photo_files):
    paths, y = photo_files
    pipe = Pipeline([("features", ConvFeatureExtractor("tiny", weights=None, input_size=16,
                                                       random_state=0)),
                     ("clf", LogisticRegression(max_iter=500))])
    grid = {"features__pooling": ["avg", "max"], "clf__C": [0.1, 10.0]}
    serial = GridSearchCV(pipe, grid, cv=2).fit(paths, y)
    with joblib.parallel_backend("dask"):
        on_dask = GridSearchCV(pipe, grid, cv=2, n_jobs=-1).fit(paths, y)
    assert on_dask.best_params_ == serial.best_params_
    np.testing.assert_allclose(on_dask.cv_results_["mean_test_score"],
                               serial.cv_results_["mean_test_score"])


# --------------------------------------------------------------------------- distribution
TWO_DEVICES = textwrap.dedent(
    """
    import os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import numpy as np
    import skconvnet.testing
    from skconvnet import FineTunedConvClassifier
    from skconvnet.testing import make_shapes
    X, y = make_shapes(32)
    # BatchNorm frozen: a trained one normalises each replica's half-batch with its own
    # statistics (Keras' BatchNormalization is not synchronized), which one device cannot match.
    params = dict(base="tiny", weights=None, input_size=16, head_units=8, dropout=0.0,
                  warmup_epochs=2, unfreeze=1, epochs=2, warmup_learning_rate=1e-2,
                  learning_rate=1e-3, batch_size=16, random_state=0, train_bn=False)
    single = FineTunedConvClassifier(**params).fit(X, y)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    mirrored = FineTunedConvClassifier(**params, distribution=strategy).fit(X, y)
    named = FineTunedConvClassifier(**params, distribution="mirrored").fit(X, y)
    np.save(sys.argv[2], np.stack([single.predict_proba(X), mirrored.predict_proba(X),
                                   named.predict_proba(X)]))
    print(strategy.num_replicas_in_sync, [h["loss"] for h in mirrored.history_])
    """
)


@pytest.mark.skipif(keras.backend.backend() not in ("tensorflow", "jax"),
                    reason="Keras' distribution API supports TensorFlow and JAX only")
def test_one_fit_over_two_logical_devices_matches_the_single_device_fit(tmp_path):
    script = tmp_path / "two_devices.py"
    script.write_text(TWO_DEVICES)
    result = subprocess.run([sys.executable, str(script), os.path.dirname(__file__),
                             str(tmp_path / "p.npy")], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[0] == "2"  # two replicas in sync
    single, mirrored, named = np.load(tmp_path / "p.npy")
    # same global batch, gradients averaged over the replicas: equal up to float summation order
    np.testing.assert_allclose(mirrored, single, atol=1e-3)
    np.testing.assert_allclose(named, single, atol=1e-3)


def test_bad_distribution():
    X, y = make_shapes(8)
    with pytest.raises(InvalidParameterError,
                       match=r"'distribution' parameter .* None, 'mirrored' or a .*Got 'tpu'"):
        tiny_classifier(distribution="tpu").fit(X, y)


def test_mirrored_on_a_backend_without_keras_distribution_says_so(monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "torch")
    with pytest.raises(ValueError, match="needs the TensorFlow or the JAX backend.*'torch'"):
        distribution_scope("mirrored")
