"""Keras layers the package puts into its models.

Preprocessing lives inside the model graph, so it runs compiled with the rest of
the network, never touches the caller's array, and travels with a saved model.
"""

import keras
from keras import ops

__all__ = ["PREPROCESSING_MODES", "ImagePreprocessing"]

#: The pixel conventions of the bases (``BaseSpec.preprocessing``), each matching
#: one of Keras' ``preprocess_input`` functions (checked by the test-suite).
PREPROCESSING_MODES = ("caffe", "tf", "torch", "lite", "none")

_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)


@keras.saving.register_keras_serializable(package="skconvnet")
class ImagePreprocessing(keras.layers.Layer):
    """Map RGB pixels in ``[0, 255]`` to what a pretrained base expects.

    Parameters
    ----------
    mode : {"caffe", "tf", "torch", "lite", "none"}
        ``"caffe"``: RGB to BGR, then ImageNet mean subtraction (VGG, ResNet);
        ``"tf"``: scale to ``[-1, 1]`` (Inception, Xception, MobileNet, ...);
        ``"torch"``: scale to ``[0, 1]`` then ImageNet mean/std (DenseNet);
        ``"lite"``: ``(x - 127) / 128`` (EfficientNet-Lite);
        ``"none"``: identity, for bases that normalise their input themselves.
    """

    def __init__(self, mode, **kwargs):
        # **kwargs here is Keras' layer protocol (name, dtype, ...), not ours.
        super().__init__(**kwargs)
        if mode not in PREPROCESSING_MODES:
            raise ValueError(f"mode must be one of {PREPROCESSING_MODES}; got {mode!r}.")
        self.mode = mode

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        if self.mode == "caffe":
            x = ops.flip(x, axis=-1)
            return x - ops.convert_to_tensor(_CAFFE_MEAN_BGR, dtype=x.dtype)
        if self.mode == "tf":
            return x / 127.5 - 1.0
        if self.mode == "torch":
            mean = ops.convert_to_tensor(_TORCH_MEAN, dtype=x.dtype)
            std = ops.convert_to_tensor(_TORCH_STD, dtype=x.dtype)
            return (x / 255.0 - mean) / std
        if self.mode == "lite":
            return (x - 127.0) / 128.0
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}
