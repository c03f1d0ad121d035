"""Time to the first batch of a resumed training input, before and after the epoch-seeded stream.

A resumed run rebuilds its input pipeline at the stream position it had
reached. "skip decoded" is the pipeline as it was at `BASELINE_PIPELINE_COMMIT`
(loaded from git): one endless reshuffled stream from which a resumed run
skipped every consumed example after reading and decoding it. "epoch seeded" is
the package's pipeline: the run starts at its epoch, whose order is a function of
(seed, pipeline, epoch), and skips the rest of that epoch's records undecoded.
Both build the panoptic training input of `panoptic_train_dataset_fn` on
`panoptic_shapes` (offline) and are timed alternately in one process, from
building the dataset to its first batch. The epoch-seeded input is also timed at
its worst position, the last example of an epoch.

    python benchmarks/resume_cost.py --positions 0,10000,100000,1000000

Prints one record per (method, position); nothing is asserted.
"""

import argparse
import pathlib
import statistics
import tempfile
import time

from bench_utils import emit, private_module, setup_tensorflow, source_at_commit, wait

tf = setup_tensorflow()

import tensorflow_datasets as tfds  # noqa: E402

from axial_tf import data  # noqa: E402

# The last commit whose pipeline skipped decoded examples on resume.
BASELINE_PIPELINE_COMMIT = "1bc5cac"
METHODS = ("skip_decoded", "epoch_seeded")


def _positions(text):
    """The `--positions` value as sorted distinct ints >= 0."""
    try:
        positions = sorted({int(position) for position in text.split(",")})
    except ValueError:
        positions = []
    if not positions or positions[0] < 0:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers >= 0, got {text!r}")
    return positions


def _parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data_dir", default=str(pathlib.Path(tempfile.gettempdir()) / "axial_tf_benchmark_tfds"),
        help="Where panoptic_shapes is built (reused when present).",
    )
    parser.add_argument("--config", default="small", help="panoptic_shapes config name.")
    parser.add_argument("--positions", type=_positions, default="0,10000,100000,1000000",
                        help="Comma-separated stream positions (examples consumed) to resume at.")
    parser.add_argument("--baseline_max_position", type=int, default=None,
                        help="Time the skip-decoded baseline only up to this position (it grows with it).")
    parser.add_argument("--batch_size", type=int, default=64, help="Examples per batch.")
    parser.add_argument("--crop_size", type=int, default=64, help="Square training crop side.")
    parser.add_argument("--rounds", type=int, default=1, help="Timed resumes of each method per position.")
    return parser.parse_args()


def _baseline_pipeline():
    """`axial_tf.data.pipeline` as it was at `BASELINE_PIPELINE_COMMIT`."""
    name = "baseline_pipeline"
    text = source_at_commit("axial_tf/data/pipeline.py", BASELINE_PIPELINE_COMMIT)
    return private_module(name, text, f"{BASELINE_PIPELINE_COMMIT}:{name}")


def _dataset_fns(builder, args):
    """method -> `dataset_fn(input_context, start_example=...)` of the same training input."""
    info = data.dataset_info_from_builder(builder)
    options = dict(crop_size=(args.crop_size, args.crop_size), seed=0)
    return {
        "skip_decoded": _baseline_pipeline().panoptic_train_dataset_fn(
            builder, "train", info, args.batch_size, **options
        ),
        "epoch_seeded": data.panoptic_train_dataset_fn(builder, "train", info, args.batch_size, **options),
    }


def _first_batch_seconds(dataset_fn, position):
    """Seconds from building the input at `position` to its first batch."""
    start = time.perf_counter()
    wait(next(iter(dataset_fn(None, start_example=position))))
    return time.perf_counter() - start


def _worst_position(largest, epoch_size):
    """The last example of the epoch around `largest`: the epoch-seeded input skips most there."""
    return largest // epoch_size * epoch_size + epoch_size - 1


def _timed_methods(position, worst, baseline_max_position):
    """The methods timed at `position`: the baseline is left out at the epoch-seeded worst case
    (an arbitrary position for it) and beyond `baseline_max_position`."""
    skip_baseline = position == worst or (baseline_max_position is not None and position > baseline_max_position)
    return [method for method in METHODS if not (method == "skip_decoded" and skip_baseline)]


def main():
    args = _parse_args()
    tfds.display_progress_bar(False)
    builder = data.prepare(data.get_builder("panoptic_shapes", data_dir=args.data_dir, config=args.config))
    epoch_size = builder.info.splits["train"].num_examples
    dataset_fns = _dataset_fns(builder, args)
    for dataset_fn in dataset_fns.values():  # warm-up: file cache, first tracing
        _first_batch_seconds(dataset_fn, 0)
    worst = _worst_position(args.positions[-1], epoch_size)
    for position in sorted({*args.positions, worst}):
        methods = _timed_methods(position, worst, args.baseline_max_position)
        seconds = {method: [] for method in methods}
        for _ in range(args.rounds):  # alternating, so that machine load hits both alike
            for method in methods:
                seconds[method].append(_first_batch_seconds(dataset_fns[method], position))
        for method in methods:
            emit(
                benchmark="resume_cost", method=method, position=position, epoch_size=epoch_size,
                offset_in_epoch=position % epoch_size, worst_case=position == worst,
                median_seconds=round(statistics.median(seconds[method]), 3),
                seconds=[round(value, 3) for value in seconds[method]],
                dataset=f"panoptic_shapes/{args.config}", batch_size=args.batch_size,
                crop_size=args.crop_size, baseline_commit=BASELINE_PIPELINE_COMMIT,
            )


if __name__ == "__main__":
    main()
