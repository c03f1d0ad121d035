"""SavedModel export: parity with evaluation, stock ops, fresh-process and TF Serving contracts.

One tiny Axial-DeepLab "training run" (config.yaml + checkpoint) is exported once
with `tools/export.py --model_dir`; the tests then check the export against the
evaluation path (`build_panoptic_eval_dataset` + `predict_panoptic`), the op
registry of a fresh process, a fresh process that cannot import axial_tf,
`saved_model_cli` (whose `run` uses the TF1 loader, as TF Serving does) and the
`PredictRequest` protos of TF Serving clients.
"""

import json
import os
import subprocess
import sys
import textwrap
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO_ROOT
from training_helpers import tool_command

from axial_tf import data
from axial_tf.data import records
from axial_tf.experiment.builders import (
    dataset_info_from_config,
    inference_preprocessor_from_config,
    postprocess_options_from_config,
)
from axial_tf.experiment.checkpoints import load_model, model_checkpoint_items
from axial_tf.experiment.config import config_from_dict, config_to_dict, save_config
from axial_tf.experiment.serving.panoptic import PANOPTIC_OUTPUTS
from axial_tf.experiment.tasks import build_model, task_for_config
from axial_tf.export import EXPORT_INFO_FILENAME, export_model, read_export_info, saved_model_op_types
from axial_tf.models.inference import predict_panoptic

pytestmark = pytest.mark.full  # SavedModel export of a trained model, fresh processes

PYTHON = sys.executable
TINY_BACKBONE = {
    "width_multiplier": 0.0625,
    "stem_width_multiplier": 0.125,
    "backbone_layer_multiplier": 0.34,
    "attention": {"num_heads": 2},
}
# Crop 72x64: 64x64 panoptic_shapes images and 33x47 test images are padded,
# a 96x40 one is shrunk, a 72x64 one passes unchanged.
CROP_SIZE = (72, 64)


def tiny_panoptic_config(data_dir, crop_size=CROP_SIZE):
    """A tiny Axial-DeepLab experiment on the 8-image validation split of panoptic_shapes "tiny".

    Nothing is downloaded: the dataset is generated into `data_dir` when an
    evaluation first reads it (export only needs its label space).
    """
    return config_from_dict({
        "model": {
            "backbone": "axial_deeplab_s",
            "num_classes": 7,
            "output_stride": 16,
            "backbone_overrides": TINY_BACKBONE,
            "semantic_decoder": {"aspp_channels": 16, "decoder_channels": 16, "low_level_channels": [8, 8],
                                 "head_channels": 16},
            "instance_decoder": {"aspp_channels": 16, "decoder_channels": 8, "low_level_channels": [8, 8],
                                 "head_channels": 8},
        },
        "data": {"dataset": "panoptic_shapes", "builder_options": {"config": "tiny"}, "data_dir": str(data_dir),
                 "crop_size": list(crop_size)},
        # Not deterministic: the in-process Trainer must not switch on op determinism for the whole session.
        "training": {"sync_batch_norm": False, "deterministic": False},
        "evaluation": {
            "batch_size": 4,
            "postprocessing": {"center_threshold": 0.1, "nms_kernel": 3, "keep_k_centers": 6, "stuff_area_limit": 8},
        },
    })


def calibrate_heads(model, images):
    """Rescales the heads' final convs so that an untrained model predicts several classes and instances.

    At initialisation the head outputs barely vary over an image, so every
    pixel gets the same class. Semantic logits and the center heatmap are
    centred and scaled (per channel) on `images`; offsets are scaled to a few
    pixels.
    """
    outputs = model(images.astype(np.float32))
    targets = (
        (model.semantic_head, np.asarray(outputs["semantic_logits"]), 2.0, True),
        (model.center_head, np.asarray(outputs["center_heatmap"])[..., np.newaxis], 0.3, True),
        (model.offset_head, np.asarray(outputs["offset_map"]), 4.0, False),
    )
    for head, value, target_std, centre in targets:
        scale = target_std / value.std(axis=(0, 1, 2))  # [channels]
        shift = value.mean(axis=(0, 1, 2)) if centre else 0.0
        kernel, bias = (v for v in head.weights if "final_conv" in v.path)
        kernel.assign(np.asarray(kernel) * scale)
        bias.assign((np.asarray(bias) - shift) * scale)


