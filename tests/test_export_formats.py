"""ONNX, OpenVINO and LiteRT exports: parity with the serving signature, the loader, errors and atomic writes.

Parity: each format's outputs on the test images are compared with what the SavedModel's
`serving_default` computes (the serving module's own `serve_images`; tests/test_export.py checks
that the SavedModel returns exactly that): dense maps within 1e-4 of their scale (largest
magnitude), label maps identical. Models: a tiny Axial-DeepLab with multi-scale and flip
inference (the demo's kind of evaluation), the converted DeepLab2 fixture model, a tiny semantic
model and a tiny classifier.
"""

import collections
import json
import os
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import fixture_cases
from test_deeplab2_panoptic_parity import _converted, _options
from test_export import (
    CROP_SIZE,
    TINY_BACKBONE,
    calibrate_heads,
    run_command,
    tiny_panoptic_config,
    write_training_run,
)
from training_helpers import tool_command

from axial_tf.data.inference import InferencePreprocessor
from axial_tf.experiment.checkpoints import load_model
from axial_tf.experiment.config import config_from_dict, config_to_dict
from axial_tf.experiment.serving.classification import ClassificationServingModule
from axial_tf.experiment.serving.panoptic import PanopticServingModule
from axial_tf.experiment.serving.semantic import SemanticServingModule
from axial_tf.experiment.tasks import build_model, task_for_config
from axial_tf.export import (
    EXPORT_INFO_FILENAME,
    ConversionError,
    ExportedModel,
    ExportGraph,
    check_converted_output_dir,
    export_info,
    load_exported,
    write_converted,
    write_graph,
    write_saved_model,
)
from axial_tf.export import graphs
from axial_tf.export.formats import LITERT, ONNX, OPENVINO, import_package, layer_of_node
from axial_tf.layers import runtime_settings

FORMATS = ("onnx", "openvino", "litert")
DENSE_TOLERANCE = 1e-4  # relative to the largest magnitude of each output


def assert_serving_parity(actual, expected, context):
    """Label maps identical, float maps within DENSE_TOLERANCE of their scale; the same keys."""
    assert sorted(actual) == sorted(expected), context
    for name, value in expected.items():
        value = np.asarray(value)
        assert actual[name].shape == value.shape, f"{context}: {name}"
        if value.dtype.kind == "f":
            scale = float(np.abs(value).max())
            np.testing.assert_allclose(actual[name], value, rtol=0, atol=DENSE_TOLERANCE * scale,
                                       err_msg=f"{context}: {name}")
        else:
            np.testing.assert_array_equal(actual[name], value, err_msg=f"{context}: {name}")


def served(module, images):
    """`serving_default`'s outputs for uint8 images [B, H, W, 3], as NumPy."""
    return {name: value.numpy() for name, value in module.serve_images(tf.constant(images)).items()}


def random_images(seed, shape):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


# ----------------------------------------------------------------- cheap logic


def test_a_missing_package_is_one_line_naming_the_extra():
    with pytest.raises(ModuleNotFoundError) as raised:
        import_package("axial_tf_no_such_runtime", "onnxruntime", ONNX, "Running model.onnx")
    assert str(raised.value) == "Running model.onnx needs onnxruntime: pip install 'axial_tf[onnx]'"


def test_layer_of_a_node_drops_keras_retrace_suffixes():
    assert layer_of_node("axial_deep_lab_1/axial_deeplab_s_1/stage2_1/block1_1/attention_1/height_axis_1/while") == (
        "axial_deep_lab/axial_deeplab_s/stage2/block1/attention/height_axis")
    assert layer_of_node("UnsortedSegmentSum") == "no layer (pre- or post-processing)"


@pytest.mark.parametrize("sizes", [(33, 72), (72, 72), (72, 40), (5, 64), (1, 1)])
def test_label_gather_restores_as_the_preprocessor_restores(sizes):
    """The graphs' nearest-neighbour gather of label maps equals `InferencePreprocessor.restore`."""
    valid, original = sizes
    labels = random_images(3, (2, 72, 72)).astype(np.int32)
    meta = {"valid_size": tf.constant([valid, valid]), "original_size": tf.constant([original, original + 3])}
    rows = graphs._nearest_sources(meta["valid_size"][0], meta["original_size"][0])
    cols = graphs._nearest_sources(meta["valid_size"][1], meta["original_size"][1])
    gathered = graphs._gather_labels(tf.constant(labels), rows, cols).numpy()
    preprocessor = InferencePreprocessor(72, 72)
    for image in range(2):
        expected = preprocessor.restore(tf.constant(labels[image]), meta, kind="label").numpy()
        np.testing.assert_array_equal(gathered[image], expected)


