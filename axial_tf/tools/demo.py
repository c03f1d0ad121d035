"""The offline demo, end to end: train, evaluate and export Axial-DeepLab on panoptic_shapes.

    axial-tf-demo [--model_dir runs/demo] [--config configs/demo/panoptic_shapes.yaml]

Generates the panoptic_shapes dataset (first run only, ~20 s), trains the demo
config on the CPU (resuming if --model_dir already has checkpoints), evaluates
PQ / SQ / RQ / mIoU on the validation split, exports a SavedModel for TF
Serving to MODEL_DIR/export/1, and draws what the export predicts on a few
validation images next to their ground truth in MODEL_DIR/predictions.png.
Needs no network.
"""

import json
import os
import sys
import time

import numpy as np
import PIL.Image
from absl import flags, logging

from axial_tf.tools import run_absl_tool

flags.DEFINE_string("config", None, "Experiment config (default: the shipped demo/panoptic_shapes.yaml).")
flags.DEFINE_string("model_dir", "runs/demo", "Where checkpoints, metrics, the export and predictions.png go.")
flags.DEFINE_multi_string("override", [], "key.sub=value config overrides (e.g. training.steps=200).")
FLAGS = flags.FLAGS

PICTURE_NAME = "predictions.png"
PICTURE_EXAMPLES = 4  # the first validation images, so every run draws the same scenes
PICTURE_SCALE = 3  # nearest-neighbour upscaling: 64x64 scenes are too small to read


def prediction_picture(export_dir, builder, split, count=PICTURE_EXAMPLES, scale=PICTURE_SCALE):
    """The grid "image | ground truth | prediction" of a split's first examples, predicted by an export.

    Args:
        export_dir: A panoptic SavedModel (what TF Serving would answer is what gets drawn).
        builder: The prepared dataset builder.
        split: The split to draw from.
        count: Number of examples (rows).
        scale: Integer upscaling of the panels.

    Returns:
        uint8 [height, width, 3] (`visualization.prediction_grid`).
    """
    from axial_tf.data import records
    from axial_tf.data.builders import read_split
    from axial_tf.export import Predictor
    from axial_tf.utils.visualization import class_palette, prediction_grid

    predictor = Predictor.from_saved_model(export_dir)
    examples = list(read_split(builder, split).take(count).as_numpy_iterator())
    images = np.stack([example[records.IMAGE_KEY] for example in examples])  # [N, H, W, 3]
    truth = np.stack([example[records.PANOPTIC_LABEL_KEY] for example in examples])  # [N, H, W]
    predicted = np.stack([predictor(image)["panoptic_pred"] for image in images])  # [N, H, W]
    info = predictor.info
    palette = class_palette(len(info["class_names"]), info["class_names"])
    return prediction_grid(images, truth, predicted, info["label_divisor"], palette, info["class_names"],
                           void_label=info["void_label"], scale=scale)


def write_png(path, image):
    """Writes uint8 [H, W, 3] as an optimised PNG (smaller, e.g. for the README's copy)."""
    PIL.Image.fromarray(image).save(path, format="PNG", optimize=True)


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    from axial_tf.export import export_model  # axial_tf before TensorFlow: it sets the oneDNN default
    from axial_tf.experiment.config import ConfigError, load_config, shipped_config
    from axial_tf.utils.files import ModelDirError
    from axial_tf.training.trainer import Trainer, TrainingDivergedError

    import tensorflow as tf

    started = time.time()
    try:
        config = load_config(FLAGS.config or shipped_config("demo/panoptic_shapes.yaml"), overrides=FLAGS.override)
        trainer = Trainer(config, FLAGS.model_dir, tf.distribute.get_strategy())
        trainer.train(eval_interval=config.evaluation.interval)
        metrics = trainer.last_metrics or trainer.evaluate()
        trained = time.time() - started
        export_dir = os.path.join(FLAGS.model_dir, "export", "1")
        export_model(export_dir, config=config, model_dir=FLAGS.model_dir, overwrite=True)
    except (ConfigError, TrainingDivergedError, ModelDirError, ValueError, OSError) as error:
        sys.exit(f"error: {error}")
    summary = {**metrics, "train_and_eval_seconds": round(trained), "total_seconds": round(time.time() - started),
               "saved_model": export_dir}
    with open(os.path.join(FLAGS.model_dir, "demo_summary.json"), "w") as stream:
        json.dump(summary, stream, indent=2)
    print("Demo finished: " + ", ".join(f"{k}={v:.3f}" for k, v in metrics.items()))
    print(f"SavedModel: {export_dir}  (try: saved_model_cli show --dir {export_dir} --all)")
    picture = os.path.join(FLAGS.model_dir, PICTURE_NAME)
    grid = prediction_picture(export_dir, trainer.task.builder, config.data.eval_split)
    try:
        write_png(picture, grid)
    except OSError as error:  # e.g. a full disk: the model and its export above are already saved
        sys.exit(f"error: cannot write {picture}: {error.strerror or error} (the trained model and "
                 f"{export_dir} are kept).")
    print(f"Predictions: {picture}  (validation images | ground truth | prediction)")


def console_main():
    """The `axial-tf-demo` command (absl flags from sys.argv)."""
    run_absl_tool(__name__, main)


if __name__ == "__main__":
    console_main()
