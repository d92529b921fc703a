"""
Saving, loading and sharing safely
==================================

:func:`skconvnet.save` writes one file: the parameters and fitted attributes as JSON and the
network in Keras' ``.keras`` format. :func:`skconvnet.load` runs no code from the file, so a
model file from someone else is safe to open; anything that is not exactly what ``save``
writes raises :class:`~skconvnet.UnsafeModelFileError`.
"""

# %%
import tempfile
import zipfile
from pathlib import Path

import numpy as np

import skconvnet
from skconvnet import FineTunedConvClassifier, UnsafeModelFileError
from skconvnet.testing import photo_patches

X, y, _ = photo_patches(n_per_photo=30, size=40, seed=3)
clf = FineTunedConvClassifier("efficientnet_lite0", input_size=96, head_units=0,
                              warmup_epochs=3, unfreeze=0, random_state=0).fit(X, y)

path = Path(tempfile.mkdtemp()) / "patches.skconvnet"
skconvnet.save(clf, path)
loaded = skconvnet.load(path)
print(f"{path.name}: {path.stat().st_size / 1e6:.1f} MB")
print("identical probabilities:", np.array_equal(clf.predict_proba(X), loaded.predict_proba(X)))
print(loaded)

# %%
# A tampered file is refused, with the reason, before anything in it is used.
tampered = path.with_name("tampered.skconvnet")
with zipfile.ZipFile(path) as source, zipfile.ZipFile(tampered, "w") as target:
    for item in source.infolist():
        data = source.read(item)
        if item.filename.endswith(".json"):
            data = data.replace(b'"head_units": 0', b'"head_units": -1')
        target.writestr(item, data)
try:
    skconvnet.load(tampered)
except UnsafeModelFileError as error:
    print("refused:", error)
