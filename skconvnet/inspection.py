"""Look inside a base before choosing where to cut it and what to fine-tune."""

from __future__ import annotations

import math
import numbers

import keras

from ._validation import InstanceOf, Interval, Options, fail, validate_params
from .networks import cut_base, resolve_base, weighted_layers
from .registry import block_starts

__all__ = ["LayerTable", "inspect_base"]

COLUMNS = ("index", "name", "type", "output_shape", "params", "block", "unfreeze")


class LayerTable(list):
    """The rows of :func:`inspect_base`: a list of dicts that prints as a table.

    Each row has the keys ``index``, ``name``, ``type``, ``output_shape``,
    ``params``, ``block`` (the block that starts at this layer, else ``""``)
    and ``unfreeze`` (the int value of ``FineTunedConvClassifier(unfreeze=...)``
    whose phase 2 starts training at this layer, else None).
    """

    def to_frame(self):
        """The table as a pandas DataFrame (needs pandas)."""
        import pandas as pd

        return pd.DataFrame(list(self), columns=COLUMNS)

    def __str__(self):
        header = ("#", "layer", "type", "output shape", "params", "block starts", "unfreeze=")
        cells = [header] + [
            (str(row["index"]), row["name"], row["type"], str(row["output_shape"]),
             f"{row['params']:,}", row["block"],
             "" if row["unfreeze"] is None else str(row["unfreeze"]))
            for row in self
        ]
        widths = [max(len(line[i]) for line in cells) for i in range(len(header))]
        lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip()
                 for line in cells]
        lines.insert(1, "  ".join("-" * width for width in widths))
        return "\n".join(lines)


@validate_params({
    "base": [InstanceOf(str, "a registered base name"), InstanceOf(keras.Model, "a keras.Model")],
    "layer": [Options(None), InstanceOf(str, "a layer name"),
              InstanceOf(numbers.Integral, "an int index")],
    "input_size": [Interval(numbers.Integral, 1, None), Options(None)],
})
def inspect_base(base, *, layer=None, input_size=None):
    """Describe the layers of a base: shapes, parameters, blocks, ``unfreeze`` values.

    Parameters
    ----------
    base : str or keras.Model
        A registered base (see :func:`skconvnet.list_bases`) or a Keras model.
    layer : str, int or None, default=None
        Cut the base here first, as the estimators' ``layer`` parameter does
        (``unfreeze`` counts from the top of the cut base).
    input_size : int or None, default=None
        Side of the square input (None: the base's default). Shapes depend on
        it; parameter counts do not.

    Returns
    -------
    table : LayerTable
        One row per layer; ``print(table)`` shows it, ``table.to_frame()``
        gives a DataFrame.

    See Also
    --------
    FineTunedConvClassifier : Its ``unfreeze`` parameter takes the values listed here.

    Examples
    --------
    >>> import skconvnet.testing  # registers the tiny test base
    >>> from skconvnet import inspect_base
    >>> table = inspect_base("tiny", input_size=16)
    >>> [row["name"] for row in table if row["unfreeze"] is not None]
    ['block1_conv', 'block2_conv', 'block3_conv']
    >>> [row["unfreeze"] for row in table if row["unfreeze"] is not None]
    [3, 2, 1]
    """
    spec = resolve_base(base)
    if spec is None:
        model = base
    else:
        size = spec.default_size if input_size is None else input_size
        if size < spec.min_size:
            fail("inspect_base", "input_size", f"an int >= {spec.min_size}", size)
        model = spec.builder(include_top=False, weights=None, input_shape=(size, size, 3))
    blocks = dict((start, name) for name, start in block_starts(model, spec)) if spec else {}
    model = cut_base("inspect_base", model, layer)
    weighted = weighted_layers(model)
    unfreeze = {index: len(weighted) - position for position, index in enumerate(weighted)}
    table = LayerTable()
    for i, lyr in enumerate(model.layers):
        shape = keras.tree.map_structure(
            lambda t: tuple(t.shape), lyr.output) if hasattr(lyr, "output") else None
        table.append({
            "index": i,
            "name": lyr.name,
            "type": type(lyr).__name__,
            "output_shape": shape,
            "params": int(sum(math.prod(w.shape) for w in lyr.weights)),
            "block": blocks.get(i, ""),
            "unfreeze": unfreeze.get(i),
        })
    return table
