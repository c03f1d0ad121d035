"""Tensor layouts of the fast attention path: the products' operands, 4-D inputs in place, chunks.

Computes no term of the equation; it arranges the operands so that each product of
`attention_products.py` is one batched matmul with its batch axes leading:

  * The content term q_l . k_m batches over (sequence, head): q and k "heads first",
    `[N, X, heads, L, d]`. The relative terms q_l . r^q_{m-l} and k_m . r^k_{m-l} meet
    different table rows at every position, so they batch over positions: q and k
    "positions first", `[L, N, X, heads, d]` (`matmul_by_position`). q and k are transposed
    once per call into the layouts the enabled terms use, and the products and the training
    statistics share them (docs/performance.md, "q and k transposed once, together": training 1.08x at ds_stage4,
    1.15x at cityscapes_os16). Global attention projects q and k together and transposes
    them together, q/k axis first, so that separating them aliases instead of copying
    (step 13: cityscapes_os16 training 1428 -> 1355 ms).
  * `[N, L, X, C]` inputs (the height pass of a `[B, H, W, C]` image, X = W) are attended
    in place when global and one chunk: q and k reach the positions-first layout by moving
    whole `[X, ...]` blocks and the outputs come back in the input's layout, so the image is
    never transposed into columns and back (step 16: ds_stage4 training 129.8 -> 127.2 ms).
    Everything else goes through `[N * X, L, C]` sequences (`attend_as_sequences`).
  * Global attention whose logits would exceed the runtime setting `max_chunk_logits` runs on
    chunks of sequences (`map_sequence_chunks`): without it Axial-DeepLab-S at 1025 x 2049
    formed 8.6 GB of logits per term and crashed inside TensorFlow.
"""

import itertools
from typing import NamedTuple

from keras import ops

from axial_tf.utils.shapes import ceil_div


class QueryKeyLayouts(NamedTuple):
    """Queries and keys in the layouts of the similarity products; `None` where no enabled term uses one.

    Attributes:
        query_heads: `[N, X, heads, Lq, dk]` queries for the content term.
        key_heads: `[N, X, heads, Lk, dk]` keys for the content term.
        query_positions: `[Lq, N, X, heads, dk]` queries for the query-encoding term.
        key_positions: `[Lk, N, X, heads, dk]` keys for the key-encoding term.
    """

    query_heads: object
    key_heads: object
    query_positions: object
    key_positions: object


def query_key_layouts(layer, query, key):
    """`QueryKeyLayouts` of `[N, X, L, heads, dk]` queries and keys (local attention's blocks)."""

    def heads_first(tensor):
        return ops.transpose(tensor, (0, 1, 3, 2, 4)) if layer.use_content_similarity else None

    def positions_first(tensor, used):
        return ops.transpose(tensor, (2, 0, 1, 3, 4)) if used else None

    return QueryKeyLayouts(
        heads_first(query),
        heads_first(key),
        positions_first(query, layer.use_query_rpe_similarity),
        positions_first(key, layer.use_key_rpe_similarity),
    )


def shared_query_key_layouts(layer, query_key):
    """`QueryKeyLayouts` of `[N, L, (X,) 2Dk]` queries and keys side by side (global attention).

    Both are transposed together into each layout with the q/k axis first, so that
    unstacking them aliases instead of copying.
    """
    n, length = ops.shape(query_key)[:2]
    query_key = ops.reshape(query_key, (n, length, -1, 2, layer.num_heads, layer.key_depth_per_head))
    query_heads = key_heads = query_positions = key_positions = None
    if layer.use_content_similarity:
        # 2 x [N, X, h, L, d]
        query_heads, key_heads = ops.unstack(ops.transpose(query_key, (3, 0, 2, 4, 1, 5)), num=2)
    if layer.use_query_rpe_similarity or layer.use_key_rpe_similarity:
        # 2 x [L, N, X, h, d]
        query_positions, key_positions = ops.unstack(ops.transpose(query_key, (3, 1, 0, 2, 4, 5)), num=2)
        query_positions = query_positions if layer.use_query_rpe_similarity else None
        key_positions = key_positions if layer.use_key_rpe_similarity else None
    return QueryKeyLayouts(query_heads, key_heads, query_positions, key_positions)


def matmul_by_position(by_position, matrices):
    """`[P, ..., a]` times one `[a, b]` matrix per position `[P, a, b]` -> `[P, ..., b]`.

    One batched matmul over the positions (its gradient too: TensorFlow's einsum
    gradient transposes operands, a batched matmul's uses transposed-operand flags).
    """
    shape = ops.shape(by_position)
    product = ops.matmul(ops.reshape(by_position, (shape[0], -1, shape[-1])), matrices)  # [P, rows, b]
    return ops.reshape(product, (*shape[:-1], ops.shape(matrices)[-1]))


