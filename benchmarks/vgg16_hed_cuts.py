"""Which cut of the offline VGG16 (hed-bsds500) gives the best features on the food photos.

5-fold linear probe (StandardScaler + LogisticRegression) on global-average-pooled
features at 150x150, for each block's pooling layer, against random weights.
Usage: python benchmarks/vgg16_hed_cuts.py
"""

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.model_selection import StratifiedKFold, cross_val_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from skconvnet import ConvFeatureExtractor  # noqa: E402
from skconvnet.datasets import fetch_food_photos  # noqa: E402


def main():
    paths, labels = fetch_food_photos("plant-animal")
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    print(f"food photos, plant vs animal, {len(paths)} images, VGG16 @150, avg pooling")
    print("| cut | hed-bsds500 | random weights | seconds |")
    print("|---|---|---|---|")
    for layer in ("block3_pool", "block4_pool", "block5_pool"):
        start = time.perf_counter()
        scores = []
        for weights in ("hed-bsds500", None):
            features = ConvFeatureExtractor("vgg16", weights=weights, layer=layer,
                                            input_size=150, random_state=0).fit_transform(paths)
            probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.1))
            score = cross_val_score(probe, features, labels, cv=cv)
            scores.append(f"{score.mean():.3f} +- {score.std():.3f}")
        print(f"| {layer} | {scores[0]} | {scores[1]} | {time.perf_counter() - start:.0f} |",
              flush=True)


if __name__ == "__main__":
    main()
