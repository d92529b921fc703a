"""
A search on a Dask cluster
==========================

The estimators pickle without live Keras objects, so joblib's Dask backend spreads a
:class:`~sklearn.model_selection.GridSearchCV` over the workers of a ``dask.distributed``
cluster. Here a ``LocalCluster`` of 2 worker processes stands in for a real cluster
(``Client("scheduler:8786")``); :class:`~skconvnet.scaling.SizeThreadPools` gives each
worker's Keras only the threads the worker was given.
"""

# %%
import time

import joblib
from dask.distributed import Client, LocalCluster
from sklearn.model_selection import GridSearchCV, StratifiedKFold

from skconvnet import FineTunedConvClassifier
from skconvnet.scaling import SizeThreadPools
from skconvnet.testing import photo_patches

X, y, _ = photo_patches(n_per_photo=30, size=40, seed=4)
clf = FineTunedConvClassifier("efficientnet_lite0", input_size=64, head_units=0,
                              warmup_epochs=2, epochs=1, random_state=0)
grid = {"unfreeze": [0, 2], "learning_rate": [1e-4, 1e-3]}
folds = StratifiedKFold(2, shuffle=True, random_state=0)

with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                  dashboard_address=None) as cluster, Client(cluster) as client:
    client.register_plugin(SizeThreadPools())
    start = time.perf_counter()
    with joblib.parallel_backend("dask"):
        search = GridSearchCV(clf, grid, cv=folds, refit=False).fit(X, y)
    print(f"8 fits on 2 workers in {time.perf_counter() - start:.0f} s")

print("best:", search.best_params_, f"score {search.best_score_:.3f}")

# %%
# The same search in this process gives the same scores: initial weights and batch order
# come from ``random_state`` alone, not from whichever worker ran a fit.
serial = GridSearchCV(clf, grid, cv=folds, refit=False).fit(X, y)
print("same mean scores:",
      list(serial.cv_results_["mean_test_score"]) == list(search.cv_results_["mean_test_score"]))
