"""Names of DeepLab2 variables for axial_tf layers.

DeepLab2 names a variable by the chain of Python attributes that reach it
(`_attention/_height_axis/qkv_kernel` in a checkpoint, `attention/height_axis/
qkv_kernel:0` as a Keras name). Our layers use the same sub-layer names, so a
variable's DeepLab2 name is the path of sub-layer names built here. DeepLab2
keeps multi-axis batch-norm parameters (`[3, 1, heads, 1, 1]`,
`[2, 1, heads, 1, dv]`); ours are their C-order flattening, so values only need
a reshape. The checkpoint converter reuses this mapping for whole models.
"""

import keras
import numpy as np

from axial_tf import layers as axial_layers

_CHECKPOINT_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"


def _own_variables(layer):
    """(name, variable) pairs a layer holds itself, in DeepLab2's naming."""
    if isinstance(layer, keras.layers.BatchNormalization):
        names = ("gamma", "beta", "moving_mean", "moving_variance")
        return [(n, getattr(layer, n)) for n in names if getattr(layer, n, None) is not None]
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        pairs = [("depthwise_kernel", layer.kernel)]
        return pairs + ([("bias", layer.bias)] if layer.use_bias else [])
    if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
        return [("kernel", layer.kernel)] + ([("bias", layer.bias)] if layer.use_bias else [])
    if isinstance(layer, axial_layers.AxialAttention):
        return [("qkv_kernel", layer.qkv_kernel)]
    if isinstance(layer, axial_layers.RelativePositionalEncoding):
        return [("embeddings", layer.embeddings)]
    return []


def _children(layer):
    """Sub-layers whose variables DeepLab2 keeps, named as DeepLab2 names them."""
    if isinstance(layer, axial_layers.ConvBN):
        return [layer.conv, layer.batch_norm]
    if isinstance(layer, axial_layers.AxialAttention):
        return [
            layer.batch_norm_qkv,
            layer.batch_norm_similarity,
            layer.batch_norm_retrieved_output,
            layer.query_rpe,
            layer.key_rpe,
            layer.value_rpe,
        ]
    if isinstance(layer, axial_layers.AxialAttention2D):
        return [layer.height_axis, layer.width_axis]
    if isinstance(layer, axial_layers.AxialBlock):
        return [layer.shortcut, *layer.branch_layers()]
    return getattr(layer, "deeplab2_children", lambda: [])()


def deeplab2_variable_map(layer, prefix=""):
    """Maps DeepLab2 Keras-style names (without `:0`) to this layer's variables.

    Args:
        layer: a built axial_tf layer, or any layer exposing `deeplab2_children()`.
        prefix: prepended to every name (e.g. "encoder/stage4/block2/").

    Returns:
        dict `{"attention/height_axis/qkv_kernel": variable, ...}`.
    """
    mapping = {prefix + name: variable for name, variable in _own_variables(layer)}
    for child in _children(layer):
        if child is not None:
            mapping.update(deeplab2_variable_map(child, f"{prefix}{child.name}/"))
    return mapping


def name_from_checkpoint_key(key):
    """`_attention/_height_axis/qkv_kernel/.ATTRIBUTES/VARIABLE_VALUE` -> `attention/height_axis/qkv_kernel`."""
    if key.endswith(_CHECKPOINT_SUFFIX):
        key = key[: -len(_CHECKPOINT_SUFFIX)]
    return "/".join(part.lstrip("_") for part in key.split("/"))


def assign_deeplab2_values(layer, values, prefix="", source="DeepLab2 weights"):
    """Assigns DeepLab2 values to a built layer (see `assign_values`)."""
    return assign_values(deeplab2_variable_map(layer, prefix), values, source)


def assign_values(targets, values, source="DeepLab2 weights", strict=True):
    """Assigns `values[name]` to `targets[name]`, checking names and shapes.

    Args:
        targets: dict of names to variables (e.g. from `deeplab2_variable_map`).
        values: dict of the same names to arrays.
        source: what `values` came from, for error messages.
        strict: every target must get a value; otherwise missing ones are skipped
            (partial restore) and reported.

    Returns:
        `(unused, missing)`: sorted names of `values` no target takes, and of
        targets that got no value (empty when strict).

    Raises:
        ValueError: with strict, a target has no value; or a value's shape does
            not fit its variable. The message names each offending variable.
    """
    missing = sorted(set(targets) - set(values))
    if missing and strict:
        raise ValueError(f"{source} lack {len(missing)} variable(s): {missing}")
    problems = []
    for name in sorted(set(targets) & set(values)):
        variable, value = targets[name], np.asarray(values[name])
        # Multi-axis BN parameters flatten to our 1-D ones; everything else must match exactly.
        fits = tuple(value.shape) == tuple(variable.shape) or (
            len(variable.shape) == 1 and value.size == variable.shape[0]
        )
        if not fits:
            problems.append(f"{name}: {source} shape {list(value.shape)} vs ours {list(variable.shape)}")
        else:
            variable.assign(value.reshape(variable.shape))
    if problems:
        raise ValueError(f"Shape mismatch loading {source}:\n  " + "\n  ".join(problems))
    return sorted(set(values) - set(targets)), missing
