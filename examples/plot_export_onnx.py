"""
Exporting a pipeline to ONNX
============================

:func:`skconvnet.export` writes a fitted pipeline (pretrained features, scaling, a linear
model) as one ONNX graph that takes uint8 images of any size. onnxruntime runs it without
TensorFlow, Keras or skconvnet, e.g. in a web service or on a phone.
"""

# %%
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skconvnet import ConvFeatureExtractor, export
from skconvnet.testing import photo_patches

X, y, _ = photo_patches(n_per_photo=40, size=64, seed=6)
labels = np.array(["temple", "flower"])[y]
pipe = make_pipeline(ConvFeatureExtractor("efficientnet_lite0", input_size=96),
                     StandardScaler(), LogisticRegression(C=0.1, max_iter=2000)).fit(X, labels)

path = export(pipe, Path(tempfile.mkdtemp()) / "patches.onnx")
print(f"{path.name}: {path.stat().st_size / 1e6:.1f} MB")

# %%
# Where the model is deployed, this is all the code there is: the graph resizes the 64 px
# crops to 96 px and applies EfficientNet's preprocessing itself.
session = onnxruntime.InferenceSession(str(path))
start = time.perf_counter()
predicted, probabilities = session.run(None, {"images": X})
print(f"{len(X)} images in {time.perf_counter() - start:.2f} s with onnxruntime")

# %%
# The same labels as the pipeline, and the same probabilities to within float rounding
# (plus the resize: Pillow computes it in fixed point).
print("same labels:", bool((predicted == pipe.predict(X)).all()))
print(f"largest probability difference: {np.abs(probabilities - pipe.predict_proba(X)).max():.1e}")
print("classes in the model's metadata:",
      session.get_modelmeta().custom_metadata_map["classes"])
