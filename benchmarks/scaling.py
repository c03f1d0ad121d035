"""How time and memory grow with the image side L: global axial, local axial, full 2-D attention.

Input [1, L, L, 128]; axial layers use filters 64 (8 heads, 64 key and 128
value channels); the full self-attention baseline is `keras.layers.MultiHeadAttention`
with the same head count and widths over the L*L flattened positions. One
method and size per process, so the peak resident memory (ru_maxrss) belongs to
that case alone; memory is reported as the peak minus the resident memory before
the first call. Forward (inference) only.

    python benchmarks/scaling.py --method global --side 64
"""

import argparse

from bench_utils import current_rss_mb, emit, interleaved_seconds, median_ms, peak_rss_mb, setup_tensorflow

tf = setup_tensorflow()
import keras  # noqa: E402

from axial_tf.layers import AxialAttention2D  # noqa: E402

CHANNELS, FILTERS, HEADS, LOCAL_SPAN = 128, 64, 8, 33


class FullSelfAttention2D(keras.layers.Layer):
    """Multi-head self-attention over all H*W positions (the O((HW)^2) baseline)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.attention = keras.layers.MultiHeadAttention(
            num_heads=HEADS, key_dim=FILTERS // HEADS, value_dim=2 * FILTERS // HEADS, output_shape=2 * FILTERS
        )

    def call(self, inputs):
        batch, height, width, channels = inputs.shape
        tokens = keras.ops.reshape(inputs, (batch, height * width, channels))
        return keras.ops.reshape(self.attention(tokens, tokens), (batch, height, width, -1))


def build(method):
    if method == "full":
        return FullSelfAttention2D()
    return AxialAttention2D(FILTERS, num_heads=HEADS, span=LOCAL_SPAN if method == "local" else None)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", required=True, choices=["global", "local", "full"])
    parser.add_argument("--side", type=int, required=True)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    inputs = tf.random.normal((1, args.side, args.side, CHANNELS), seed=0)
    layer = build(args.method)
    layer.build(inputs.shape)
    forward = tf.function(lambda: layer(inputs, training=False))
    resident_before = current_rss_mb()
    seconds = interleaved_seconds({args.method: forward}, args.rounds)[args.method]
    emit(benchmark="scaling", method=args.method, side=args.side, span=LOCAL_SPAN if args.method == "local" else None,
         median_ms=median_ms(seconds), peak_rss_mb=peak_rss_mb(), working_memory_mb=peak_rss_mb() - resident_before)


if __name__ == "__main__":
    main()