def test_load_exported_says_what_it_got_and_what_it_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_exported(tmp_path / "missing.onnx")
    (tmp_path / "photo.png").write_bytes(b"\x89PNG")
    with pytest.raises(ValueError, match=r"photo.png is not an exported model; expected a \.onnx, OpenVINO \.xml"):
        load_exported(tmp_path / "photo.png")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "notes.txt").write_text("")
    with pytest.raises(ValueError, match="folder holding notes.txt: not an export; expected"):
        load_exported(tmp_path / "folder")
    (tmp_path / "bare").mkdir()
    (tmp_path / "bare" / "model.onnx").write_bytes(b"")
    with pytest.raises(ValueError, match="has no axial_tf_export.json beside it.*--format onnx"):
        load_exported(tmp_path / "bare")
    (tmp_path / "bare" / EXPORT_INFO_FILENAME).write_text(json.dumps({"format": "litert"}))
    with pytest.raises(ValueError, match="describes a 'litert' export, but .*model.onnx is ONNX"):
        load_exported(tmp_path / "bare" / "model.onnx")
    (tmp_path / "bare" / EXPORT_INFO_FILENAME).write_text(json.dumps({"format": "onnx"}))
    with pytest.raises(ValueError, match="ONNX runs in float32 only; precision='bfloat16' is offered for OpenVINO"):
        load_exported(tmp_path / "bare", precision="bfloat16")
    with pytest.raises(ValueError, match="precision must be one of float32, bfloat16, got 'float16'"):
        load_exported(tmp_path / "bare", precision="float16")


def test_overwrite_replaces_only_an_earlier_converted_export(tmp_path):
    check_converted_output_dir(tmp_path / "new")
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "model.onnx").write_bytes(b"")
    (tmp_path / "export" / EXPORT_INFO_FILENAME).write_text("{}")
    with pytest.raises(FileExistsError, match="not empty; pass overwrite=True"):
        check_converted_output_dir(tmp_path / "export")
    check_converted_output_dir(tmp_path / "export", overwrite=True)
    (tmp_path / "export" / "weights.h5").write_bytes(b"")
    with pytest.raises(FileExistsError, match=r"not an ONNX/OpenVINO/LiteRT export \(weights.h5\)"):
        check_converted_output_dir(tmp_path / "export", overwrite=True)


class _RecordingSession:
    """A runtime double: per image, its mean as `logits` and the argmax class; records the batches it ran."""

    def __init__(self):
        self.batches = []

    def run(self, images):
        self.batches.append(images.shape)
        logits = np.stack([images.mean(axis=(1, 2, 3)), -images.mean(axis=(1, 2, 3))], axis=-1).astype(np.float32)
        return {"classes": np.argmax(logits, axis=-1)[:, np.newaxis].astype(np.int32), "logits": logits}


def test_a_fixed_batch_graph_runs_any_batch_in_parts_and_names_classes():
    session = _RecordingSession()
    info = {"task": "classification", "class_names": ["cat", "dog"],
            "graph": {"batch_size": 2, "input_size": [4, 5], "host_step": "class_names"}}
    model = ExportedModel("model.tflite", "litert", info, session)
    images = random_images(1, (5, 4, 5, 3))
    outputs = model(images.astype(np.float32))
    assert session.batches == [(2, 4, 5, 3)] * 3  # the last part padded with its last image
    np.testing.assert_allclose(outputs["logits"][:, 0], images.mean(axis=(1, 2, 3)), rtol=1e-6)
    assert outputs["class_names"].shape == (5, 1) and outputs["class_names"][0, 0] in (b"cat", b"dog")
    with pytest.raises(ValueError, match=r"takes images of 4x5 \(fixed at export: --input_size\), got 4x6"):
        model(random_images(1, (1, 4, 6, 3)))
    with pytest.raises(ValueError, match=r"must be \[B, H, W, 3\]"):
        model(images[0])
    with pytest.raises(ValueError, match=r"values in \[0, 255\]"):
        model(np.full((1, 4, 5, 3), 300.0))


