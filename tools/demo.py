"""The offline demo, end to end: train, evaluate and export Axial-DeepLab on panoptic_shapes.

    python tools/demo.py [--model_dir runs/demo] [--config configs/demo/panoptic_shapes.yaml]

Generates the panoptic_shapes dataset (first run only, ~20 s), trains the demo
config on the CPU (resuming if --model_dir already has checkpoints), evaluates
PQ / SQ / RQ / mIoU on the validation split, and exports a SavedModel for TF
Serving to MODEL_DIR/export/1. Needs no network.
"""

import json
import os
import sys
import time

from absl import app, flags, logging

flags.DEFINE_string("config", os.path.join(os.path.dirname(__file__), "..", "configs", "demo", "panoptic_shapes.yaml"),
                    "Experiment config.")
flags.DEFINE_string("model_dir", "runs/demo", "Where checkpoints, metrics and the export go.")
flags.DEFINE_multi_string("override", [], "key.sub=value config overrides (e.g. training.steps=200).")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    from axial_tf.export import export_model  # axial_tf before TensorFlow: it sets the oneDNN default
    from axial_tf.training.config import ConfigError, load_config
    from axial_tf.training.trainer import Trainer, TrainingDivergedError

    import tensorflow as tf

    started = time.time()
    try:
        config = load_config(FLAGS.config, overrides=FLAGS.override)
        trainer = Trainer(config, FLAGS.model_dir, tf.distribute.get_strategy())
        trainer.train(eval_interval=config.evaluation.interval)
        metrics = trainer.last_metrics or trainer.evaluate()
        trained = time.time() - started
        export_dir = os.path.join(FLAGS.model_dir, "export", "1")
        export_model(export_dir, config=config, model_dir=FLAGS.model_dir, overwrite=True)
    except (ConfigError, TrainingDivergedError, ValueError, FileNotFoundError) as error:
        sys.exit(f"error: {error}")
    summary = {**metrics, "train_and_eval_seconds": round(trained), "total_seconds": round(time.time() - started),
               "saved_model": export_dir}
    with open(os.path.join(FLAGS.model_dir, "demo_summary.json"), "w") as stream:
        json.dump(summary, stream, indent=2)
    print("Demo finished: " + ", ".join(f"{k}={v:.3f}" for k, v in metrics.items()))
    print(f"SavedModel: {export_dir}  (try: saved_model_cli show --dir {export_dir} --all)")


if __name__ == "__main__":
    app.run(main)
