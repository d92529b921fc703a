"""skconvnet against the seeds' hand-written Keras recipe, on the same photos, splits and weights.

The seed recipe (Chollet, "Deep Learning with Python", 5.3), ported to Keras 3:

I.   extract VGG16 features batch by batch with ``conv_base.predict``, flatten,
     train ``Dense(256) + Dropout(0.5) + Dense(1, sigmoid)`` with RMSprop 2e-5;
II.  ``conv_base`` frozen + ``Flatten + Dense(256) + Dense(1)`` trained on augmented
     batches (rotation 40, shifts 0.2, shear 0.2, zoom 0.2, horizontal flip), made
     per image in Python as ``ImageDataGenerator`` did (gone from Keras 3: the same
     affine transform with ``scipy.ndimage``);
III. unfreeze ``block5`` and go on training at RMSprop 1e-5.

Pixels are rescaled by 1/255 as in the seeds. skconvnet does the same three steps with two
estimators (its own preprocessing is VGG's caffe mean subtraction). Both use VGG16 with
the offline ``hed-bsds500`` weights at 150 x 150 on the food photos (plant vs animal).

Run:  python benchmarks/seed_recipe.py [--folds 2] [--epochs 5]
"""

from __future__ import annotations

import argparse
import inspect
import math
import os
import platform
import time

import numpy as np

SIZE = 150
BATCH = 20


# ---------------------------------------------------------------------------------------
# The seed recipe, by hand (what a user writes without skconvnet)
# ---------------------------------------------------------------------------------------
def seed_recipe(train_paths, train_y, test_paths, test_y, weights_file, epochs, seed):
    import keras
    import scipy.ndimage as ndi

    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)

    def load(paths):
        return np.stack([keras.utils.img_to_array(keras.utils.load_img(p, target_size=(SIZE, SIZE)))
                         for p in paths]) / 255.0

    def augment(image):  # ImageDataGenerator.random_transform
        theta = np.deg2rad(rng.uniform(-40, 40))
        tx, ty = rng.uniform(-0.2, 0.2) * SIZE, rng.uniform(-0.2, 0.2) * SIZE
        shear = np.deg2rad(rng.uniform(-0.2, 0.2))  # shear_range is in degrees
        zx, zy = rng.uniform(0.8, 1.2, 2)
        rotation = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0],
                             [0, 0, 1]])
        shift = np.array([[1, 0, tx], [0, 1, ty], [0, 0, 1]])
        shear_m = np.array([[1, -np.sin(shear), 0], [0, np.cos(shear), 0], [0, 0, 1]])
        zoom = np.array([[zx, 0, 0], [0, zy, 0], [0, 0, 1]])
        matrix = rotation @ shift @ shear_m @ zoom
        centre = np.array([[1, 0, SIZE / 2], [0, 1, SIZE / 2], [0, 0, 1]])
        matrix = centre @ matrix @ np.linalg.inv(centre)
        out = np.stack([ndi.affine_transform(image[..., c], matrix[:2, :2], matrix[:2, 2],
                                             order=1, mode="nearest") for c in range(3)], -1)
        return out[:, ::-1] if rng.random() < 0.5 else out

    def augmented_batches(paths, y):
        while True:
            order = rng.permutation(len(paths))
            for start in range(0, len(paths), BATCH):
                chosen = order[start:start + BATCH]
                images = load([paths[i] for i in chosen])
                yield np.stack([augment(image) for image in images]), y[chosen]

    conv_base = keras.applications.VGG16(weights=None, include_top=False,
                                         input_shape=(SIZE, SIZE, 3))
    conv_base.load_weights(weights_file)
    results = {}

    # I. features + densely connected classifier
    def extract_features(paths):
        features = []
        for start in range(0, len(paths), BATCH):
            features.append(conv_base.predict(load(paths[start:start + BATCH]), verbose=0))
        return np.concatenate(features).reshape(len(paths), -1)

    train_features, test_features = extract_features(train_paths), extract_features(test_paths)
    head = keras.Sequential([keras.Input((train_features.shape[1],)),
                             keras.layers.Dense(256, activation="relu"),
                             keras.layers.Dropout(0.5),
                             keras.layers.Dense(1, activation="sigmoid")])
    head.compile(optimizer=keras.optimizers.RMSprop(2e-5), loss="binary_crossentropy",
                 metrics=["accuracy"])
    head.fit(train_features, train_y, epochs=30, batch_size=BATCH, verbose=0)
    results["I"] = float(np.mean((head.predict(test_features, verbose=0)[:, 0] > 0.5) == test_y))

    # II. frozen base + head, trained on augmented images
    model = keras.Sequential([keras.Input((SIZE, SIZE, 3)), conv_base, keras.layers.Flatten(),
                              keras.layers.Dense(256, activation="relu"),
                              keras.layers.Dense(1, activation="sigmoid")])
    conv_base.trainable = False
    model.compile(optimizer=keras.optimizers.RMSprop(2e-5), loss="binary_crossentropy",
                  metrics=["accuracy"])
    steps = math.ceil(len(train_paths) / BATCH)
    batches = augmented_batches(train_paths, train_y)
    tick = time.perf_counter()
    model.fit(batches, steps_per_epoch=steps, epochs=epochs, verbose=0)
    results["epoch_seconds"] = (time.perf_counter() - tick) / epochs
    test_images = load(test_paths)
    results["II"] = float(np.mean((model.predict(test_images, verbose=0)[:, 0] > 0.5) == test_y))

    # III. fine-tune block5
    conv_base.trainable = True
    for layer in conv_base.layers:
        layer.trainable = layer.name.startswith("block5")
    model.compile(optimizer=keras.optimizers.RMSprop(1e-5), loss="binary_crossentropy",
                  metrics=["accuracy"])
    model.fit(batches, steps_per_epoch=steps, epochs=epochs, verbose=0)
    results["III"] = float(np.mean((model.predict(test_images, verbose=0)[:, 0] > 0.5) == test_y))
    return results


