"""The registry of convolutional bases.

One :class:`BaseSpec` record per base holds everything the rest of the package
needs to know about it: how to build it, how it expects its pixels, which input
sizes it accepts, how wide its last feature map is and where its blocks start.
Nothing else in the package branches on a model's name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Mapping

import keras

__all__ = [
    "BaseSpec",
    "register_base",
    "get_base_spec",
    "list_bases",
    "block_starts",
]

#: The pixel conventions of the bases, applied inside the model graph by
#: :class:`skconvnet.layers.ImagePreprocessing`. Each matches one of Keras'
#: ``preprocess_input`` functions (checked by the test-suite).
PREPROCESSING_MODES = ("caffe", "tf", "torch", "lite", "none")


@dataclass(frozen=True)
class BaseSpec:
    """What the package knows about one convolutional base.

    Parameters
    ----------
    name : str
        Registry key, lower case (``"vgg16"``).
    builder : callable
        ``builder(include_top=False, weights=..., input_shape=...)`` returning a
        functional :class:`keras.Model`, as the ``keras.applications`` builders do.
    preprocessing : {"caffe", "tf", "torch", "lite", "none"}
        The pixel convention of the base, applied to ``[0, 255]`` RGB input inside
        the model ("none": the base normalises its input itself).
    default_size : int
        The input size the base was trained at.
    min_size : int
        The smallest input size the base accepts.
    feature_width : int
        Channels of the last convolutional output (the width of pooled features
        with ``layer=None``).
    block_pattern : str
        Regular expression searched in layer names. With ``block_marks="start"``
        its first group names the block a matching layer belongs to and a new
        block starts where the group changes; with ``block_marks="end"`` a
        matching layer is the last layer of its block.
    block_marks : {"start", "end"}
        How ``block_pattern`` marks blocks.
    preprocess_input : callable or None
        Keras' own ``preprocess_input`` for this base, the reference that the
        in-graph ``preprocessing`` is tested against.
    named_weights : mapping of str to callable
        Offline weight sources beyond ``"imagenet"``: ``name -> provider()``
        returning the path of a local weights file for the ``include_top=False``
        base.
    """

    name: str
    builder: Callable[..., keras.Model]
    preprocessing: str
    default_size: int
    min_size: int
    feature_width: int
    block_pattern: str
    block_marks: str = "start"
    preprocess_input: Callable | None = None
    named_weights: Mapping[str, Callable[[], str]] = field(default_factory=dict)

    def __post_init__(self):
        if self.preprocessing not in PREPROCESSING_MODES:
            raise ValueError(
                f"preprocessing must be one of {PREPROCESSING_MODES}; "
                f"got {self.preprocessing!r} for base {self.name!r}."
            )
        if self.block_marks not in ("start", "end"):
            raise ValueError(
                f"block_marks must be 'start' or 'end'; got {self.block_marks!r}."
            )
        if not 1 <= self.min_size <= self.default_size:
            raise ValueError(
                f"min_size must be between 1 and default_size={self.default_size}; "
                f"got {self.min_size!r} for base {self.name!r}."
            )

    @property
    def weight_names(self):
        """The accepted named ``weights`` values: ``"imagenet"`` and the offline ones."""
        return ("imagenet", *self.named_weights)


_REGISTRY: dict[str, BaseSpec] = {}


def register_base(spec, *, overwrite=False):
    """Add a base to the registry.

    Parameters
    ----------
    spec : BaseSpec
        The record to add under ``spec.name``.
    overwrite : bool, default=False
        Replace an existing record of the same name instead of raising.

    Returns
    -------
    spec : BaseSpec
        The record, for use as a decorator-free one-liner.
    """
    if not isinstance(spec, BaseSpec):
        raise TypeError(f"register_base expects a BaseSpec; got {type(spec).__name__}.")
    if spec.name in _REGISTRY and not overwrite:
        raise ValueError(
            f"A base named {spec.name!r} is already registered; "
            "pass overwrite=True to replace it."
        )
    _REGISTRY[spec.name] = spec
    return spec


def list_bases():
    """Names of the registered convolutional bases, sorted.

    Returns
    -------
    names : list of str
        Valid values of the ``base`` parameter.

    Examples
    --------
    >>> from skconvnet import list_bases
    >>> "vgg16" in list_bases()
    True
    """
    return sorted(_REGISTRY)


def get_base_spec(name):
    """The :class:`BaseSpec` registered under ``name`` (case-insensitive).

    Raises
    ------
    ValueError
        If no base of that name is registered; the message lists the known ones.
    """
    key = name.lower() if isinstance(name, str) else name
    try:
        return _REGISTRY[key]
    except (KeyError, TypeError):
        raise ValueError(
            f"Unknown base {name!r}. Expected one of {list_bases()} "
            "or a keras.Model."
        ) from None


def block_starts(model, spec):
    """Where the blocks of a built base start.

    Parameters
    ----------
    model : keras.Model
        The base built by ``spec.builder``.
    spec : BaseSpec
        Its registry record.

    Returns
    -------
    blocks : list of (str, int)
        ``(block name, index in model.layers of its first layer)`` in order, the
        layers before the first block forming a block named ``"stem"`` and, for
        end-marked bases, those after the last marker one named ``"top"``.
    """
    pattern = re.compile(spec.block_pattern)
    layers = [
        (i, layer.name)
        for i, layer in enumerate(model.layers)
        if not isinstance(layer, keras.layers.InputLayer)
    ]
    blocks = []
    if spec.block_marks == "start":
        current = None
        for i, name in layers:
            match = pattern.search(name)
            label = match.group(1) if match else None
            if not blocks:
                blocks.append(["stem", i] if label is None else [label, i])
                current = label
            elif label is not None and label != current:
                blocks.append([label, i])
                current = label
    else:
        start = layers[0][0]
        for i, name in layers:
            if pattern.search(name):
                blocks.append([name, start])
                start = i + 1
        if start <= layers[-1][0]:
            blocks.append(["top", start])
        if blocks:
            blocks[0][0] = "stem" if len(blocks) > 1 else blocks[0][0]
    return [tuple(block) for block in blocks]


# --------------------------------------------------------------------------
# The keras.applications bases.
# --------------------------------------------------------------------------
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


# Offline weight sources import their converters only when asked for.
def _hed_bsds500():
    from .weights import hed_bsds500_vgg16

    return hed_bsds500_vgg16()


def _efficientnet_lite0(include_top=True, weights="imagenet", input_shape=None, classes=1000):
    from .efficientnet_lite import EfficientNetLite0

    return EfficientNetLite0(include_top=include_top, weights=weights,
                             input_shape=input_shape, classes=classes)


_VGG = r"^(block\d+)_"
_RESNET = r"^(conv\d+_block\d+|post)_"
_EFFICIENTNET = r"^(block\d+[a-z]|top)_"

_keras_app("vgg16", _apps.VGG16, _apps.vgg16, "caffe", 224, 512, _VGG,
           named_weights={"hed-bsds500": _hed_bsds500})
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


def _lite_preprocess_input(x):
    """EfficientNet-Lite's input normalisation, ``(x - 127) / 128`` (the reference)."""
    return (x - 127.0) / 128.0


register_base(
    BaseSpec(
        name="efficientnet_lite0",
        builder=_efficientnet_lite0,
        preprocess_input=_lite_preprocess_input,
        preprocessing="lite",
        default_size=224,
        min_size=32,
        feature_width=1280,
        block_pattern=_EFFICIENTNET,
    )
)
