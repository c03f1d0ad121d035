"""Batch norms with moving statistics folded into the fast path's linear maps (inference, frozen BNs).

A BN that uses its moving statistics is a per-channel affine map, BN(x) = x * scale + shift
with scale = gamma / sqrt(moving_variance + eps) and shift = beta - moving_mean * scale, so
it needs no pass over activations of its own:

  * qkv: q, k, v = BN(x W) = x (W * scale) + shift, a projection with a scaled kernel and a
    bias; on 2-D `[positions, C]` rows grappler fuses each matmul with its bias
    (docs/performance.md, "Batch norms with moving statistics folded away": ds_stage4 forward 1.10-1.13x, then the
    shift additions' op time 3.7 -> 1.0 ms).
  * output: BN_c(sum_m w_lm v_m) + BN_p(sum_m w_lm r^v_{m-l}). Softmax rows sum to one, so
    scaling every value scales the weighted sum and shifting every value shifts it: the
    content term's scale and both shifts move into v (into the value kernel and bias when
    the qkv BN is folded too); the value-encoding term is scaled after retrieval, and the
    two terms are summed without a stacked `[N, L, 2 Dv]` tensor (steps 5 and 15: ds_stage4
    forward 34.8 -> 34.2 ms, cityscapes_os16 438 -> 432 ms).
  * similarity: its scales fold into q or k (`attention_products.py`).
"""

from typing import NamedTuple

from keras import ops

from axial_tf.layers.attention_products import sum_terms


def moving_affine(norm):
    """`(scale, shift)` with `norm(x) == x * scale + shift` for a BN using its moving statistics."""
    scale = norm.gamma * ops.rsqrt(norm.moving_variance + norm.epsilon)
    return scale, norm.beta - norm.moving_mean * scale


class FoldedOutputNorm(NamedTuple):
    """The output BN with moving statistics: `BN_c(c) + BN_p(p) = c * content_scale + p * position_scale + shift`.

    Attributes:
        content_scale: `[heads, dv]` scale of the retrieved values, `None` if that term is off.
        position_scale: `[heads, dv]` scale of the retrieved value encodings, `None` if off.
        shift: `[Dv]`, the two terms' shifts summed.
        in_values: whether `content_scale` and `shift` are folded into the values (the
            retrieved values then carry them).
    """

    content_scale: object
    position_scale: object
    shift: object
    in_values: bool

    def scaled_sum(self, retrieved):
        """The enabled retrieved terms (BN channel order, `[..., heads, dv]`) scaled and summed, without `shift`."""
        scales = []
        if self.content_scale is not None:
            scales.append(None if self.in_values else self.content_scale)
        if self.position_scale is not None:
            scales.append(self.position_scale)
        scaled = [
            term if scale is None else term * ops.cast(scale, term.dtype)
            for term, scale in zip(retrieved, scales, strict=True)
        ]
        return sum_terms(scaled)


def folded_output_norm(layer):
    """`FoldedOutputNorm` of the layer's output BN (not yet folded into the values)."""
    scale, shift = moving_affine(layer.batch_norm_retrieved_output)  # [terms * Dv]
    scales = [ops.reshape(s, (layer.num_heads, -1)) for s in ops.split(scale, layer.num_retrieval_terms)]
    return FoldedOutputNorm(
        content_scale=scales.pop(0) if layer.retrieve_value_content else None,
        position_scale=scales.pop(0) if layer.retrieve_value_rpe else None,
        shift=sum_terms(ops.split(shift, layer.num_retrieval_terms)),
        in_values=False,
    )


def folded_projections(layer, rows, split_points, output_norm):
    """The projections `BN(rows W)` with the qkv BN (moving statistics) folded into kernels and biases.

    Args:
        layer: the `AxialAttention`.
        rows: `[positions, C]` inputs.
        split_points: where the `2Dk + Dv` channels split into the returned projections.
        output_norm: `None` (the output BN uses batch statistics), or its `FoldedOutputNorm`,
            whose content scale and shift then fold into the value columns when that term is on.

    Returns:
        (projections, output_norm): the `[positions, channels]` projections, and
        `output_norm` with `in_values` set when it was folded into the values.
    """
    key_depth = layer.total_key_depth
    kernel_scale, qkv_shift = moving_affine(layer.batch_norm_qkv)  # [2Dk + Dv]
    if output_norm is not None and layer.retrieve_value_content:
        value_scale = ops.concatenate([ops.ones((2 * key_depth,)), ops.reshape(output_norm.content_scale, (-1,))])
        value_shift = ops.concatenate([ops.zeros((2 * key_depth,)), output_norm.shift])
        kernel_scale, qkv_shift = kernel_scale * value_scale, qkv_shift * value_scale + value_shift
        output_norm = output_norm._replace(in_values=True)
    kernels = ops.split(ops.cast(layer.qkv_kernel, "float32") * kernel_scale, split_points, axis=-1)
    shifts = ops.split(ops.cast(qkv_shift, layer.compute_dtype), split_points)
    # Grappler fuses each 2-D matmul with its shift (no pass over the activations).
    projections = [
        ops.matmul(rows, ops.cast(kernel, layer.compute_dtype)) + shift
        for kernel, shift in zip(kernels, shifts, strict=True)
    ]
    return projections, output_norm