# ---------------------------------------------------------------------------------------
# The same with skconvnet
# ---------------------------------------------------------------------------------------
def with_skconvnet(train_paths, train_y, test_paths, test_y, weights_file, epochs, seed):
    from skconvnet import FineTunedConvClassifier

    common = dict(weights="hed-bsds500", input_size=SIZE, pooling="flatten", head_units=256,
                  batch_size=BATCH, random_state=seed)
    features = FineTunedConvClassifier("vgg16", **common, dropout=0.5, warmup_epochs=30,
                                       warmup_learning_rate=2e-5, cache="memory")
    finetuned = FineTunedConvClassifier("vgg16", **common, dropout=0.0, augment="standard",
                                        warmup_epochs=epochs, warmup_learning_rate=2e-5,
                                        unfreeze="block5_conv1", epochs=epochs,
                                        learning_rate=1e-5)
    return {"I": features.fit(train_paths, train_y).score(test_paths, test_y),
            "III": finetuned.fit(train_paths, train_y).score(test_paths, test_y)}


def user_lines(function):
    """Lines of code in a function body, blank lines, comments and docstrings left out."""
    body = inspect.getsource(function).splitlines()[1:]
    return sum(1 for line in body
               if line.strip() and not line.strip().startswith(("#", '"""')))


def one_augmented_epoch(paths, y, seed):
    """Seconds per epoch of frozen VGG16 + head on augmented batches, both ways."""
    from skconvnet import FineTunedConvClassifier

    timings = {}
    for n_epochs in (1, 3):
        clf = FineTunedConvClassifier("vgg16", weights="hed-bsds500", input_size=SIZE,
                                      pooling="flatten", augment="standard", batch_size=BATCH,
                                      warmup_epochs=n_epochs, random_state=seed)
        tick = time.perf_counter()
        clf.fit(paths, y)
        timings[n_epochs] = time.perf_counter() - tick
    return (timings[3] - timings[1]) / 2


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=5,
                        help="epochs of steps II and III (step I: 30, as in the seeds)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from sklearn.model_selection import StratifiedKFold

    from skconvnet.datasets import fetch_food_photos
    from skconvnet.weights import hed_bsds500_vgg16

    paths, labels = fetch_food_photos("plant-animal")
    y = (labels == "plant").astype(np.float32)
    paths = np.asarray(paths)
    weights_file = hed_bsds500_vgg16()
    splits = StratifiedKFold(args.folds, shuffle=True, random_state=args.seed).split(paths, y)
    recipe, ours, walls = [], [], {"recipe": [], "skconvnet": []}
    for fold, (train, test) in enumerate(splits, start=1):
        for name, function, store in (("skconvnet", with_skconvnet, ours),
                                      ("recipe", seed_recipe, recipe)):
            tick = time.perf_counter()
            store.append(function(list(paths[train]), y[train], list(paths[test]), y[test],
                                  weights_file, args.epochs, args.seed))
            walls[name].append(time.perf_counter() - tick)
            print(f"fold {fold}/{args.folds} {name}: {store[-1]} in {walls[name][-1]:.0f} s",
                  flush=True)

    train = next(StratifiedKFold(args.folds, shuffle=True, random_state=args.seed)
                 .split(paths, y))[0]
    skconvnet_epoch = one_augmented_epoch(list(paths[train]), y[train], args.seed)
    recipe_epoch = np.mean([r["epoch_seconds"] for r in recipe])

    def cell(results, key):
        values = [r[key] for r in results if key in r]
        if not values:
            return "(one fit with III)"
        return f"{np.mean(values):.3f} +- {np.std(values):.3f}"

    print(f"\n{time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPU cores, "
          f"{platform.processor() or platform.machine()}; VGG16 hed-bsds500 @ {SIZE}, "
          f"{len(paths)} food photos, {args.folds} stratified folds, epochs II/III = "
          f"{args.epochs}; `python benchmarks/seed_recipe.py --folds {args.folds} "
          f"--epochs {args.epochs}`\n")
    print("| step | seed recipe (hand-written Keras 3) | skconvnet |")
    print("|---|---|---|")
    print(f"| I. features + dense head, accuracy | {cell(recipe, 'I')} | {cell(ours, 'I')} |")
    print(f"| II. frozen base + augmentation, accuracy | {cell(recipe, 'II')} | "
          f"{cell(ours, 'II')} |")
    print(f"| III. fine-tuned block5, accuracy | {cell(recipe, 'III')} | {cell(ours, 'III')} |")
    print(f"| wall time per fold, I-III (s) | {np.mean(walls['recipe']):.0f} | "
          f"{np.mean(walls['skconvnet']):.0f} |")
    print(f"| one augmented epoch, frozen base (s) | {recipe_epoch:.1f} | {skconvnet_epoch:.1f} |")
    print(f"| lines of user code | {user_lines(seed_recipe)} | {user_lines(with_skconvnet)} |")


if __name__ == "__main__":
    main()
