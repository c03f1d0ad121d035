"""Throughput of the panoptic training input pipeline alone (no model).

Builds `panoptic_shapes` (offline, cached in --data_dir) and times the train
pipeline of `axial_tf.data` (decode, augmentation, target generation, batching)
on this machine. Prints one JSON line; nothing is asserted.

    python benchmarks/input_pipeline.py --config small --crop_size 64 --batch_size 16
"""

import argparse
import json
import os
import pathlib
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402

from axial_tf import data  # noqa: E402


def _parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data_dir",
        default=str(pathlib.Path(tempfile.gettempdir()) / "axial_tf_benchmark_tfds"),
        help="Where panoptic_shapes is built (reused when present).",
    )
    parser.add_argument("--config", default="small", help="panoptic_shapes config name.")
    parser.add_argument("--crop_size", type=int, default=64, help="Square training crop side.")
    parser.add_argument("--batch_size", type=int, default=16, help="Examples per batch.")
    parser.add_argument("--warmup_batches", type=int, default=20, help="Untimed batches first.")
    parser.add_argument("--batches", type=int, default=200, help="Timed batches.")
    parser.add_argument("--cache", action="store_true", help="Cache decoded records in memory.")
    parser.add_argument(
        "--autoaugment", type=float, default=0.0, help="Light AutoAugment probability."
    )
    return parser.parse_args()


def main():
    args = _parse_args()
    tfds.display_progress_bar(False)
    start = time.perf_counter()
    builder = data.prepare(
        data.get_builder("panoptic_shapes", data_dir=args.data_dir, config=args.config)
    )
    build_seconds = time.perf_counter() - start
    info = data.dataset_info_from_builder(builder)
    dataset = data.build_panoptic_train_dataset(
        data.read_split(builder, "train"),
        info,
        crop_size=(args.crop_size, args.crop_size),
        batch_size=args.batch_size,
        seed=0,
        augmentation=data.AugmentationOptions(autoaugment_probability=args.autoaugment),
        cache=args.cache,
    )
    iterator = iter(dataset)
    for _ in range(args.warmup_batches):
        next(iterator)
    start = time.perf_counter()
    for _ in range(args.batches):
        next(iterator)
    seconds = time.perf_counter() - start
    print(
        json.dumps(
            {
                "benchmark": "panoptic_train_input_pipeline",
                "dataset": info.name,
                "crop_size": args.crop_size,
                "batch_size": args.batch_size,
                "cache": args.cache,
                "autoaugment_probability": args.autoaugment,
                "batches": args.batches,
                "examples_per_second": round(args.batches * args.batch_size / seconds, 1),
                "seconds": round(seconds, 3),
                "dataset_build_or_load_seconds": round(build_seconds, 2),
                "cpu_count": os.cpu_count(),
                "tensorflow": tf.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()
