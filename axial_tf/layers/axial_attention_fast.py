"""The fast implementation of `AxialAttention`: the reference's equation, computed in a cheaper order.

Same variables, same results to float rounding (tests/test_attention_fast_paths.py holds it
against `axial_attention_reference.py`), in less time and memory on CPU. Each trick lives
in its own module, with the equation it computes and the measurement that justifies it:

  * `attention_products.py`: every product a batched matmul; the similarity BN as one
    scale per (term, head) folded into q or k (its shift cancels in the softmax).
  * `attention_inference_folding.py`: BNs with moving statistics folded into the
    projection kernel, a bias, the values and one scale per retrieved term.
  * `attention_batch_statistics.py`: training statistics of the similarity BN (from
    moment matrices or from the products) and its written-out gradient.
  * `attention_layouts.py`: operand layouts, 4-D inputs in place, chunks of sequences.
  * `attention_local.py`: local attention on blocks of queries.

This module wires them together and does one thing of its own: in training the qkv and
output BNs run as TensorFlow's fused kernel (`FusedBatchNormalization`), on q, k and v as
separate matmuls on the split kernel normalised as channel groups of one BN, and on the
retrieved terms kept apart until they are summed, so no activation-sized split, stack or
concatenation is made: one `[2178, 1024]` BN forward+backward 8.9 -> 4.6 ms; ds_stage4
training 165 -> 141 ms, then 127 -> 107 ms (docs/performance.md, "Fused batch norms in
training" and "Channel groups instead of split and concatenation").
"""

from keras import ops

from axial_tf.layers.attention_batch_statistics import (
    batch_similarity_scales,
    global_similarity_moments,
    logits_with_batch_statistics,
    uses_moment_matrices,
)
from axial_tf.layers.attention_inference_folding import folded_output_norm, folded_projections
from axial_tf.layers.attention_layouts import (
    attend_as_sequences,
    attends_in_place,
    fits_one_chunk,
    map_sequence_chunks,
    shared_query_key_layouts,
)
from axial_tf.layers.attention_local import attend_local
from axial_tf.layers.attention_products import (
    AttentionWindow,
    scaled_logits,
    similarity_scales,
    softmax_and_retrieve,
    sum_terms,
)
from axial_tf.layers.runtime import get_runtime_settings


def fast_axial_attention(layer, inputs, training=None):
    """`axial_attention_reference(layer, inputs, training)`, computed the fast way.

    Args:
        layer: the `AxialAttention` whose variables and sub-layers are used.
        inputs: `[N, L, C]` sequences, or `[N, L, X, C]`: `N * X` sequences along axis 1.
        training: whether the (trainable) batch norms use batch statistics and update
            their moving statistics.

    Returns:
        `[N, L, Dv]`, or `[N, L, X, Dv]` for 4-D inputs.
    """
    max_chunk_logits = get_runtime_settings().max_chunk_logits
    if len(inputs.shape) == 4 and not attends_in_place(layer, inputs, max_chunk_logits):
        attend = lambda sequences: fast_axial_attention(layer, sequences, training)  # noqa: E731
        return attend_as_sequences(attend, inputs, layer.total_value_depth)
    positions = ops.shape(inputs)[:-1]  # [N, L] or [N, L, X]
    length = positions[1]
    output_norm = None
    if not (training and layer.batch_norm_retrieved_output.trainable):
        output_norm = folded_output_norm(layer)
    # The projections and BNs work on rows, one per position: 2-D matmuls, and BNs that
    # take inputs of any rank.
    rows = ops.reshape(inputs, (-1, inputs.shape[-1]))  # [N*L*X, C]
    # Separate matmuls on the split kernel rather than a split of the [N, L, 2Dk + Dv]
    # product: no pass over the activations (and none for its gradient). Global attention
    # projects q and k together: they share every layout (one wider matmul, BN call and
    # transpose per layout); local attention blocks them differently.
    key_depth = layer.total_key_depth
    split_points = [2 * key_depth] if layer.span is None else [key_depth, 2 * key_depth]
    if training and layer.batch_norm_qkv.trainable:
        kernels = ops.split(layer.qkv_kernel, split_points, axis=-1)
        projections = layer.batch_norm_qkv.normalize_channel_groups(
            [ops.matmul(rows, kernel) for kernel in kernels], training=training
        )
    else:
        projections, output_norm = folded_projections(layer, rows, split_points, output_norm)
    # [N, L, (X,) channels] each: q and k (together for global attention), then v.
    projections = [ops.reshape(t, (*positions, t.shape[-1])) for t in projections]
    if layer.span is None:
        retrieved = _attend_global(layer, projections, length, training, output_norm, max_chunk_logits)
    else:
        retrieved = attend_local(layer, projections, length, training, output_norm)
    retrieved = [ops.reshape(t, (-1, layer.total_value_depth)) for t in retrieved]  # [N*L*X, Dv]
    if output_norm is None:
        # One BN channel per (term, head, channel): each term normalised with its channels.
        outputs = sum_terms(layer.batch_norm_retrieved_output.normalize_channel_groups(retrieved, training=training))
    else:  # the normalised terms, already summed
        outputs = retrieved[0]
        if not output_norm.in_values:
            outputs = outputs + ops.cast(output_norm.shift, layer.compute_dtype)
    return ops.reshape(outputs, (*positions, layer.total_value_depth))


