"""The catalogue: one registry record for each base the package ships.

The ``keras.applications`` bases (ImageNet weights downloaded by Keras) and the
bases with offline weights (EfficientNet-Lite0, the HED VGG16 weights). Importing
:mod:`skconvnet` imports this module, so the records are always there.
"""

from __future__ import annotations

import keras

from .efficientnet_lite import (
    EfficientNetLite0,
    EfficientNetLite1,
    EfficientNetLite2,
    lite_preprocess_input,
)
from .registry import BaseSpec, register_base
from .weights import hed_bsds500_vgg16

__all__ = []

_apps = keras.applications


def _keras_app(name, builder, module, preprocessing, default_size, width, pattern,
               min_size=32, marks="start", named_weights=None):
    register_base(
        BaseSpec(
            name=name,
            builder=builder,
            preprocessing=preprocessing,
            default_size=default_size,
            min_size=min_size,
            feature_width=width,
            block_pattern=pattern,
            block_marks=marks,
            preprocess_input=module.preprocess_input,
            named_weights=named_weights or {},
        )
    )


_VGG = r"^(block\d+)_"
_RESNET = r"^(conv\d+_block\d+|post)_"
_EFFICIENTNET = r"^(block\d+[a-z]|top)_"

_keras_app("vgg16", _apps.VGG16, _apps.vgg16, "caffe", 224, 512, _VGG,
           named_weights={"hed-bsds500": hed_bsds500_vgg16})
_keras_app("vgg19", _apps.VGG19, _apps.vgg19, "caffe", 224, 512, _VGG)
for _depth in (50, 101, 152):
    _keras_app(f"resnet{_depth}", getattr(_apps, f"ResNet{_depth}"), _apps.resnet,
               "caffe", 224, 2048, _RESNET)
    _keras_app(f"resnet{_depth}v2", getattr(_apps, f"ResNet{_depth}V2"), _apps.resnet_v2,
               "tf", 224, 2048, _RESNET)
_keras_app("inceptionv3", _apps.InceptionV3, _apps.inception_v3, "tf", 299, 2048,
           r"^mixed\d+$", min_size=75, marks="end")
_keras_app("inceptionresnetv2", _apps.InceptionResNetV2, _apps.inception_resnet_v2, "tf",
           299, 1536, r"^(mixed_\d[a-z]|block\d+_\d+_ac)$", min_size=75, marks="end")
_keras_app("xception", _apps.Xception, _apps.xception, "tf", 299, 2048, r"^(block\d+)_",
           min_size=71)
_keras_app("mobilenet", _apps.MobileNet, _apps.mobilenet, "tf", 224, 1024,
           r"^(conv_dw_\d+)$")
_keras_app("mobilenetv2", _apps.MobileNetV2, _apps.mobilenet_v2, "tf", 224, 1280,
           r"^(expanded_conv|block_\d+|Conv_1)(?:_|$)")
_keras_app("mobilenetv3small", _apps.MobileNetV3Small, _apps.mobilenet_v3, "none", 224, 576,
           r"^(expanded_conv(?:_\d+)?|conv_1)(?:_[a-z]|$)")
_keras_app("mobilenetv3large", _apps.MobileNetV3Large, _apps.mobilenet_v3, "none", 224, 960,
           r"^(expanded_conv(?:_\d+)?|conv_1)(?:_[a-z]|$)")
for _depth, _width in ((121, 1024), (169, 1664), (201, 1920)):
    _keras_app(f"densenet{_depth}", getattr(_apps, f"DenseNet{_depth}"), _apps.densenet,
               "torch", 224, _width, r"^(conv\d+_block\d+|pool\d+)_")
for _variant, _size, _width in zip(
    "01234567", (224, 240, 260, 300, 380, 456, 528, 600),
    (1280, 1280, 1408, 1536, 1792, 2048, 2304, 2560),
):
    _keras_app(f"efficientnetb{_variant}", getattr(_apps, f"EfficientNetB{_variant}"),
               _apps.efficientnet, "none", _size, _width, _EFFICIENTNET)
for _variant, _size in (("B0", 224), ("B1", 240), ("B2", 260), ("B3", 300),
                        ("S", 384), ("M", 480), ("L", 480)):
    _width = 1536 if _variant == "B3" else 1408 if _variant == "B2" else 1280
    _keras_app(f"efficientnetv2{_variant.lower()}",
               getattr(_apps, f"EfficientNetV2{_variant}"), _apps.efficientnet_v2,
               "none", _size, _width, _EFFICIENTNET)
for _variant, _width in (("Tiny", 768), ("Small", 768), ("Base", 1024), ("Large", 1536),
                         ("XLarge", 2048)):
    _keras_app(f"convnext{_variant.lower()}", getattr(_apps, f"ConvNeXt{_variant}"),
               _apps.convnext, "none", 224, _width,
               r"_(stage_\d+_block_\d+|downsampling_block_\d+)_?")
_keras_app("nasnetmobile", _apps.NASNetMobile, _apps.nasnet, "tf", 224, 1056,
           r"^(normal_concat_\d+|reduction_concat_\w+)$", marks="end")
_keras_app("nasnetlarge", _apps.NASNetLarge, _apps.nasnet, "tf", 331, 4032,
           r"^(normal_concat_\d+|reduction_concat_\w+)$", marks="end")


for _builder, _size in ((EfficientNetLite0, 224), (EfficientNetLite1, 240),
                        (EfficientNetLite2, 260)):
    register_base(
        BaseSpec(
            name=f"efficientnet_lite{_builder.__name__[-1]}",
            builder=_builder,
            preprocess_input=lite_preprocess_input,
            preprocessing="lite",
            default_size=_size,
            min_size=32,
            feature_width=1280,
            block_pattern=_EFFICIENTNET,
        )
    )
