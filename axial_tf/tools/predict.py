"""Runs a trained or exported model on image files and writes its predictions.

    axial-tf-predict --saved_model exports/demo/1 --input IMAGE_OR_FOLDER --output DIR [--overlay]
    axial-tf-predict --model exports/demo_onnx/model.onnx --input photos/ --output preds/ --overlay
    axial-tf-predict --model exports/demo_openvino --precision bfloat16 --input photos/ --output preds/
    axial-tf-predict --preset axial_swidernet_1_1_1_os16_cityscapes --input photos/ --output preds/ --overlay
    axial-tf-predict --config FILE.yaml --model_dir DIR --input photos/ --output preds/ --format npy
    axial-tf-predict --config FILE.yaml (--checkpoint PREFIX | --keras_model FILE.keras) ...

--saved_model may also name a TF Serving base folder: its highest version is used.
A folder input means its image files (.jpg .jpeg .png .bmp .gif .webp, not recursive).
Each image's size is read from its header before it is decoded: one over
--max_megapixels (default: the limit the SavedModel was exported with, else 16)
is an error, or with --downscale it is shrunk to the limit, keeping its aspect
ratio, and predicted at that size (its output maps have that size too; images
over 8 times the limit are refused even then).
Per panoptic image it writes (STEM = file name without extension; with the
extension, dot replaced by "_", when two inputs share a stem):
  --format png (default): STEM_panoptic.png, the panoptic label
      (semantic * label_divisor + instance) encoded losslessly as RGB the way
      COCO panoptic PNGs encode ids: label = R + 256 * G + 256**2 * B
      (`axial_tf.utils.visualization.decode_panoptic_rgb` reads it back), and
      STEM_semantic.png, the 8-bit semantic class map (void = ignore label);
  --format npy: STEM_panoptic.npy and STEM_semantic.npy (int32 [H, W]);
  --format coco_panoptic: COCO's panoptic results format, classes named by the
      dataset's own ids (COCO category ids): panoptic_predictions/STEM.png
      (segment ids, id = R + 256 * G + 256**2 * B, 0 = void) and, once every
      image is done, panoptic_predictions.json ("annotations": image_id = the
      file's stem, an integer when all digits; file_name; segments_info with
      id, category_id, area, bbox [x, y, w, h], iscrowd 0). panopticapi's
      pq_compute reads them (its prediction folder defaults to the JSON's path
      without .json);
  --format cityscapes: the same with Cityscapes label ids and image_id = the
      stem without "_leftImg8bit" (what cityscapesscripts'
      evalPanopticSemanticLabeling reads), plus semantic_predictions/STEM.png,
      the semantic prediction as 8-bit label ids, 0 = unlabeled (for
      evalPixelLevelSemanticLabeling: CITYSCAPES_RESULTS=OUTPUT/semantic_predictions);
  --overlay: STEM_overlay.png, the image with a colour per class (shaded per
      instance, the same colours every run) and instance outlines.
A semantic model writes STEM_semantic.png (or .npy) and, with --overlay,
STEM_overlay.png (class colours, no outlines). A classifier writes
predictions.json (top-k class ids, names, probabilities). Both refuse the
result formats, which are panoptic.
Predictions from a SavedModel and from the checkpoint it came from are identical:
both run the export's serving_default graph code. --model runs any export (ONNX
Runtime, OpenVINO, LiteRT or TensorFlow) with the same outputs and files;
--precision bfloat16 runs an OpenVINO export or a SavedModel in bfloat16 (see
axial_tf.export.load_exported).
"""

import json
import os
import sys

from absl import app, flags

from axial_tf.tools import run_absl_tool

flags.DEFINE_string("config", None, "Experiment config (.yaml or .gin); default MODEL_DIR/config.yaml.")
flags.DEFINE_string("saved_model", None, "A SavedModel written by tools/export.py.")
flags.DEFINE_string("model", None, "Any export of tools/export.py, its format detected from the path: a SavedModel "
                    "folder, or a .onnx, OpenVINO .xml or .tflite file (or the folder holding it).")
flags.DEFINE_string("model_dir", None, "Training directory; its latest checkpoint is used.")
flags.DEFINE_string("checkpoint", None, "Checkpoint prefix (or directory of checkpoints).")
flags.DEFINE_string("keras_model", None, "A .keras model file.")
flags.DEFINE_string("preset", None, "A pretrained preset (python -m axial_tf.presets list), fetched and converted "
                    "once; --config may replace its shipped config.")
