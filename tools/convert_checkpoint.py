"""Converts reference checkpoints into axial_tf `.keras` models.

DeepLab2 (Panoptic-DeepLab with an axial backbone), from its own experiment file:
    python tools/convert_checkpoint.py --from deeplab2 --checkpoint CKPT_DIR_OR_PREFIX \
        --deeplab2_config EXPERIMENT.textproto --output model.keras
  (also writes model.yaml, the equivalent axial_tf experiment config), or from
  an axial_tf config describing the same architecture:
    python tools/convert_checkpoint.py --from deeplab2 --checkpoint CKPT --config exp.yaml --output model.keras

PyTorch (csrhddlam/axial-deeplab `AxialAttentionNet`, needs `pip install axial_tf[torch]`):
    python tools/convert_checkpoint.py --from pytorch --checkpoint axial26s.pth --pytorch_arch axial26s \
        --output axial26s.keras
"""

import os
import sys

from absl import app, flags

flags.DEFINE_enum("from", None, ["deeplab2", "pytorch"], "Which implementation wrote the checkpoint.")
flags.DEFINE_string("checkpoint", None, "Checkpoint prefix or directory (DeepLab2), or state-dict file (PyTorch).")
flags.DEFINE_string("deeplab2_config", None, "DeepLab2 experiment textproto the checkpoint was trained with.")
flags.DEFINE_string("config", None, "axial_tf experiment config (YAML or gin) with the same architecture.")
flags.DEFINE_string("pytorch_arch", None, "PyTorch reference architecture (axial26s, axial50s/m/l); "
                    "default: inferred from the state dict.")
flags.DEFINE_integer("num_classes", None, "Classes of the PyTorch classifier head (default: from the state dict).")
flags.DEFINE_string("output", None, "Where to write the converted model (.keras).")
flags.DEFINE_bool("allow_missing", False, "Allow model variables absent from the checkpoint (keep their init).")
FLAGS = flags.FLAGS


def _convert_deeplab2():
    from axial_tf.checkpoints.deeplab2_converter import load_deeplab2_checkpoint, read_deeplab2_experiment
    from axial_tf.models.factory import build_model
    from axial_tf.training import config_sources
    from axial_tf.training.config import config_from_dict, config_to_dict, load_config

    if bool(FLAGS.deeplab2_config) == bool(FLAGS.config):
        raise ValueError("Give exactly one of --deeplab2_config and --config.")
    if FLAGS.deeplab2_config:
        config = config_from_dict(read_deeplab2_experiment(FLAGS.deeplab2_config), source=FLAGS.deeplab2_config)
    else:
        config = load_config(FLAGS.config)
    model = build_model(config.model)
    report = load_deeplab2_checkpoint(model, FLAGS.checkpoint, strict=not FLAGS.allow_missing)
    print(f"Restored {report['restored']} variables from {FLAGS.checkpoint}.")
    for key in ("missing", "unused"):
        if report[key]:
            print(f"{key} ({len(report[key])}): " + ", ".join(report[key]))
    if FLAGS.deeplab2_config:
        target = os.path.splitext(FLAGS.output)[0] + ".yaml"
        os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
        with open(target, "w") as stream:
            stream.write(f"# axial_tf equivalent of {FLAGS.deeplab2_config}\n")
            stream.write(config_sources.dump_yaml(config_to_dict(config)))
        print(f"Wrote the equivalent axial_tf config to {target}.")
    return model


def _convert_pytorch():
    from axial_tf.checkpoints.pytorch_converter import convert_pytorch_checkpoint

    return convert_pytorch_checkpoint(FLAGS.checkpoint, arch=FLAGS.pytorch_arch, num_classes=FLAGS.num_classes)


def main(argv):
    del argv
    for name in ("from", "checkpoint", "output"):
        if not getattr(FLAGS, name):
            raise app.UsageError(f"--{name} is required.")
    if not FLAGS.output.endswith(".keras"):
        raise app.UsageError(f"--output must end with .keras, got {FLAGS.output}.")
    try:
        model = _convert_deeplab2() if FLAGS["from"].value == "deeplab2" else _convert_pytorch()
    except (ValueError, FileNotFoundError, ImportError) as error:
        sys.exit(f"error: {error}")
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.output)), exist_ok=True)
    model.save(FLAGS.output)
    print(f"Saved {FLAGS.output}.")


if __name__ == "__main__":
    app.run(main)
