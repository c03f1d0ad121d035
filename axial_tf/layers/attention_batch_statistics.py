"""Training-mode similarity batch norm of the fast path: batch statistics, scales and their gradient.

In training, each similarity term s (one of q_l . k_m, q_l . r^q_{m-l}, k_m . r^k_{m-l}) is
normalised per head with its batch mean and variance over the attended pairs; as in
`attention_products.py` only the scale gamma / sqrt(var + eps) reaches the softmax. Two ways
to the statistics:

  * From `[d, d]` second-moment matrices (global attention): each term is bilinear, so e.g.
    sum_lm (q_l . k_m)^2 = <sum_l q_l q_l^T, sum_m k_m k_m^T>, O(L d^2) per sequence and head
    instead of passes over the O(L^2) products, and the scales fold into q or k before the
    products as in inference. Statistics over all sequences first, so chunks share them.
    resnet_s_stage2 training 2.28x (cumulative; docs/performance.md, "Training statistics from
    moment matrices or from the products").
  * From the products themselves, when `dk^2 >= 8 L` and the call is one chunk (and always
    for local attention's masked blocks): the moment matrices are then tiny batched matmuls
    (`[33 x 32] @ [32 x 33]` at ds_stage4, 46% of its einsum time). Step 10: ds_stage4
    training 138 -> 124 ms; the threshold is the measured crossing (dk = 16 at L = 33 equal,
    66.4 vs 65.8 ms; dk = 8 at L = 33 moments 39 vs 51 ms; dk = 4 at L = 56 379 vs 624 ms).
    The gradient through these statistics is written out, a batch norm's
    (`_scale_by_batch_statistics`): five elementwise passes per term instead of the dozen of
    differentiating the moment computation op by op (step 12: statistics, scaling and
    softmax forward+backward 11.8 ms by autodiff, 9.0 by XLA, 6.4 written out).

With `sync_batch_norm` the sums (and the gradient's sum through the variance) are all-reduced
over the replicas.
"""

from typing import NamedTuple

from keras import ops

from axial_tf.layers.attention_products import similarity_scales, similarity_terms, sum_terms
from axial_tf.layers.fused_batch_norm import update_moving_statistics
from axial_tf.layers.replicas import all_reduce_sum

# Global attention in training takes the similarity BN's batch statistics from [d, d]
# second-moment matrices when dk^2 < this * L, and from the products themselves otherwise
# (measured break-even, training, 8 heads, 2 threads: dk = 16 at L = 33).
MOMENT_MATRICES_MAX_DEPTH_SQUARED_PER_POSITION = 8


def uses_moment_matrices(key_depth_per_head, length):
    """Whether one-chunk global attention takes its training statistics from moment matrices."""
    return key_depth_per_head**2 < MOMENT_MATRICES_MAX_DEPTH_SQUARED_PER_POSITION * length


def batch_similarity_scales(layer, mean, variance):
    """`SimilarityScales` from `[terms * heads]` batch moments; updates the BN's moving statistics."""
    update_moving_statistics(layer.batch_norm_similarity, mean, variance)
    return similarity_scales(layer, variance)


def _per_head_total(values):
    """Sums `[..., heads, d]` to `[heads]`: inner axis first, then the leading axes.

    Two contiguous reductions; one reduction over all axes but a middle one is
    several times slower in TensorFlow on CPU.
    """
    per_head = ops.sum(values, axis=-1)
    return ops.sum(ops.reshape(per_head, (-1, ops.shape(per_head)[-1])), axis=0)


def _per_head_logit_sum(values):
    """`[N, X, heads, Lq, Lk]` -> `[heads]`: the contiguous inner reduction first."""
    return ops.sum(ops.sum(values, axis=(3, 4)), axis=(0, 1))


def global_similarity_moments(layer, layouts, window):
    """Batch mean and variance of every similarity product, from moment matrices, without forming the products.

    Args:
        layer: the `AxialAttention`.
        layouts: `QueryKeyLayouts` of the queries and keys (every pair of the window counts).
        window: `AttentionWindow` of the pairs.

    Returns:
        (mean, variance), each `[terms * heads]` in BN channel order.
    """
    as_float = [None if t is None else ops.cast(t, "float32") for t in layouts]
    query_heads, key_heads, query_positions, key_positions = as_float
    # N and X from a layout that exists ([N, X, ...] heads first, [L, N, X, ...] positions first).
    if query_heads is not None:
        n, x = ops.shape(query_heads)[:2]
    else:
        n, x = ops.shape(query_positions if query_positions is not None else key_positions)[1:3]
    count = ops.cast(n * x, "float32") * ops.cast(window.query_length * window.key_length, "float32")
    sums, squares = [], []
    if layer.use_content_similarity:  # heads first [N, X, h, L, d]
        sums.append(_per_head_total(ops.sum(query_heads, axis=3) * ops.sum(key_heads, axis=3)))
        query_moment = ops.einsum("nxhld,nxhle->nxhde", query_heads, query_heads)
        key_moment = ops.einsum("nxhmd,nxhme->nxhde", key_heads, key_heads)
        depth_pairs = layer.key_depth_per_head**2
        squares.append(_per_head_total(ops.reshape(query_moment * key_moment, (-1, layer.num_heads, depth_pairs))))
    for enabled, encoding, by_position, summed_axis in (
        (layer.use_query_rpe_similarity, layer.query_rpe, query_positions, 1),
        (layer.use_key_rpe_similarity, layer.key_rpe, key_positions, 0),
    ):
        if not enabled:
            continue
        # Position p of `by_position` ([P, N, X, h, dk]: query l or key m) meets the table
        # rows of all its pairs.
        table = ops.cast(window.table(encoding), "float32")  # [Lq, Lk, dk]
        table_by_position = table if summed_axis == 1 else ops.transpose(table, (1, 0, 2))  # [P, pairs, dk]
        row_sums = ops.sum(table_by_position, axis=1)[:, None, None, None]  # [P, 1, 1, 1, dk]
        sums.append(_per_head_total(by_position * row_sums))
        table_moment = ops.einsum("pod,poe->pde", table_by_position, table_by_position)  # [P, dk, dk]
        projected = ops.einsum("pnxhd,pde->pnxhe", by_position, table_moment)
        squares.append(_per_head_total(projected * by_position))
    sums, squares = ops.concatenate(sums, axis=0), ops.concatenate(squares, axis=0)
    if layer.sync_batch_norm:
        count, sums, squares = all_reduce_sum([count, sums, squares])
    mean = sums / count
    return mean, ops.maximum(squares / count - ops.square(mean), 0.0)


