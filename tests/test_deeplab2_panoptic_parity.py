"""DeepLab2 Panoptic-DeepLab checkpoints convert and reproduce DeepLab2's outputs."""

import json

import numpy as np
import pytest

from conftest import case_id, fixture_cases
from axial_tf.checkpoints.deeplab2_converter import load_deeplab2_checkpoint, read_deeplab2_experiment
from axial_tf.experiment.tasks import build_model
from axial_tf.models.inference import predict_panoptic
from axial_tf.postprocessing import PostProcessOptions
from axial_tf.experiment.config import config_from_dict

CASES = [p.parent for p in fixture_cases("deeplab2/panoptic", "*/config.textproto")]
TOLERANCE = 1e-4


def _converted(case):
    config = config_from_dict(read_deeplab2_experiment(case / "config.textproto"), source=str(case))
    model = build_model(config, sync_batch_norm=False)
    report = load_deeplab2_checkpoint(model, str(case / "checkpoint"))
    return config, model, report


def _options(case, config):
    info = json.loads((case / "io.json").read_text())
    descriptor = info["dataset_descriptor"]
    post = config.evaluation.postprocessing
    return PostProcessOptions.with_merge_style(
        post.merge_style,
        thing_class_ids=tuple(descriptor["class_has_instances_list"]),
        label_divisor=descriptor["panoptic_label_divisor"],
        void_label=descriptor["ignore_label"],
        center_threshold=post.center_threshold,
        nms_kernel=post.nms_kernel,
        keep_k_centers=post.keep_k_centers,
        stuff_area_limit=post.stuff_area_limit,
    )


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_converted_checkpoint_reproduces_deeplab2(case):
    config, model, report = _converted(case)
    info = json.loads((case / "io.json").read_text())
    assert report["unused"] == [] and report["restored"] > 0
    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_weights)
    assert trainable == info["num_params"]["trainable"]

    io = np.load(case / "io.npz")
    image = io["image"][None].astype("float32")
    outputs = model(image, training=False)
    np.testing.assert_allclose(np.asarray(outputs["semantic_logits"]), io["semantic_logits"], atol=TOLERANCE)
    np.testing.assert_allclose(np.asarray(outputs["center_heatmap"]), io["center_heatmap"], atol=TOLERANCE)
    # Offsets are resized from stride 4 and multiplied by (H - 1) / (h - 1), which
    # scales float32 round-off the same way; compare them at stride 4 to 1e-4.
    height, small = image.shape[1], io["decoder_stride4/offset_map"].shape[1]
    np.testing.assert_allclose(
        np.asarray(outputs["offset_map"]), io["offset_map"], atol=TOLERANCE * (height - 1) / (small - 1)
    )
    normalised = image / 127.5 - 1.0
    endpoints = model.backbone(normalised, training=False)
    for key in ("res2", "res3", "res4", "res5"):
        np.testing.assert_allclose(np.asarray(endpoints[key]), io[f"encoder/{key}"], atol=TOLERANCE)
    instance = model.instance_decoder([endpoints[k] for k in ("res5", "res3", "res2")])
    np.testing.assert_allclose(np.asarray(model.offset_head(instance)), io["decoder_stride4/offset_map"], atol=TOLERANCE)

    predictions = predict_panoptic(model, image, _options(case, config))
    for key in ("semantic_pred", "instance_pred", "panoptic_pred"):
        np.testing.assert_array_equal(np.asarray(predictions[key]), io[key], err_msg=key)


@pytest.mark.parametrize("case", CASES, ids=case_id)
@pytest.mark.full
def test_experiment_file_gives_the_architecture(case):
    config, model, _ = _converted(case)
    info = json.loads((case / "io.json").read_text())
    assert config.model.backbone == info["backbone"]["name"]
    assert config.data.crop_size == info["crop_size"]
    shapes = info["encoder_endpoint_shapes"]
    endpoints = model.backbone(np.zeros((1, *info["crop_size"], 3), "float32"))
    for key in ("res2", "res3", "res4", "res5"):
        assert list(endpoints[key].shape) == shapes[key], key


@pytest.mark.full
def test_missing_and_wrong_variables_are_named(tmp_path):
    case = CASES[0]
    config, model, _ = _converted(case)
    import tensorflow as tf

    # A checkpoint holding only the encoder: strict loading names what is missing.
    reader = tf.train.load_checkpoint(str(case / "checkpoint"))
    encoder = {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map() if k.startswith("encoder/")
               and k.endswith("VARIABLE_VALUE") and "OPTIMIZER_SLOT" not in k}
    variables = {k.replace("/", "__").replace(".", "_"): tf.Variable(v) for k, v in encoder.items()}
    # Rebuild the DeepLab2 key layout with a tf.train.Checkpoint of nested trackables.
    root = tf.Module()
    for key, value in encoder.items():
        parts = key.split("/")[:-2]
        node = root
        for part in parts[:-1]:
            if not hasattr(node, part):
                setattr(node, part, tf.Module())
            node = getattr(node, part)
        setattr(node, parts[-1], variables[key.replace("/", "__").replace(".", "_")])
    prefix = tf.train.Checkpoint(encoder=root.encoder).write(str(tmp_path / "partial"))
    with pytest.raises(ValueError, match="semantic_last_layer/kernel"):
        load_deeplab2_checkpoint(model, prefix)
    report = load_deeplab2_checkpoint(model, prefix, strict=False)
    assert "semantic_last_layer/kernel" in report["missing"] and report["restored"] == len(encoder)
    with pytest.raises(FileNotFoundError, match="no_such"):
        load_deeplab2_checkpoint(model, str(tmp_path / "no_such_dir"))


@pytest.mark.full
def test_convert_tool_writes_reloadable_model_and_config(tmp_path):
    import subprocess
    import sys

    import keras
    from conftest import REPO_ROOT
    from axial_tf.experiment.config import load_config

    case = CASES[0]
    output = tmp_path / "converted.keras"
    command = [
        sys.executable, str(REPO_ROOT / "tools" / "convert_checkpoint.py"), "--from", "deeplab2",
        "--checkpoint", str(case / "checkpoint"), "--deeplab2_config", str(case / "config.textproto"),
        "--output", str(output),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    model = keras.models.load_model(output, safe_mode=True)
    io = np.load(case / "io.npz")
    semantic = np.asarray(model(io["image"][None].astype("float32"))["semantic_logits"])
    np.testing.assert_allclose(semantic, io["semantic_logits"], atol=TOLERANCE)
    config = load_config(tmp_path / "converted.yaml")
    assert config.model.num_classes == io["semantic_logits"].shape[-1]

    bad = subprocess.run(command[:-4] + ["--config", str(tmp_path / "missing.yaml"), "--output", str(output)],
                         capture_output=True, text=True, timeout=600)
    assert bad.returncode != 0 and "missing.yaml" in bad.stderr
