"""skconvnet: transfer learning with pretrained Keras convnets, the scikit-learn way."""

from .extraction import ConvFeatureExtractor
from .finetune import FineTunedConvClassifier
from .images import ImageReadError, load_image_folder
from .inspection import inspect_base
from .plotting import plot_feature_maps, plot_history
from .saving import UnsafeModelFileError, load, save
from .models import WeightsUnavailableError
from .registry import BaseSpec, get_base_spec, list_bases, register_base
from ._validation import InvalidParameterError

__version__ = "0.1.0"

__all__ = [
    "BaseSpec",
    "ConvFeatureExtractor",
    "FineTunedConvClassifier",
    "ImageReadError",
    "InvalidParameterError",
    "UnsafeModelFileError",
    "WeightsUnavailableError",
    "get_base_spec",
    "inspect_base",
    "list_bases",
    "load",
    "load_image_folder",
    "plot_feature_maps",
    "plot_history",
    "register_base",
    "save",
]