flags.DEFINE_string("input", None, "An image file or a folder of images.")
flags.DEFINE_string("output", None, "Output folder (created).")
flags.DEFINE_enum("format", "png", ["png", "npy", "coco_panoptic", "cityscapes"],
                  "png or npy: the raw label maps; coco_panoptic or cityscapes: that official result format.")
flags.DEFINE_bool("overlay", False, "Also write colourised overlays with instance outlines.")
flags.DEFINE_float("alpha", 0.5, "Opacity of the overlay colours.")
flags.DEFINE_bool("skip_unreadable", False, "Report unreadable images and continue instead of stopping.")
flags.DEFINE_multi_string("override", [], "key.sub=value config overrides.")
flags.DEFINE_integer("top_k", 5, "Classes reported per image by a classifier.")
flags.DEFINE_integer("image_size", None, "Input side of a .keras classifier given without config (default 224).")
flags.DEFINE_float(
    "max_megapixels", None, "Largest image (millions of pixels) to predict; default: the SavedModel's limit, else 16."
)
flags.DEFINE_enum("precision", "float32", ["float32", "bfloat16"],
                  "What an export's runtime computes in: bfloat16 for OpenVINO exports and SavedModels, faster on CPUs "
                  "with AMX or AVX512-BF16; results move by its round-off (BENCHMARKS.md, CPU serving).")
flags.DEFINE_bool("downscale", False, "Shrink images over --max_megapixels to fit it instead of refusing them.")
FLAGS = flags.FLAGS


def make_predictor():
    """The Predictor of the model named on the command line."""
    from axial_tf.experiment.config import experiment_config_for
    from axial_tf.export import DEFAULT_MAX_MEGAPIXELS, Predictor, check_model_source

    if FLAGS.saved_model or FLAGS.model:
        if FLAGS.config or FLAGS.override:
            print("note: --config/--override are ignored with an export (its settings are baked in).")
        if FLAGS.model or FLAGS.precision != "float32":
            return Predictor.from_exported(FLAGS.model or FLAGS.saved_model, precision=FLAGS.precision)
        return Predictor.from_saved_model(FLAGS.saved_model)
    if FLAGS.preset:
        from axial_tf.experiment.pretrained import preset_experiment

        config, keras_model = preset_experiment(FLAGS.preset, FLAGS.config, FLAGS.override)
        return Predictor.from_experiment(config, keras_model=keras_model, top_k=FLAGS.top_k,
                                         max_megapixels=FLAGS.max_megapixels or DEFAULT_MAX_MEGAPIXELS)
    check_model_source(FLAGS.model_dir, FLAGS.checkpoint, FLAGS.keras_model)  # before looking for a config
    config = experiment_config_for(FLAGS.config, FLAGS.model_dir, FLAGS.override)
    return Predictor.from_experiment(
        config, model_dir=FLAGS.model_dir, checkpoint=FLAGS.checkpoint, keras_model=FLAGS.keras_model,
        top_k=FLAGS.top_k, image_size=FLAGS.image_size, max_megapixels=FLAGS.max_megapixels or DEFAULT_MAX_MEGAPIXELS,
    )


def image_limit(predictor):
    """The --max_megapixels to read images with: at most what the model accepts."""
    from axial_tf.export import DEFAULT_MAX_MEGAPIXELS

    model_limit = predictor.max_megapixels
    if FLAGS.max_megapixels is None:
        return model_limit or DEFAULT_MAX_MEGAPIXELS
    if model_limit is not None and FLAGS.max_megapixels > model_limit:
        raise ValueError(
            f"--max_megapixels {FLAGS.max_megapixels:g} is over the limit of {model_limit:g} megapixels that "
            f"{FLAGS.saved_model or FLAGS.model} was exported with; re-export it with --max_megapixels {FLAGS.max_megapixels:g}."
        )
    return FLAGS.max_megapixels


def prepare_output_folder(path):
    """Creates the output folder and checks that files can be written there (before loading the model)."""
    import tensorflow as tf

    from axial_tf.utils.errors import error_line

    probe = os.path.join(path, ".axial_tf_write_check")
    try:
        tf.io.gfile.makedirs(path)
        with tf.io.gfile.GFile(probe, "w") as stream:
            stream.write("")
        tf.io.gfile.remove(probe)
    except (OSError, tf.errors.OpError) as error:
        raise OSError(f"Cannot write to output folder {path}: {error_line(error)}") from None