def _attend_global(layer, projections, length, training, output_norm, max_chunk_logits):
    """Global attention, in chunks of sequences when the logits would exceed `max_chunk_logits`.

    Args:
        layer: the `AxialAttention`.
        projections: `[N, L, (X,) 2Dk]` queries and keys side by side, and `[N, L, (X,) Dv]`
            values. Inputs with an X axis always fit one chunk (see `attends_in_place`).
        length: L (int or scalar tensor).
        training: whether trainable batch norms use batch statistics.
        output_norm: `None`, or the `FoldedOutputNorm` to apply to the retrieved terms.
        max_chunk_logits: the runtime setting.

    Returns:
        A list of `[N, L, X, heads, dv]` tensors: one per retrieval term (in BN channel
        order), or with `output_norm` their scaled sum.
    """
    window = AttentionWindow(query_length=length, key_length=length, key_start=0)
    one_chunk = len(projections[0].shape) == 4 or fits_one_chunk(
        layer, ops.shape(projections[0])[0], length, max_chunk_logits
    )
    layouts = scales = None
    if not (training and layer.batch_norm_similarity.trainable):
        scales = similarity_scales(layer, layer.batch_norm_similarity.moving_variance)
    else:
        layouts = shared_query_key_layouts(layer, projections[0])
        if not one_chunk or uses_moment_matrices(layer.key_depth_per_head, length):
            # Batch statistics over all sequences (cheap), so that chunks share them.
            scales = batch_similarity_scales(layer, *global_similarity_moments(layer, layouts, window))

    def attend(sequences, layouts=None):  # ([n, L, (X,) 2Dk], [n, L, (X,) Dv]) -> list of [n, L, X, h, dv]
        query_key, value = sequences
        if layouts is None:
            layouts = shared_query_key_layouts(layer, query_key)
        value = ops.reshape(value, (ops.shape(value)[0], length, -1, layer.num_heads, layer.value_depth_per_head))
        value_heads = ops.transpose(value, (0, 2, 3, 1, 4))  # [n, X, h, L, dv]
        if scales is None:  # statistics of the products themselves (one chunk only)
            logits = logits_with_batch_statistics(layer, layouts, window, valid_pair=None)
        else:
            logits = scaled_logits(layer, layouts, window, scales)  # [n, X, heads, L, L]
        retrieved = softmax_and_retrieve(layer, logits, value_heads, window, mask=None, query_axis=1)
        return retrieved if output_norm is None else [output_norm.scaled_sum(retrieved)]

    if one_chunk:
        return attend(projections, layouts)  # reuses the transposed q and k
    # The chunk loop maps tensors to one tensor: the retrieved parts travel side by side.
    parts = 1 if output_norm is not None else layer.num_retrieval_terms
    output_shape = (length, 1, layer.num_heads, parts * layer.value_depth_per_head)
    side_by_side = lambda sequences: ops.concatenate(attend(sequences), axis=-1)  # noqa: E731
    logits_per_sequence = layer.num_heads * length * length
    outputs = map_sequence_chunks(side_by_side, tuple(projections), output_shape, logits_per_sequence, max_chunk_logits)
    return ops.split(outputs, parts, axis=-1)
