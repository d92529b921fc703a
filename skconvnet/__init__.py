"""skconvnet: transfer learning with pretrained Keras convnets, the scikit-learn way."""

from . import catalogue  # noqa: F401  (registers the bases the package ships)
from ._engine import clear_session, set_network_pool_size
from .caching import clear_memory_cache
from .exceptions import (
    ImageReadError,
    InvalidParameterError,
    UnsafeModelFileError,
    WeightsUnavailableError,
)
from .exporting import export
from .extraction import ConvFeatureExtractor
from .finetune import FineTunedConvClassifier
from .images import load_image_folder
from .inspection import inspect_base
from .plotting import plot_feature_maps, plot_history
from .rate_finder import suggest_learning_rate
from .registry import BaseSpec, get_base_spec, list_bases, register_base
from .regression import FineTunedConvRegressor
from .saving import load, save

__version__ = "0.1.0"

__all__ = [
    "BaseSpec",
    "ConvFeatureExtractor",
    "FineTunedConvClassifier",
    "FineTunedConvRegressor",
    "ImageReadError",
    "InvalidParameterError",
    "UnsafeModelFileError",
    "WeightsUnavailableError",
    "clear_memory_cache",
    "clear_session",
    "export",
    "get_base_spec",
    "inspect_base",
    "list_bases",
    "load",
    "load_image_folder",
    "plot_feature_maps",
    "plot_history",
    "register_base",
    "save",
    "set_network_pool_size",
    "suggest_learning_rate",
]
