"""Runs a trained or exported model on image files and writes its predictions.

    python tools/predict.py --saved_model exports/demo/1 --input IMAGE_OR_FOLDER --output DIR [--overlay]
    python tools/predict.py --config FILE.yaml --model_dir DIR --input photos/ --output preds/ --format npy
    python tools/predict.py --config FILE.yaml (--checkpoint PREFIX | --keras_model FILE.keras) ...

A folder input means its image files (.jpg .jpeg .png .bmp .gif, not recursive).
Per panoptic image it writes (STEM = file name without extension; with the
extension, dot replaced by "_", when two inputs share a stem):
  --format png (default): STEM_panoptic.png, the panoptic label
      (semantic * label_divisor + instance) encoded losslessly as RGB the way
      COCO panoptic PNGs encode ids: label = R + 256 * G + 256**2 * B
      (`axial_tf.utils.visualization.decode_panoptic_rgb` reads it back), and
      STEM_semantic.png, the 8-bit semantic class map (void = ignore label);
  --format npy: STEM_panoptic.npy and STEM_semantic.npy (int32 [H, W]);
  --overlay: STEM_overlay.png, the image with a colour per class (shaded per
      instance, the same colours every run) and instance outlines.
A classifier writes predictions.json (top-k class ids, names, probabilities).
Predictions from a SavedModel and from the checkpoint it came from are identical:
both run the export's serving_default graph code.
"""

import json
import os
import sys

from absl import app, flags

flags.DEFINE_string("config", None, "Experiment config (.yaml or .gin); default MODEL_DIR/config.yaml.")
flags.DEFINE_string("saved_model", None, "A SavedModel written by tools/export.py.")
flags.DEFINE_string("model_dir", None, "Training directory; its latest checkpoint is used.")
flags.DEFINE_string("checkpoint", None, "Checkpoint prefix (or directory of checkpoints).")
flags.DEFINE_string("keras_model", None, "A .keras model file.")
flags.DEFINE_string("input", None, "An image file or a folder of images.")
flags.DEFINE_string("output", None, "Output folder (created).")
flags.DEFINE_enum("format", "png", ["png", "npy"], "File format of the raw label maps.")
flags.DEFINE_bool("overlay", False, "Also write colourised overlays with instance outlines.")
flags.DEFINE_float("alpha", 0.5, "Opacity of the overlay colours.")
flags.DEFINE_bool("skip_unreadable", False, "Report unreadable images and continue instead of stopping.")
flags.DEFINE_multi_string("override", [], "key.sub=value config overrides.")
flags.DEFINE_integer("top_k", 5, "Classes reported per image by a classifier.")
flags.DEFINE_integer("image_size", None, "Input side of a .keras classifier given without config (default 224).")
FLAGS = flags.FLAGS


def make_predictor():
    """The Predictor of the model named on the command line."""
    from axial_tf.export import Predictor, experiment_config_for

    if FLAGS.saved_model:
        if FLAGS.config or FLAGS.override:
            print("note: --config/--override are ignored with --saved_model (its settings are baked in).")
        return Predictor.from_saved_model(FLAGS.saved_model)
    config = experiment_config_for(FLAGS.config, FLAGS.model_dir, FLAGS.override)
    return Predictor.from_experiment(
        config, model_dir=FLAGS.model_dir, checkpoint=FLAGS.checkpoint, keras_model=FLAGS.keras_model,
        top_k=FLAGS.top_k, image_size=FLAGS.image_size,
    )


def run(predictor, files):
    """Predicts every file; returns (written count, unreadable files with their errors)."""
    import tensorflow as tf

    from axial_tf.export import classification_record, output_stems, read_image_file, write_panoptic_prediction
    from axial_tf.training.progress import ProgressBar

    tf.io.gfile.makedirs(FLAGS.output)
    progress = ProgressBar(len(files), batch_size=1)
    records, failures = [], []
    for index, (path, stem) in enumerate(zip(files, output_stems(files)), start=1):
        try:
            image = read_image_file(path)
        except ValueError as error:
            if not FLAGS.skip_unreadable:
                raise
            failures.append(str(error))
            continue
        outputs = predictor(image)
        if predictor.task == "classification":
            records.append(classification_record(outputs, path))
        else:
            write_panoptic_prediction(
                outputs, image, os.path.join(FLAGS.output, stem), predictor.info, file_format=FLAGS.format,
                overlay=FLAGS.overlay, alpha=FLAGS.alpha,
            )
        progress.update(index, {})
    progress.close()
    if records:
        with tf.io.gfile.GFile(os.path.join(FLAGS.output, "predictions.json"), "w") as stream:
            json.dump(records, stream, indent=2)
    return len(files) - len(failures), failures


def main(argv):
    del argv
    from absl import logging

    logging.set_verbosity(logging.WARNING)
    sources = [name for name in ("saved_model", "model_dir", "checkpoint", "keras_model") if getattr(FLAGS, name)]
    if len(sources) != 1:
        raise app.UsageError("Give exactly one of --saved_model, --model_dir, --checkpoint and --keras_model.")
    if not FLAGS.input or not FLAGS.output:
        raise app.UsageError("--input and --output are required.")
    from axial_tf.export import list_images
    from axial_tf.training.config import ConfigError

    try:
        files = list_images(FLAGS.input)
        predictor = make_predictor()
        if FLAGS.overlay and predictor.task == "classification":
            print("note: --overlay applies to panoptic models only.")
        written, failures = run(predictor, files)
    except (ConfigError, ValueError, FileNotFoundError) as error:
        sys.exit(f"error: {error}")
    print(f"Wrote predictions of {written} image(s) to {FLAGS.output}.")
    if failures:
        sys.exit("error: unreadable images skipped:\n  " + "\n  ".join(failures))


if __name__ == "__main__":
    app.run(main)
