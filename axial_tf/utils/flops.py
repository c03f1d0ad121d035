"""Analytic multiply-add (M-Adds) counts of axial_tf models for one input image.

What is counted (one multiply-add = one multiplication plus one addition):
  * convolutions: `H_out * W_out * k_h * k_w * C_in * C_out` (depthwise:
    `H_out * W_out * k_h * k_w * C_in`); dilation does not change the count;
  * dense layers: `in_features * units` per position;
  * each 1-D axial attention of length L over N sequences, with `Dk` key and
    `Dv` value channels (all heads) and P (query, key) pairs (`L * L` when
    global, fewer with a local span):
      qkv projection    `N * L * C_in * (2 * Dk + Dv)`,
      similarities      `N * P * Dk` for each of q.k, q.r_q, k.r_k that is on,
      retrievals        `N * P * Dv` for each of sum(w.v), sum(w.r_v) that is on.
Not counted: batch norm, activations, softmax, pooling, residual additions,
biases, resizing and the gathering of relative-position embeddings: they are
element-wise and small next to the terms above.

Counts follow the given input size exactly: strides, padding, `ceil` sizes and
average-pool vs subsample striding come from the layers' own
`compute_output_shape`. Local attention counts the valid (query, key) pairs,
i.e. the arithmetic the layer defines, not the padded blocks it computes on.

Example:
    report = count_madds(model, (224, 224, 3))
    report.total / 1e9            # billions of multiply-adds
    report.by_prefix(depth=2)     # e.g. {"axial_resnet_s/stage2": ..., ...}
"""

import collections
import dataclasses
import math

import keras

from axial_tf import layers as axial_layers
from axial_tf.layers.resized_fuse import ResizedFuse


@dataclasses.dataclass
class MAddsReport:
    """Multiply-adds of one forward pass (batch size 1).

    Attributes:
        total: all multiply-adds.
        by_path: multiply-adds per leaf computation, keyed by a `/`-joined path
            of layer names (attention terms end in `/qkv`, `/similarity`,
            `/retrieval`), in execution order.
        output_shapes: output shape of the counted model (a shape tuple, or a
            dict / list of them for multi-output models).
    """

    total: int
    by_path: dict
    output_shapes: object

    def by_prefix(self, depth=1):
        """Sums `by_path` over the first `depth` path components, in execution order."""
        sums = collections.OrderedDict()
        for path, madds in self.by_path.items():
            key = "/".join(path.split("/")[:depth])
            sums[key] = sums.get(key, 0) + madds
        return sums


class MAddsCounter:
    """Accumulates multiply-adds per path while shapes are propagated."""

    def __init__(self):
        self.by_path = collections.OrderedDict()

    def add(self, path, madds):
        self.by_path[path] = self.by_path.get(path, 0) + int(madds)


_HANDLERS = {}


def register_madds_counter(layer_class):
    """Registers `fn(counter, layer, input_shape, path) -> output_shape` for a layer class.

    `input_shape` is the shape of the layer's first call argument (with batch
    size 1), or a list of shapes when that argument is a list of tensors; the
    function adds its multiply-adds with `counter.add(path, madds)` (or counts
    sub-layers with `count_sublayer`) and returns the output shape(s). The most
    specific registered class of a layer wins.

    Example:
        @register_madds_counter(MyStack)
        def _my_stack(counter, layer, input_shape, path):
            for child in layer.children:
                input_shape = count_sublayer(counter, child, input_shape, path)
            return input_shape
    """

    def decorator(fn):
        _HANDLERS[layer_class] = fn
        return fn

    return decorator


def count_madds(model, input_shape):
    """Counts the multiply-adds of `model` on one input of `input_shape`.

    Args:
        model: a built layer or model made of layers this module knows (axial_tf
            layers, Keras convolutions, dense layers, functional models of them,
            and parameter-free layers such as pooling or activations).
        input_shape: shape of one input without the batch axis, e.g. `(224, 224, 3)`.

    Returns:
        A `MAddsReport`.

    Raises:
        ValueError: a layer with weights has no registered counter (its class is
            named), or the input shape is not fully known.
    """
    if any(size is None for size in input_shape):
        raise ValueError(f"count_madds needs a fully known input shape, got {tuple(input_shape)}.")
    counter = MAddsCounter()
    output_shapes = _count(counter, model, (1, *input_shape), model.name)
    return MAddsReport(sum(counter.by_path.values()), dict(counter.by_path), output_shapes)


