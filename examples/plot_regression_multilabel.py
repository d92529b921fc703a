"""
Regression and multi-label targets
==================================

:class:`~skconvnet.FineTunedConvRegressor` predicts numbers from images: here, where in its
photo a crop was taken (0 at the top, 1 at the bottom), which the sky, the roofs and the
ground give away. :class:`~skconvnet.FineTunedConvClassifier` also takes a 0/1 indicator
matrix for multi-label targets.
"""

# %%
import matplotlib.pyplot as plt
import numpy as np
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import KFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skconvnet import ConvFeatureExtractor, FineTunedConvClassifier, FineTunedConvRegressor
from skconvnet.testing import photo_patches

X, photo, height = photo_patches(n_per_photo=60, size=48, seed=5)
folds = KFold(3, shuffle=True, random_state=0)

regressor = FineTunedConvRegressor("efficientnet_lite0", input_size=96, head_units=64,
                                   warmup_epochs=8, warmup_learning_rate=1e-3, unfreeze=0,
                                   cache="memory", random_state=0)
probe = make_pipeline(ConvFeatureExtractor("efficientnet_lite0", input_size=96,
                                           cache="memory"),
                      StandardScaler(), RidgeCV(alphas=np.logspace(-1, 4, 11)))
predicted = {name: cross_val_predict(model, X, height, cv=folds)
             for name, model in [("fine-tuned head", regressor), ("linear probe", probe)]}

fig, ax = plt.subplots(figsize=(4, 4))
for name, values in predicted.items():
    r2 = 1 - ((values - height) ** 2).sum() / ((height - height.mean()) ** 2).sum()
    print(f"{name}: held-out R^2 {r2:.3f}")
    ax.scatter(height, values, s=10, label=f"{name} (R^2 {r2:.2f})")
ax.plot([0, 1], [0, 1], "k--", lw=1)
ax.set_xlabel("true height in the photo")
ax.set_ylabel("predicted")
ax.legend(fontsize=8)
fig.tight_layout()

# %%
# The fine-tuned estimator here trains only its head (``unfreeze=0``, the default), on 120
# images; the linear probe (features, scaling, ridge regression with its penalty chosen by
# cross-validation) is the baseline to beat, as in the measurements on real targets in the
# user guide.

# %%
# Multi-label: two tags per crop, "from the flower photo" and "from the lower half".
Y = np.column_stack([photo == 1, height > 0.5]).astype(int)
tagger = FineTunedConvClassifier("efficientnet_lite0", input_size=96, head_units=0,
                                 warmup_epochs=6, warmup_learning_rate=1e-3, unfreeze=0,
                                 cache="memory", random_state=0)
tags = cross_val_predict(tagger, X, Y, cv=folds)
print("per-tag accuracy:", (tags == Y).mean(axis=0).round(3))
print("subset accuracy:", (tags == Y).all(axis=1).mean().round(3))
