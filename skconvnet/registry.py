"""The registry of convolutional bases.

One :class:`BaseSpec` record per base holds everything the rest of the package
needs to know about it: how to build it, how it expects its pixels, which input
sizes it accepts, how wide its last feature map is and where its blocks start.
Nothing else in the package branches on a model's name. The records of the
bases the package ships live in :mod:`skconvnet.catalogue`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Mapping

import keras

from .layers import PREPROCESSING_MODES

__all__ = [
    "BaseSpec",
    "register_base",
    "get_base_spec",
    "list_bases",
    "block_starts",
]


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