def write_training_run(model_dir, config, seed=0):
    """A model directory as the trainer leaves it: config.yaml and checkpoints/ckpt-1."""

    keras.utils.set_random_seed(seed)
    model = build_model(config, sync_batch_norm=False)
    calibrate_heads(model, np.random.default_rng(seed).integers(0, 256, (2, *CROP_SIZE, 3)))
    save_config(config, model_dir)
    tf.train.Checkpoint(**model_checkpoint_items(model)).save(os.path.join(model_dir, "checkpoints", "ckpt"))
    return model


def run_command(command, cwd=None, env=None, timeout=300):
    """Runs a command with quiet TF logs; returns the CompletedProcess."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "", **(env or {})}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


# A prelude for fresh interpreters that must not use axial_tf: its import fails
# and the repository is not on sys.path (even if installed in develop mode).
NO_AXIAL_TF_PRELUDE = textwrap.dedent(
    f"""
    import importlib.abc, sys
    class _NoAxialTf(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "axial_tf" or name.startswith("axial_tf."):
                raise ImportError("axial_tf must not be needed here")
    sys.meta_path.insert(0, _NoAxialTf())
    sys.path = [p for p in sys.path if p and p.rstrip("/") != {str(REPO_ROOT)!r}]
    """
)


def run_fresh_python(code, cwd):
    """Runs `code` in a new interpreter without the repository on its path and axial_tf blocked."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    return subprocess.run(
        [PYTHON, "-c", NO_AXIAL_TF_PRELUDE + textwrap.dedent(code)],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )


def sample_images():
    """Same-sized pair (padded), a taller image (shrunk) and one at the crop size (unchanged)."""
    rng = np.random.default_rng(7)
    return {
        "pair": rng.integers(0, 256, (2, 33, 47, 3), dtype=np.uint8),
        "tall": rng.integers(0, 256, (96, 40, 3), dtype=np.uint8),
        "exact": rng.integers(0, 256, (*CROP_SIZE, 3), dtype=np.uint8),
    }