def _handler_for(layer):
    for cls in type(layer).__mro__:
        if cls in _HANDLERS:
            return _HANDLERS[cls]
    if isinstance(layer, keras.Model) and hasattr(layer, "_run_through_graph"):
        return _count_functional
    return None


def count_sublayer(counter, layer, input_shape, path):
    """Counts `layer` (a child of the layer at `path`) on `input_shape`; returns its output shape(s)."""
    return _count(counter, layer, input_shape, f"{path}/{layer.name}")


def count_sequential(counter, layers, input_shape, path):
    """Counts `layers` applied one after the other; returns the last output shape."""
    for layer in layers:
        input_shape = count_sublayer(counter, layer, input_shape, path)
    return input_shape


def _count(counter, layer, input_shape, path):
    handler = _handler_for(layer)
    if handler is not None:
        return handler(counter, layer, input_shape, path)
    _check_parameter_free(layer, path)
    return _shapes_of(layer.compute_output_spec(_tensors_of(input_shape)))


def _check_parameter_free(layer, path):
    """Layers without a counter must do no counted work: no weights besides batch norm."""
    if layer.weights and not isinstance(layer, keras.layers.BatchNormalization):
        raise ValueError(
            f"count_madds: no multiply-add counter for layer {path!r} of class {type(layer).__name__}; "
            "register one with register_madds_counter."
        )


def _shapes_of(structure):
    """KerasTensors (possibly nested in dicts/lists) -> their shape tuples."""
    if isinstance(structure, keras.KerasTensor):
        return tuple(structure.shape)
    if isinstance(structure, dict):
        return {key: _shapes_of(value) for key, value in structure.items()}
    return [_shapes_of(value) for value in structure]


def _tensors_of(structure):
    """Shape tuples (possibly nested in dicts/lists) -> KerasTensors of those shapes."""
    if isinstance(structure, tuple):
        return keras.KerasTensor(structure)
    if isinstance(structure, dict):
        return {key: _tensors_of(value) for key, value in structure.items()}
    return [_tensors_of(value) for value in structure]


def _count_functional(counter, model, input_shape, path):
    """Follows a functional model's graph, counting each layer at its real input shape."""

    def operation_fn(operation):
        def run(*args, **kwargs):
            handler = _handler_for(operation)
            if handler is None:  # parameter-free: let the layer derive its output spec
                _check_parameter_free(operation, f"{path}/{operation.name}")
                return operation.compute_output_spec(*args, **kwargs)
            # Handlers see the shape structure of the first argument (a shape, or a
            # list of shapes for layers called on a list of tensors).
            shapes = handler(counter, operation, _shapes_of(args[0]), f"{path}/{operation.name}")
            return _tensors_of(shapes)

        return run

    # `_run_through_graph` is the graph walk Keras itself uses for calls and
    # output specs; it hands each operation the tensors its node consumes.
    outputs = model._run_through_graph(keras.KerasTensor(input_shape), operation_fn=operation_fn)
    return _shapes_of(outputs)


def _spatial_size(shape):
    return math.prod(shape[1:-1])


@register_madds_counter(keras.layers.Conv2D)
def _conv2d(counter, layer, input_shape, path):
    output_shape = tuple(layer.compute_output_shape(input_shape))
    kernel_h, kernel_w = layer.kernel_size
    in_channels = input_shape[-1] // layer.groups
    counter.add(path, _spatial_size(output_shape) * kernel_h * kernel_w * in_channels * layer.filters)
    return output_shape


@register_madds_counter(keras.layers.DepthwiseConv2D)
def _depthwise_conv2d(counter, layer, input_shape, path):
    output_shape = tuple(layer.compute_output_shape(input_shape))
    kernel_h, kernel_w = layer.kernel_size
    counter.add(path, _spatial_size(output_shape) * kernel_h * kernel_w * output_shape[-1])
    return output_shape


@register_madds_counter(ResizedFuse)
def _resized_fuse(counter, layer, input_shapes, path):
    for shape, projection in zip(input_shapes, layer.projections):
        if projection is not None:
            count_sublayer(counter, projection, shape, path)
    return layer.compute_output_shape(input_shapes)


@register_madds_counter(keras.layers.Dense)
def _dense(counter, layer, input_shape, path):
    counter.add(path, math.prod(input_shape[1:-1]) * input_shape[-1] * layer.units)
    return (*input_shape[:-1], layer.units)


