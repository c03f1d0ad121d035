"""The parity cases, and the script the backend tests run in a second Python.

    python tests/backends/tf_reference.py cases OUT_DIR
        Under TensorFlow: builds every case of `CASES` with fixed seeds, moves its batch-norm
        parameters and statistics off their initial values, and writes OUT_DIR/<case>.keras (the
        model) and OUT_DIR/<case>.npz: `input`, `cotangent/<output>` and everything
        `backend_gradients.measure` records (outputs in inference and training mode, moving
        statistics after one training-mode call, gradients).

    python tests/backends/tf_reference.py predict MODEL.keras INPUTS.npz OUT.npz
        Under any backend: loads MODEL.keras and writes its inference outputs on INPUTS.npz's
        `input` as `output/<name>` (named as `backend_gradients.output_dict` names them).

The case builders use Keras and axial_tf only, so the backend tests build them too.
"""

import collections
import os
import sys

import keras
import numpy as np

import axial_tf  # noqa: F401  (registers the classes for loading)
from axial_tf.layers import AxialAttention, AxialAttention2D, AxialBlock
from axial_tf.models import AxialDeepLab, get_backbone
from backend_gradients import measure, output_dict, predict

SEED = 20240531
TINY_ATTENTION = dict(total_key_depth=8, total_value_depth=12, num_heads=2)
TINY_WIDTHS = dict(width_multiplier=0.0625, stem_width_multiplier=0.125, backbone_layer_multiplier=0.34)

Case = collections.namedtuple("Case", ["build", "input_shape", "input_scale"])


def _layer_model(layer, input_shape):
    inputs = keras.Input(input_shape)
    return keras.Model(inputs, layer(inputs))


CASES = {
    # [2, 9, 3, 6] -> [2, 9, 3, 12]: 6 sequences of length 9 along axis 1.
    "attention_global": Case(
        lambda: _layer_model(AxialAttention(**TINY_ATTENTION, name="attention"), (9, 3, 6)), (2, 9, 3, 6), 1.0
    ),
    # [2, 11, 6] -> [2, 11, 12]: span 5 on blocks of 3 queries (the border blocks are truncated).
    "attention_local": Case(
        lambda: _layer_model(AxialAttention(**TINY_ATTENTION, span=5, query_block_size=3, name="attention"), (11, 6)),
        (2, 11, 6),
        1.0,
    ),
    # [2, 7, 9, 6] -> [2, 7, 9, 16].
    "attention_2d": Case(
        lambda: _layer_model(AxialAttention2D(8, num_heads=2, name="attention_2d"), (7, 9, 6)), (2, 7, 9, 6), 1.0
    ),
    # [2, 7, 9, 6] -> [2, 4, 5, 16]: local span 3 along the height, global along the width.
    "attention_2d_strided": Case(
        lambda: _layer_model(
            AxialAttention2D(8, num_heads=2, strides=2, span=(3, None), name="attention_2d"), (7, 9, 6)
        ),
        (2, 7, 9, 6),
        1.0,
    ),
    # [2, 9, 11, 8] -> [2, 5, 6, 16]: axial bottleneck with a projection shortcut.
    "axial_block": Case(
        lambda: _layer_model(AxialBlock([8, 4, 16], strides=2, attention={"num_heads": 2}, name="block"), (9, 11, 8)),
        (2, 9, 11, 8),
        1.0,
    ),
    # [2, 33, 33, 3] -> stage1..5, res1..5, backbone_output: the 7x7 stem, output stride 8 (the last
    # stage attends unstrided), local span 3 in stage 3.
    "backbone": Case(
        lambda: get_backbone(
            "axial_resnet_s", **TINY_WIDTHS, output_stride=8, attention={"num_heads": 2},
            stage_attention={3: {"span": 3}},
        ),
        (2, 33, 33, 3),
        1.0,
    ),
    # Images in [0, 255] [2, 33, 33, 3] -> semantic_logits [2, 33, 33, 3], center_heatmap [2, 33, 33],
    # offset_map [2, 33, 33, 2].
    "axial_deeplab": Case(
        lambda: AxialDeepLab(
            "axial_deeplab_s", num_classes=3, backbone_overrides={**TINY_WIDTHS, "attention": {"num_heads": 2}}
        ),
        (2, 33, 33, 3),
        255.0,
    ),
}


def randomize_batch_norms(model, rng):
    """Moves batch-norm parameters and statistics off their initial values (zero gammas included).

    Gammas move by at most 0.2, so a residual branch whose last gamma starts at zero stays small:
    large branches grow the residual stream, and with it the attention logits, until the
    float32 round-off of TensorFlow alone (oneDNN on against off) exceeds the parity tolerance.
    """
    for variable in model.variables:
        name = variable.path.rsplit("/", 1)[-1]
        if name == "gamma":
            variable.assign(keras.ops.convert_to_numpy(variable) + rng.uniform(-0.2, 0.2, variable.shape))
        elif name == "moving_variance":
            variable.assign(rng.uniform(0.5, 1.5, variable.shape))
        elif name in ("beta", "moving_mean"):
            variable.assign(rng.normal(0.0, 0.1, variable.shape))


def write_cases(out_dir):
    """Writes <case>.keras and <case>.npz of every case to `out_dir` (see the module docstring)."""
    for index, (name, case) in enumerate(CASES.items()):
        keras.utils.set_random_seed(SEED + index)
        rng = np.random.default_rng([SEED, index])
        model = case.build()
        randomize_batch_norms(model, rng)
        inputs = (case.input_scale * rng.uniform(size=case.input_shape)).astype("float32")
        output_shapes = {k: v.shape for k, v in output_dict(model(inputs, training=False)).items()}
        cotangents = {k: rng.normal(size=shape).astype("float32") for k, shape in output_shapes.items()}
        model.save(os.path.join(out_dir, f"{name}.keras"))  # before the training call moves the statistics
        record = measure(model, inputs, cotangents)
        record["input"] = inputs
        record |= {f"cotangent/{k}": v for k, v in cotangents.items()}
        np.savez(os.path.join(out_dir, f"{name}.npz"), **record)


def write_predictions(model_path, inputs_path, out_path):
    """Writes the inference outputs of the model at `model_path` on the `input` of `inputs_path`."""
    model = keras.models.load_model(model_path, safe_mode=True)
    outputs = output_dict(predict(model, np.load(inputs_path)["input"]))
    np.savez(out_path, **{f"output/{k}": keras.ops.convert_to_numpy(v) for k, v in outputs.items()})


if __name__ == "__main__":
    command, *arguments = sys.argv[1:]
    if command == "cases" and keras.backend.backend() == "tensorflow":
        write_cases(*arguments)
    elif command == "predict":
        write_predictions(*arguments)
    else:
        sys.exit(f"usage: tf_reference.py cases OUT_DIR (TensorFlow) | predict MODEL INPUTS OUT; got {sys.argv[1:]}")