def evaluation_predictions(model, config, images):
    """What evaluation predicts for `images` (list of uint8 [H, W, 3]), restored to each image's size.

    Uses evaluation's own input pipeline (`build_panoptic_eval_dataset`, one
    batch of all images) and `predict_panoptic` in a tf.function, as the
    trainer's eval step runs it; then `InferencePreprocessor.restore`.
    """
    info = dataset_info_from_config(config)
    preprocessor = inference_preprocessor_from_config(config)
    options = postprocess_options_from_config(config, info)
    dataset = None
    for index, image in enumerate(images):
        record = {
            records.IMAGE_KEY: image,
            records.PANOPTIC_LABEL_KEY: np.zeros(image.shape[:2], np.int32),
            records.FILE_NAME_KEY: f"image_{index}",
        }
        single = tf.data.Dataset.from_tensors(record)
        dataset = single if dataset is None else dataset.concatenate(single)
    batch = next(iter(data.build_panoptic_eval_dataset(dataset, info, preprocessor, batch_size=len(images))))
    evaluation = config.evaluation
    predict = tf.function(
        lambda x: predict_panoptic(model, x, options, scales=tuple(evaluation.eval_scales), flip=evaluation.flip)
    )
    predictions = predict(batch["image"])
    restored = []
    for index in range(len(images)):
        meta = {"original_size": batch["original_size"][index], "valid_size": batch["valid_size"][index]}
        restored.append({
            name: preprocessor.restore(predictions[name][index], meta, kind=kind).numpy()
            for name, kind in PANOPTIC_OUTPUTS.items()
        })
    return restored


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny run exported with the command line tool, plus evaluation's predictions on the test images."""
    root = tmp_path_factory.mktemp("export")
    config = tiny_panoptic_config(root / "tfds")
    trained = write_training_run(root / "run", config)
    export_dir = root / "exports" / "1"
    result = run_command(tool_command("export", "--model_dir", root / "run", "--output", export_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "serving_encoded" in result.stdout
    model = load_model(config, model_dir=root / "run")  # the weights the export restored
    images = sample_images()
    expected = {
        "pair": evaluation_predictions(model, config, list(images["pair"])),
        "mixed": evaluation_predictions(model, config, [images["pair"][0], images["tall"], images["exact"]]),
    }
    return types.SimpleNamespace(
        root=root, dir=export_dir, config=config, model=model, trained=trained, images=images, expected=expected,
        loaded=tf.saved_model.load(str(export_dir)),
    )


def test_checkpoint_restores_every_variable(exported):
    assert len(exported.model.variables) == len(exported.trained.variables)
    for restored, original in zip(exported.model.variables, exported.trained.variables):
        assert restored.path == original.path
        np.testing.assert_array_equal(np.asarray(restored), np.asarray(original), err_msg=restored.path)


def encode_png(image):
    return tf.io.encode_png(image).numpy()


def assert_outputs_equal(actual, expected, context):
    for name in PANOPTIC_OUTPUTS:
        np.testing.assert_array_equal(actual[name], expected[name], err_msg=f"{context}: {name}")


def test_evaluation_predictions_are_not_trivial(exported):
    panoptic = np.concatenate([p["panoptic_pred"].ravel() for p in exported.expected["mixed"]])
    semantic, instance = panoptic // 1000, panoptic % 1000
    assert len(np.unique(semantic[semantic != 255])) >= 2
    assert np.any(np.isin(semantic, [3, 4, 5, 6]) & (instance > 0)), "no thing instance predicted"


def test_serving_default_equals_evaluation_bit_exact(exported):
    outputs = exported.loaded.signatures["serving_default"](images=tf.constant(exported.images["pair"]))
    for index, expected in enumerate(exported.expected["pair"]):
        actual = {name: outputs[name][index].numpy() for name in PANOPTIC_OUTPUTS}
        assert actual["panoptic_pred"].shape == (33, 47)
        assert_outputs_equal(actual, expected, f"serving_default image {index}")


def test_serving_encoded_mixed_sizes_equals_evaluation_bit_exact(exported):
    images = [exported.images["pair"][0], exported.images["tall"], exported.images["exact"]]
    outputs = exported.loaded.signatures["serving_encoded"](
        image_bytes=tf.constant([encode_png(image) for image in images])
    )
    sizes = outputs["image_size"].numpy()
    np.testing.assert_array_equal(sizes, [[33, 47], [96, 40], [*CROP_SIZE]])
    assert outputs["panoptic_pred"].shape == (3, 96, 64)
    for index, expected in enumerate(exported.expected["mixed"]):
        height, width = sizes[index]
        actual = {name: outputs[name][index, :height, :width].numpy() for name in PANOPTIC_OUTPUTS}
        assert_outputs_equal(actual, expected, f"serving_encoded image {index}")
    # The padding of a smaller image in the batch is void.
    assert np.all(outputs["panoptic_pred"][0, 33:].numpy() == 255 * 1000)


@pytest.fixture(scope="module")
def trainer_predictions(exported):
    """The trainer's evaluation (as `tools/evaluate.py` runs it) of the exported weights, with saved PNGs."""
    from axial_tf.training.trainer import Trainer

    trainer = Trainer(exported.config, str(exported.root / "evaluation"), tf.distribute.get_strategy(), log=None)
    for target, source in zip(trainer.model.variables, exported.trained.variables):
        assert target.path == source.path
        target.assign(source)
    trainer.evaluate(output_dir=str(exported.root / "evaluation"), save_predictions=True)
    return exported.root / "evaluation" / "predictions"


def test_saved_model_equals_trainer_evaluation_on_the_validation_split(exported, trainer_predictions):
    from axial_tf.utils.visualization import decode_panoptic_rgb

    builder = data.get_builder("panoptic_shapes", data_dir=exported.config.data.data_dir, config="tiny")
    examples = list(data.read_split(builder, "validation").as_numpy_iterator())
    assert len(examples) == 8
    batch_size = exported.config.evaluation.batch_size  # the same batches as evaluation
    things = 0
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        images = np.stack([example[records.IMAGE_KEY] for example in chunk])  # [4, 64, 64, 3]
        served = exported.loaded.signatures["serving_default"](images=tf.constant(images))["panoptic_pred"].numpy()
        for example, panoptic in zip(chunk, served):
            stem = os.path.splitext(os.path.basename(example[records.FILE_NAME_KEY].decode()))[0]
            png = tf.io.decode_png((trainer_predictions / f"{stem}.png").read_bytes()).numpy()
            evaluated = decode_panoptic_rgb(png)  # at the padded model input size
            height, width = panoptic.shape
            np.testing.assert_array_equal(panoptic, evaluated[:height, :width], err_msg=stem)
            things += int(np.any((panoptic // 1000 >= 3) & (panoptic // 1000 <= 6) & (panoptic % 1000 > 0)))
    assert things > 0, "no thing instance predicted on the validation split"


def test_both_signatures_share_one_traced_model_graph(exported):
    module = task_for_config(exported.config).serving_module(exported.model)
    module.signatures()
    # The model (every scale and flip) is traced once for the two signatures, not once each.
    assert module._predict_and_restore_function.value.experimental_get_tracing_count() == 1


def test_export_info_describes_label_space_and_contract(exported):
    info = read_export_info(exported.dir)
    assert info["task"] == "panoptic"
    assert info["class_names"][3:] == ["disc", "box", "triangle", "ring"]
    assert info["thing_class_ids"] == [3, 4, 5, 6]
    assert (info["label_divisor"], info["void_label"]) == (1000, 255)
    assert info["input_size"] == list(CROP_SIZE)
    assert info["postprocessing"]["keep_k_centers"] == 6
    default = info["signatures"]["serving_default"]
    assert default["inputs"] == {"images": {"dtype": "uint8", "shape": [None, None, None, 3]}}
    assert default["outputs"]["semantic_probs"] == {"dtype": "float32", "shape": [None, None, None, 7]}
    assert info["signatures"]["serving_encoded"]["outputs"]["image_size"]["shape"] == [None, 2]
    assert (exported.dir / "assets.extra" / EXPORT_INFO_FILENAME).exists()


def test_served_model_refuses_bad_requests_before_decoding(exported):
    from test_serving_inputs import blank_png

    default, encoded = exported.loaded.signatures["serving_default"], exported.loaded.signatures["serving_encoded"]
    refused = [
        (default, {"images": tf.zeros([1, 33, 47, 1], tf.uint8)}, "images: expected uint8 [B, H, W, 3]"),
        (default, {"images": tf.zeros([0, 33, 47, 3], tf.uint8)}, "got shape [0 33 47 3]"),
        (default, {"images": tf.zeros([1, 4001, 4000, 3], tf.uint8)}, "over the limit of 16 megapixels per request"),
        (encoded, {"image_bytes": tf.constant(encode_png(exported.images["tall"]))},
         "image_bytes: expected string [B]"),
        (encoded, {"image_bytes": tf.constant([], tf.string)}, "got shape [0]"),
        (encoded, {"image_bytes": tf.constant([blank_png(8000, 8000)])},
         "image_bytes[0]: a 8000x8000 image decodes to 64 megapixels, over the limit of 16 megapixels per image"),
    ]
    for signature, inputs, message in refused:
        with pytest.raises(tf.errors.InvalidArgumentError) as raised:
            signature(**inputs)
        assert message in raised.value.message
    assert read_export_info(exported.dir)["max_megapixels"] == 16.0


def test_graph_ops_are_all_registered_in_a_fresh_process(exported, tmp_path):
    op_types = saved_model_op_types(exported.dir)
    assert {"Conv2D", "BatchMatMulV2", "TopKV2", "DecodeImage", "StatelessWhile"} <= set(op_types)
    (tmp_path / "ops.json").write_text(json.dumps(op_types))
    result = run_fresh_python(
        """
        import json
        import tensorflow  # registers every op the TensorFlow library ships
        from tensorflow.python.framework import op_def_registry
        ops = json.load(open("ops.json"))
        print(json.dumps({"missing": [op for op in ops if op_def_registry.get(op) is None],
                          "axial_tf_loaded": any(m.startswith("axial_tf") for m in sys.modules)}))
        """,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"missing": [], "axial_tf_loaded": False}


def test_fresh_process_without_axial_tf_runs_both_signatures(exported, tmp_path):
    np.save(tmp_path / "pair.npy", exported.images["pair"])
    mixed = [exported.images["pair"][0], exported.images["tall"], exported.images["exact"]]
    for index, image in enumerate(mixed):
        (tmp_path / f"{index}.png").write_bytes(encode_png(image))
    result = run_fresh_python(
        f"""
        import numpy as np
        import tensorflow as tf
        loaded = tf.saved_model.load({str(exported.dir)!r})
        default = loaded.signatures["serving_default"](images=tf.constant(np.load("pair.npy")))
        encoded = loaded.signatures["serving_encoded"](
            image_bytes=tf.constant([open(f"{{i}}.png", "rb").read() for i in range(3)]))
        np.savez("default.npz", **{{k: v.numpy() for k, v in default.items()}})
        np.savez("encoded.npz", **{{k: v.numpy() for k, v in encoded.items()}})
        assert not any(m.startswith("axial_tf") for m in sys.modules), "axial_tf was imported"
        """,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    default, encoded = np.load(tmp_path / "default.npz"), np.load(tmp_path / "encoded.npz")
    for index, expected in enumerate(exported.expected["pair"]):
        assert_outputs_equal({name: default[name][index] for name in PANOPTIC_OUTPUTS}, expected, "fresh default")
    for index, expected in enumerate(exported.expected["mixed"]):
        height, width = encoded["image_size"][index]
        actual = {name: encoded[name][index, :height, :width] for name in PANOPTIC_OUTPUTS}
        assert_outputs_equal(actual, expected, f"fresh encoded {index}")


def test_saved_model_cli_show_and_run(exported, tmp_path):
    cli = os.path.join(os.path.dirname(PYTHON), "saved_model_cli")
    shown = run_command([cli, "show", "--dir", exported.dir, "--all"])
    assert shown.returncode == 0, shown.stderr[-3000:]
    for text in ("signature_def['serving_default']", "signature_def['serving_encoded']", "DT_UINT8", "DT_STRING",
                 "'images'", "'image_bytes'", "'panoptic_pred'", "'image_size'", "(-1, -1, -1, 3)"):
        assert text in shown.stdout, f"{text} missing from saved_model_cli show --all"
    np.save(tmp_path / "pair.npy", exported.images["pair"])
    # `run` loads the SavedModel with the TF1 loader (as TF Serving's C++ loader does).
    ran = run_command([cli, "run", "--dir", exported.dir, "--tag_set", "serve", "--signature_def", "serving_default",
                       "--inputs", f"images={tmp_path / 'pair.npy'}", "--outdir", tmp_path / "out"])
    assert ran.returncode == 0, ran.stderr[-3000:]
    for index, expected in enumerate(exported.expected["pair"]):
        for name in ("panoptic_pred", "semantic_pred", "instance_pred"):
            np.testing.assert_array_equal(np.load(tmp_path / "out" / f"{name}.npy")[index], expected[name])


def test_tf_serving_predict_request_contract(exported):
    predict_pb2 = pytest.importorskip(
        "tensorflow_serving.apis.predict_pb2",
        reason="the TF Serving client contract test needs the optional tensorflow-serving-api package",
    )
    from tensorflow.python.saved_model import loader_impl

    signatures = loader_impl.parse_saved_model(str(exported.dir)).meta_graphs[0].signature_def
    requests = {
        "serving_default": ("images", tf.make_tensor_proto(exported.images["pair"])),
        "serving_encoded": ("image_bytes", tf.make_tensor_proto([encode_png(exported.images["tall"])])),
    }
    for signature_name, (input_name, tensor) in requests.items():
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "axial_deeplab"
        request.model_spec.signature_name = signature_name
        request.inputs[input_name].CopyFrom(tensor)
        request = predict_pb2.PredictRequest.FromString(request.SerializeToString())  # as sent on the wire
        signature = signatures[request.model_spec.signature_name]
        assert set(request.inputs) == set(signature.inputs)
        for name, proto in request.inputs.items():
            declared = signature.inputs[name]
            assert proto.dtype == declared.dtype
            declared_dims = [dim.size for dim in declared.tensor_shape.dim]
            sent_dims = [dim.size for dim in proto.tensor_shape.dim]
            assert len(sent_dims) == len(declared_dims)
            assert all(d == -1 or d == s for d, s in zip(declared_dims, sent_dims))
        # What the server does with the request: feed the decoded tensors to the signature by name.
        feeds = {name: tf.make_ndarray(proto) for name, proto in request.inputs.items()}
        outputs = exported.loaded.signatures[signature_name](**feeds)
        assert set(outputs) == set(signature.outputs)
        for name, value in outputs.items():
            assert value.dtype.as_datatype_enum == signature.outputs[name].dtype
    assert signatures["serving_default"].outputs["panoptic_pred"].dtype == tf.int32.as_datatype_enum


def test_load_model_errors_name_the_problem(tmp_path, exported):
    with pytest.raises(FileNotFoundError, match="no_such_run"):
        load_model(exported.config, model_dir=tmp_path / "no_such_run")
    with pytest.raises(ValueError, match="exactly one"):
        load_model(exported.config, model_dir=exported.root / "run", keras_model="x.keras")
    values = config_to_dict(exported.config)
    values["model"]["semantic_decoder"]["head_channels"] = 24
    with pytest.raises(ValueError, match="does not hold every variable"):
        load_model(config_from_dict(values), model_dir=exported.root / "run")
    with pytest.raises(FileExistsError, match="not empty"):
        export_model(exported.dir, config=exported.config, model_dir=exported.root / "run")


def test_keras_file_reloads_in_a_fresh_process_with_safe_mode(exported, tmp_path):
    path = tmp_path / "tiny.keras"
    exported.model.save(path)
    images = exported.images["pair"].astype(np.float32)
    np.save(tmp_path / "images.npy", images)
    expected = exported.model(images)
    code = textwrap.dedent(
        f"""
        import numpy as np, keras
        import axial_tf
        model = keras.models.load_model({str(path)!r}, safe_mode=True)
        outputs = model(np.load("images.npy"))
        np.savez("outputs.npz", **{{k: np.asarray(v) for k, v in outputs.items()}})
        print(type(model).__name__)
        """
    )
    result = run_command([PYTHON, "-c", code], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "AxialDeepLab"
    reloaded = np.load(tmp_path / "outputs.npz")
    for name, value in expected.items():
        np.testing.assert_array_equal(reloaded[name], np.asarray(value), err_msg=name)
