"""The same grid search through skconvnet and through its peers, measured as a new user would.

A 12-fit search: MobileNetV2 @96 with random weights, 150 food photos, cv=3, one phase of
3 epochs in which the head and the top ``unfreeze`` layers train at ``learning_rate``,
``unfreeze`` in {0, 4} x ``learning_rate`` in {1e-3, 1e-4}. Each run is a fresh process
(so its peak RSS is its own) on the same uint8 images, the same folds:

* ``keras.wrappers.SKLearnClassifier`` with the model builder its user writes (below);
* scikeras' ``KerasClassifier`` (if installed: ``pip install --no-deps scikeras``) with the
  same builder;
* ``FineTunedConvClassifier`` without and with ``cache="memory"``.

Prints wall time, peak RSS and the best mean CV score per run, and the lines of code of
each peer's builder. Run:  python benchmarks/peers.py [--n 150] [--size 96]
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

EPOCHS, BATCH, FOLDS = 3, 32, 3
GRID = {"unfreeze": [0, 4], "learning_rate": [1e-3, 1e-4]}


# --- what a user of keras.wrappers (or scikeras) writes --------------------------------------
def build_model(X, y, unfreeze, learning_rate, size=96):
    import keras

    base = keras.applications.MobileNetV2(include_top=False, weights=None,
                                          input_shape=(size, size, 3))
    base.trainable = False
    weighted = [layer for layer in base.layers if layer.weights
                and not isinstance(layer, keras.layers.BatchNormalization)]
    for layer in weighted[len(weighted) - unfreeze:] if unfreeze else []:
        layer.trainable = True
    inputs = keras.Input((size * size * 3,))  # the wrappers take 2-D X: images come flattened
    x = keras.layers.Reshape((size, size, 3))(inputs)
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(x)  # MobileNetV2's preprocess_input
    x = keras.layers.GlobalAveragePooling2D()(base(x, training=False))
    one_unit = y.shape[1] == 1  # scikeras encodes two classes as one 0/1 column
    outputs = keras.layers.Dense(y.shape[1], activation="sigmoid" if one_unit else "softmax")(x)
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.RMSprop(learning_rate),
                  "binary_crossentropy" if one_unit else "categorical_crossentropy",
                  metrics=["accuracy"])
    return model
# ----------------------------------------------------------------------------------------------


def load_images(n, size):
    from PIL import Image

    from skconvnet.datasets import fetch_food_photos

    paths, labels = fetch_food_photos("plant-animal")
    step = max(1, len(paths) // n)
    paths, labels = paths[::step][:n], labels[::step][:n]
    images = np.stack([np.asarray(Image.open(p).convert("RGB").resize(
        (size, size), Image.Resampling.BILINEAR)) for p in paths])
    return images, np.asarray(labels)


def run(name, n, size):
    """One search in this process; prints a JSON line with what was measured."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    X, y = load_images(n, size)
    cv = StratifiedKFold(FOLDS, shuffle=True, random_state=0)
    start = time.perf_counter()
    if name in ("keras.wrappers", "scikeras"):
        flat = X.reshape(len(X), -1).astype("float32")
        kwargs = [{"unfreeze": u, "learning_rate": r, "size": size}
                  for u in GRID["unfreeze"] for r in GRID["learning_rate"]]
        if name == "keras.wrappers":
            from keras.wrappers import SKLearnClassifier

            search = GridSearchCV(SKLearnClassifier(build_model), {"model_kwargs": kwargs}, cv=cv)
            search.fit(flat, y, epochs=EPOCHS, batch_size=BATCH, verbose=0)
        else:
            from scikeras.wrappers import KerasClassifier

            def scikeras_model(unfreeze, learning_rate, size, meta):
                outputs = 1 if meta["n_classes_"] == 2 else meta["n_classes_"]
                return build_model(None, np.zeros((1, outputs)), unfreeze, learning_rate, size)

            clf = KerasClassifier(scikeras_model, epochs=EPOCHS, batch_size=BATCH, verbose=0,
                                  loss="binary_crossentropy", unfreeze=0,
                                  learning_rate=1e-3, size=size)
            search = GridSearchCV(clf, {"model__unfreeze": GRID["unfreeze"],
                                        "model__learning_rate": GRID["learning_rate"]}, cv=cv)
            search.fit(flat, y)
        best = {k.split("__")[-1]: v for k, v in search.best_params_.items()}
    else:
        from skconvnet import FineTunedConvClassifier

        # The peer's model trains with RMSprop at one constant rate, BatchNorm frozen: the
        # same recipe here, so the search compares engines, not recipes.
        PEER_RECIPE = dict(optimizer="rmsprop", lr_schedule="constant", train_bn=False,
                           label_smoothing=0.0)
        # One phase of EPOCHS epochs at the rate: the warm-up alone for unfreeze=0, the
        # fine-tuning phase alone (head and top layers) for unfreeze > 0.
        grid = [{"unfreeze": [0], "warmup_epochs": [EPOCHS], "epochs": [0],
                 "warmup_learning_rate": GRID["learning_rate"]},
                {"unfreeze": [u for u in GRID["unfreeze"] if u], "warmup_epochs": [0],
                 "epochs": [EPOCHS], "learning_rate": GRID["learning_rate"]}]
        clf = FineTunedConvClassifier("mobilenetv2", weights=None, input_size=size,
                                      head_units=0, dropout=0.0, batch_size=BATCH,
                                      random_state=0, **PEER_RECIPE,
                                      cache="memory" if name.endswith("memory") else None)
        search = GridSearchCV(clf, grid, cv=cv).fit(X, y)
        best = search.best_params_
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"name": name, "seconds": seconds, "peak_mib": peak,
                      "best_score": float(search.best_score_), "best": repr(best),
                      "fits": len(search.cv_results_["params"]) * FOLDS + 1}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=150)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--run", help=argparse.SUPPRESS)
    parser.add_argument("--only", nargs="*", default=None)
    args = parser.parse_args()
    if args.run:
        return run(args.run, args.n, args.size)
    names = ["keras.wrappers", "scikeras", "skconvnet, cache=None", "skconvnet, cache=memory"]
    try:
        import scikeras  # noqa: F401
    except ImportError:
        print("scikeras is not installed (pip install --no-deps scikeras): its row is skipped")
        names.remove("scikeras")
    rows = []
    for name in args.only or names:
        result = subprocess.run(
            [sys.executable, __file__, "--run", name, "--n", str(args.n), "--size",
             str(args.size)], capture_output=True, text=True, check=False,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
        if result.returncode != 0 or not lines:
            print(f"{name}: failed\n{result.stderr[-2000:]}")
            continue
        rows.append(json.loads(lines[-1]))
    builder = [line for line in inspect.getsource(build_model).splitlines()
               if line.strip() and not line.strip().startswith("#")]
    flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    print(f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPU cores "
          f"({'with' if 'avx512_bf16' in flags else 'without'} AVX-512 BF16); GridSearchCV "
          f"{GRID}, cv={FOLDS}, one phase of {EPOCHS} epochs, MobileNetV2 (random weights) "
          f"@{args.size}, {args.n} food photos; the peers' model builder: {len(builder)} lines "
          "(build_model in this file), plus flattening X for their 2-D input check\n")
    reference = next((r["seconds"] for r in rows if r["name"] == "keras.wrappers"), None)
    print("| run | fits | wall time (s) | speed-up vs keras.wrappers | peak RSS (MiB) | "
          "best mean CV score | best parameters |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        speed = f"{reference / r['seconds']:.2f}x" if reference else "-"
        print(f"| {r['name']} | {r['fits']} | {r['seconds']:.1f} | {speed} | "
              f"{r['peak_mib']:.0f} | {r['best_score']:.3f} | {r['best']} |")


if __name__ == "__main__":
    main()
