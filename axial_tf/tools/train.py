"""Trains and/or evaluates a model from a YAML or gin experiment config.

    axial-tf-train --config configs/demo/panoptic_shapes.yaml --model_dir runs/demo \
        [--mode train|eval|train_and_eval|continuous_eval] [--strategy default|mirrored|...] \
        [--override training.steps=100 --override data.crop_size=[65,65]]

Training (train, train_and_eval) holds an exclusive lock on --model_dir: a second
training on the same directory is refused with the holder's pid, host and command
(the eval modes only read and take no lock). A run resumes from the latest
checkpoint in --model_dir; the resolved config is saved there as config.yaml. A
resumed run whose config changes the model, the data order, the losses or the
optimizer is refused unless --allow_config_change is given; other changes (steps,
intervals, evaluation) are logged. A replaced config.yaml is appended to
config_history.yaml. A truncated or corrupt latest checkpoint stops the run with
its name and the newest intact earlier one, which --resume_from_intact resumes from.
The eval modes need a checkpoint in --model_dir, as tools/evaluate.py does.
"""

import sys
import time

from absl import app, flags

from axial_tf.tools import run_absl_tool

flags.DEFINE_string("config", None, "Experiment config file (.yaml/.yml).")
flags.DEFINE_string("gin_file", None, "Experiment config file in gin syntax (.gin), instead of --config.")
flags.DEFINE_string("model_dir", None, "Directory for checkpoints, summaries, config.yaml and metrics.")
flags.DEFINE_enum("mode", "train", ["train", "eval", "train_and_eval", "continuous_eval"], "What to run.")
flags.DEFINE_enum("strategy", None, ["default", "mirrored", "multi_worker_mirrored", "tpu"],
                  "tf.distribute strategy (default: training.strategy of the config).")
flags.DEFINE_string("tpu", None, "TPU name or address for --strategy=tpu.")
flags.DEFINE_multi_string("override", [], "key.sub=value overrides of the config (YAML values).")
flags.DEFINE_bool("allow_config_change", False, "Resume even if the config changes the model, the data order, the "
                  "losses or the optimizer (the saved config.yaml is kept in config_history.yaml).")
flags.DEFINE_bool("resume_from_intact", False, "If the latest checkpoint is unreadable, resume from the newest intact "
                  "one (the newer ones are moved to checkpoints/unreadable/).")
flags.DEFINE_integer("cpu_devices", 0, "Split the CPU into this many logical devices (to try multi-replica "
                     "strategies on one machine); 0 leaves it as is.")
FLAGS = flags.FLAGS


def run(config, model_dir, mode, strategy_name, tpu=None, log=print, allow_config_change=False,
        resume_from_intact=False):
    """Runs `mode` for a loaded config; returns the last metrics or losses."""
    from axial_tf.training.evaluator import Evaluator
    from axial_tf.training.strategies import get_strategy
    from axial_tf.training.trainer import Trainer

    strategy = get_strategy(strategy_name or config.training.strategy, tpu)
    if mode in ("eval", "continuous_eval"):
        evaluator = Evaluator(config, model_dir, strategy, log=log)
        if mode == "continuous_eval":
            return evaluator.continuous()
        # Random weights are never evaluated: a missing checkpoint is an error.
        log(f"Evaluating {evaluator.restore(model_dir)}")
        return evaluator.evaluate()
    trainer = Trainer(config, model_dir, strategy, log=log, allow_config_change=allow_config_change,
                      resume_from_intact=resume_from_intact)
    if mode == "train":
        return trainer.train()
    trainer.train(eval_interval=config.evaluation.interval)  # evaluates at the last step too
    return trainer.last_metrics or trainer.evaluate()


def main(argv):
    del argv
    from absl import logging

    logging.set_verbosity(logging.WARNING)  # TFDS reports every dataset read at INFO
    from axial_tf.experiment.config import ConfigError, load_config
    from axial_tf.utils.files import ModelDirError
    from axial_tf.training.trainer import TrainingDivergedError

    if bool(FLAGS.config) == bool(FLAGS.gin_file):
        raise app.UsageError("Give exactly one of --config and --gin_file.")
    if not FLAGS.model_dir:
        raise app.UsageError("--model_dir is required.")
    if FLAGS.cpu_devices:
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * FLAGS.cpu_devices)
    try:
        config = load_config(FLAGS.config or FLAGS.gin_file, overrides=FLAGS.override)
        started = time.time()
        result = run(config, FLAGS.model_dir, FLAGS.mode, FLAGS.strategy, FLAGS.tpu,
                     allow_config_change=FLAGS.allow_config_change, resume_from_intact=FLAGS.resume_from_intact)
    # ValueError covers ConfigError (and ConfigChangeError) and UnreadableCheckpointError.
    except (ConfigError, TrainingDivergedError, ValueError, FileNotFoundError, ModelDirError) as error:
        sys.exit(f"error: {error}")
    print(f"Done in {time.time() - started:.0f} s: " + ", ".join(f"{k}={v:.4f}" for k, v in (result or {}).items()))


def console_main():
    """The `axial-tf-train` command (absl flags from sys.argv)."""
    run_absl_tool(__name__, main)


if __name__ == "__main__":
    console_main()
