"""The products of the fast attention path, and the similarity batch norm as one scale per (term, head).

The equation (`axial_attention_reference.py`) has three similarity products per (query l,
key m) pair, q_l . k_m, q_l . r^q_{m-l} and k_m . r^k_{m-l}, and two retrievals,
sum_m w_lm v_m and sum_m w_lm r^v_{m-l}. Each is one batched matmul here, on the layouts of
`attention_layouts.py`, instead of an einsum: TensorFlow's einsum gradient transposes
operands (for the relative terms the whole logits tensor, into a batch-over-positions
layout and back), a batched matmul's uses transposed-operand flags. Measured
(docs/performance.md, "Heads-first logits and batched matmuls"): one relative term forward+backward at the
resnet_s_stage2 shape 162 -> 84 ms (query term) and 242 -> 112 ms (key term); the content
retrieval at the ds_stage4 shape 4.80 -> 2.79 ms, the value-encoding retrieval 2.65 -> 2.17 ms.

The similarity BN is linear per (term, head): BN(s) = s * scale + shift with
scale = gamma / sqrt(variance + eps). The shift is the same for every key of a softmax row,
so it cancels in the softmax; only the scales matter, and they multiply the small q or k
factor of each term before its product (`similarity_terms(scales=...)`). The
`[N, X, heads, Lq, Lk]` logits are never concatenated, normalised as a whole or split
(step 1: resnet_s_stage2 forward 1.31x, training 1.17x). The variance is the moving one
(inference, `attention_inference_folding.py`) or the batch one (training,
`attention_batch_statistics.py`).
"""

from typing import NamedTuple

from keras import ops

from axial_tf.layers.attention_layouts import matmul_by_position
from axial_tf.layers.axial_attention_reference import MASKED_LOGIT


class AttentionWindow(NamedTuple):
    """The (query, key) pairs of one block of products: relative positions and sizes.

    Queries are the positions `0 ... query_length - 1`, keys `key_start ... key_start +
    key_length - 1` (global attention: the whole sequence both, `key_start` 0; local
    attention: a block of queries and its keys, starting `flange` positions earlier).
    Sizes are ints or scalar tensors.
    """

    query_length: object
    key_length: object
    key_start: object

    def table(self, encoding):
        """`[Lq, Lk, depth]` rows of a `RelativePositionalEncoding` for every pair of the window."""
        return encoding.table(self.query_length, self.key_length, self.key_start)


class SimilarityScales(NamedTuple):
    """The similarity BN's `gamma / sqrt(variance + eps)` per term: `[heads]` float32, `None` for a term that is off."""

    content: object
    query_position: object
    key_position: object

    def in_norm_order(self):
        """The scales of the enabled terms, in BN channel order."""
        return [scale for scale in self if scale is not None]


def similarity_scales(layer, variance):
    """`SimilarityScales` of the similarity BN for a `[terms * heads]` (moving or batch) variance."""
    norm = layer.batch_norm_similarity
    # beta shifts whole softmax rows, so its gradient is exactly zero. The zero-weight
    # connection hands optimizers that zero (as a plain BN does) instead of None.
    scale = norm.gamma * ops.rsqrt(variance + norm.epsilon) + 0.0 * norm.beta  # [terms * heads]
    scales = list(ops.split(scale, layer.num_similarity_terms))
    enabled = (layer.use_content_similarity, layer.use_query_rpe_similarity, layer.use_key_rpe_similarity)
    return SimilarityScales(*[scales.pop(0) if on else None for on in enabled])


def sum_terms(tensors):
    """Elementwise sum of a non-empty list (no extra pass adding a zero)."""
    total = tensors[0]
    for tensor in tensors[1:]:
        total = total + tensor
    return total


def _head_scale(layer, scale):
    """`[heads]` float32 scale -> `[heads, dk]` factor for `[..., heads, dk]` tensors.

    Broadcasting only over leading axes keeps the gradient of the scale a fast
    reduction over leading axes (a `[heads, 1]` factor would reduce a middle axis).
    """
    return ops.broadcast_to(ops.cast(scale, layer.compute_dtype)[:, None], (layer.num_heads, layer.key_depth_per_head))


