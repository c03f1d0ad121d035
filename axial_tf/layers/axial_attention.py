"""Position-sensitive 1-D axial-attention (Axial-DeepLab, Wang et al. 2020)."""

import keras
from keras import ops

from axial_tf.layers.masked_batch_norm import MaskedBatchNormalization
from axial_tf.layers.relative_positional_encoding import DEEPLAB2_MAX_SPAN, RelativePositionalEncoding

# Logits of masked (query, key) pairs. Finite so that a row with no valid key (a
# padding row, discarded afterwards) yields uniform weights instead of NaN.
_MASKED_LOGIT = -1e9


def _minimum(a, b):
    """min() that stays in Python for static sizes and uses ops for dynamic ones."""
    if isinstance(a, int) and isinstance(b, int):
        return min(a, b)
    return ops.minimum(a, b)


def _ceil_div(a, b):
    if isinstance(a, int) and isinstance(b, int):
        return -(-a // b)
    return (a + b - 1) // b


@keras.saving.register_keras_serializable(package="axial_tf")
class AxialAttention(keras.layers.Layer):
    """Position-sensitive self-attention along one axis of `[N, L, C]` inputs.

    Follows the DeepLab2 / paper definition: a bias-free projection to queries,
    keys and values with batch norm; similarity `BN(q.k) + BN(q.r_q) + BN(k.r_k)`
    with one BN per (term, head) and no `1/sqrt(d)` scaling; softmax over keys;
    output `BN(sum w.v) + BN(sum w.r_v)` with one BN per (term, head, channel).
    Relative encodings are indexed by `key_pos - query_pos`.

    `span=None` attends over the whole axis. An odd `span=m` restricts each query
    to the `m` positions centred on it (fewer at the borders). Local attention is
    computed on blocks of `query_block_size` queries against their halo of keys,
    so compute and memory grow as O(L * m); its batch-norm statistics are taken
    over valid (query, key) pairs only.

    The layer works at any length at call time, also one different from the
    length it was built with: relative encodings are gathered for the actual
    length on every call.

    Args:
        total_key_depth: channels of queries and keys over all heads.
        total_value_depth: channels of values (and of the output) over all heads.
        num_heads: number of attention heads; must divide both depths.
        span: `None` for global attention, or an odd local window length.
        query_block_size: queries per block in local attention (default `span`).
            It changes speed and memory, never the result.
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
        total_key_depth,
        total_value_depth,
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
        self.key_depth_per_head = self.total_key_depth // self.num_heads
        self.value_depth_per_head = self.total_value_depth // self.num_heads

        bn_args = dict(momentum=batch_norm_momentum, epsilon=batch_norm_epsilon, synchronized=sync_batch_norm)
        self.batch_norm_qkv = keras.layers.BatchNormalization(axis=-1, name="batch_norm_qkv", **bn_args)
        # Similarity BN runs in float32 (dtype policy) so the softmax gets float32 logits
        # under mixed precision. Channels: term * num_heads + head on axis 1.
        self.batch_norm_similarity = MaskedBatchNormalization(
            axis=1, name="batch_norm_similarity", dtype="float32", **bn_args
        )
        # Channels: term * total_value_depth + head * value_depth_per_head + channel.
        self.batch_norm_retrieved_output = keras.layers.BatchNormalization(
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
        self.batch_norm_qkv.build((None, None, 2 * self.total_key_depth + self.total_value_depth))
        self.batch_norm_similarity.build((None, self.num_similarity_terms * self.num_heads, None, None, None))
        self.batch_norm_retrieved_output.build((None, None, self.num_retrieval_terms * self.total_value_depth))

    def call(self, inputs, training=None):
        batch, length = ops.shape(inputs)[0], ops.shape(inputs)[1]
        qkv = ops.matmul(inputs, self.qkv_kernel)  # [N, L, 2Dk + Dv]
        qkv = self.batch_norm_qkv(qkv, training=training)
        dk, dv, heads = self.total_key_depth, self.total_value_depth, self.num_heads
        query = ops.reshape(qkv[..., :dk], (batch, length, heads, self.key_depth_per_head))
        key = ops.reshape(qkv[..., dk : 2 * dk], (batch, length, heads, self.key_depth_per_head))
        value = ops.reshape(qkv[..., 2 * dk :], (batch, length, heads, self.value_depth_per_head))

        if self.span is None:
            retrieved = self._attend_global(query, key, value, length, training)
        else:
            retrieved = self._attend_local(query, key, value, length, training)
        # retrieved: [N, L, terms, heads, dv] -> one BN channel per (term, head, channel).
        retrieved = ops.reshape(retrieved, (batch, length, self.num_retrieval_terms * dv))
        retrieved = self.batch_norm_retrieved_output(retrieved, training=training)
        retrieved = ops.reshape(retrieved, (batch, length, self.num_retrieval_terms, dv))
        return ops.sum(retrieved, axis=2)  # [N, L, Dv]

    def _attend_global(self, query, key, value, length, training):
        """Global attention: one block holding the whole axis, nothing masked."""
        blocks = lambda t: ops.expand_dims(t, 1)  # noqa: E731  [N, 1, L, heads, d]
        retrieved = self._attend_blocks(
            blocks(query), blocks(key), blocks(value), length, length, 0, None, training
        )
        return retrieved[:, 0]  # [N, L, terms, heads, dv]

    def _attend_local(self, query, key, value, length, training):
        """Local attention on blocks of queries against keys within `flange` of the block."""
        # Keys farther than L - 1 never exist, so clip the flange to the length.
        flange = _minimum((self.span - 1) // 2, length - 1)
        block = _minimum(self.query_block_size or self.span, length)
        num_blocks = _ceil_div(length, block)
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
        retrieved = self._attend_blocks(
            to_query_blocks(query),
            to_key_blocks(key),
            to_key_blocks(value),
            block,
            key_block,
            -flange,
            (valid, valid_pair),
            training,
        )  # [N, blocks, block, terms, heads, dv]
        retrieved = ops.reshape(
            retrieved, (batch, padded, self.num_retrieval_terms, self.num_heads, self.value_depth_per_head)
        )
        return retrieved[:, :length]

    def _attend_blocks(self, query, key, value, query_length, key_length, key_start, masks, training):
        """Attention of query blocks on key blocks.

        Args:
            query: `[N, X, Lq, heads, dk]` query blocks.
            key: `[N, X, Lk, heads, dk]` key blocks.
            value: `[N, X, Lk, heads, dv]` value blocks.
            query_length: Lq.
            key_length: Lk.
            key_start: position of key 0 relative to query 0 within a block.
            masks: `None`, or (softmax mask, statistics mask), `[X, Lq, Lk]` booleans.
            training: batch-norm mode.

        Returns:
            `[N, X, Lq, terms, heads, dv]` retrieved outputs (before their BN).
        """
        logits = []
        if self.use_content_similarity:
            logits.append(ops.einsum("nxlhd,nxmhd->nhxlm", query, key))
        if self.use_query_rpe_similarity:
            table = self.query_rpe.table(query_length, key_length, key_start)  # [Lq, Lk, dk]
            logits.append(ops.einsum("nxlhd,lmd->nhxlm", query, table))
        if self.use_key_rpe_similarity:
            table = self.key_rpe.table(query_length, key_length, key_start)  # [Lq, Lk, dk]
            logits.append(ops.einsum("nxmhd,lmd->nhxlm", key, table))
        logits = ops.concatenate(logits, axis=1)  # [N, terms * heads, X, Lq, Lk]
        statistics_mask = None if masks is None else masks[1][None, None]
        logits = self.batch_norm_similarity(logits, training=training, mask=statistics_mask)
        shape = ops.shape(logits)
        logits = ops.reshape(logits, (shape[0], self.num_similarity_terms, self.num_heads, *shape[2:]))
        logits = ops.sum(logits, axis=1)  # [N, heads, X, Lq, Lk], float32
        if masks is not None:
            logits = ops.where(masks[0][None, None], logits, _MASKED_LOGIT)
        weights = ops.cast(ops.softmax(logits, axis=-1), self.compute_dtype)

        retrieved = []
        if self.retrieve_value_content:
            retrieved.append(ops.einsum("nhxlm,nxmhd->nxlhd", weights, value))
        if self.retrieve_value_rpe:
            table = self.value_rpe.table(query_length, key_length, key_start)  # [Lq, Lk, dv]
            retrieved.append(ops.einsum("nhxlm,lmd->nxlhd", weights, table))
        return ops.stack(retrieved, axis=3)

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
        }
