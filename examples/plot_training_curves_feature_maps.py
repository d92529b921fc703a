"""
Training curves and feature maps
================================

:func:`~skconvnet.plot_history` draws a fine-tuned estimator's ``history_``: accuracy and loss
of both phases, with a dashed line where fine-tuning starts. :func:`~skconvnet.plot_feature_maps`
shows what one layer of the base sees in one image.
"""

# %%
from skconvnet import FineTunedConvClassifier, plot_feature_maps, plot_history
from skconvnet.testing import photo_patches

X, y, _ = photo_patches(n_per_photo=50, size=48, seed=2)
clf = FineTunedConvClassifier("efficientnet_lite0", input_size=96, head_units=64,
                              warmup_epochs=4, epochs=3, unfreeze=4, learning_rate=1e-4,
                              warmup_learning_rate=1e-3, validation_fraction=0.25,
                              random_state=0).fit(X, y)
print(f"{len(clf.history_)} epochs; last: {clf.history_[-1]}")
fig = plot_history(clf, smooth=0.6)

# %%
# 16 maps of an early block for the first crop.
fig = plot_feature_maps(clf, X[0], layer="block2b_expand_relu", max_maps=16)
