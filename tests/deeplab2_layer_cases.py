"""Builds our layer for a DeepLab2 layer fixture and loads its weights (shared by tests)."""

import json

import numpy as np

from axial_tf import layers
from axial_tf.checkpoints import assign_deeplab2_values, name_from_checkpoint_key


def build_layer(spec):
    """Our equivalent of the DeepLab2 layer described by a fixture json."""
    kwargs = spec["constructor_kwargs"]
    bn = dict(batch_norm_momentum=spec["bn"]["momentum"], batch_norm_epsilon=spec["bn"]["epsilon"])
    name = kwargs.get("name")
    cls = spec["layer_class"]
    if cls == "AxialAttention":
        # query_shape >= length means global attention in DeepLab2.
        if kwargs.get("query_shape", 129) < spec["input_shape"][1]:
            raise ValueError(f"{spec['fixture']}: DeepLab2 local attention has no equivalent fixture semantics.")
        return layers.AxialAttention(
            kwargs["total_key_depth"], kwargs["total_value_depth"], kwargs.get("num_heads", 8), name=name, **bn
        )
    if cls == "AxialAttention2D":
        return layers.AxialAttention2D(
            kwargs["filters"],
            num_heads=kwargs.get("num_heads", 8),
            key_expansion=kwargs.get("key_expansion", 1),
            value_expansion=kwargs.get("value_expansion", 2),
            strides=kwargs.get("strides", 1),
            name=name,
            **bn,
        )
    if cls == "AxialBlock":
        attention = None
        if kwargs.get("attention_type") == "axial":
            attention = dict(kwargs.get("axial_layer_config") or {})
        elif kwargs.get("attention_type") is not None:
            raise ValueError(f"{spec['fixture']}: unsupported attention_type {kwargs['attention_type']!r}.")
        return layers.AxialBlock(kwargs["filters_list"], strides=kwargs.get("strides", 1), attention=attention, name=name, **bn)
    raise ValueError(f"{spec['fixture']}: unknown layer_class {cls!r}.")


def load_case(json_path):
    """Returns (spec, arrays, layer with the fixture's weights, {our name: npz key})."""
    spec = json.loads(json_path.read_text())
    arrays = np.load(json_path.with_suffix(".npz"))
    layer = build_layer(spec)
    layer.build(tuple(spec["input_shape"]))
    names = {name_from_checkpoint_key(v["checkpoint_key"]): v["npz_key"] for v in spec["variables"]}
    unused, _ = assign_deeplab2_values(layer, {n: arrays[k] for n, k in names.items()}, source=str(json_path))
    if unused:
        raise ValueError(f"{json_path}: variables not used by our layer: {unused}")
    return spec, arrays, layer, names
