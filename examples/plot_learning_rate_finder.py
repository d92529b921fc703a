"""
Finding a learning rate, and the fine-tuning recipe
===================================================

:func:`~skconvnet.suggest_learning_rate` runs the range test on a copy of a fine-tuned
estimator: its warm-up as configured, then phase 2 for up to ``n_steps`` batches while the rate
climbs geometrically. The loss against the rate shows where training starts to blow up; the
suggestion is a tenth of the rate of the lowest smoothed loss. Every ingredient of the recipe
(optimizer, schedule, discriminative rates, BatchNorm, label smoothing, test-time views) is a
plain parameter, so ``set_params`` and searches handle them like any other.
"""

# %%
import matplotlib.pyplot as plt
import numpy as np

from skconvnet import FineTunedConvClassifier, plot_history, suggest_learning_rate
from skconvnet.testing import photo_patches

X, y, _ = photo_patches(n_per_photo=50, size=48, seed=2)
clf = FineTunedConvClassifier("efficientnet_lite0", input_size=96, unfreeze="all",
                              warmup_epochs=2, epochs=4, random_state=0)
fig, ax = plt.subplots(figsize=(5, 3.5))
rate = suggest_learning_rate(clf, X, y, n_steps=40, ax=ax)
print(f"suggested learning_rate: {float(rate):.2g} ({len(rate.rates)} batches swept)")

# %%
# Train with the suggested rate; ``history_`` records each epoch's rate (the schedule's
# mean over the epoch), and ``tta=2`` averages each prediction over the image, its mirror
# image and its centre crop.
clf.set_params(learning_rate=float(rate), tta=2).fit(X, y)
print([round(entry["learning_rate"], 6) for entry in clf.history_])
print(f"training accuracy {np.mean(clf.predict(X) == y):.3f}")
fig = plot_history(clf, smooth=0.0)