def read_image(path, max_megapixels):
    """The image of `path`; with --downscale, one over the limit is shrunk to it (and a note printed)."""
    from axial_tf.export import ImageTooLargeError, read_downscaled_image_file, read_image_file

    try:
        return read_image_file(path, max_megapixels)
    except ImageTooLargeError as error:
        if not FLAGS.downscale:
            raise
        image = read_downscaled_image_file(path, max_megapixels)
        height, width = error.size
        print(f"note: {path} ({height}x{width}) predicted at {image.shape[0]}x{image.shape[1]} (--downscale).")
        return image


def check_result_format(predictor, files):
    """Refuses a result format (--format coco_panoptic, cityscapes) before any prediction when it cannot be written.

    Raises:
        ValueError: The model's task has no such format, its label space lacks the dataset's
            category ids (or they do not fit the format), or two inputs would share an image id.
    """
    from axial_tf.experiment.serving import result_formats
    from axial_tf.experiment.tasks import task_class

    if FLAGS.format not in result_formats.RESULT_FORMATS:
        return
    if FLAGS.format not in task_class(predictor.task).result_formats:
        raise ValueError(f"--format {FLAGS.format} is a panoptic result format; this is a {predictor.task} model.")
    result_formats.dataset_category_ids(predictor.info, FLAGS.format)
    result_formats.check_image_ids(files, FLAGS.format)


def write_records(records, info):
    """Writes the records of every image: a result format's predictions JSON, or predictions.json."""
    from axial_tf.experiment.serving import result_formats
    from axial_tf.utils.files import write_text_atomically

    if FLAGS.format in result_formats.RESULT_FORMATS:
        result_formats.write_predictions_json(FLAGS.output, records, info)
    else:
        write_text_atomically(os.path.join(FLAGS.output, "predictions.json"), json.dumps(records, indent=2))


def run(predictor, files, max_megapixels):
    """Predicts every file; returns (written count, unreadable files with their errors)."""
    from axial_tf.experiment.tasks import task_class
    from axial_tf.export import output_stems
    from axial_tf.training.progress import ProgressBar

    task = task_class(predictor.task)
    progress = ProgressBar(len(files), batch_size=1)
    records, failures = [], []
    for index, (path, stem) in enumerate(zip(files, output_stems(files)), start=1):
        try:
            image = read_image(path, max_megapixels)
        except ValueError as error:
            if not FLAGS.skip_unreadable:
                raise
            failures.append(str(error))
            continue
        record = task.write_prediction(
            predictor(image), image, os.path.join(FLAGS.output, stem), predictor.info, path,
            file_format=FLAGS.format, overlay=FLAGS.overlay, alpha=FLAGS.alpha,
        )
        if record is not None:
            records.append(record)
        progress.update(index, {})
    progress.close()
    if records:
        write_records(records, predictor.info)
    return len(files) - len(failures), failures


def main(argv):
    del argv
    from absl import logging

    logging.set_verbosity(logging.WARNING)
    sources = [name for name in ("model", "saved_model", "model_dir", "checkpoint", "keras_model", "preset")
               if getattr(FLAGS, name)]
    if len(sources) != 1:
        raise app.UsageError(
            "Give exactly one of --model, --saved_model, --model_dir, --checkpoint, --keras_model and --preset.")
    if not FLAGS.input or not FLAGS.output:
        raise app.UsageError("--input and --output are required.")
    if FLAGS.precision != "float32" and not (FLAGS.model or FLAGS.saved_model):
        raise app.UsageError(f"--precision {FLAGS.precision} applies to an export (--model or --saved_model).")
    import tensorflow as tf

    from axial_tf.export import list_images
    from axial_tf.utils.errors import error_line
    from axial_tf.experiment.config import ConfigError
    from axial_tf.experiment.tasks import task_class

    try:
        files = list_images(FLAGS.input)
        prepare_output_folder(FLAGS.output)
        predictor = make_predictor()
        if FLAGS.overlay and not task_class(predictor.task).draws_overlays:
            print(f"note: --overlay applies to segmentation models only, not to this {predictor.task} model.")
        check_result_format(predictor, files)
        written, failures = run(predictor, files, image_limit(predictor))
    except (ConfigError, ValueError, OSError) as error:
        sys.exit(f"error: {error}")
    except tf.errors.OpError as error:  # e.g. a full disk, or a model refusing an input
        sys.exit(f"error: {error_line(error)}")
    print(f"Wrote predictions of {written} image(s) to {FLAGS.output}.")
    if failures:
        sys.exit("error: unreadable images skipped:\n  " + "\n  ".join(failures))


def console_main():
    """The `axial-tf-predict` command (absl flags from sys.argv)."""
    run_absl_tool(__name__, main)


if __name__ == "__main__":
    console_main()
