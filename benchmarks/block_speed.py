"""Axial-attention bottleneck block vs the 3x3-conv bottleneck it replaces.

Both are `AxialBlock`s with the same `filters_list` on the same input; the
attention block swaps the 3x3 conv for `AxialAttention2D` (global span, 8 heads).
Times forward (inference) and forward+backward (training), interleaved.

    python benchmarks/block_speed.py --shape 2,33,33,1024 --filters 256,256,1024
"""

import argparse

from bench_utils import emit, interleaved_seconds, median_ms, setup_tensorflow

tf = setup_tensorflow()

from axial_tf.layers import AxialBlock  # noqa: E402
from layer_speed import layer_step  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="2,33,33,1024", help="Input B,H,W,C.")
    parser.add_argument("--filters", default="256,256,1024", help="filters_list of both blocks.")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    shape = tuple(int(v) for v in args.shape.split(","))
    filters = [int(v) for v in args.filters.split(",")]
    inputs = tf.random.normal(shape, seed=0)
    blocks = {
        "axial_attention_block": AxialBlock(filters, attention={"num_heads": 8}),
        "conv3x3_bottleneck": AxialBlock(filters),
    }
    for block in blocks.values():
        block(inputs)
    for mode in ("forward", "training"):
        steps = {name: layer_step(block, inputs, mode, "graph") for name, block in blocks.items()}
        for name, seconds in interleaved_seconds(steps, args.rounds).items():
            emit(benchmark="block", block=name, shape=list(shape), filters=filters, mode=mode,
                 median_ms=median_ms(seconds), params=int(sum(v.numpy().size for v in blocks[name].weights)))


if __name__ == "__main__":
    main()
