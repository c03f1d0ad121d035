"""Position-sensitive axial-attention as the equation reads: the definition the fast path is tested against.

Axial-DeepLab (Wang et al. 2020) defines the output at position o of a 1 x m axial window as

    y_o = sum_p softmax_p( q_o^T k_p + q_o^T r^q_{p-o} + k_p^T r^k_{p-o} ) (v_p + r^v_{p-o})

and DeepLab2, whose weights this layer loads, adds batch norms to each similarity term and
to each retrieved output. Written with l for the query position o and m for the key
position p, per head:

    w_lm = softmax_m( BN(q_l . k_m) + BN(q_l . r^q_{m-l}) + BN(k_m . r^k_{m-l}) )
    y_l  = BN( sum_m w_lm v_m ) + BN( sum_m w_lm r^v_{m-l} )

with m over every position of the sequence (global) or the `span` positions centred on l
(local). q, k and v are one bias-free projection of the input, batch-normalised and split
into heads; r^q, r^k and r^v are learned relative positional encodings indexed by the offset
m - l. The similarity BN has one channel per (term, head), with statistics over the attended
pairs; the output BN one per (term, head, channel). There is no 1/sqrt(d) scaling.

`axial_attention_reference` computes each term as one named product with the variables
and sub-layers of the `AxialAttention` it is given, so `implementation="reference"` and
the default fast path (`axial_attention_fast.py`) share weights and moving statistics. It
forms the full `[L, L]` logits of every sequence, also for a local span: O(L^2) memory and
time, the price of reading like the equation.
"""

from keras import ops

from axial_tf.layers.relative_positional_encoding import relative_offsets

# Logit of a (query, key) pair that is not attended. Finite, so that a row with no attended
# key (a padding query of the fast path, discarded afterwards) gets uniform weights, not NaN.
MASKED_LOGIT = -1e9


def axial_attention_reference(layer, inputs, training=None):
    """Position-sensitive self-attention along axis 1, computed term by term.

    Args:
        layer: the `AxialAttention` whose variables and sub-layers are used.
        inputs: `[N, L, C]` sequences, or `[N, L, X, C]`: `N * X` sequences along axis 1.
        training: whether the (trainable) batch norms use batch statistics and update
            their moving statistics.

    Returns:
        `[N, L, Dv]`, or `[N, L, X, Dv]` for 4-D inputs.
    """
    if len(inputs.shape) == 4:  # each of the N * X columns is a sequence
        n, length, x = ops.shape(inputs)[:3]
        columns = ops.reshape(ops.transpose(inputs, (0, 2, 1, 3)), (n * x, length, inputs.shape[-1]))
        outputs = axial_attention_reference(layer, columns, training)  # [N * X, L, Dv]
        return ops.transpose(ops.reshape(outputs, (n, x, length, layer.total_value_depth)), (0, 2, 1, 3))
    batch, length = ops.shape(inputs)[:2]
    heads, key_depth = layer.num_heads, layer.total_key_depth

    def normalize_positions(norm, values):
        """The qkv and output BNs see one row of channels per position: [N, L, D] -> [N * L, D] -> [N, L, D]."""
        rows = norm(ops.reshape(values, (-1, values.shape[-1])), training=training)
        return ops.reshape(rows, ops.shape(values))

    # q, k, v = BN(x W), split into heads.
    qkv = normalize_positions(layer.batch_norm_qkv, ops.matmul(inputs, layer.qkv_kernel))  # [N, L, 2Dk + Dv]
    query, key, value = (
        ops.reshape(t, (batch, length, heads, -1)) for t in ops.split(qkv, [key_depth, 2 * key_depth], axis=-1)
    )  # [N, L, heads, dk], [N, L, heads, dk], [N, L, heads, dv]

    # The pairs each query attends: all (global), or |m - l| <= (span - 1) / 2 (local).
    attended = None
    if layer.span is not None:
        attended = ops.abs(relative_offsets(length, length)) <= (layer.span - 1) // 2  # [L, L]

    similarities = []  # each [N, heads, L, L]
    if layer.use_content_similarity:
        content_similarity = ops.einsum("nlhd,nmhd->nhlm", query, key)  # q_l . k_m
        similarities.append(content_similarity)
    if layer.use_query_rpe_similarity:
        query_encodings = layer.query_rpe.table(length, length)  # [L, L, dk]: r^q_{m-l}
        query_position_similarity = ops.einsum("nlhd,lmd->nhlm", query, query_encodings)  # q_l . r^q_{m-l}
        similarities.append(query_position_similarity)
    if layer.use_key_rpe_similarity:
        key_encodings = layer.key_rpe.table(length, length)  # [L, L, dk]: r^k_{m-l}
        key_position_similarity = ops.einsum("nmhd,lmd->nhlm", key, key_encodings)  # k_m . r^k_{m-l}
        similarities.append(key_position_similarity)
    # BN per (term, head) over the attended pairs, then the terms add up.
    mask = None if attended is None else attended[None, None]
    similarity = layer.batch_norm_similarity(ops.concatenate(similarities, axis=1), training=training, mask=mask)
    logits = sum(ops.split(similarity, len(similarities), axis=1))  # [N, heads, L, L], float32
    if attended is not None:
        logits = ops.where(attended, logits, MASKED_LOGIT)
    weights = ops.cast(ops.softmax(logits, axis=-1), layer.compute_dtype)  # w_lm

    retrieved = []  # each [N, L, heads, dv]
    if layer.retrieve_value_content:
        retrieved_content = ops.einsum("nhlm,nmhd->nlhd", weights, value)  # sum_m w_lm v_m
        retrieved.append(retrieved_content)
    if layer.retrieve_value_rpe:
        value_encodings = layer.value_rpe.table(length, length)  # [L, L, dv]: r^v_{m-l}
        retrieved_position = ops.einsum("nhlm,lmd->nlhd", weights, value_encodings)  # sum_m w_lm r^v_{m-l}
        retrieved.append(retrieved_position)
    # BN per (term, head, channel), then the terms add up.
    retrieved_terms = [ops.reshape(t, (batch, length, -1)) for t in retrieved]  # each [N, L, Dv]
    outputs = normalize_positions(layer.batch_norm_retrieved_output, ops.concatenate(retrieved_terms, axis=-1))
    return sum(ops.split(outputs, len(retrieved_terms), axis=-1))  # [N, L, Dv]
