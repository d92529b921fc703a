"""GridSearchCV over unfreeze x learning_rate with the frozen-layer cache on and off.

Same data, same folds, same seeds; prints wall time, best parameters, and the mean CV
score and mean fit time of every grid point for each run. First it prints the compute
bound: how much of the grid's arithmetic (multiply-adds of the conv and dense layers) the
cache can save at all, given that the unfrozen top still trains forward and backward.
Then, per fit, where its time went: the train and validation batches (the arithmetic;
the first batch of a phase also holds the tracing of its step, when the step is new), and
everything outside them (building, compiling, Python, data). Networks are reused across
fits of a signature (skconvnet._engine), so only the first fit of each builds and traces.
Usage: python benchmarks/grid_cache.py [--base efficientnet_lite0] [--weights imagenet]
       [--size 96] [--n 150] [--caches none memory folder]
"""

import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from sklearn.model_selection import GridSearchCV, StratifiedKFold  # noqa: E402

import keras  # noqa: E402

import skconvnet  # noqa: E402
from skconvnet import FineTunedConvClassifier  # noqa: E402
from skconvnet._engine import NETWORK_POOL  # noqa: E402
from skconvnet.caching import clear_memory_cache  # noqa: E402
from skconvnet.datasets import fetch_food_photos  # noqa: E402
from skconvnet.networks import build_base, weighted_layers  # noqa: E402
from skconvnet.registry import get_base_spec  # noqa: E402


def layer_flops(layer):
    """Multiply-adds x 2 of one image through a conv or dense layer (0 for other layers)."""
    import keras

    if isinstance(layer, keras.layers.DepthwiseConv2D):
        h, w, c = layer.output.shape[1:]
        kh, kw = layer.kernel_size
        return 2 * h * w * c * kh * kw
    if isinstance(layer, keras.layers.Conv2D):
        h, w, c = layer.output.shape[1:]
        kh, kw, c_in, _ = layer.kernel.shape
        return 2 * h * w * c * kh * kw * c_in
    if isinstance(layer, keras.layers.Dense):
        return 2 * int(np.prod(layer.kernel.shape))
    return 0


def compute_bound(base_name, size, unfreeze_values, warmup_epochs, epochs):
    """Per-unfreeze arithmetic of an uncached and a cached fit, in full forward passes.

    Uncached: every epoch runs the whole base forward, and phase 2 also runs the top
    backward (about twice its forward). Cached: the warm-up runs the top once over
    the bottom's outputs, phase 2 runs the top forward and backward each epoch; the
    bottom's single pass per image is left out, so the bound is an upper one.
    """
    base = build_base(get_base_spec(base_name), None, size)
    flops = [layer_flops(layer) for layer in base.layers]
    full = sum(flops)
    weighted = weighted_layers(base)
    rows = []
    for unfreeze in unfreeze_values:
        top = 0 if unfreeze == 0 else sum(flops[weighted[-unfreeze]:]) / full
        phase2 = epochs if unfreeze else 0
        uncached = warmup_epochs + phase2 * (1 + 2 * top)
        cached = top + phase2 * 3 * top
        rows.append((unfreeze, top, uncached, cached))
    return full, rows


class BatchTimer(keras.callbacks.Callback):
    """Seconds spent in train and validation batches; the first batch of each fit apart."""

    def __init__(self, record):
        super().__init__()
        self.record = record

    def _begin(self, batch, logs=None):
        self.tick = time.perf_counter()

    def _end(self, batch, logs=None):
        seconds = time.perf_counter() - self.tick
        self.record["batches"].append(seconds)

    on_train_batch_begin = on_test_batch_begin = _begin
    on_train_batch_end = on_test_batch_end = _end

    def on_train_begin(self, logs=None):
        self.record["phase_starts"].append(len(self.record["batches"]))


