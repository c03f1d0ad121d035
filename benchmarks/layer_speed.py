"""Speed of AxialAttention2D on the issue's layer cases (forward and forward+backward).

Builds every requested variant of one case in this process (implementation x
execution mode x dtype policy) and times them interleaved (round-robin), so
machine load affects them alike. "current" is the package's layer; "baseline"
is the layer as first committed (loaded from git). Training mode differentiates
w.r.t. the input and every trainable weight.

    python benchmarks/layer_speed.py --case ds_stage4 --impls current,baseline
    python benchmarks/layer_speed.py --case ds_stage4 --executions graph,eager,xla
    python benchmarks/layer_speed.py --case ds_stage4 --policies float32,mixed_bfloat16
"""

import argparse

from bench_utils import (
    LAYER_CASES,
    attention_2d_flops,
    emit,
    interleaved_seconds,
    load_baseline_attention_2d,
    median_ms,
    setup_tensorflow,
)

tf = setup_tensorflow()
import keras  # noqa: E402

from axial_tf.layers import AxialAttention2D  # noqa: E402


def _parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", required=True, choices=sorted(LAYER_CASES))
    parser.add_argument("--impls", default="current", help="Comma list of current, baseline.")
    parser.add_argument("--modes", default="forward,training", help="Comma list of forward, training.")
    parser.add_argument("--executions", default="graph",
                        help="Comma list of graph (tf.function), eager, xla (tf.function(jit_compile=True)).")
    parser.add_argument("--policies", default="float32", help="Comma list of float32, mixed_float16, mixed_bfloat16.")
    parser.add_argument("--rounds", type=int, default=3, help="Turns of each implementation (interleaved).")
    parser.add_argument("--calls_per_turn", type=int, default=1,
                        help="Consecutive timed calls in each turn (the matmul alongside too).")
    parser.add_argument("--matmul_size", type=int, default=4096,
                        help="Side of the square matmul timed in the same rounds (the machine's rate alongside).")
    return parser.parse_args()


def layer_step(layer, inputs, mode, execution):
    """A zero-argument callable running one forward or forward+backward of `layer`."""
    if mode == "forward":
        def step():
            return layer(inputs, training=False)
    else:
        # A fixed upstream gradient instead of a loss: no loss ops inside the timed step,
        # only the layer's forward and backward.
        upstream = tf.random.normal(layer.compute_output_shape(inputs.shape), seed=3, dtype=layer.compute_dtype)

        def step():
            with tf.GradientTape() as tape:
                tape.watch(inputs)
                outputs = layer(inputs, training=True)
            return tape.gradient(outputs, [inputs] + layer.trainable_variables, output_gradients=upstream)
    if execution == "eager":
        return step
    return tf.function(step, jit_compile=execution == "xla")


def _square_matmul(size):
    a, b = tf.random.normal((size, size), seed=1), tf.random.normal((size, size), seed=2)
    return tf.function(lambda: tf.matmul(a, b))


def main():
    args = _parse_args()
    case = LAYER_CASES[args.case]
    classes = {"current": AxialAttention2D}
    if "baseline" in args.impls.split(","):
        classes["baseline"] = load_baseline_attention_2d()
    inputs = tf.random.normal(case["shape"], seed=0)
    layers = {}
    for policy in args.policies.split(","):
        keras.mixed_precision.set_global_policy(policy)  # a layer keeps the policy it was built under
        for impl in args.impls.split(","):
            layer = classes[impl](case["filters"], num_heads=8, key_expansion=1, value_expansion=2,
                                  span=case["span"])
            layer(inputs)  # build
            layers[impl, policy] = layer
    keras.mixed_precision.set_global_policy("float32")
    flops = attention_2d_flops(case["shape"], case["filters"], span=case["span"])
    for mode in args.modes.split(","):
        steps = {
            (impl, policy, execution): layer_step(layer, inputs, mode, execution)
            for (impl, policy), layer in layers.items()
            for execution in args.executions.split(",")
        }
        # The matmul runs in the same rounds, so the layer's share of the machine's rate is
        # measured under the same load (a busy neighbour slows both).
        steps["matmul"] = _square_matmul(args.matmul_size)
        times = interleaved_seconds(steps, args.rounds, calls_per_turn=args.calls_per_turn)
        matmul_seconds = times.pop("matmul")
        emit(benchmark="layer_matmul_alongside", case=args.case, mode=mode, size=args.matmul_size,
             median_ms=median_ms(matmul_seconds), gflops_per_s=2 * args.matmul_size**3 / 1e6 / median_ms(matmul_seconds))
        mode_flops = flops if mode == "forward" else 3 * flops  # backward = 2x forward
        for (impl, policy, execution), seconds in times.items():
            emit(
                benchmark="layer", case=args.case, impl=impl, mode=mode, execution=execution,
                policy=policy, median_ms=median_ms(seconds), times_ms=[1e3 * s for s in seconds],
                gflop=mode_flops / 1e9, gflops_per_s=mode_flops / 1e6 / median_ms(seconds),
            )


if __name__ == "__main__":
    main()
