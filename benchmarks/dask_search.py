"""GridSearchCV of FineTunedConvClassifier: serial vs a 2-worker Dask LocalCluster.

Same estimator, grid, folds and seeds; the workers read the JPEG files themselves. Prints
both wall times, checks the best parameters agree, and models the wall time with N workers
(one per GPU) from the measured time per fit: T(N) = start-up + ceil(fits / N) * fit time.

Run:  python benchmarks/dask_search.py [--n 150] [--size 96]
"""

import argparse
import math
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import joblib  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.model_selection import GridSearchCV, StratifiedKFold  # noqa: E402

from skconvnet import FineTunedConvClassifier  # noqa: E402
from skconvnet.datasets import fetch_food_photos  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="efficientnet_lite0")
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--n", type=int, default=150, help="photos (every k-th)")
    args = parser.parse_args()
    import distributed

    from skconvnet.scaling import SizeThreadPools

    paths, labels = fetch_food_photos("plant-animal")
    step = max(1, len(paths) // args.n)
    paths, labels = paths[::step][:args.n], labels[::step][:args.n]
    clf = FineTunedConvClassifier(args.base, weights="imagenet", input_size=args.size,
                                  head_units=64, warmup_epochs=2, epochs=2, random_state=0)
    grid = {"unfreeze": [0, 3], "learning_rate": [1e-4, 1e-5]}
    cv = StratifiedKFold(3, shuffle=True, random_state=0)
    n_fits = 4 * 3

    tick = time.perf_counter()
    serial = GridSearchCV(clf, grid, cv=cv, refit=False).fit(paths, labels)
    serial_time = time.perf_counter() - tick

    tick = time.perf_counter()
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None, silence_logs=40)
    client = distributed.Client(cluster)
    client.register_plugin(SizeThreadPools())
    startup = time.perf_counter() - tick
    tick = time.perf_counter()
    with joblib.parallel_backend("dask"):
        on_dask = GridSearchCV(clf, grid, cv=cv, refit=False, n_jobs=-1).fit(paths, labels)
    dask_time = time.perf_counter() - tick
    client.close()
    cluster.close()

    fit_time = float(np.mean(serial.cv_results_["mean_fit_time"] +
                             serial.cv_results_["mean_score_time"]))
    print(f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPU cores; `python "
          f"benchmarks/dask_search.py --n {args.n} --size {args.size}`\n")
    print(f"GridSearchCV {grid}, cv=3 ({n_fits} fits, no refit), {args.base} (imagenet) "
          f"@{args.size}, {len(paths)} food photos as JPEG paths, warmup 2 + 2 epochs:\n")
    print("| run | wall time (s) | speed-up | best params |")
    print("|---|---|---|---|")

    def best(search):
        return search.cv_results_["params"][int(np.argmin(search.cv_results_["rank_test_score"]))]

    print(f"| serial (this process, 2 cores) | {serial_time:.0f} | 1.00x | {best(serial)} |")
    print(f"| Dask LocalCluster, 2 workers x 1 thread | {dask_time:.0f} (+ {startup:.0f} start-up)"
          f" | {serial_time / dask_time:.2f}x | {best(on_dask)} |")
    same = np.allclose(serial.cv_results_["mean_test_score"],
                       on_dask.cv_results_["mean_test_score"], atol=1e-6)
    print(f"\nsame mean CV scores at every grid point: {same}")
    print(f"\nModel for N workers with one GPU each, from the measured {fit_time:.1f} s per fit "
          f"(fit + score) on this CPU; a GPU shortens the fit time itself, which scales all "
          f"rows alike:\n")
    print("| workers N | modelled wall time (s) | modelled speed-up |")
    print("|---|---|---|")
    for n in (1, 2, 4, 8, 12):
        modelled = startup + math.ceil(n_fits / n) * fit_time
        print(f"| {n} | {modelled:.0f} | {n_fits * fit_time / modelled:.1f}x |")


if __name__ == "__main__":
    main()