def _op_types(graph):
    """Counts of the op types of an `ExportGraph`."""
    return collections.Counter(op.type for op in graph.concrete_function.graph.get_operations())


_LOOP_OPS = {"While", "StatelessWhile", "TensorListReserve"}


@pytest.mark.full
def test_an_export_graph_of_any_batch_holds_no_loop_even_where_tensorflow_would_chunk(demo_module):
    """A loop (the attention's chunks, a per-image map) is a TensorList `While` that tf2onnx cannot convert."""
    module = demo_module.module
    # A chunk bound every attention of the demo model exceeds: TensorFlow would loop over chunks.
    with runtime_settings(max_chunk_logits=2**10):
        graph = graphs.export_graph(module, batch_size=None, host_postprocessing=True)  # ONNX's kind of graph
    assert graph.input_spec.shape.as_list() == [None, None, None, 3]
    assert not set(_op_types(graph)) & _LOOP_OPS, sorted(_op_types(graph))


# ----------------------------------------------------------------- converter errors (full)


def _graph_with_an_svd():
    """A tiny graph whose layer "odd_layer" uses Svd, which none of the converters takes."""

    @tf.function(input_signature=[tf.TensorSpec([1, 4, 4, 3], tf.uint8, name="images")])
    def function(images):
        values = tf.cast(images, tf.float32)
        with tf.name_scope("my_model"), tf.name_scope("odd_layer"):
            singular = tf.linalg.svd(values[0, :, :, 0], compute_uv=False)
        return {"logits": values[:, 0, 0] + tf.reduce_sum(singular)}

    function.get_concrete_function()
    return ExportGraph(function, batch_size=1, input_size=(4, 4))


@pytest.mark.full
@pytest.mark.parametrize("export_format", FORMATS)
def test_an_unconvertible_op_is_one_line_and_leaves_nothing(export_format, tmp_path):
    with pytest.raises(ConversionError) as raised:
        write_graph(_graph_with_an_svd(), tmp_path / "export", export_format, {"task": "classification"})
    message = str(raised.value)
    assert "\n" not in message
    assert "op Svd" in message and "layer my_model/odd_layer" in message, message
    assert os.listdir(tmp_path) == []  # no export, no staging folder


# ----------------------------------------------------------------- parity (full)


@pytest.fixture(scope="module")
def demo_module(tmp_path_factory):
    """A tiny Axial-DeepLab served with the demo's kind of evaluation (two scales and flips)."""
    settings = config_to_dict(tiny_panoptic_config(tmp_path_factory.mktemp("tfds")))
    settings["evaluation"].update(eval_scales=[1.0, 1.5], flip=True)
    config = config_from_dict(settings)
    keras.utils.set_random_seed(0)
    model = build_model(config, sync_batch_norm=False)
    calibrate_heads(model, random_images(0, (2, *CROP_SIZE, 3)))
    task = task_for_config(config)
    return types.SimpleNamespace(module=task.serving_module(model), info=task.info)


@pytest.mark.full
@pytest.mark.parametrize("export_format", FORMATS)
def test_demo_model_exports_match_the_serving_signature(demo_module, export_format, tmp_path):
    module = demo_module.module
    fixed = export_format == "litert"
    model = load_exported(write_converted(
        module, tmp_path / "export", export_format, info=demo_module.info, batch_size=None,
        input_size=(33, 47) if fixed else None,
    ))
    # LiteRT takes the post-processing's strided slices at a fixed batch only (the DeepLab2 case below):
    # with any batch it runs on the host, as for ONNX.
    host_step = "panoptic_postprocessing" if export_format in ("onnx", "litert") else None
    assert model.format == export_format and model.info["graph"]["host_step"] == host_step
    assert model.info["graph"]["batch_size"] is None  # any number of images per call
    batches = [random_images(7, (3, 33, 47, 3))]  # padded to the model input, three in one call
    if not fixed:
        batches.append(random_images(8, (1, 96, 40, 3)))  # shrunk
    for images in batches:
        assert_serving_parity(model(images), served(module, images), f"{export_format} {images.shape}")
    things = np.unique(served(module, batches[0])["panoptic_pred"] % 1000)
    assert len(things) > 2, "the test images should show several instances"


