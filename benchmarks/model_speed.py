"""Whole-model inference latency and peak memory of Axial-DeepLab (batch 1).

Builds `AxialDeepLab(<backbone>)` with its registry settings (output stride 16,
global axial attention), runs `tf.function` inference on one random image and
reports the median latency and the process's peak resident memory. One model
and size per process (`run_all.py` enforces a memory and time limit from outside).

    python benchmarks/model_speed.py --backbone axial_deeplab_s --size 513,513

`--compare_folding` times the network with the `ConvBN` batch norms folded into their
convolutions and without (runtime setting `fold_batch_norms`), interleaved, each as a
`tf.function` and as a SavedModel reloaded from disk, with randomised batch-norm
statistics (so that folding is no identity) and reports the ratios:

    python benchmarks/model_speed.py --backbone max_deeplab_s_backbone --compare_folding --rounds 10
"""

import argparse
import tempfile

import numpy as np
from bench_utils import current_rss_mb, emit, interleaved_seconds, median_ms, peak_rss_mb, setup_tensorflow

tf = setup_tensorflow()

from axial_tf.layers import runtime_settings  # noqa: E402
from axial_tf.models.axial_deeplab import AxialDeepLab  # noqa: E402


def randomize_batch_norms(model, seed=0):
    """Gives every batch norm random, non-trivial statistics and affine parameters (in place)."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        if variable.path.endswith(("gamma", "moving_variance")):
            variable.assign(rng.uniform(0.5, 1.5, variable.shape).astype("float32"))
        elif variable.path.endswith(("beta", "moving_mean")):
            variable.assign(rng.normal(0.0, 0.2, variable.shape).astype("float32"))


def saved_forward(model, image, directory, fold):
    """The network forward traced under `fold_batch_norms=fold`, saved as a SavedModel and loaded back."""
    module = tf.Module()
    module.model = model
    # Saving traces again: inside the block, as export traces (no row bands).
    with runtime_settings(fold_batch_norms=fold, max_im2col_elements=None):
        module.forward = tf.function(lambda images: model(images, training=False),
                                     input_signature=[tf.TensorSpec(image.shape, tf.float32)])
        tf.saved_model.save(module, directory)
    loaded = tf.saved_model.load(directory)
    return lambda: loaded.forward(image)


def compare_folding(model, image, args):
    """Times folded and unfolded inference, interleaved; emits medians and ratios."""
    randomize_batch_norms(model)
    functions = {}
    with tempfile.TemporaryDirectory() as directory:
        for fold, name in ((True, "folded"), (False, "unfolded")):
            with runtime_settings(fold_batch_norms=fold):
                forward = tf.function(lambda: model(image, training=False))
                forward.get_concrete_function()  # traced now, under this setting
            functions[f"function_{name}"] = forward
            functions[f"saved_model_{name}"] = saved_forward(model, image, f"{directory}/{name}", fold)
        seconds = interleaved_seconds(functions, args.rounds)
    medians = {name: median_ms(times) for name, times in seconds.items()}
    emit(benchmark="model_folding", backbone=args.backbone, size=list(image.shape[1:3]), medians_ms=medians,
         times_ms={name: [1e3 * s for s in times] for name, times in seconds.items()},
         function_speedup=medians["function_unfolded"] / medians["function_folded"],
         saved_model_speedup=medians["saved_model_unfolded"] / medians["saved_model_folded"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="axial_deeplab_s")
    parser.add_argument("--size", default="513,513", help="Image height,width.")
    parser.add_argument("--num_classes", type=int, default=19)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--compare_folding", action="store_true",
                        help="Time folded against unfolded batch norms (tf.function and SavedModel).")
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.split(","))
    model = AxialDeepLab(args.backbone, num_classes=args.num_classes)
    image = tf.random.uniform((1, height, width, 3), maxval=255.0, seed=0)
    if args.compare_folding:
        return compare_folding(model, image, args)
    predict = tf.function(lambda: model(image, training=False))
    resident_before = current_rss_mb()
    seconds = interleaved_seconds({"model": predict}, args.rounds)["model"]
    emit(benchmark="model", backbone=args.backbone, size=[height, width], median_ms=median_ms(seconds),
         times_ms=[1e3 * s for s in seconds], params_m=model.count_params() / 1e6,
         peak_rss_mb=peak_rss_mb(), working_memory_mb=peak_rss_mb() - resident_before)


if __name__ == "__main__":
    main()
