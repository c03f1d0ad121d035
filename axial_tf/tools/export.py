"""Exports a trained model as a SavedModel for TF Serving, or to ONNX, OpenVINO or LiteRT.

    axial-tf-export --config FILE.yaml --model_dir DIR --output exports/demo
    axial-tf-export --preset axial_swidernet_1_1_1_os16_cityscapes --output exports/axial_deeplab
    axial-tf-export --config FILE.yaml --checkpoint DIR/checkpoints/ckpt-3000 --output exports/demo/3
    axial-tf-export --keras_model model.keras [--config FILE.yaml] --output exports/demo
    axial-tf-export --model_dir DIR --format onnx|openvino|litert --output exports/demo_onnx \
        [--batch_size N|any] [--input_size H,W]

With --model_dir the config defaults to MODEL_DIR/config.yaml (saved by training).
A panoptic model always needs its config (thing classes, label divisor, input
size and post-processing come from it); a classification `.keras` model can be
exported without one (--image_size, class ids as names).

--output is a TF Serving base folder (exports/demo: the export becomes its next
version, exports/demo/<highest + 1>, 1 for a new folder) or a version folder
named by a number (exports/demo/3), or an earlier export. The SavedModel is
written next to it and renamed into place, so TF Serving never sees half an
export and a failed export leaves the previous one as it was. --overwrite
replaces an earlier export only: never a training model_dir, checkpoints, a
folder of versions or files an export does not write.

The SavedModel has two signatures:
  serving_default   images       uint8  [B, H, W, 3]  (same-sized batch)
  serving_encoded   image_bytes  string [B]           (JPEG/PNG/GIF/BMP/WebP, any sizes)
Both refuse, with InvalidArgument naming the input, a request of another shape,
an empty batch, and one holding more than --max_megapixels (default 16; B x
largest height x largest width, checked from the image headers before decoding).
Panoptic outputs: panoptic_pred, semantic_pred, instance_pred (int32 [B, H, W]),
semantic_probs (float32 [B, H, W, C]), center_heatmap (float32 [B, H, W]),
offset_map (float32 [B, H, W, 2]) at the input resolution; serving_encoded adds
image_size (int32 [B, 2]). Classification outputs: classes, probabilities,
class_names ([B, k]) and logits. The label space and baked-in settings are in
the version's assets.extra/axial_tf_export.json.

--format onnx|openvino|litert writes the folder --output (atomically: a failed
conversion leaves nothing there) holding model.onnx, model.xml + model.bin or
model.tflite, and axial_tf_export.json. The graph is serving_default's work
without its request checks: uint8 images [--batch_size, H, W, 3] (default 1;
load_exported runs larger batches that many at a time) to the same outputs (a
classifier's class names come from the JSON); --batch_size any takes any batch
in one call. The graph splits no attention into chunks (their loop would not
convert), so its memory grows with the square of the attention length:
Axial-DeepLab-S at 1025x2049 does not convert on a 24 GB machine (the SavedModel
serves it); the MaX-S-backbone model at that size does. H and W are any size for ONNX and
OpenVINO, and fixed for LiteRT (--input_size, default the model input size);
--input_size fixes them for the others too. The panoptic post-processing runs in
the OpenVINO and LiteRT graphs, and on the host (NumPy) for ONNX, whose graph
ends at the dense outputs (and for LiteRT with --batch_size any). Run any export with axial_tf.export.load_exported.
A model the converter cannot express stops with one line naming the op and its
layer; a missing converter names the pip extra (pip install 'axial_tf[onnx]').
"""

import json
import sys

from absl import app, flags

from axial_tf.tools import run_absl_tool

flags.DEFINE_string("config", None, "Experiment config (.yaml or .gin); default MODEL_DIR/config.yaml.")
flags.DEFINE_string("model_dir", None, "Training directory; its latest checkpoint is exported.")
flags.DEFINE_string("checkpoint", None, "Checkpoint prefix (or directory of checkpoints) to export.")
flags.DEFINE_string("keras_model", None, "A .keras model file to export.")
flags.DEFINE_string("preset", None, "A pretrained preset to export (python -m axial_tf.presets list); --config may "
                    "replace its shipped config.")
flags.DEFINE_string(
    "output", None, "TF Serving base folder (a new version is added) or SavedModel version folder to write."
)
flags.DEFINE_multi_string("override", [], "key.sub=value config overrides (e.g. data.crop_size=[1025,2049]).")
flags.DEFINE_integer("top_k", 5, "Classes returned per image by a classification export.")
flags.DEFINE_integer("image_size", None, "Classifier input side when exporting a .keras classifier without config.")
flags.DEFINE_enum("format", "saved_model", ["saved_model", "onnx", "openvino", "litert"], "What to export.")
flags.DEFINE_string("batch_size", "1", "Images per call of an ONNX, OpenVINO or LiteRT graph, or 'any'.")
flags.DEFINE_string("input_size", None, "H,W of the images an ONNX, OpenVINO or LiteRT graph takes (default: any "
                    "size; LiteRT: the model input size).")