def similarity_terms(layer, layouts, window, scales=None):
    """The enabled similarity products, each `[N, X, heads, Lq, Lk]`, in BN channel order.

    Args:
        layer: the `AxialAttention` (its switches, encodings and sizes).
        layouts: `QueryKeyLayouts` of the queries and keys.
        window: `AttentionWindow` of the pairs.
        scales: `None`, or `SimilarityScales` that multiply each term's query (content and
            query-encoding terms) or key (key-encoding term) before the product.

    Returns:
        A list with one tensor per enabled term.
    """
    terms = []
    if layer.use_content_similarity:  # q_l . k_m
        query = layouts.query_heads  # [N, X, h, Lq, dk]
        if scales is not None:  # [heads] -> [heads, Lq, dk]: its gradient reduces leading axes
            query = query * ops.broadcast_to(ops.cast(scales.content, query.dtype)[:, None, None], ops.shape(query)[2:])
        terms.append(ops.matmul(query, ops.swapaxes(layouts.key_heads, -1, -2)))
    if layer.use_query_rpe_similarity:  # q_l . r^q_{m-l}
        query = layouts.query_positions  # [Lq, N, X, h, dk]
        if scales is not None:
            query = query * _head_scale(layer, scales.query_position)
        table = window.table(layer.query_rpe)  # [Lq, Lk, dk]
        term = matmul_by_position(query, ops.swapaxes(table, 1, 2))  # [Lq, N, X, h, Lk]
        terms.append(ops.transpose(term, (1, 2, 3, 0, 4)))
    if layer.use_key_rpe_similarity:  # k_m . r^k_{m-l}
        key = layouts.key_positions  # [Lk, N, X, h, dk]
        if scales is not None:
            key = key * _head_scale(layer, scales.key_position)
        table = window.table(layer.key_rpe)  # [Lq, Lk, dk]
        term = matmul_by_position(key, ops.transpose(table, (1, 2, 0)))  # [Lk, N, X, h, Lq]
        terms.append(ops.transpose(term, (1, 2, 3, 4, 0)))
    return terms


def scaled_logits(layer, layouts, window, scales):
    """float32 `[N, X, heads, Lq, Lk]` logits: the sum of the terms, each with its BN scale folded in."""
    return sum_terms([ops.cast(term, "float32") for term in similarity_terms(layer, layouts, window, scales)])


def softmax_and_retrieve(layer, logits, value_heads, window, mask, query_axis):
    """Softmax over the keys, then the enabled retrievals `sum_m w_lm v_m` and `sum_m w_lm r^v_{m-l}`.

    The content retrieval is a batched matmul on the heads-first logits; the value-encoding
    one batches over queries (the table differs per query), its operands and result
    transposed explicitly.

    Args:
        layer: the `AxialAttention`.
        logits: float32 `[N, X, heads, Lq, Lk]` similarity logits.
        value_heads: `[N, X, heads, Lk, dv]` values.
        window: `AttentionWindow` of the pairs.
        mask: `None`, or `[X, Lq, Lk]` booleans, True where a key may be attended.
        query_axis: 2 for `[N, X, Lq, heads, dv]` outputs (blocks of queries), 1 for
            `[N, Lq, X, heads, dv]` (queries along axis 1 of `[N, L, X, C]` inputs).

    Returns:
        A list with one tensor per enabled retrieval, in BN channel order.
    """
    if mask is not None:
        logits = ops.where(mask[:, None], logits, MASKED_LOGIT)
    weights = ops.cast(ops.softmax(logits, axis=-1), layer.compute_dtype)
    retrieved = []
    if layer.retrieve_value_content:
        content = ops.matmul(weights, value_heads)  # [N, X, h, Lq, dv]
        retrieved.append(ops.transpose(content, (0, 3, 1, 2, 4) if query_axis == 1 else (0, 1, 3, 2, 4)))
    if layer.retrieve_value_rpe:
        table = window.table(layer.value_rpe)  # [Lq, Lk, dv]
        weights_by_query = ops.transpose(weights, (3, 0, 1, 2, 4))  # [Lq, N, X, h, Lk]
        position = matmul_by_position(weights_by_query, table)  # [Lq, N, X, h, dv]
        retrieved.append(ops.transpose(position, (1, 0, 2, 3, 4) if query_axis == 1 else (1, 2, 0, 3, 4)))
    return retrieved
