"""GridSearchCV over unfreeze x learning_rate with the frozen-layer cache on and off.

Same data, same folds, same seeds; prints wall time, best parameters, and the mean CV
score and mean fit time of every grid point for each run. First it prints the compute
bound: how much of the grid's arithmetic (multiply-adds of the conv and dense layers) the
cache can save at all, given that the unfrozen top still trains forward and backward.
Then, per fit, where its time went: the train and validation batches (the arithmetic;
the first batch of a phase also holds the tracing of its step, when the step is new), and
everything outside them (building, compiling, Python, data). Networks are reused across
fits (skconvnet._engine): the first fit builds, the first fit of each depth traces.
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
from skconvnet import FineTunedConvClassifier, _training, caching  # noqa: E402
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


def compute_bound(base_name, size, unfreeze_values, epochs, n_train, n_test):
    """The search's arithmetic, in image passes through the whole base, per unfreeze value.

    Each fit trains on ``n_train`` images and scores ``n_test``, with the routes of
    ``skconvnet._training``. Uncached: the warm-up runs the base once per image (the
    head then trains on those features), fine-tuning runs the whole base forward and its
    top backward (about twice its forward) every epoch, scoring runs the base once per
    held-out image. Cached: each image's frozen bottom runs once per depth for the whole
    search (``n_train + n_test`` images, added per depth below), the warm-up runs the
    top once, fine-tuning its top forward and backward every epoch, scoring the top alone.
    The head's arithmetic is left out (it is the same on both routes and tiny).
    """
    base = build_base(get_base_spec(base_name), None, size)
    flops = [layer_flops(layer) for layer in base.layers]
    full = sum(flops)
    weighted = weighted_layers(base)
    rows = []
    for unfreeze in unfreeze_values:
        top = 0 if unfreeze == 0 else sum(flops[weighted[-unfreeze]:]) / full
        finetune = epochs if unfreeze else 0
        uncached = n_train * (1 + finetune * (1 + 2 * top)) + n_test
        cached = n_train * (top + finetune * 3 * top) + n_test * top
        rows.append((unfreeze, top, uncached, cached, (n_train + n_test) * (1 - top)))
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


#: skconvnet's passes over images outside the training steps, timed as "passes": through
#: the whole network (the uncached warm-up's features), into the cache, and the cached
#: warm-up's pass through the top.
PASSES = [(_training, "predict_source"), (caching, "predict_source"),
          (_training, "call_on_arrays")]


class FitProfile:
    """Wraps keras.Model.fit, the passes of :data:`PASSES` and FineTunedConvClassifier.fit
    to time every fit's parts."""

    def __init__(self):
        self.fits, self.current = [], None

    def __enter__(self):
        self.model_fit, self.estimator_fit = keras.Model.fit, FineTunedConvClassifier.fit
        self.passes = [getattr(module, name) for module, name in PASSES]
        profile = self

        def timed_pass(original):
            def timed(*args, **kwargs):
                start = time.perf_counter()
                try:
                    return original(*args, **kwargs)
                finally:
                    if profile.current is not None:  # inside a fit, not scoring
                        profile.current["passes"] += time.perf_counter() - start
            return timed

        def model_fit(model, *args, callbacks=None, **kwargs):
            callbacks = list(callbacks or []) + [BatchTimer(profile.current)]
            return profile.model_fit(model, *args, callbacks=callbacks, **kwargs)

        def estimator_fit(estimator, *args, **kwargs):
            built = NETWORK_POOL.built
            profile.current = {"batches": [], "phase_starts": [], "passes": 0.0}
            start = time.perf_counter()
            try:
                return profile.estimator_fit(estimator, *args, **kwargs)
            finally:
                record = profile.current
                record["wall"] = time.perf_counter() - start
                record["built"] = NETWORK_POOL.built - built
                record["params"] = (estimator.unfreeze, estimator.learning_rate)
                profile.fits.append(record)
                profile.current = None

        keras.Model.fit, FineTunedConvClassifier.fit = model_fit, estimator_fit
        for (module, name), original in zip(PASSES, self.passes):
            setattr(module, name, timed_pass(original))
        return self

    def __exit__(self, *exc):
        keras.Model.fit, FineTunedConvClassifier.fit = self.model_fit, self.estimator_fit
        for (module, name), original in zip(PASSES, self.passes):
            setattr(module, name, original)

    def rows(self):
        """(fit, unfreeze, rate, built, first at its depth, wall, batches, passes, outside,
        first-batch excess)."""
        seen = set()
        for i, record in enumerate(self.fits):
            batches = record["batches"]
            firsts = [batches[j] for j in record["phase_starts"] if j < len(batches)]
            typical = float(np.median(batches)) if batches else 0.0
            excess = sum(max(0.0, b - typical) for b in firsts)
            unfreeze = record["params"][0]
            first = "yes" if unfreeze not in seen else ""
            seen.add(unfreeze)
            yield (i + 1, *record["params"], record["built"], first, record["wall"],
                   sum(batches), record["passes"],
                   record["wall"] - sum(batches) - record["passes"], excess)


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
    n_splits = 3
    cv = StratifiedKFold(n_splits, shuffle=True, random_state=0)
    print(f"GridSearchCV {grid}, cv=3, {args.base} ({args.weights}) @{args.size}, "
          f"{len(paths)} food photos (JPEG paths), warmup_epochs={args.warmup_epochs}, "
          f"epochs={args.epochs}, augment=None")
    n_test = len(paths) // n_splits
    full, rows = compute_bound(args.base, args.size, grid["unfreeze"], args.epochs,
                               len(paths) - n_test, n_test)
    print(f"\nCompute bound ({full / 1e9:.2f} GFLOP per image through the whole base; image "
          f"passes through the whole base per fit of {len(paths) - n_test} training and "
          f"{n_test} held-out images):")
    print("| unfreeze | top's share of the base's FLOPs | uncached fit | cached fit "
          "| cached: the bottom once per image, per search |")
    print("|---|---|---|---|---|")
    for unfreeze, top, uncached, cached, bottom in rows:
        print(f"| {unfreeze} | {top:.2f} | {uncached:.0f} | {cached:.0f} | {bottom:.0f} |")
    fits_per_point = n_splits * len(grid["learning_rate"])
    uncached_total = fits_per_point * sum(r[2] for r in rows)
    cached_total = fits_per_point * sum(r[3] for r in rows) + sum(r[4] for r in rows)
    print(f"The whole search (refit left out): {uncached_total:.0f} image passes uncached, "
          f"{cached_total:.0f} cached: the cache can speed it up by at most "
          f"{uncached_total / cached_total:.1f}x (arithmetic only, fixed costs per fit left "
          "out).")
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
        print(f"\nWhere each fit's time went, cache={cache} (s; 'batches' = the train and "
              "validation steps, 'passes' = passes over images outside the steps (the "
              "warm-up's features through the base or the cached top, the frozen bottom into "
              "the cache), 'outside' = wall - batches - passes, 'first-batch excess' = the "
              "first batches' time above a typical batch, i.e. tracing):")
        print("| fit | unfreeze | learning_rate | networks built | first fit at its depth | "
              "wall | batches | passes | outside | first-batch excess |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for row in rows:
            print("| {} | {} | {:g} | {} | {} | {:.2f} | {:.2f} | {:.2f} | {:.2f} | {:.2f} |"
                  .format(*row))
        firsts = [r for r in rows if r[4]]
        later = [r for r in rows if not r[4]]
        if later:
            outside = [r[8] + r[9] for r in firsts]
            print(f"first fit at a depth (builds or traces): {np.mean(outside):.2f} s "
                  f"outside the arithmetic on average ({len(firsts)} fits, "
                  f"{sum(outside):.1f} s in all); later fits: "
                  f"{np.mean([r[8] + r[9] for r in later]):.2f} s (max "
                  f"{max(r[8] + r[9] for r in later):.2f} s, {len(later)} fits; target <= 0.5)")
        arithmetic = sum(r[6] + r[7] - r[9] for r in rows)
        print(f"batches and passes, first-batch excess left out: {arithmetic:.1f} s; the rest "
              f"of the fits: {sum(r[5] for r in rows) - arithmetic:.1f} s")
    diffs = [np.abs(r[1].cv_results_["mean_test_score"] - first["mean_test_score"]).max()
             for r in results.values()]
    print(f"\nlargest difference in a mean CV score against cache={args.caches[0]}: "
          f"{max(diffs):.4f}")


if __name__ == "__main__":
    main()
