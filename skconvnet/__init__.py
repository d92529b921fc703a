"""skconvnet: transfer learning with pretrained Keras convnets, the scikit-learn way."""

from .extraction import ConvFeatureExtractor
from .finetune import FineTunedConvClassifier
from .images import ImageReadError, load_image_folder
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
    "WeightsUnavailableError",
    "get_base_spec",
    "list_bases",
    "load_image_folder",
    "register_base",
]