@register_madds_counter(axial_layers.ConvBN)
def _conv_bn(counter, layer, input_shape, path):
    output_shape = tuple(layer.compute_output_shape(input_shape))
    kernel_area = layer.kernel_size**2
    per_position = kernel_area * input_shape[-1] * (1 if layer.depthwise else output_shape[-1])
    counter.add(f"{path}/{layer.conv.name}", _spatial_size(output_shape) * per_position)
    return output_shape


def attention_pairs(length, span):
    """Number of (query, key) pairs of 1-D attention over `length` positions.

    Args:
        length: sequence length L.
        span: `None` (global, `L * L` pairs) or an odd local window: query `l`
            sees keys `l - (span-1)/2 ... l + (span-1)/2` inside the sequence.

    Returns:
        The pair count (int).
    """
    if span is None:
        return length * length
    flange = (span - 1) // 2
    return sum(min(query + flange, length - 1) - max(query - flange, 0) + 1 for query in range(length))


@register_madds_counter(axial_layers.AxialAttention)
def _axial_attention(counter, layer, input_shape, path):
    sequences, length, channels = math.prod(input_shape[:-2]), input_shape[-2], input_shape[-1]
    key_depth, value_depth = layer.total_key_depth, layer.total_value_depth
    pairs = sequences * attention_pairs(length, layer.span)
    counter.add(f"{path}/qkv", sequences * length * channels * (2 * key_depth + value_depth))
    counter.add(f"{path}/similarity", pairs * key_depth * layer.num_similarity_terms)
    counter.add(f"{path}/retrieval", pairs * value_depth * layer.num_retrieval_terms)
    return (*input_shape[:-1], value_depth)


@register_madds_counter(axial_layers.AxialAttention2D)
def _axial_attention_2d(counter, layer, input_shape, path):
    batch, height, width, channels = input_shape
    subsample = layer.stride_mode == "subsample"
    step = layer.strides if subsample else 1
    # Height pass: B * W sequences of length H.
    count_sublayer(counter, layer.height_axis, (batch * width, height, channels), path)
    rows = -(-height // step)
    # Width pass: one sequence per remaining row.
    count_sublayer(counter, layer.width_axis, (batch * rows, width, layer.total_value_depth), path)
    return tuple(layer.compute_output_shape(input_shape))


@register_madds_counter(axial_layers.AxialBlock)
def _axial_block(counter, layer, input_shape, path):
    if layer.shortcut is not None:
        count_sublayer(counter, layer.shortcut, input_shape, path)
    return count_sequential(counter, layer.branch_layers(), input_shape, path)


def _aspp(counter, layer, input_shape, path):
    if not layer.branches:  # Axial-DeepLab: the 1x1 projection only
        return count_sublayer(counter, layer.proj_conv_bn_act, input_shape, path)
    outputs = [count_sublayer(counter, branch, input_shape, path) for branch in layer.branches]
    count_sublayer(counter, layer.pool_conv, (input_shape[0], 1, 1, input_shape[-1]), path)
    concatenated = (*outputs[0][:-1], layer.filters * (len(layer.branches) + 1))
    return count_sublayer(counter, layer.proj_conv_bn_act, concatenated, path)


def _decoder_branch(counter, layer, input_shapes, path):
    """ASPP on the first feature, then per low-level feature: project, upsample, concatenate, fuse."""
    x = count_sublayer(counter, layer.aspp, input_shapes[0], path)
    for low_level, project, fuse in zip(input_shapes[1:], layer.low_level_convs, layer.fusion_convs):
        low_level = count_sublayer(counter, project, low_level, path)
        x = count_sublayer(counter, fuse, (*low_level[:-1], x[-1] + low_level[-1]), path)
    return x


def _register_composites():
    """Counters of the backbone and Panoptic-DeepLab decoder containers."""
    from axial_tf.layers.separable_conv_bn import SeparableConvBN
    from axial_tf.models import panoptic_decoder
    from axial_tf.models.axial_resnet import BlockGroup, InceptionStem

    def sequential(counter, layer, input_shape, path):  # children run one after the other
        return count_sequential(counter, layer.deeplab2_children(), input_shape, path)

    for container in (BlockGroup, InceptionStem, SeparableConvBN, panoptic_decoder.ConvStack):
        register_madds_counter(container)(sequential)
    register_madds_counter(panoptic_decoder.PredictionHead)(
        lambda counter, layer, input_shape, path: count_sequential(
            counter, [layer.conv1_bn_act, layer.final_conv], input_shape, path
        )
    )
    register_madds_counter(panoptic_decoder.ASPP)(_aspp)
    register_madds_counter(panoptic_decoder.PanopticDecoderBranch)(_decoder_branch)


_register_composites()
