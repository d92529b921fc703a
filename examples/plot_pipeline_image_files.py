"""
A pipeline on image files
=========================

The linear probe: pretrained features from :class:`~skconvnet.ConvFeatureExtractor`, then
scikit-learn. The images are JPEG files in one folder per class, read with
:func:`~skconvnet.load_image_folder`, so the pipeline takes file paths like any text or table
column, and the files are decoded in batches, never all at once.
"""

# %%
# Real photos as files
# --------------------
# Crops of the two photos that ship with scikit-learn, written as JPEG files into
# ``photos/<class>/``.
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from skconvnet import ConvFeatureExtractor, load_image_folder
from skconvnet.testing import photo_patches

X, y, _ = photo_patches(n_per_photo=40, size=48, seed=0)
folder = Path(tempfile.mkdtemp()) / "photos"
for i, (image, label) in enumerate(zip(X, y)):
    class_folder = folder / ("temple", "flower")[label]
    class_folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(class_folder / f"{i:03d}.jpg", quality=90)

paths, labels = load_image_folder(folder)
print(len(paths), "files, classes:", ", ".join(sorted(set(labels))))

fig, axes = plt.subplots(1, 8, figsize=(10, 1.8))
for ax, path, label in zip(axes, paths[::10], labels[::10]):
    ax.imshow(Image.open(path))
    ax.set_title(label, fontsize=9)
    ax.axis("off")

# %%
# Features, then a linear model
# -----------------------------
# EfficientNet-Lite0 with its offline ImageNet weights, at 96 px. ``cache="memory"`` keeps
# each file's features, so the 5 folds below compute them once.
pipe = Pipeline([
    ("features", ConvFeatureExtractor("efficientnet_lite0", input_size=96, cache="memory")),
    ("scale", StandardScaler()),
    ("clf", LogisticRegression(C=0.1, max_iter=2000)),
])
scores = cross_val_score(pipe, paths, labels, cv=5)
print(f"accuracy over 5 folds: {scores.mean():.3f} +- {scores.std():.3f}")

# %%
# The fitted pipeline predicts from file paths directly.
pipe.fit(paths, labels)
print("predicted:", pipe.predict(paths[::16]))
print("true:     ", labels[::16])
print("feature width:", pipe.named_steps["features"].n_features_out_)