def _cpu_computes_bfloat16():
    """Whether OpenVINO's CPU plugin offers bfloat16 here (AVX512-BF16 or AMX)."""
    return "BF16" in import_package("openvino", "openvino", OPENVINO, "test").Core().get_property(
        "CPU", "OPTIMIZATION_CAPABILITIES")


@pytest.mark.full
def test_bfloat16_changes_only_the_model_it_was_asked_for(demo_module, tmp_path):
    module = demo_module.module
    write_saved_model(module, tmp_path / "saved_model", export_info(module, demo_module.info))
    write_converted(module, tmp_path / "openvino", "openvino", info=demo_module.info)
    images = random_images(7, (1, 33, 47, 3))
    expected = served(module, images)
    bfloat16_here = _cpu_computes_bfloat16()
    for export_format in ("saved_model", "openvino"):
        model = load_exported(tmp_path / export_format, threads=2, precision="bfloat16")
        assert model.precision == ("bfloat16" if bfloat16_here or export_format == "saved_model" else "float32")
        outputs = model(images)
        assert sorted(outputs) == sorted(expected)
        for name in ("semantic_probs", "center_heatmap"):  # bfloat16 round-off: 8 bits of mantissa
            np.testing.assert_allclose(outputs[name], expected[name], rtol=0, atol=0.2 * np.abs(expected[name]).max(),
                                       err_msg=f"{export_format} {name}")
        if bfloat16_here:
            assert np.abs(outputs["semantic_probs"] - expected["semantic_probs"]).max() > 1e-6, export_format
        # A float32 load in the same process afterwards is exact: the bfloat16 rewrite stayed with its model.
        assert_serving_parity(load_exported(tmp_path / export_format)(images), expected, f"{export_format} float32")


@pytest.fixture(scope="module")
def deeplab2_module():
    """The converted DeepLab2 Axial-DeepLab fixture, served at its 65x65 crop."""
    case = next(path.parent for path in fixture_cases("deeplab2/panoptic", "*/config.textproto"))
    config, model, _ = _converted(case)
    module = PanopticServingModule(model, _options(case, config), InferencePreprocessor(65, 65))
    info = types.SimpleNamespace(class_names=[f"class_{i}" for i in range(5)], category_ids=list(range(5)))
    return types.SimpleNamespace(module=module, info=info, image=np.load(case / "io.npz")["image"])


@pytest.mark.full
@pytest.mark.parametrize("export_format", FORMATS)
def test_deeplab2_fixture_exports_match_the_serving_signature(deeplab2_module, export_format, tmp_path):
    module = deeplab2_module.module
    assert module.postprocess_options.instance_numbering == "by_first_appearance"  # DeepLab2's TF merge
    model = load_exported(write_converted(module, tmp_path / "export", export_format, info=deeplab2_module.info))
    assert model.info["graph"]["batch_size"] == 1  # the default
    # OpenVINO has no UnsortedSegmentMin, which that numbering takes: its post-processing moves to the host.
    on_host = export_format in ("onnx", "openvino")
    assert model.info["graph"]["host_step"] == ("panoptic_postprocessing" if on_host else None)
    if export_format == "openvino":
        assert "op UnsortedSegmentMin" in model.info["host_postprocessing_because"]
    image = deeplab2_module.image
    batches = [image[np.newaxis]]  # DeepLab2's own test image, at the input size
    if export_format != "litert":
        # The same scene at 50x80 (the pre-processing shrinks it to 41x65). The converters' bilinear
        # resizes round differently from TensorFlow's (up to 2e-3 of 255 on a pixel); on noise
        # images this model turns that into 1.3e-4 in the class probabilities, on scenes 10x less.
        stretched = tf.image.resize(image, (50, 80), method="bilinear")
        batches.append(tf.cast(tf.round(stretched), tf.uint8).numpy()[np.newaxis])
    for images in batches:
        assert_serving_parity(model(images), served(module, images), f"{export_format} {images.shape}")


