"""Whole-model inference latency and peak memory of Axial-DeepLab (batch 1).

Builds `AxialDeepLab(<backbone>)` with its registry settings (output stride 16,
global axial attention), runs `tf.function` inference on one random image and
reports the median latency and the process's peak resident memory. One model
and size per process (`run_all.py` enforces a memory and time limit from outside).

    python benchmarks/model_speed.py --backbone axial_deeplab_s --size 513,513
"""

import argparse

from bench_utils import current_rss_mb, emit, interleaved_seconds, median_ms, peak_rss_mb, setup_tensorflow

tf = setup_tensorflow()

from axial_tf.models.axial_deeplab import AxialDeepLab  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="axial_deeplab_s")
    parser.add_argument("--size", default="513,513", help="Image height,width.")
    parser.add_argument("--num_classes", type=int, default=19)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.split(","))
    model = AxialDeepLab(args.backbone, num_classes=args.num_classes)
    image = tf.random.uniform((1, height, width, 3), maxval=255.0, seed=0)
    predict = tf.function(lambda: model(image, training=False))
    resident_before = current_rss_mb()
    seconds = interleaved_seconds({"model": predict}, args.rounds)["model"]
    emit(benchmark="model", backbone=args.backbone, size=[height, width], median_ms=median_ms(seconds),
         times_ms=[1e3 * s for s in seconds], params_m=model.count_params() / 1e6,
         peak_rss_mb=peak_rss_mb(), working_memory_mb=peak_rss_mb() - resident_before)


if __name__ == "__main__":
    main()