def fits_one_chunk(layer, sequences, length, max_chunk_logits):
    """Whether global attention over `sequences` of `length` forms its logits at once.

    Always with `max_chunk_logits` None; otherwise only when the sizes are static and within it.
    """
    if max_chunk_logits is None:
        return True
    static = isinstance(sequences, int) and isinstance(length, int)
    return static and sequences * layer.num_heads * length * length <= max_chunk_logits


def attends_in_place(layer, inputs, max_chunk_logits):
    """Whether `[N, L, X, C]` inputs are attended as they lie, not as `[N * X, L, C]` sequences.

    In place, the positions-first layout of q and k (`[L, N, X, ...]`) is one transpose of
    whole `[X, ...]` blocks and the outputs come back in the input's layout; the sequence
    route adds a transpose of the inputs and one of the outputs. Local attention and
    global attention that needs chunks (or has unknown sizes) take that route.
    """
    n, length, x = inputs.shape[:3]
    return layer.span is None and None not in (n, x) and fits_one_chunk(layer, n * x, length, max_chunk_logits)


def attend_as_sequences(attend, inputs, depth):
    """`[N, L, X, C]` -> `[N, L, X, depth]`, by `attend` on the `[N * X, L, C]` sequences along axis 1."""
    n, length, x = ops.shape(inputs)[:3]
    sequences = ops.reshape(ops.transpose(inputs, (0, 2, 1, 3)), (n * x, length, inputs.shape[-1]))
    outputs = attend(sequences)  # [N * X, L, depth]
    return ops.transpose(ops.reshape(outputs, (n, x, length, depth)), (0, 2, 1, 3))


def sequence_chunks(count, logits_per_sequence, max_chunk_logits):
    """How `count` sequences split into equal chunks of at most `max_chunk_logits` logits.

    Args:
        count: number of sequences (int or scalar tensor).
        logits_per_sequence: logit elements of one sequence (int or scalar tensor).
        max_chunk_logits: bound on the logit elements of a chunk (one sequence at least).

    Returns:
        (num_chunks, chunk): the sequences padded to `num_chunks * chunk`, with less
        than one sequence of padding per chunk.
    """
    capacity = max_chunk_logits // logits_per_sequence
    capacity = max(capacity, 1) if isinstance(capacity, int) else ops.maximum(capacity, 1)
    num_chunks = ceil_div(count, capacity)
    return num_chunks, ceil_div(count, num_chunks)


def map_sequence_chunks(attend, sequences, output_shape, logits_per_sequence, max_chunk_logits):
    """`attend` chunk by chunk, so that no chunk's logits exceed `max_chunk_logits`.

    Args:
        attend: maps a tuple of `[n, ...]` tensors to one `[n, ...]` tensor.
        sequences: tuple of `[N, ...]` tensors.
        output_shape: shape of one sequence's output (`attend` returns `[n, *output_shape]`).
        logits_per_sequence: logit elements of one sequence (int or scalar tensor).
        max_chunk_logits: bound on the logit elements of a chunk.

    Returns:
        `attend(sequences)`, computed on at most `max_chunk_logits // logits_per_sequence`
        sequences at a time.
    """
    count = ops.shape(sequences[0])[0]
    static = isinstance(count, int) and isinstance(logits_per_sequence, int)
    num_chunks, chunk = sequence_chunks(count, logits_per_sequence, max_chunk_logits)
    padded = num_chunks * chunk

    # One packed tensor (sequences differ only in their last axis): Keras' TF scan cannot
    # check several inputs whose leading (chunk) dimension is unknown.
    split_points = list(itertools.accumulate(t.shape[-1] for t in sequences[:-1]))
    packed = ops.concatenate(sequences, axis=-1)  # [N, ..., sum(depths)]
    packed = ops.pad(packed, [(0, padded - count)] + [(0, 0)] * (len(packed.shape) - 1))
    packed = ops.reshape(packed, (num_chunks, chunk, *ops.shape(packed)[1:]))

    def attend_chunk(_, chunk_sequences):
        output = attend(tuple(ops.split(chunk_sequences, split_points, axis=-1)))
        return output, output

    # ops.scan rather than ops.map: Keras' TF map traces `attend` a second time (outside the
    # loop) to learn its output signature, which doubled the graph of every dynamic-shape
    # call. scan traces it once; its carry (the previous chunk's output, unused) must have
    # the output's shape, which is known without tracing.
    carry = ops.zeros((chunk, *output_shape), dtype=packed.dtype)
    _, outputs = ops.scan(attend_chunk, carry, packed)  # [chunks, chunk, *output_shape]
    outputs = ops.reshape(outputs, (padded, *output_shape))
    no_padding = static and padded == count
    return outputs if no_padding else outputs[:count]
