"""Training step time of an experiment config (default: the offline demo).

Runs the project's `Trainer` for a few warm-up steps (tracing, input pipeline
start-up), then times further steps. The time per step includes the input
pipeline and the checkpoint the trainer writes at the end of a `train` call.

    python benchmarks/train_step.py --config configs/demo/panoptic_shapes.yaml --steps 10
"""

import argparse
import pathlib
import tempfile
import time

from bench_utils import REPO_ROOT, emit, setup_tensorflow

tf = setup_tensorflow()

from axial_tf.experiment.config import load_config  # noqa: E402
from axial_tf.training.trainer import Trainer  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO_ROOT / "configs/demo/panoptic_shapes.yaml"))
    parser.add_argument("--data_dir", default=str(pathlib.Path(tempfile.gettempdir()) / "axial_tf_benchmark_tfds"))
    parser.add_argument("--warmup_steps", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--override", action="append", default=[], help="key.sub=value config override")
    args = parser.parse_args()
    config = load_config(args.config, overrides=[f"data.data_dir={args.data_dir}", *args.override])
    with tempfile.TemporaryDirectory() as model_dir:
        trainer = Trainer(config, model_dir, tf.distribute.get_strategy(), log=None)
        start = time.perf_counter()
        trainer.train(steps=args.warmup_steps)
        warmup_seconds = time.perf_counter() - start
        start = time.perf_counter()
        trainer.train(steps=args.warmup_steps + args.steps)
        seconds = time.perf_counter() - start
    emit(benchmark="train_step", config=str(pathlib.Path(args.config).relative_to(REPO_ROOT)),
         overrides=args.override, batch_size=config.training.batch_size, crop_size=list(config.data.crop_size),
         seconds_per_step=seconds / args.steps, steps=args.steps, warmup_seconds=warmup_seconds)


if __name__ == "__main__":
    main()
