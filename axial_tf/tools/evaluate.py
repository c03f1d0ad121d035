"""Evaluates a checkpoint or a `.keras` model on a dataset split.

    axial-tf-evaluate --config FILE (--model_dir DIR | --checkpoint PATH) \
        [--split validation] [--output_dir DIR] [--save_predictions] [--strategy mirrored]
    axial-tf-evaluate --preset NAME --output_dir DIR [--config FILE] [--override data.manual_dir=...]

`--checkpoint` takes a training checkpoint prefix or a `.keras` model file;
`--model_dir` uses its latest checkpoint. Writes OUTPUT_DIR/metrics.json (PQ, SQ,
RQ and mIoU as fractions, or top-1/top-5), the TensorBoard summaries of the
evaluation and, with --save_predictions, one COCO-encoded panoptic PNG per image;
nothing else is written, and no lock is taken, so a directory that is training or
read-only can be evaluated (into another --output_dir). A missing model directory,
a missing, truncated or corrupt checkpoint, or a `.keras` file that safe mode
refuses stops it with one line naming the file.
"""

import json
import os
import sys

from absl import app, flags

from axial_tf.tools import run_absl_tool

flags.DEFINE_string("config", None, "Experiment config (.yaml or .gin).")
flags.DEFINE_string("model_dir", None, "Training directory; its latest checkpoint is evaluated.")
flags.DEFINE_string("checkpoint", None, "Checkpoint prefix or .keras model to evaluate.")
flags.DEFINE_string("preset", None, "A pretrained preset to evaluate (python -m axial_tf.presets list); --config "
                    "may replace its shipped config; needs --output_dir.")
flags.DEFINE_string("split", None, "Dataset split (default: data.eval_split of the config).")
flags.DEFINE_string("output_dir", None, "Where metrics.json goes (default MODEL_DIR/eval or next to the checkpoint).")
flags.DEFINE_bool("save_predictions", False, "Write the panoptic predictions as PNG files.")
flags.DEFINE_integer("steps", None, "Evaluate only this many batches.")
flags.DEFINE_enum("strategy", None, ["default", "mirrored", "multi_worker_mirrored", "tpu"], "tf.distribute strategy.")
flags.DEFINE_multi_string("override", [], "key.sub=value config overrides.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    from absl import logging

    logging.set_verbosity(logging.WARNING)
    from axial_tf.experiment.config import ConfigError, load_config
    from axial_tf.training.evaluator import Evaluator
    from axial_tf.training.strategies import get_strategy
    from axial_tf.utils.files import ModelDirError

    sources = [name for name in ("model_dir", "checkpoint", "preset") if getattr(FLAGS, name)]
    if len(sources) != 1:
        raise app.UsageError("Give exactly one of --model_dir, --checkpoint and --preset.")
    if FLAGS.preset and not FLAGS.output_dir:
        raise app.UsageError("--preset needs --output_dir (where metrics.json goes).")
    if not FLAGS.preset and not FLAGS.config:
        raise app.UsageError("--config is required with --model_dir and --checkpoint.")
    try:
        if FLAGS.preset:
            from axial_tf.experiment.pretrained import preset_experiment

            config, source = preset_experiment(FLAGS.preset, FLAGS.config, FLAGS.override)
        else:
            config = load_config(FLAGS.config, overrides=FLAGS.override)
            source = FLAGS.checkpoint or FLAGS.model_dir
        model_dir = FLAGS.model_dir or os.path.dirname(os.path.abspath(source))
        output_dir = FLAGS.output_dir or os.path.join(model_dir, "eval")
        evaluator = Evaluator(config, model_dir, get_strategy(FLAGS.strategy or config.training.strategy))
        print(f"Evaluating {evaluator.restore(source)}")
        metrics = evaluator.evaluate(split=FLAGS.split, steps=FLAGS.steps, output_dir=output_dir,
                                   save_predictions=FLAGS.save_predictions or None)
    # ValueError covers UnreadableCheckpointError and refused `.keras` files.
    # OSError covers a preset that cannot be downloaded.
    except (ConfigError, ValueError, OSError, ModelDirError) as error:
        sys.exit(f"error: {error}")
    print(json.dumps(metrics, indent=2))
    print(f"Wrote {os.path.join(output_dir, 'metrics.json')}")


def console_main():
    """The `axial-tf-evaluate` command (absl flags from sys.argv)."""
    run_absl_tool(__name__, main)


if __name__ == "__main__":
    console_main()
