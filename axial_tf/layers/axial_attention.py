"""Position-sensitive 1-D axial-attention (Axial-DeepLab, Wang et al. 2020).

How it is made fast on CPU without changing the math (see BENCHMARKS.md):
  * The similarity batch norm is linear per (term, head) and its shift cancels in
    the softmax, so it is applied as a scale, folded into the small q or k factor
    of each term whenever it is known before the products; the [N, X, heads, Lq, Lk]
    logits are never concatenated. Its variables and moving statistics are those
    of the BN sublayer.
  * For global attention the training-mode batch statistics come from [d, d]
    second-moment matrices (the terms are bilinear) when the sequence is long for
    the key depth, else from the products themselves; then the gradient through
    the statistics is written out (a batch norm's), not differentiated op by op.
  * In training the qkv and output batch norms are fused kernels
    (`FusedBatchNormalization`); the projections are separate matmuls (q and k
    together for global attention) normalised as channel groups of one BN, and the
    retrieved terms stay apart until they are summed, so no activation-sized split,
    stack or concatenation is made.
  * Every attention product is a batched matmul (an einsum's gradient in
    TensorFlow transposes operands, a batched matmul's uses transposed-operand
    flags); layout changes are explicit transposes of the smaller tensor wherever
    possible, and q and k are transposed once per call into the two layouts the
    terms use (shared by the products and the batch moments), for global attention
    both in one transpose per layout (unstacking aliases; the backward pass stacks
    their gradients once per layout).
  * `[N, L, X, C]` inputs (the height pass of a `[B, H, W, C]` image, X = W) are
    attended in place when global: q and k reach the positions-first layout by moving
    whole `[X, ...]` blocks, and the outputs come back in the input's layout, so the
    image is never transposed into columns and back.
  * A batch norm using its moving statistics (inference, frozen BN) is a
    per-channel affine map: the qkv BN folds into the projection kernel and bias,
    the output BN's content scale and shifts into v, its value-encoding scale onto
    that retrieved term, so neither passes over activations.
"""

import itertools

import keras
from keras import ops

from axial_tf.layers.fused_batch_norm import FusedBatchNormalization, update_moving_statistics
from axial_tf.layers.masked_batch_norm import MaskedBatchNormalization
from axial_tf.layers.relative_positional_encoding import DEEPLAB2_MAX_SPAN, RelativePositionalEncoding
from axial_tf.layers.replicas import all_reduce_sum
from axial_tf.utils.shapes import ceil_div

# Default bound on the logit elements of one similarity term computed at once by
# global attention (64 Mi floats = 256 MB): large images are processed in chunks of
# sequences instead of forming e.g. a 1025 x 8 x 513 x 513 tensor (8.6 GB, more
# elements than TensorFlow's 32-bit indexed kernels handle).
DEFAULT_MAX_CHUNK_LOGITS = 2**26

# Logits of masked (query, key) pairs. Finite so that a row with no valid key (a
# padding row, discarded afterwards) yields uniform weights instead of NaN.
_MASKED_LOGIT = -1e9

# Global attention in training takes the similarity BN's batch statistics from [d, d]
# second-moment matrices when dk^2 < this * L, and from the products themselves
# otherwise: the moment matrices cost O(L d^2) per sequence and head in small batched
# matmuls, the direct statistics a few elementwise passes over the O(L^2) products.
# Measured break-even (training, 8 heads, 2 threads): dk = 16 at L = 33
# (benchmarks/OPTIMISATIONS.md, step 10).
MOMENT_MATRICES_MAX_DEPTH_SQUARED_PER_POSITION = 8


def _minimum(a, b):
    """min() that stays in Python for static sizes and uses ops for dynamic ones."""
    if isinstance(a, int) and isinstance(b, int):
        return min(a, b)
    return ops.minimum(a, b)


def _sum(tensors):
    """Elementwise sum of a non-empty list (no extra pass adding a zero)."""
    total = tensors[0]
    for tensor in tensors[1:]:
        total = total + tensor
    return total


def _matmul_by_position(by_position, matrices):
    """`[P, ..., a]` times one `[a, b]` matrix per position `[P, a, b]` -> `[P, ..., b]`.

    One batched matmul over the positions (its gradient too: TensorFlow's einsum
    gradient transposes operands, a batched matmul's uses transposed-operand flags).
    """
    shape = ops.shape(by_position)
    product = ops.matmul(ops.reshape(by_position, (shape[0], -1, shape[-1])), matrices)  # [P, rows, b]
    return ops.reshape(product, (*shape[:-1], ops.shape(matrices)[-1]))


def _per_head_logit_sum(values):
    """`[N, X, heads, Lq, Lk]` -> `[heads]`: the contiguous inner reduction first."""
    return ops.sum(ops.sum(values, axis=(3, 4)), axis=(0, 1))


def _moving_affine(norm):
    """`(scale, shift)` with `norm(x) == x * scale + shift` for a BN using its moving statistics."""
    scale = norm.gamma * ops.rsqrt(norm.moving_variance + norm.epsilon)
    return scale, norm.beta - norm.moving_mean * scale


def _per_head_total(values):
    """Sums `[..., heads, d]` to `[heads]`: inner axis first, then the leading axes.

    Two contiguous reductions; one reduction over all axes but a middle one is
    several times slower in TensorFlow on CPU.
    """
    per_head = ops.sum(values, axis=-1)
    return ops.sum(ops.reshape(per_head, (-1, ops.shape(per_head)[-1])), axis=0)


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