@pytest.mark.full
def test_semantic_model_exports_to_litert(tmp_path):
    from axial_tf.models import AxialSemanticDeepLab

    keras.utils.set_random_seed(1)
    model = AxialSemanticDeepLab("axial_deeplab_s", num_classes=5, backbone_overrides=TINY_BACKBONE,
                                 semantic_decoder={"aspp_channels": 8, "decoder_channels": 8,
                                                   "low_level_channels": [8, 8], "head_channels": 8})
    module = SemanticServingModule(model, InferencePreprocessor(48, 40), void_label=255)
    info = types.SimpleNamespace(class_names=[str(i) for i in range(5)], category_ids=list(range(5)))
    exported = load_exported(write_converted(module, tmp_path / "export", "litert", info=info,
                                             input_size=(30, 50)))
    images = random_images(2, (2, 30, 50, 3))
    assert_serving_parity(exported(images), served(module, images), "semantic litert")


# The classifier's graph has no post-processing: LiteRT (its fixed-size path) in CI, the other two
# formats in the slow tier (their converters are checked on the panoptic graphs above).
@pytest.mark.full
@pytest.mark.parametrize("export_format", [
    "litert", pytest.param("onnx", marks=pytest.mark.slow), pytest.param("openvino", marks=pytest.mark.slow)])
def test_classifier_exports_match_the_serving_signature(export_format, tmp_path):
    from axial_tf.models.classifier import AxialResNetClassifier

    keras.utils.set_random_seed(2)
    model = AxialResNetClassifier("axial_resnet_s", num_classes=6,
                                  backbone_overrides={**TINY_BACKBONE, "output_stride": 32})
    module = ClassificationServingModule(model, image_size=32, top_k=3)
    exported = load_exported(write_converted(module, tmp_path / "export", export_format,
                                             input_size=(40, 52) if export_format == "litert" else None))
    images = random_images(4, (2, 40, 52, 3))
    assert_serving_parity(exported(images), served(module, images), f"classifier {export_format}")


@pytest.mark.full
def test_export_tool_writes_an_onnx_folder_that_the_loader_runs(tmp_path):
    config = tiny_panoptic_config(tmp_path / "tfds")
    write_training_run(tmp_path / "run", config)
    output = tmp_path / "exports" / "demo_onnx"
    result = run_command(tool_command("export", "--model_dir", tmp_path / "run", "--format", "onnx",
                                      "--batch_size", 2, "--output", output))
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Wrote onnx export {output}" in result.stdout
    assert "completed on the host (load_exported): panoptic_postprocessing" in result.stdout
    assert sorted(os.listdir(output)) == [EXPORT_INFO_FILENAME, "model.onnx"]
    model = load_exported(output / "model.onnx")
    module = task_for_config(config).serving_module(load_model(config, model_dir=tmp_path / "run"))
    images = random_images(5, (3, 40, 30, 3))
    assert_serving_parity(model(images), served(module, images), "tool onnx")

    # tools/predict.py --model runs the ONNX export: the same files as from the checkpoint.
    import PIL.Image

    (tmp_path / "photos").mkdir()
    for index, image in enumerate(random_images(6, (2, 40, 30, 3))):
        PIL.Image.fromarray(image).save(tmp_path / "photos" / f"scene{index}.png")
    for source in (("--model", output / "model.onnx"), ("--model_dir", tmp_path / "run")):
        result = run_command(tool_command("predict", *source, "--input", tmp_path / "photos",
                                          "--output", tmp_path / source[0].strip("-"), "--overlay"))
        assert result.returncode == 0, result.stderr[-3000:]
    written = sorted(os.listdir(tmp_path / "model"))
    assert written == sorted(os.listdir(tmp_path / "model_dir")) and len(written) == 6
    for name in written:
        assert (tmp_path / "model" / name).read_bytes() == (tmp_path / "model_dir" / name).read_bytes(), name

    again = run_command(tool_command("export", "--model_dir", tmp_path / "run", "--format", "litert",
                                     "--output", output))
    assert again.returncode != 0 and again.stderr.strip().splitlines()[-1] == (
        f"error: Export folder {output} is not empty; pass overwrite=True (--overwrite).")
    assert LITERT.model_file not in os.listdir(output)