flags.DEFINE_bool("overwrite", False, "Replace an earlier export at --output (only an export of the same kind: a "
                  "SavedModel, or an ONNX/OpenVINO/LiteRT folder).")
flags.DEFINE_float(
    "max_megapixels", None, "Most pixels (millions) one serving request may hold: B x largest height x largest "
    "width (default 16, DEFAULT_MAX_MEGAPIXELS)."
)
FLAGS = flags.FLAGS


def _describe(contract):
    lines = []
    for signature, spec in contract.items():
        lines.append(f"  {signature}")
        for kind in ("inputs", "outputs"):
            for name, tensor in spec[kind].items():
                shape = ", ".join("?" if d is None else str(d) for d in tensor["shape"])
                lines.append(f"    {kind[:-1]:6s} {name:15s} {tensor['dtype']:8s} [{shape}]")
    return "\n".join(lines)


def _input_size(text):
    """--input_size "H,W" as two positive ints, or None."""
    if text is None:
        return None
    sides = text.replace("x", ",").split(",")
    if len(sides) != 2 or not all(side.strip().isdigit() and int(side) > 0 for side in sides):
        raise app.UsageError(f"--input_size must be H,W (two positive integers), got {text!r}.")
    return tuple(int(side) for side in sides)


def _batch_size(text):
    """--batch_size "N" or "any" as a positive int or None."""
    if text.strip().lower() == "any":
        return None
    if not text.strip().isdigit() or int(text) < 1:
        raise app.UsageError(f"--batch_size must be a positive integer or 'any', got {text!r}.")
    return int(text)


def _describe_converted(folder):
    from axial_tf.export import load_exported

    graph = load_exported(folder).info["graph"]
    shape = ", ".join("?" if side is None else str(side) for side in [graph["batch_size"], *graph["input_size"], 3])
    parts = f" (load_exported runs any batch in parts of {graph['batch_size']})" if graph["batch_size"] else ""
    return (
        f"  input  images  uint8  [{shape}]{parts}\n"
        f"  outputs {', '.join(graph['outputs'])}\n"
        f"  completed on the host (load_exported): {graph['host_step'] or 'nothing'}"
    )


def main(argv):
    del argv
    from absl import logging

    logging.set_verbosity(logging.WARNING)
    sources = [name for name in ("model_dir", "checkpoint", "keras_model", "preset") if getattr(FLAGS, name)]
    if len(sources) != 1:
        raise app.UsageError("Give exactly one of --model_dir, --checkpoint, --keras_model and --preset.")
    if not FLAGS.output:
        raise app.UsageError("--output is required.")
    input_size = _input_size(FLAGS.input_size)
    batch_size = _batch_size(FLAGS.batch_size)
    import tensorflow as tf

    from axial_tf.experiment.config import ConfigError, experiment_config_for
    from axial_tf.export import (
        DEFAULT_MAX_MEGAPIXELS,
        SAVED_MODEL,
        ConversionError,
        check_model_source,
        export_converted,
        export_model,
        signature_contract,
    )
    from axial_tf.utils.errors import error_line

    try:
        keras_model = FLAGS.keras_model
        if FLAGS.preset:
            from axial_tf.experiment.pretrained import preset_experiment

            config, keras_model = preset_experiment(FLAGS.preset, FLAGS.config, FLAGS.override)
        else:
            check_model_source(FLAGS.model_dir, FLAGS.checkpoint, FLAGS.keras_model)  # before looking for a config
            config = experiment_config_for(FLAGS.config, FLAGS.model_dir, FLAGS.override)
        sources = dict(
            config=config,
            model_dir=FLAGS.model_dir,
            checkpoint=FLAGS.checkpoint,
            keras_model=keras_model,
            top_k=FLAGS.top_k,
            image_size=FLAGS.image_size,
            overwrite=FLAGS.overwrite,
            max_megapixels=DEFAULT_MAX_MEGAPIXELS if FLAGS.max_megapixels is None else FLAGS.max_megapixels,
        )
        if FLAGS.format == SAVED_MODEL:
            module, saved_model_dir = export_model(FLAGS.output, **sources)
        else:
            _, folder = export_converted(FLAGS.output, FLAGS.format, batch_size=batch_size,
                                         input_size=input_size, **sources)
            print(f"Wrote {FLAGS.format} export {folder}:\n{_describe_converted(folder)}")
            return
    except (ConfigError, ValueError, OSError, ConversionError, ModuleNotFoundError) as error:
        sys.exit(f"error: {error}")
    except tf.errors.OpError as error:  # e.g. a full disk while saving
        sys.exit(f"error: {error_line(error)}")
    print(f"Wrote SavedModel {saved_model_dir} with signatures:\n{_describe(signature_contract(module))}")
    print(f"Requests hold at most {module.max_megapixels:g} megapixels (B x largest H x largest W; --max_megapixels).")
    print("Inspect: saved_model_cli show --dir " + json.dumps(saved_model_dir) + " --all")


def console_main():
    """The `axial-tf-export` command (absl flags from sys.argv)."""
    run_absl_tool(__name__, main)


if __name__ == "__main__":
    console_main()