@keras.saving.register_keras_serializable(package="axial_tf")
class AxialAttention(keras.layers.Layer):
    """Position-sensitive self-attention along axis 1 of `[N, L, C]` or `[N, L, X, C]` inputs.

    Follows the DeepLab2 / paper definition: a bias-free projection to queries,
    keys and values with batch norm; similarity `BN(q.k) + BN(q.r_q) + BN(k.r_k)`
    with one BN per (term, head) and no `1/sqrt(d)` scaling; softmax over keys;
    output `BN(sum w.v) + BN(sum w.r_v)` with one BN per (term, head, channel).
    Relative encodings are indexed by `key_pos - query_pos`.

    Inputs `[N, L, X, C]` hold `N * X` independent sequences along axis 1 (e.g. the
    columns of a `[B, H, W, C]` image); global attention that fits one chunk works
    on them as they lie, anything else through `[N * X, L, C]` sequences.

    `span=None` attends over the whole axis; when the `[N, heads, L, L]` logits of
    a call would exceed `max_chunk_logits` elements, the sequences are processed in
    chunks (same result, bounded memory). An odd `span=m` restricts each query
    to the `m` positions centred on it (fewer at the borders). Local attention is
    computed on blocks of `query_block_size` queries against their halo of keys,
    so compute and memory grow as O(L * m); its batch-norm statistics are taken
    over valid (query, key) pairs only.

    The layer works at any length at call time, also one different from the
    length it was built with: relative encodings are gathered for the actual
    length on every call.

    Args:
        total_key_depth: channels of queries and keys over all heads (default
            512, as DeepLab2).
        total_value_depth: channels of values (and of the output) over all heads
            (default 1024, as DeepLab2).
        num_heads: number of attention heads; must divide both depths (default 8,
            as DeepLab2).
        span: `None` for global attention, or an odd local window length.
        query_block_size: queries per block in local attention (default `span`).
            It changes speed and memory, never the result.
        max_chunk_logits: most logit elements of one similarity term that global
            attention forms at once (it loops over chunks of sequences beyond
            that). It changes speed and memory, never the result.
        max_span: relative encodings cover offsets up to `max_span - 1` (255 as
            DeepLab2, so its checkpoints load).
        use_query_rpe_similarity: use the `q.r_q` similarity term.
        use_key_rpe_similarity: use the `k.r_k` similarity term.
        use_content_similarity: use the `q.k` similarity term.
        retrieve_value_rpe: retrieve `sum w.r_v`.
        retrieve_value_content: retrieve `sum w.v`.
        batch_norm_momentum: momentum of every batch norm in the layer.
        batch_norm_epsilon: epsilon of every batch norm in the layer.
        sync_batch_norm: synchronise batch statistics across replicas.
        rpe_initializer_stddev: initial stddev of the query/key encodings.
        value_rpe_initializer_stddev: initial stddev of the value encodings.
        **kwargs: standard `keras.layers.Layer` arguments.

    Example:
    >>> layer = AxialAttention(total_key_depth=16, total_value_depth=32, num_heads=4)
    >>> y = layer(keras.random.normal((2, 10, 8)))  # [2, 10, 32]
    """

    def __init__(
        self,
        total_key_depth=512,
        total_value_depth=1024,
        num_heads=8,
        span=None,
        query_block_size=None,
        max_chunk_logits=DEFAULT_MAX_CHUNK_LOGITS,
        max_span=DEEPLAB2_MAX_SPAN,
        use_query_rpe_similarity=True,
        use_key_rpe_similarity=True,
        use_content_similarity=True,
        retrieve_value_rpe=True,
        retrieve_value_content=True,
        batch_norm_momentum=0.99,
        batch_norm_epsilon=1e-3,
        sync_batch_norm=False,
        rpe_initializer_stddev=1.0,
        value_rpe_initializer_stddev=1.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if total_key_depth % num_heads or total_value_depth % num_heads:
            raise ValueError(
                f"num_heads={num_heads} must divide total_key_depth={total_key_depth} "
                f"and total_value_depth={total_value_depth}."
            )
        if not (use_content_similarity or use_query_rpe_similarity or use_key_rpe_similarity):
            raise ValueError("At least one similarity term (content, query RPE, key RPE) must be on.")
        if not (retrieve_value_content or retrieve_value_rpe):
            raise ValueError("At least one of retrieve_value_content and retrieve_value_rpe must be on.")
        if span is not None and (span < 1 or span % 2 == 0):
            raise ValueError(f"span must be None (global) or an odd positive length, got {span}.")
        if query_block_size is not None and query_block_size < 1:
            raise ValueError(f"query_block_size must be positive, got {query_block_size}.")
        if max_chunk_logits < 1:
            raise ValueError(f"max_chunk_logits must be positive, got {max_chunk_logits}.")
        self.total_key_depth = int(total_key_depth)
        self.total_value_depth = int(total_value_depth)
        self.num_heads = int(num_heads)
        self.span = span
        self.query_block_size = query_block_size
        self.max_chunk_logits = int(max_chunk_logits)
        self.max_span = int(max_span)
        self.use_query_rpe_similarity = use_query_rpe_similarity
        self.use_key_rpe_similarity = use_key_rpe_similarity
        self.use_content_similarity = use_content_similarity
        self.retrieve_value_rpe = retrieve_value_rpe
        self.retrieve_value_content = retrieve_value_content
        self.batch_norm_momentum = batch_norm_momentum
        self.batch_norm_epsilon = batch_norm_epsilon
        self.sync_batch_norm = sync_batch_norm
        self.rpe_initializer_stddev = rpe_initializer_stddev
        self.value_rpe_initializer_stddev = value_rpe_initializer_stddev
        self.key_depth_per_head = self.total_key_depth // self.num_heads
        self.value_depth_per_head = self.total_value_depth // self.num_heads

        bn_args = dict(momentum=batch_norm_momentum, epsilon=batch_norm_epsilon, synchronized=sync_batch_norm)
        self.batch_norm_qkv = FusedBatchNormalization(axis=-1, name="batch_norm_qkv", **bn_args)
        # Similarity BN runs in float32 (dtype policy) so the softmax gets float32 logits
        # under mixed precision. Channels: term * num_heads + head on axis 1.
        self.batch_norm_similarity = MaskedBatchNormalization(
            axis=1, name="batch_norm_similarity", dtype="float32", **bn_args
        )
        # Channels: term * total_value_depth + head * value_depth_per_head + channel.
        self.batch_norm_retrieved_output = FusedBatchNormalization(
            axis=-1, name="batch_norm_retrieved_output", **bn_args
        )
        rpe_args = dict(max_span=self.max_span, initializer_stddev=rpe_initializer_stddev)
        self.query_rpe = (
            RelativePositionalEncoding(self.key_depth_per_head, name="query_rpe", **rpe_args)
            if use_query_rpe_similarity
            else None
        )
        self.key_rpe = (
            RelativePositionalEncoding(self.key_depth_per_head, name="key_rpe", **rpe_args)
            if use_key_rpe_similarity
            else None
        )
        self.value_rpe = (
            RelativePositionalEncoding(
                self.value_depth_per_head,
                name="value_rpe",
                max_span=self.max_span,
                initializer_stddev=value_rpe_initializer_stddev,
            )
            if retrieve_value_rpe
            else None
        )

    @property
    def num_similarity_terms(self):
        return sum([self.use_content_similarity, self.use_query_rpe_similarity, self.use_key_rpe_similarity])

    @property
    def num_retrieval_terms(self):
        return sum([self.retrieve_value_content, self.retrieve_value_rpe])

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(f"{self.name}: the channel axis of the input must be known, got {input_shape}.")
        self.qkv_kernel = self.add_weight(
            name="qkv_kernel",
            shape=(channels, 2 * self.total_key_depth + self.total_value_depth),
            initializer=keras.initializers.TruncatedNormal(stddev=channels**-0.5),
        )
        self.batch_norm_qkv.build((None, 2 * self.total_key_depth + self.total_value_depth))
        self.batch_norm_similarity.build((None, self.num_similarity_terms * self.num_heads, None, None, None))
        self.batch_norm_retrieved_output.build((None, self.num_retrieval_terms * self.total_value_depth))
        for encoding in (self.query_rpe, self.key_rpe, self.value_rpe):
            if encoding is not None:
                encoding.build()

    def call(self, inputs, training=None):
        if len(inputs.shape) not in (3, 4):
            raise ValueError(f"{self.name}: inputs must be [N, L, C] or [N, L, X, C], got shape {inputs.shape}.")
        if len(inputs.shape) == 4 and not self._attends_in_place(inputs):
            return self._attend_as_sequences(inputs, training)
        positions = ops.shape(inputs)[:-1]  # [N, L] or [N, L, X]
        length = positions[1]
        dk, dv, heads = self.total_key_depth, self.total_value_depth, self.num_heads
        terms = self.num_retrieval_terms
        # A BN with moving statistics is a per-channel map `x * scale + shift`: it folds
        # into the neighbouring linear maps instead of making passes over activations.
        term_scales = output_shift = None
        if not (training and self.batch_norm_retrieved_output.trainable):
            scale, shift = _moving_affine(self.batch_norm_retrieved_output)  # [terms * Dv]
            # Each term is scaled, the shifts add up: no stacked [N, L, terms * Dv] tensor.
            term_scales = [ops.reshape(s, (heads, -1)) for s in ops.split(scale, terms)]
            output_shift = _sum(ops.split(shift, terms))
        # Separate matmuls on the split kernel rather than a split of the [N, L, 2Dk + Dv]
        # product: no pass over the activations (and none for its gradient). Global
        # attention projects q and k together: they share every layout (one wider matmul,
        # BN call and transpose per layout); local attention blocks them differently.
        split_points = [2 * dk] if self.span is None else [dk, 2 * dk]
        # The projections and BNs work on rows, one per position: 2-D matmuls, and BNs
        # that take inputs of any rank.
        rows = ops.reshape(inputs, (-1, inputs.shape[-1]))  # [N*L*X, C]
        if training and self.batch_norm_qkv.trainable:
            kernels = ops.split(self.qkv_kernel, split_points, axis=-1)
            projections = self.batch_norm_qkv.normalize_channel_groups(
                [ops.matmul(rows, kernel) for kernel in kernels], training=training
            )
        else:
            kernel_scale, qkv_shift = _moving_affine(self.batch_norm_qkv)  # [2Dk + Dv]
            if term_scales is not None and self.retrieve_value_content:
                # Softmax rows sum to one, so the content term's output scale and the summed
                # output shift move into v (a shift of every value shifts the weighted sum).
                value_scale = ops.concatenate([ops.ones((2 * dk,)), ops.reshape(term_scales[0], (-1,))])
                value_shift = ops.concatenate([ops.zeros((2 * dk,)), output_shift])
                kernel_scale, qkv_shift = kernel_scale * value_scale, qkv_shift * value_scale + value_shift
                term_scales[0] = output_shift = None
            kernels = ops.split(ops.cast(self.qkv_kernel, "float32") * kernel_scale, split_points, axis=-1)
            shifts = ops.split(ops.cast(qkv_shift, self.compute_dtype), split_points)
            # Grappler fuses each 2-D matmul with its shift (no pass over the activations).
            projections = [
                ops.matmul(rows, ops.cast(kernel, self.compute_dtype)) + shift for kernel, shift in zip(kernels, shifts)
            ]
        # [N, L, (X,) channels] each: q and k (together for global attention), then v.
        projections = [ops.reshape(t, (*positions, t.shape[-1])) for t in projections]
        attend = self._attend_global if self.span is None else self._attend_local
        retrieved = attend(projections, length, training, term_scales)  # of [N, L, (X,) heads, dv]
        retrieved = [ops.reshape(t, (-1, dv)) for t in retrieved]  # [N*L*X, Dv]
        if term_scales is None:
            # One BN channel per (term, head, channel): each term normalised with its channels.
            outputs = _sum(self.batch_norm_retrieved_output.normalize_channel_groups(retrieved, training=training))
        else:  # the normalised terms, already summed
            outputs = retrieved[0]
            if output_shift is not None:
                outputs = outputs + ops.cast(output_shift, self.compute_dtype)
        return ops.reshape(outputs, (*positions, dv))

    def _attends_in_place(self, inputs):
        """Whether `[N, L, X, C]` inputs are attended as they lie, not as `[N * X, L, C]` sequences.

        In place, the positions-first layout of q and k (`[L, N, X, ...]`) is one
        transpose of whole `[X, ...]` blocks and the outputs come back in the input's
        layout; the sequence route adds a transpose of the inputs and one of the
        outputs. Local attention and chunked global attention take that route.
        """
        n, length, x = inputs.shape[:3]
        return self.span is None and None not in (n, x) and self._fits_one_chunk(n * x, length)

    def _fits_one_chunk(self, sequences, length):
        """Whether global attention over `sequences` of `length` (static sizes) forms its logits at once."""
        static = isinstance(sequences, int) and isinstance(length, int)
        return static and sequences * self.num_heads * length * length <= self.max_chunk_logits

    def _attend_as_sequences(self, inputs, training):
        """`[N, L, X, C]` -> `[N, L, X, Dv]`, attended as `[N * X, L, C]` sequences."""
        n, length, x = ops.shape(inputs)[:3]
        sequences = ops.reshape(ops.transpose(inputs, (0, 2, 1, 3)), (n * x, length, inputs.shape[-1]))
        outputs = self.call(sequences, training=training)  # [N * X, L, Dv]
        return ops.transpose(ops.reshape(outputs, (n, x, length, self.total_value_depth)), (0, 2, 1, 3))

    def _attend_global(self, projections, length, training, term_scales):
        """Global attention, in chunks of sequences when the logits would be too large.

        Args:
            projections: `[N, L, (X,) 2Dk]` queries and keys side by side, and
                `[N, L, (X,) Dv]` values. Inputs with an X axis always fit one chunk
                (see `_attends_in_place`).

        Returns:
            A list of `[N, L, X, heads, dv]` tensors (see `_retrieve_softmax`).
        """
        lengths = (length, length, 0)
        logits_per_sequence = self.num_heads * length * length
        one_chunk = len(projections[0].shape) == 4 or self._fits_one_chunk(ops.shape(projections[0])[0], length)
        layouts = scales = None
        if not (training and self.batch_norm_similarity.trainable):
            scales = self._similarity_scales(self.batch_norm_similarity.moving_variance)
        else:
            layouts = self._shared_query_key_layouts(projections[0])
            few_positions = self.key_depth_per_head**2 >= MOMENT_MATRICES_MAX_DEPTH_SQUARED_PER_POSITION * length
            if not (one_chunk and few_positions):
                # Batch statistics over all sequences (cheap, see below), so chunks share them.
                scales = self._batch_similarity_scales(*self._global_similarity_moments(*layouts, *lengths))

        def attend(sequences, layouts=None):  # ([n, L, (X,) 2Dk], [n, L, (X,) Dv]) -> list of [n, L, X, h, dv]
            query_key, value = sequences
            if layouts is None:
                layouts = self._shared_query_key_layouts(query_key)
            value = ops.reshape(value, (ops.shape(value)[0], length, -1, self.num_heads, self.value_depth_per_head))
            value_heads = ops.transpose(value, (0, 2, 3, 1, 4))  # [n, X, h, L, dv]
            if scales is None:  # statistics of the products themselves (one chunk only)
                logits = self._logits_with_batch_statistics(layouts, lengths, None)
            else:
                logits = self._folded_logits(*layouts, lengths, scales)  # [n, X, heads, L, L]
            return self._retrieve_softmax(logits, value_heads, lengths, None, term_scales, query_axis=1)

        if one_chunk:
            return attend(projections, layouts)  # reuses the transposed q and k
        # The chunk loop maps tensors to one tensor: the retrieved parts travel side by side.
        parts = 1 if term_scales is not None else self.num_retrieval_terms
        output_shape = (length, 1, self.num_heads, parts * self.value_depth_per_head)
        side_by_side = lambda sequences: ops.concatenate(attend(sequences), axis=-1)  # noqa: E731
        outputs = self._map_sequence_chunks(side_by_side, tuple(projections), output_shape, logits_per_sequence)
        return ops.split(outputs, parts, axis=-1)

    def _map_sequence_chunks(self, attend, sequences, output_shape, logits_per_sequence):
        """`attend` chunk by chunk, so that no chunk's logits exceed `max_chunk_logits`.

        Args:
            attend: maps a tuple of `[n, ...]` tensors to one `[n, ...]` tensor.
            sequences: tuple of `[N, ...]` tensors.
            output_shape: shape of one sequence's output (`attend` returns `[n, *output_shape]`).
            logits_per_sequence: logit elements of one sequence (int or scalar tensor).

        Returns:
            `attend(sequences)`, computed on at most `max_chunk_logits // logits_per_sequence`
            sequences at a time.
        """
        count = ops.shape(sequences[0])[0]
        static = isinstance(count, int) and isinstance(logits_per_sequence, int)
        num_chunks, chunk = sequence_chunks(count, logits_per_sequence, self.max_chunk_logits)
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

    def _attend_local(self, projections, length, training, term_scales):
        """Local attention on blocks of queries against keys within `flange` of the block.

        Args:
            projections: `[N, L, Dk]` queries, `[N, L, Dk]` keys and `[N, L, Dv]` values.

        Returns:
            A list of `[N, L, heads, dv]` tensors (see `_retrieve_softmax`).
        """
        depths = (self.key_depth_per_head, self.key_depth_per_head, self.value_depth_per_head)
        query, key, value = (
            ops.reshape(t, (*ops.shape(t)[:2], self.num_heads, depth)) for t, depth in zip(projections, depths)
        )
        # Keys farther than L - 1 never exist, so clip the flange to the length.
        flange = _minimum((self.span - 1) // 2, length - 1)
        block = _minimum(self.query_block_size or self.span, length)
        num_blocks = ceil_div(length, block)
        padded = num_blocks * block
        key_block = block + 2 * flange
        batch = ops.shape(query)[0]

        def to_query_blocks(t):  # [N, L, h, d] -> [N, blocks, block, h, d]
            t = ops.pad(t, ((0, 0), (0, padded - length), (0, 0), (0, 0)))
            return ops.reshape(t, (batch, num_blocks, block, self.num_heads, t.shape[-1]))

        # Key block b holds positions b * block - flange ... b * block + block + flange - 1.
        key_index = ops.arange(num_blocks)[:, None] * block + ops.arange(key_block)[None, :]

        def to_key_blocks(t):  # [N, L, h, d] -> [N, blocks, key_block, h, d]
            t = ops.pad(t, ((0, 0), (flange, padded - length + flange), (0, 0), (0, 0)))
            return ops.take(t, key_index, axis=1)

        query_position = ops.arange(padded)  # [blocks * block]
        query_position = ops.reshape(query_position, (num_blocks, block))[:, :, None]
        key_position = key_index[:, None, :] - flange  # [blocks, 1, key_block]
        valid = ops.logical_and(
            ops.abs(key_position - query_position) <= flange,
            ops.logical_and(key_position >= 0, key_position < length),
        )  # [blocks, block, key_block]
        valid_pair = ops.logical_and(valid, query_position < length)
        lengths = (block, key_block, -flange)
        logits = self._local_similarity_logits(
            to_query_blocks(query), to_key_blocks(key), lengths, valid_pair, training
        )  # [N, blocks, heads, block, key_block]
        value_heads = ops.transpose(to_key_blocks(value), (0, 1, 3, 2, 4))  # [N, blocks, h, key_block, dv]
        retrieved = self._retrieve_softmax(logits, value_heads, lengths, valid, term_scales, query_axis=2)
        # Each of [N, blocks, block, heads, dv] -> [N, L, heads, dv], without the padding queries
        # (no slice when there are none: its gradient is a full copy).
        no_padding = isinstance(length, int) and padded == length
        retrieved = [ops.reshape(t, (batch, padded, self.num_heads, self.value_depth_per_head)) for t in retrieved]
        return retrieved if no_padding else [t[:, :length] for t in retrieved]

    def _retrieve_softmax(self, logits, value_heads, lengths, mask, term_scales, query_axis):
        """Softmax over the keys, then retrieval of values and value encodings.

        Logits live in a heads-first `[N, X, heads, Lq, Lk]` layout, so the content
        products are plain batched matmuls. The relative-encoding products batch
        over positions instead (the table differs per query), so their operands
        and results are transposed explicitly: every einsum then maps to one
        batched matmul without hidden transposes, also in its gradient.

        Args:
            logits: float32 `[N, X, heads, Lq, Lk]` similarity logits.
            value_heads: `[N, X, heads, Lk, dv]` values.
            lengths: (Lq, Lk, position of key 0 relative to query 0 within a block).
            mask: `None`, or `[X, Lq, Lk]` booleans, True where a key may be attended.
            term_scales: `None`, or one `[heads, dv]` scale (or `None`: already applied)
                per retrieval term, which are then scaled and summed.
            query_axis: 2 for `[N, X, Lq, heads, dv]` outputs (blocks of queries), 1 for
                `[N, Lq, X, heads, dv]` (queries along axis 1 of `[N, L, X, C]` inputs).

        Returns:
            A list of outputs: one per retrieval term (before their BN), or only their
            scaled sum.
        """
        if mask is not None:
            logits = ops.where(mask[:, None], logits, _MASKED_LOGIT)
        weights = ops.cast(ops.softmax(logits, axis=-1), self.compute_dtype)
        retrieved = self._retrieve(weights, value_heads, lengths, query_axis)
        if term_scales is None:
            return retrieved
        return [_sum([t if s is None else t * ops.cast(s, t.dtype) for t, s in zip(retrieved, term_scales)])]

    def _local_similarity_logits(self, query, key, lengths, valid_pair, training):
        """Sum of the batch-normalised similarity terms of local blocks, float32 `[N, X, heads, Lq, Lk]`.

        The BN shifts (beta - mean * scale) are constant over the keys of a softmax
        row, so they cancel in the softmax and are never added; only the per-(term,
        head) scales `gamma / sqrt(variance + eps)` matter. In training they come
        from the batch statistics of the valid pairs (`valid_pair`, `[X, Lq, Lk]`).
        """
        layouts = self._query_key_layouts(query, key)
        if not (training and self.batch_norm_similarity.trainable):
            scales = self._similarity_scales(self.batch_norm_similarity.moving_variance)
            return self._folded_logits(*layouts, lengths, scales)
        return self._logits_with_batch_statistics(layouts, lengths, valid_pair)

    def _logits_with_batch_statistics(self, layouts, lengths, valid_pair):
        """Training logits: the products, scaled by the BN scales of their batch statistics.

        Args:
            layouts: `_query_key_layouts` of the queries and keys.
            lengths: (Lq, Lk, position of key 0 relative to query 0 within a block).
            valid_pair: `None` (every pair counts), or `[X, Lq, Lk]` booleans.

        Returns:
            float32 `[N, X, heads, Lq, Lk]` logits.
        """
        terms = [ops.cast(term, "float32") for term in self._similarity_terms(*layouts, *lengths)]
        # The gradient through the statistics is written out in _scale_by_batch_statistics.
        moments = [self._similarity_term_moments(ops.stop_gradient(term), valid_pair) for term in terms]
        scales = self._batch_similarity_scales(
            ops.concatenate([mean for mean, *_ in moments], axis=0),
            ops.concatenate([variance for _, variance, *_ in moments], axis=0),
        )
        return _sum(
            [
                self._scale_by_batch_statistics(term, scale, *term_moments[1:])
                for term, scale, term_moments in zip(terms, scales, moments)
            ]
        )

    def _scale_by_batch_statistics(self, term, scale, variance, centred, count):
        """`term * scale` per head, differentiated as a batch norm whose scale is `scale`.

        `scale` is `gamma / sqrt(variance + eps)` of the batch variance; the gradient
        through that variance is written out here (the batch norm's), five elementwise
        passes over the term instead of the dozen that differentiating the moment
        computation op by op takes. The gradient w.r.t. `scale` itself reaches gamma
        through `_similarity_scales`.

        Args:
            term: float32 `[N, X, heads, Lq, Lk]` similarity product.
            scale: `[heads]` BN scale of this term.
            variance: `[heads]` batch variance of `term` (over the valid pairs), not differentiated.
            centred: `term` minus its batch mean, zero at pairs that do not count.
            count: pairs per head that count.

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
                along_all = all_reduce_sum([along_term])[0] if self.sync_batch_norm else along_term
                # d variance / d term = 2 * centred / count, d scale / d variance = -scale / (2 (var + eps)).
                epsilon = self.batch_norm_similarity.epsilon
                through_variance = along_all * scale / ((variance + epsilon) * count)
                return upstream * per_head(scale) - centred * per_head(through_variance), along_term

            return term * per_head(scale), gradient

        return scaled(term, scale)

    def _folded_logits(self, query_layouts, key_layouts, lengths, scales):
        """Similarity logits with each term's BN scale folded into its (small) q or k factor."""
        terms = self._similarity_terms(query_layouts, key_layouts, *lengths, scales=scales)
        return _sum([ops.cast(term, "float32") for term in terms])

    def _query_key_layouts(self, query, key):
        """The layouts of `[N, X, L, heads, d]` queries and keys that the similarity terms use.

        Returns:
            For the queries, then the keys: (`[N, X, heads, L, d]` for the content term,
            `[L, N, X, heads, d]` for the relative term), `None` where that term is off.
            Made once per call and shared by the products and the batch moments.
        """

        def layouts(tensor, uses_rpe):
            heads_first = ops.transpose(tensor, (0, 1, 3, 2, 4)) if self.use_content_similarity else None
            return heads_first, ops.transpose(tensor, (2, 0, 1, 3, 4)) if uses_rpe else None

        return layouts(query, self.use_query_rpe_similarity), layouts(key, self.use_key_rpe_similarity)

    def _shared_query_key_layouts(self, query_key):
        """`_query_key_layouts` of `[N, L, (X,) 2Dk]` queries and keys side by side, as one block.

        Both are transposed together into each layout, with the q/k axis first, so
        that unstacking them aliases instead of copying.
        """
        n, length = ops.shape(query_key)[:2]
        query_key = ops.reshape(query_key, (n, length, -1, 2, self.num_heads, self.key_depth_per_head))
        query_heads = key_heads = query_positions = key_positions = None
        if self.use_content_similarity:
            # 2 x [N, X, h, L, d]
            query_heads, key_heads = ops.unstack(ops.transpose(query_key, (3, 0, 2, 4, 1, 5)), num=2)
        if self.use_query_rpe_similarity or self.use_key_rpe_similarity:
            # 2 x [L, N, X, h, d]
            query_positions, key_positions = ops.unstack(ops.transpose(query_key, (3, 1, 0, 2, 4, 5)), num=2)
            query_positions = query_positions if self.use_query_rpe_similarity else None
            key_positions = key_positions if self.use_key_rpe_similarity else None
        return (query_heads, query_positions), (key_heads, key_positions)

    def _retrieve(self, weights, value_heads, lengths, query_axis):
        """The enabled retrievals (values, value encodings), each with queries on `query_axis`."""
        retrieved = []
        if self.retrieve_value_content:
            content = ops.matmul(weights, value_heads)  # [N, X, h, Lq, dv]
            retrieved.append(ops.transpose(content, (0, 3, 1, 2, 4) if query_axis == 1 else (0, 1, 3, 2, 4)))
        if self.retrieve_value_rpe:
            table = self.value_rpe.table(*lengths)  # [Lq, Lk, dv]
            weights_by_query = ops.transpose(weights, (3, 0, 1, 2, 4))  # [Lq, N, X, h, Lk]
            rpe = _matmul_by_position(weights_by_query, table)  # [Lq, N, X, h, dv]
            retrieved.append(ops.transpose(rpe, (1, 0, 2, 3, 4) if query_axis == 1 else (1, 2, 0, 3, 4)))
        return retrieved

    def _similarity_terms(self, query_layouts, key_layouts, query_length, key_length, key_start, scales=None):
        """The enabled similarity products, each `[N, X, heads, Lq, Lk]`.

        Args:
            query_layouts: `_query_key_layouts` layouts of the `[N, X, Lq, heads, dk]` queries.
            key_layouts: `_query_key_layouts` layouts of the `[N, X, Lk, heads, dk]` keys.
            query_length: Lq.
            key_length: Lk.
            key_start: position of key 0 relative to query 0 within a block.
            scales: `None`, or one `[heads]` factor per enabled term, applied to its
                query (content and query-encoding terms) or key (key-encoding term).

        Returns:
            A list with one tensor per enabled term, in BN channel order.
        """
        (query_heads, query_positions), (key_heads, key_positions) = query_layouts, key_layouts
        scales = iter(scales) if scales is not None else None
        terms = []
        if self.use_content_similarity:
            if scales is not None:  # [heads] -> [heads, Lq, dk]: its gradient reduces leading axes
                query_heads = query_heads * ops.broadcast_to(
                    ops.cast(next(scales), query_heads.dtype)[:, None, None], ops.shape(query_heads)[2:]
                )
            terms.append(ops.matmul(query_heads, ops.swapaxes(key_heads, -1, -2)))
        if self.use_query_rpe_similarity:
            if scales is not None:
                query_positions = query_positions * self._head_scale(next(scales))
            table = self.query_rpe.table(query_length, key_length, key_start)  # [Lq, Lk, dk]
            term = _matmul_by_position(query_positions, ops.swapaxes(table, 1, 2))  # [Lq, N, X, h, Lk]
            terms.append(ops.transpose(term, (1, 2, 3, 0, 4)))
        if self.use_key_rpe_similarity:
            if scales is not None:
                key_positions = key_positions * self._head_scale(next(scales))
            table = self.key_rpe.table(query_length, key_length, key_start)  # [Lq, Lk, dk]
            term = _matmul_by_position(key_positions, ops.transpose(table, (1, 2, 0)))  # [Lk, N, X, h, Lq]
            terms.append(ops.transpose(term, (1, 2, 3, 4, 0)))
        return terms

    def _head_scale(self, scale):
        """`[heads]` float32 scale -> `[heads, dk]` factor for `[..., heads, dk]` tensors.

        Broadcasting only over leading axes keeps the gradient of the scale a fast
        reduction over leading axes (a `[heads, 1]` factor would reduce a middle axis).
        """
        return ops.broadcast_to(ops.cast(scale, self.compute_dtype)[:, None], (self.num_heads, self.key_depth_per_head))

    def _batch_similarity_scales(self, mean, variance):
        """Training-mode BN scales from batch moments; updates the moving statistics.

        Args:
            mean: `[terms * heads]` batch means of the similarity products.
            variance: `[terms * heads]` batch variances.

        Returns:
            One `[heads]` scale `gamma / sqrt(variance + eps)` per term.
        """
        update_moving_statistics(self.batch_norm_similarity, mean, variance)
        return self._similarity_scales(variance)

    def _similarity_scales(self, variance):
        """`gamma / sqrt(variance + eps)` of the similarity BN, split into one `[heads]` per term."""
        norm = self.batch_norm_similarity
        # beta shifts whole softmax rows, so its gradient is exactly zero. The zero-weight
        # connection hands optimizers that zero (as a plain BN does) instead of None.
        scale = norm.gamma * ops.rsqrt(variance + norm.epsilon) + 0.0 * norm.beta
        return ops.split(scale, self.num_similarity_terms)

    def _global_similarity_moments(self, query_layouts, key_layouts, query_length, key_length, key_start):
        """Batch mean and variance of every similarity product, without forming the products.

        Each product is bilinear, so its sum over all (query, key) pairs and its sum of
        squares follow from `[d, d]` second-moment matrices: e.g. for the content term
        `sum_lm (q_l.k_m)^2 = <sum_l q_l q_l^T, sum_m k_m k_m^T>`. This costs
        O(L d^2) per sequence instead of several passes over the O(L^2) logits, and
        the gradient of the variance flows through the same small tensors.

        Args:
            query_layouts: `_query_key_layouts` layouts of the `[N, X, Lq, heads, dk]`
                queries (every pair of a block is valid).
            key_layouts: `_query_key_layouts` layouts of the `[N, X, Lk, heads, dk]` keys.
            query_length: Lq.
            key_length: Lk.
            key_start: position of key 0 relative to query 0 within a block.

        Returns:
            (mean, variance), each `[terms * heads]` in BN channel order.
        """
        as_float = lambda t: None if t is None else ops.cast(t, "float32")  # noqa: E731
        (query_heads, query_positions), (key_heads, key_positions) = (
            tuple(as_float(t) for t in layouts) for layouts in (query_layouts, key_layouts)
        )
        # N and X from whichever layout exists ([N, X, ...] or [L, N, X, ...]).
        n, x = ops.shape(query_heads)[:2] if query_heads is not None else ops.shape(query_positions)[1:3]
        count = ops.cast(n * x, "float32") * ops.cast(query_length * key_length, "float32")
        sums, squares = [], []
        if self.use_content_similarity:  # heads-first [N, X, h, L, d]
            sums.append(_per_head_total(ops.sum(query_heads, axis=3) * ops.sum(key_heads, axis=3)))
            query_moment = ops.einsum("nxhld,nxhle->nxhde", query_heads, query_heads)
            key_moment = ops.einsum("nxhmd,nxhme->nxhde", key_heads, key_heads)
            depth_pairs = self.key_depth_per_head**2
            squares.append(_per_head_total(ops.reshape(query_moment * key_moment, (-1, self.num_heads, depth_pairs))))
        for enabled, rpe, by_position, summed_axis in (
            (self.use_query_rpe_similarity, self.query_rpe, query_positions, 1),
            (self.use_key_rpe_similarity, self.key_rpe, key_positions, 0),
        ):
            if not enabled:
                continue
            # Position p of `by_position` ([P, N, X, h, dk]: query l or key m) meets the table
            # rows of all its pairs.
            table = ops.cast(rpe.table(query_length, key_length, key_start), "float32")  # [Lq, Lk, dk]
            table_by_position = table if summed_axis == 1 else ops.transpose(table, (1, 0, 2))  # [P, pairs, dk]
            row_sums = ops.sum(table_by_position, axis=1)[:, None, None, None]  # [P, 1, 1, 1, dk]
            sums.append(_per_head_total(by_position * row_sums))
            table_moment = ops.einsum("pod,poe->pde", table_by_position, table_by_position)  # [P, dk, dk]
            projected = ops.einsum("pnxhd,pde->pnxhe", by_position, table_moment)
            squares.append(_per_head_total(projected * by_position))
        sums, squares = ops.concatenate(sums, axis=0), ops.concatenate(squares, axis=0)
        if self.sync_batch_norm:
            count, sums, squares = all_reduce_sum([count, sums, squares])
        mean = sums / count
        return mean, ops.maximum(squares / count - ops.square(mean), 0.0)

    def _similarity_term_moments(self, term, valid):
        """Per-head batch moments of one `[N, X, heads, Lq, Lk]` term over valid pairs.

        Args:
            term: float32 similarity product.
            valid: `None` (all pairs count), or `[X, Lq, Lk]` booleans, True where a
                (query, key) pair counts.

        Returns:
            (mean, variance, centred, count): `[heads]` mean and variance, the term
            minus its mean (zero where a pair does not count) and the number of pairs
            per head (over all replicas with synchronised statistics).
        """
        if valid is None:
            weighted = lambda values: values  # noqa: E731
            count = ops.cast(ops.size(term) // self.num_heads, term.dtype)
        else:
            weights = ops.cast(valid, term.dtype)[:, None]  # [X, 1, Lq, Lk]
            weighted = lambda values: values * weights  # noqa: E731
            count = ops.cast(ops.shape(term)[0], term.dtype) * ops.sum(weights)

        def centred_on(mean):  # [heads, Lq, Lk] operand: the subtraction broadcasts over leading axes only
            return weighted(term - ops.broadcast_to(mean[:, None, None], ops.shape(term)[2:]))

        if self.sync_batch_norm:
            count, total, squares = all_reduce_sum(
                [count, _per_head_logit_sum(weighted(term)), _per_head_logit_sum(weighted(ops.square(term)))]
            )
            mean = total / count
            return mean, ops.maximum(squares / count - ops.square(mean), 0.0), centred_on(mean), count
        mean = _per_head_logit_sum(weighted(term)) / count
        centred = centred_on(mean)
        return mean, _per_head_logit_sum(ops.square(centred)) / count, centred, count

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.total_value_depth)

    def get_config(self):
        return {
            **super().get_config(),
            "total_key_depth": self.total_key_depth,
            "total_value_depth": self.total_value_depth,
            "num_heads": self.num_heads,
            "span": self.span,
            "query_block_size": self.query_block_size,
            "max_chunk_logits": self.max_chunk_logits,
            "max_span": self.max_span,
            "use_query_rpe_similarity": self.use_query_rpe_similarity,
            "use_key_rpe_similarity": self.use_key_rpe_similarity,
            "use_content_similarity": self.use_content_similarity,
            "retrieve_value_rpe": self.retrieve_value_rpe,
            "retrieve_value_content": self.retrieve_value_content,
            "batch_norm_momentum": self.batch_norm_momentum,
            "batch_norm_epsilon": self.batch_norm_epsilon,
            "sync_batch_norm": self.sync_batch_norm,
            "rpe_initializer_stddev": self.rpe_initializer_stddev,
            "value_rpe_initializer_stddev": self.value_rpe_initializer_stddev,
        }
