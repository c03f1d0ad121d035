"""Position-sensitive axial-attention (Axial-DeepLab, Wang et al. 2020, as DeepLab2 implements it).

Self-attention along one axis. For a query at position l and each key position m it attends
(the whole axis, or the `span` positions centred on l):

    w_lm = softmax_m( BN(q_l . k_m) + BN(q_l . r^q_{m-l}) + BN(k_m . r^k_{m-l}) )
    y_l  = BN( sum_m w_lm v_m ) + BN( sum_m w_lm r^v_{m-l} )

per head, where q, k, v = BN(x W) and r^q, r^k, r^v are learned relative positional
encodings of the offset m - l. `axial_attention_reference.py` computes exactly this, term by
term; it is the definition. `axial_attention_fast.py` (the default) computes the same
numbers faster, and is tested against it. Both use the variables and sub-layers built here.
"""

import keras
from keras import ops

from axial_tf.layers.axial_attention_fast import fast_axial_attention
from axial_tf.layers.axial_attention_reference import axial_attention_reference
from axial_tf.layers.fused_batch_norm import FusedBatchNormalization
from axial_tf.layers.relative_positional_encoding import DEEPLAB2_MAX_SPAN, RelativePositionalEncoding
from axial_tf.layers.replicas import all_reduce_sum
from axial_tf.layers.runtime import drop_retired_arguments

IMPLEMENTATIONS = {"fast": fast_axial_attention, "reference": axial_attention_reference}


@keras.saving.register_keras_serializable(package="axial_tf")
class MaskedBatchNormalization(keras.layers.BatchNormalization):
    """`BatchNormalization` whose batch statistics may be restricted by a mask.

    The similarity BN of `AxialAttention`: with a local span, the reference implementation
    normalises `[N, terms * heads, L, L]` logits with statistics over the attended (query,
    key) pairs only. Keras' own `mask` argument must have one dimension less than the input
    and assumes channels-last; here `mask` is any boolean tensor broadcastable to the input.
    Without a mask the layer is exactly `keras.layers.BatchNormalization` (same variables,
    same math).

    Args:
        **kwargs: `keras.layers.BatchNormalization` arguments.

    Example:
    >>> norm = MaskedBatchNormalization(axis=1)
    >>> mask = np.tri(5, dtype=bool)[None, None]  # [1, 1, 5, 5]
    >>> y = norm(keras.random.normal((2, 3, 5, 5)), training=True, mask=mask)  # [2, 3, 5, 5]
    """

    def call(self, inputs, training=None, mask=None):
        # The parent's call computes moments through `_moments`; the mask reaches it
        # through this attribute because the parent validates `mask` for its own layout.
        self._statistics_mask = mask
        try:
            return super().call(inputs, training=training)
        finally:
            self._statistics_mask = None

    def _moments(self, inputs, mask):
        stats_mask = getattr(self, "_statistics_mask", None)
        if stats_mask is None:
            return super()._moments(inputs, mask)
        weights = ops.broadcast_to(ops.cast(stats_mask, inputs.dtype), ops.shape(inputs))
        axes = self._reduction_axes
        if self.synchronized:
            count, total, squares = all_reduce_sum(
                [ops.sum(weights, axes), ops.sum(inputs * weights, axes), ops.sum(ops.square(inputs) * weights, axes)]
            )
            mean = total / count
            return mean, ops.maximum(squares / count - ops.square(mean), 0.0)
        count = ops.sum(weights, axes)
        mean = ops.sum(inputs * weights, axes) / count
        centred = (inputs - ops.reshape(mean, self._broadcast_shape(inputs))) * weights
        return mean, ops.sum(ops.square(centred), axes) / count

    def _broadcast_shape(self, inputs):
        shape = [1] * len(inputs.shape)
        for axis in self.axis if isinstance(self.axis, (list, tuple)) else [self.axis]:
            shape[axis] = inputs.shape[axis]
        return shape


@keras.saving.register_keras_serializable(package="axial_tf")
class AxialAttention(keras.layers.Layer):
    """Position-sensitive self-attention along axis 1 of `[N, L, C]` or `[N, L, X, C]` inputs.

    Follows the DeepLab2 / paper definition (module docstring): a bias-free projection to
    queries, keys and values with batch norm; similarity `BN(q.k) + BN(q.r_q) + BN(k.r_k)`
    with one BN per (term, head) and no `1/sqrt(d)` scaling; softmax over keys; output
    `BN(sum w.v) + BN(sum w.r_v)` with one BN per (term, head, channel). Relative encodings
    are indexed by `key_pos - query_pos`.

    Inputs `[N, L, X, C]` hold `N * X` independent sequences along axis 1 (e.g. the
    columns of a `[B, H, W, C]` image).

    `span=None` attends over the whole axis. An odd `span=m` restricts each query to the
    `m` positions centred on it (fewer at the borders); its batch-norm statistics are
    taken over those (query, key) pairs only. The fast implementation computes local
    attention on blocks of `query_block_size` queries against their halo of keys, so
    compute and memory grow as O(L * m), and processes global attention in chunks of
    sequences beyond the runtime setting `max_chunk_logits` (`runtime.py`).

    The layer works at any length at call time, also one different from the length it
    was built with: relative encodings are gathered for the actual length on every call.

    Args:
        total_key_depth: channels of queries and keys over all heads (default
            512, as DeepLab2).
        total_value_depth: channels of values (and of the output) over all heads
            (default 1024, as DeepLab2).
        num_heads: number of attention heads; must divide both depths (default 8,
            as DeepLab2).
        span: `None` for global attention, or an odd local window length.
        query_block_size: queries per block in the fast local attention (default
            `span`). It changes speed and memory, never the result.
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
        implementation: "fast" (default) or "reference" (`axial_attention_reference.py`:
            the equation term by term, O(L^2) memory). Same weights, same results.
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
        implementation="fast",
        **kwargs,
    ):
        drop_retired_arguments(kwargs)
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
        if implementation not in IMPLEMENTATIONS:
            raise ValueError(f"implementation must be one of {sorted(IMPLEMENTATIONS)}, got {implementation!r}.")
        self.total_key_depth = int(total_key_depth)
        self.total_value_depth = int(total_value_depth)
        self.num_heads = int(num_heads)
        self.span = span
        self.query_block_size = query_block_size
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
        self.implementation = implementation
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
        # Rows of channels for the qkv and output BNs; [N, terms * heads, Lq, Lk] similarities.
        self.batch_norm_qkv.build((None, 2 * self.total_key_depth + self.total_value_depth))
        self.batch_norm_similarity.build((None, self.num_similarity_terms * self.num_heads, None, None))
        self.batch_norm_retrieved_output.build((None, self.num_retrieval_terms * self.total_value_depth))
        for encoding in (self.query_rpe, self.key_rpe, self.value_rpe):
            if encoding is not None:
                encoding.build()

    def call(self, inputs, training=None):
        if len(inputs.shape) not in (3, 4):
            raise ValueError(f"{self.name}: inputs must be [N, L, C] or [N, L, X, C], got shape {inputs.shape}.")
        return IMPLEMENTATIONS[self.implementation](self, inputs, training)

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
            "implementation": self.implementation,
        }
