"""Local attention of the fast path: blocks of queries against their halo of keys.

With `span=m` (odd) query l attends the keys m' with |m' - l| <= (m - 1) / 2 inside the
sequence (the reference masks an `[L, L]` logits matrix). Here the queries are cut into
blocks of `query_block_size`, and each block meets only the `block + m - 1` keys around it,
so compute and memory grow as O(L * m) instead of O(L^2); pairs of a block that are farther
apart than the span, or fall outside the sequence, are masked out of the softmax and of the
training statistics. The blocks' products are the batched matmuls of
`attention_products.py`: at local_span65 (a 129 x 257 map, span 65) they made the layer 1.46x
faster forward and 1.81x in training than the original blocked einsums
(docs/performance.md, "Local attention on blocks").
"""

from keras import ops

from axial_tf.layers.attention_batch_statistics import logits_with_batch_statistics
from axial_tf.layers.attention_layouts import query_key_layouts
from axial_tf.layers.attention_products import (
    AttentionWindow,
    scaled_logits,
    similarity_scales,
    softmax_and_retrieve,
)
from axial_tf.utils.shapes import ceil_div


def _minimum(a, b):
    """min() that stays in Python for static sizes and uses ops for dynamic ones."""
    if isinstance(a, int) and isinstance(b, int):
        return min(a, b)
    return ops.minimum(a, b)


def attend_local(layer, projections, length, training, output_norm):
    """Local attention on blocks of queries against keys within `flange` of the block.

    Args:
        layer: the `AxialAttention` (with an odd `span`).
        projections: `[N, L, Dk]` queries, `[N, L, Dk]` keys and `[N, L, Dv]` values.
        length: L (int or scalar tensor).
        training: whether trainable batch norms use batch statistics.
        output_norm: `None`, or the `FoldedOutputNorm` to apply to the retrieved terms.

    Returns:
        A list of `[N, L, heads, dv]` tensors: one per retrieval term (in BN channel
        order), or with `output_norm` their scaled sum.
    """
    heads = layer.num_heads
    depths = (layer.key_depth_per_head, layer.key_depth_per_head, layer.value_depth_per_head)
    query, key, value = (
        ops.reshape(t, (*ops.shape(t)[:2], heads, depth)) for t, depth in zip(projections, depths, strict=True)
    )  # [N, L, heads, d]
    # Keys farther than L - 1 never exist, so clip the flange to the length.
    flange = _minimum((layer.span - 1) // 2, length - 1)
    block = _minimum(layer.query_block_size or layer.span, length)
    num_blocks = ceil_div(length, block)
    padded = num_blocks * block
    key_block = block + 2 * flange
    batch = ops.shape(query)[0]

    def to_query_blocks(t):  # [N, L, h, d] -> [N, blocks, block, h, d]
        t = ops.pad(t, ((0, 0), (0, padded - length), (0, 0), (0, 0)))
        return ops.reshape(t, (batch, num_blocks, block, heads, t.shape[-1]))

    # Key block b holds positions b * block - flange ... b * block + block + flange - 1.
    key_index = ops.arange(num_blocks)[:, None] * block + ops.arange(key_block)[None, :]

    def to_key_blocks(t):  # [N, L, h, d] -> [N, blocks, key_block, h, d]
        t = ops.pad(t, ((0, 0), (flange, padded - length + flange), (0, 0), (0, 0)))
        return ops.take(t, key_index, axis=1)

    query_position = ops.reshape(ops.arange(padded), (num_blocks, block))[:, :, None]  # [blocks, block, 1]
    key_position = key_index[:, None, :] - flange  # [blocks, 1, key_block]
    attended = ops.logical_and(
        ops.abs(key_position - query_position) <= flange,
        ops.logical_and(key_position >= 0, key_position < length),
    )  # [blocks, block, key_block]
    counted = ops.logical_and(attended, query_position < length)  # pairs of the BN statistics
    window = AttentionWindow(query_length=block, key_length=key_block, key_start=-flange)
    layouts = query_key_layouts(layer, to_query_blocks(query), to_key_blocks(key))
    if training and layer.batch_norm_similarity.trainable:
        logits = logits_with_batch_statistics(layer, layouts, window, counted)
    else:
        scales = similarity_scales(layer, layer.batch_norm_similarity.moving_variance)
        logits = scaled_logits(layer, layouts, window, scales)  # [N, blocks, heads, block, key_block]
    value_heads = ops.transpose(to_key_blocks(value), (0, 1, 3, 2, 4))  # [N, blocks, h, key_block, dv]
    retrieved = softmax_and_retrieve(layer, logits, value_heads, window, attended, query_axis=2)
    if output_norm is not None:
        retrieved = [output_norm.scaled_sum(retrieved)]
    # Each of [N, blocks, block, heads, dv] -> [N, L, heads, dv], without the padding queries
    # (no slice when there are none: its gradient is a full copy).
    no_padding = isinstance(length, int) and padded == length
    retrieved = [ops.reshape(t, (batch, padded, heads, layer.value_depth_per_head)) for t in retrieved]
    return retrieved if no_padding else [t[:, :length] for t in retrieved]