class FitProfile:
    """Wraps keras.Model.fit and FineTunedConvClassifier.fit to time every fit's parts."""

    def __init__(self):
        self.fits, self.current = [], None

    def __enter__(self):
        self.model_fit, self.estimator_fit = keras.Model.fit, FineTunedConvClassifier.fit
        profile = self

        def model_fit(model, *args, callbacks=None, **kwargs):
            callbacks = list(callbacks or []) + [BatchTimer(profile.current)]
            return profile.model_fit(model, *args, callbacks=callbacks, **kwargs)

        def estimator_fit(estimator, *args, **kwargs):
            built = NETWORK_POOL.built
            profile.current = {"batches": [], "phase_starts": []}
            start = time.perf_counter()
            try:
                return profile.estimator_fit(estimator, *args, **kwargs)
            finally:
                record = profile.current
                record["wall"] = time.perf_counter() - start
                record["built"] = NETWORK_POOL.built - built
                record["params"] = (estimator.unfreeze, estimator.learning_rate)
                profile.fits.append(record)

        keras.Model.fit, FineTunedConvClassifier.fit = model_fit, estimator_fit
        return self

    def __exit__(self, *exc):
        keras.Model.fit, FineTunedConvClassifier.fit = self.model_fit, self.estimator_fit

    def rows(self):
        """(fit, unfreeze, rate, built, wall, batches, outside, first-batch excess)."""
        for i, record in enumerate(self.fits):
            batches = record["batches"]
            firsts = [batches[j] for j in record["phase_starts"] if j < len(batches)]
            typical = float(np.median(batches)) if batches else 0.0
            excess = sum(max(0.0, b - typical) for b in firsts)
            yield (i + 1, *record["params"], record["built"], record["wall"], sum(batches),
                   record["wall"] - sum(batches), excess)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", default="efficientnet_lite0")
    parser.add_argument("--weights", default="imagenet")
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--n", type=int, default=150, help="photos used (every k-th)")
    parser.add_argument("--warmup-epochs", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--caches", nargs="+", default=["none", "memory", "folder"],
                        choices=["none", "memory", "folder"],
                        help="which runs to make (the first is the reference)")
    parser.add_argument("--bound-only", action="store_true",
                        help="print the compute bound and stop")
    args = parser.parse_args()
    paths, labels = fetch_food_photos("plant-animal")
    step = max(1, len(paths) // args.n)
    paths, labels = paths[::step][: args.n], labels[::step][: args.n]
    grid = {"unfreeze": [0, 3, 6], "learning_rate": [1e-4, 1e-5]}
    cv = StratifiedKFold(3, shuffle=True, random_state=0)
    print(f"GridSearchCV {grid}, cv=3, {args.base} ({args.weights}) @{args.size}, "
          f"{len(paths)} food photos (JPEG paths), warmup_epochs={args.warmup_epochs}, "
          f"epochs={args.epochs}, augment=None")
    full, rows = compute_bound(args.base, args.size, grid["unfreeze"], args.warmup_epochs,
                               args.epochs)
    print(f"\nCompute bound ({full / 1e9:.1f} GFLOP per image through the whole base):")
    print("| unfreeze | top's share of the base's FLOPs | uncached fit (full passes per image) "
          "| cached fit (full passes per image) |")
    print("|---|---|---|---|")
    for unfreeze, top, uncached, cached in rows:
        print(f"| {unfreeze} | {top:.2f} | {uncached:.1f} | {cached:.1f} |")
    bound = sum(r[2] for r in rows) / sum(r[3] for r in rows)
    print(f"The cache can speed the whole grid up by at most {bound:.1f}x "
          "(arithmetic only, fixed costs per fit left out).")
    if args.bound_only:
        return
    results, profiles = {}, {}
    for cache in [None if c == "none" else c for c in args.caches]:
        clear_memory_cache()
        skconvnet.clear_session()
        folder = tempfile.mkdtemp(prefix="skconvnet-cache-") if cache == "folder" else None
        clf = FineTunedConvClassifier(
            args.base, weights=args.weights, input_size=args.size, head_units=64,
            warmup_epochs=args.warmup_epochs, epochs=args.epochs,
            warmup_learning_rate=1e-3, batch_size=32, random_state=0,
            # Issue #6's recipe (RMSprop, constant rates, BatchNorm frozen), as recorded.
            optimizer="rmsprop", lr_schedule="constant", train_bn=False, label_smoothing=0.0,
            cache=folder if cache == "folder" else cache)
        start = time.perf_counter()
        with FitProfile() as profile:
            search = GridSearchCV(clf, grid, cv=cv).fit(paths, labels)
        results[cache] = (time.perf_counter() - start, search)
        profiles[cache] = list(profile.rows())
    base_time = next(iter(results.values()))[0]
    print("\n| cache | wall time (s) | speed-up | best params | best mean CV score |")
    print("|---|---|---|---|---|")
    for cache, (seconds, search) in results.items():
        print(f"| {cache} | {seconds:.0f} | {base_time / seconds:.1f}x | {search.best_params_} | "
              f"{search.best_score_:.3f} |")
    print("\n| grid point | " + " | ".join(f"cache={c}" for c in results) + " |")
    print("|---|" + "---|" * len(results))
    first = next(iter(results.values()))[1].cv_results_
    for i, params in enumerate(first["params"]):
        scores = [f"{r[1].cv_results_['mean_test_score'][i]:.3f}" for r in results.values()]
        print(f"| {params} | " + " | ".join(scores) + " |")
    print("\n| grid point | " + " | ".join(f"fit s, cache={c}" for c in results) + " |")
    print("|---|" + "---|" * len(results))
    for i, params in enumerate(first["params"]):
        times = [f"{r[1].cv_results_['mean_fit_time'][i]:.1f}" for r in results.values()]
        print(f"| {params} | " + " | ".join(times) + " |")
    for cache, rows in profiles.items():
        print(f"\nWhere each fit's time went, cache={cache} (s; 'outside' = wall - batches, "
              "'first-batch excess' = the first batches' time above a typical batch, i.e. "
              "tracing):")
        print("| fit | unfreeze | learning_rate | networks built | wall | batches | outside | "
              "first-batch excess |")
        print("|---|---|---|---|---|---|---|---|")
        for row in rows:
            print("| {} | {} | {:g} | {} | {:.2f} | {:.2f} | {:.2f} | {:.2f} |".format(*row))
        firsts = [r for r in rows if r[3]]
        later = [r for r in rows if not r[3]]
        if later:
            print(f"first fit of a signature: {np.mean([r[6] + r[7] for r in firsts]):.2f} s "
                  f"outside the arithmetic on average ({len(firsts)} fits); later fits: "
                  f"{np.mean([r[6] + r[7] for r in later]):.2f} s (max "
                  f"{max(r[6] + r[7] for r in later):.2f} s, {len(later)} fits; target <= 0.5)")
    diffs = [np.abs(r[1].cv_results_["mean_test_score"] - first["mean_test_score"]).max()
             for r in results.values()]
    print(f"\nlargest difference in a mean CV score against cache={args.caches[0]}: "
          f"{max(diffs):.4f}")


if __name__ == "__main__":
    main()