class TermMoments(NamedTuple):
    """Per-head batch statistics of one `[N, X, heads, Lq, Lk]` similarity term.

    Attributes:
        mean: `[heads]` batch mean over the pairs that count.
        variance: `[heads]` batch variance over the pairs that count.
        centred: the term minus its mean, zero at pairs that do not count.
        count: pairs per head that count (over all replicas with synchronised statistics).
    """

    mean: object
    variance: object
    centred: object
    count: object


def _term_moments(layer, term, valid):
    """`TermMoments` of a float32 term over the pairs where `valid` (`None`: all, or `[X, Lq, Lk]` booleans)."""
    if valid is None:
        weighted = lambda values: values  # noqa: E731
        count = ops.cast(ops.size(term) // layer.num_heads, term.dtype)
    else:
        weights = ops.cast(valid, term.dtype)[:, None]  # [X, 1, Lq, Lk]
        weighted = lambda values: values * weights  # noqa: E731
        count = ops.cast(ops.shape(term)[0], term.dtype) * ops.sum(weights)

    def centred_on(mean):  # [heads, Lq, Lk] operand: the subtraction broadcasts over leading axes only
        return weighted(term - ops.broadcast_to(mean[:, None, None], ops.shape(term)[2:]))

    if layer.sync_batch_norm:
        count, total, squares = all_reduce_sum(
            [count, _per_head_logit_sum(weighted(term)), _per_head_logit_sum(weighted(ops.square(term)))]
        )
        mean = total / count
        return TermMoments(mean, ops.maximum(squares / count - ops.square(mean), 0.0), centred_on(mean), count)
    mean = _per_head_logit_sum(weighted(term)) / count
    centred = centred_on(mean)
    return TermMoments(mean, _per_head_logit_sum(ops.square(centred)) / count, centred, count)


def _scale_by_batch_statistics(layer, term, scale, moments):
    """`term * scale` per head, differentiated as a batch norm whose scale is `scale`.

    `scale` is `gamma / sqrt(variance + eps)` of the batch variance; the gradient through
    that variance is written out here. The gradient w.r.t. `scale` itself reaches gamma
    through `similarity_scales`.

    Args:
        layer: the `AxialAttention`.
        term: float32 `[N, X, heads, Lq, Lk]` similarity product.
        scale: `[heads]` BN scale of this term.
        moments: `TermMoments` of `term` (not differentiated).

    Returns:
        The scaled term.
    """
    logit_shape = ops.shape(term)[2:]
    per_head = lambda values: ops.broadcast_to(values[:, None, None], logit_shape)  # noqa: E731

    @ops.custom_gradient
    def scaled(term, scale):
        def gradient(*args, upstream=None):
            upstream = args[0] if upstream is None else upstream
            along_term = _per_head_logit_sum(upstream * term)  # d loss / d scale (this replica's)
            # The variance, hence the scale, depends on every replica's term: each sees the sum.
            along_all = all_reduce_sum([along_term])[0] if layer.sync_batch_norm else along_term
            # d variance / d term = 2 * centred / count, d scale / d variance = -scale / (2 (var + eps)).
            epsilon = layer.batch_norm_similarity.epsilon
            through_variance = along_all * scale / ((moments.variance + epsilon) * moments.count)
            return upstream * per_head(scale) - moments.centred * per_head(through_variance), along_term

        return term * per_head(scale), gradient

    return scaled(term, scale)


def logits_with_batch_statistics(layer, layouts, window, valid_pair):
    """Training logits: the products, each scaled by the BN scale of its own batch statistics.

    Args:
        layer: the `AxialAttention`.
        layouts: `QueryKeyLayouts` of the queries and keys.
        window: `AttentionWindow` of the pairs.
        valid_pair: `None` (every pair counts), or `[X, Lq, Lk]` booleans.

    Returns:
        float32 `[N, X, heads, Lq, Lk]` logits.
    """
    terms = [ops.cast(term, "float32") for term in similarity_terms(layer, layouts, window)]
    # The gradient through the statistics is written out in _scale_by_batch_statistics.
    moments = [_term_moments(layer, ops.stop_gradient(term), valid_pair) for term in terms]
    scales = batch_similarity_scales(
        layer,
        ops.concatenate([m.mean for m in moments], axis=0),
        ops.concatenate([m.variance for m in moments], axis=0),
    )
    return sum_terms(
        [
            _scale_by_batch_statistics(layer, term, scale, term_moments)
            for term, scale, term_moments in zip(terms, scales.in_norm_order(), moments, strict=True)
        ]
    )
