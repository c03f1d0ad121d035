"""Converts reference checkpoints into axial_tf `.keras` models.

DeepLab2 (Panoptic-DeepLab with an axial backbone), from its own experiment file:
    axial-tf-convert-checkpoint --from deeplab2 --checkpoint CKPT_DIR_OR_PREFIX \
        --deeplab2_config EXPERIMENT.textproto --output model.keras
  (also writes model.yaml, the equivalent axial_tf experiment config, and prints a
  note for each DeepLab2 option that config cannot express), or from an axial_tf
  config describing the same architecture:
    axial-tf-convert-checkpoint --from deeplab2 --checkpoint CKPT --config exp.yaml --output model.keras

PyTorch (csrhddlam/axial-deeplab `AxialAttentionNet`, needs `pip install axial_tf[torch]`):
    axial-tf-convert-checkpoint --from pytorch --checkpoint axial26s.pth --pytorch_arch axial26s \
        --output axial26s.keras

Existing outputs are never replaced unless --overwrite is given. Outputs are written only once
the conversion has succeeded, each to a temporary file then moved into place, so a failed
conversion leaves no partial output.
"""

import os
import sys

from absl import app, flags

from axial_tf.tools import run_absl_tool

flags.DEFINE_enum("from", None, ["deeplab2", "pytorch"], "Which implementation wrote the checkpoint.")
flags.DEFINE_string("checkpoint", None, "Checkpoint prefix or directory (DeepLab2), or state-dict file (PyTorch).")
flags.DEFINE_string("deeplab2_config", None, "DeepLab2 experiment textproto the checkpoint was trained with.")
flags.DEFINE_string("config", None, "axial_tf experiment config (YAML or gin) with the same architecture.")
flags.DEFINE_string("pytorch_arch", None, "PyTorch reference architecture (axial26s, axial50s/m/l); "
                    "default: inferred from the state dict.")
flags.DEFINE_integer("num_classes", None, "Classes of the PyTorch classifier head (default: from the state dict).")
flags.DEFINE_string("output", None, "Where to write the converted model (.keras).")
flags.DEFINE_bool("overwrite", False, "Replace the output model (and its .yaml config) if they already exist.")
flags.DEFINE_bool("allow_missing", False, "Allow model variables absent from the checkpoint (keep their init).")
FLAGS = flags.FLAGS


def _deeplab2_config_from_experiment(path):
    """The axial_tf config of a DeepLab2 experiment file, printing what it cannot express."""
    from axial_tf.checkpoints.deeplab2_converter import convert_experiment
    from axial_tf.checkpoints.textproto import read_textproto
    from axial_tf.experiment.config import config_from_dict

    conversion = convert_experiment(read_textproto(path), source=path)
    for note in conversion.notes:
        print(f"note: {note}")
    return config_from_dict(conversion.config, source=path)


def _convert_deeplab2():
    """`{output path: writer}` of a DeepLab2 checkpoint (the model, and its YAML config if converted)."""
    from axial_tf.checkpoints.deeplab2_converter import load_deeplab2_checkpoint
    from axial_tf.experiment import config_sources
    from axial_tf.experiment.config import config_to_dict, load_config
    from axial_tf.experiment.tasks import build_model

    if bool(FLAGS.deeplab2_config) == bool(FLAGS.config):
        raise ValueError("Give exactly one of --deeplab2_config and --config.")
    if FLAGS.deeplab2_config:
        config = _deeplab2_config_from_experiment(FLAGS.deeplab2_config)
    else:
        config = load_config(FLAGS.config)
    model = build_model(config, sync_batch_norm=False)
    report = load_deeplab2_checkpoint(model, FLAGS.checkpoint, strict=not FLAGS.allow_missing)
    print(f"Restored {report['restored']} variables from {FLAGS.checkpoint}.")
    for key in ("missing", "unused"):
        if report[key]:
            print(f"{key} ({len(report[key])}): " + ", ".join(report[key]))
    writers = {FLAGS.output: model.save}
    if FLAGS.deeplab2_config:
        text = (f"# axial_tf equivalent of {FLAGS.deeplab2_config}\n"
                + config_sources.dump_yaml(config_to_dict(config)))
        writers[os.path.splitext(FLAGS.output)[0] + ".yaml"] = lambda path: _write_text(path, text)
    return writers


def _convert_pytorch():
    """`{output path: writer}` of a PyTorch state dict."""
    from axial_tf.checkpoints.pytorch_converter import convert_pytorch_checkpoint

    model = convert_pytorch_checkpoint(FLAGS.checkpoint, arch=FLAGS.pytorch_arch, num_classes=FLAGS.num_classes)
    return {FLAGS.output: model.save}


def _write_text(path, text):
    with open(path, "w") as stream:
        stream.write(text)


def _temporary_sibling(path):
    """A hidden name next to `path`, in the same folder so that `os.replace` is atomic.

    It keeps the extension, as Keras saves only to `.keras` names; the writer creates the
    file, so it gets the usual permissions (a `tempfile.mkstemp` file would be private).
    """
    directory, name = os.path.split(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    return os.path.join(directory, f".{name}.{os.getpid()}.tmp{os.path.splitext(name)[1]}")


def _write_outputs(writers, overwrite):
    """Writes every output to a temporary sibling, then moves them all into place.

    A failure while writing leaves the existing files as they were and no partial output;
    the moves happen only once every output is complete, so the model and its config stay a pair.

    Args:
        writers: `{path: write(temporary_path)}`.
        overwrite: replace existing files; otherwise an existing one is refused before anything is written.

    Raises:
        FileExistsError: without `overwrite`, naming the first output that exists.
    """
    for path in writers:
        if os.path.exists(path) and not overwrite:
            raise FileExistsError(f"{path} already exists; pass --overwrite to replace it")
    staged = {}
    try:
        for path, write in writers.items():
            staged[path] = _temporary_sibling(path)
            write(staged[path])
        for path, temporary in staged.items():
            os.replace(temporary, path)
            print(f"Wrote {path}.")
    finally:
        for temporary in staged.values():
            if os.path.exists(temporary):
                os.remove(temporary)


def main(argv):
    del argv
    for name in ("from", "checkpoint", "output"):
        if not getattr(FLAGS, name):
            raise app.UsageError(f"--{name} is required.")
    if not FLAGS.output.endswith(".keras"):
        raise app.UsageError(f"--output must end with .keras, got {FLAGS.output}.")
    try:
        writers = _convert_deeplab2() if FLAGS["from"].value == "deeplab2" else _convert_pytorch()
        _write_outputs(writers, overwrite=FLAGS.overwrite)
    except (ValueError, OSError, ImportError) as error:
        sys.exit(f"error: {error}")


def console_main():
    """The `axial-tf-convert-checkpoint` command (absl flags from sys.argv)."""
    run_absl_tool(__name__, main)


if __name__ == "__main__":
    console_main()
