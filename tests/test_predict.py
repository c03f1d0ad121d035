"""Prediction: visualisation helpers, the Predictor (SavedModel vs checkpoint), tools/predict.py, classification."""

import types

import numpy as np
import pytest
import tensorflow as tf

from test_export import (
    TINY_BACKBONE,
    run_command,
    tiny_panoptic_config,
    write_training_run,
)
from test_export_target import assert_one_line_error
from test_serving_inputs import blank_png, encode_with_pil
from training_helpers import tool_command

from axial_tf.data.inference import classification_eval_image
from axial_tf.export import (
    DOWNSCALE_MAX_FACTOR,
    ImageTooLargeError,
    Predictor,
    convert_classifier_to_tflite,
    export_model,
    list_images,
    fitted_size,
    output_stems,
    read_downscaled_image_file,
    read_image_file,
    run_tflite_classifier,
)
from axial_tf.experiment.serving.classification import classification_record
from axial_tf.experiment.serving.panoptic import write_panoptic_prediction
from axial_tf.utils import visualization

# ----------------------------------------------------------------- visualisation


def test_panoptic_rgb_encoding_round_trips_void_and_large_ids():
    panoptic = np.array([[0, 1000, 6003], [255000, 65535 + 1, 2**24 - 1]], np.int32)
    encoded = visualization.encode_panoptic_rgb(panoptic)
    assert encoded.dtype == np.uint8 and encoded.shape == (2, 3, 3)
    np.testing.assert_array_equal(encoded[1, 0], [255000 % 256, 255000 // 256 % 256, 255000 // 65536])
    np.testing.assert_array_equal(visualization.decode_panoptic_rgb(encoded), panoptic)
    with pytest.raises(ValueError, match="RGB encoding"):
        visualization.encode_panoptic_rgb(np.array([[2**24]]))


def test_class_colours_are_stable_distinct_and_cityscapes_aware():
    palette = visualization.class_palette(7)
    np.testing.assert_array_equal(palette, visualization.class_palette(7))
    assert len({tuple(c) for c in palette}) == 7
    assert not np.any(np.all(palette == 0, axis=1)), "black is reserved for void"
    np.testing.assert_array_equal(visualization.label_colormap(4), [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0]])
    cityscapes = visualization.class_palette(19, visualization.CITYSCAPES_CLASS_NAMES)
    np.testing.assert_array_equal(cityscapes[13], [0, 0, 142])  # car


def test_colorize_shades_instances_and_blacks_out_void():
    palette = visualization.class_palette(7)
    panoptic = np.array([[1000, 3001, 3002, 255000]])
    colours = visualization.colorize_panoptic(panoptic, 1000, palette)
    np.testing.assert_array_equal(colours[0, 0], palette[1])
    assert not np.array_equal(colours[0, 1], colours[0, 2]), "two instances of a class share a colour"
    np.testing.assert_array_equal(colours[0, 3], visualization.VOID_COLOR)


def test_overlay_outlines_instances_only():
    panoptic = np.full((8, 8), 1000)  # stuff
    panoptic[2:6, 2:6] = 3001  # one thing instance
    image = np.full((8, 8, 3), 100, np.uint8)
    overlay = visualization.overlay_panoptic(image, panoptic, 1000, visualization.class_palette(7), alpha=0.5)
    white = np.all(overlay == 255, axis=-1)
    expected = np.zeros((8, 8), bool)
    expected[2:6, 2:6] = True
    expected[3:5, 3:5] = False  # the instance's inner pixels are filled, not outlined
    np.testing.assert_array_equal(white, expected)
    stuff_colour = np.round(0.5 * 100 + 0.5 * visualization.class_palette(7)[1].astype(float))
    np.testing.assert_array_equal(overlay[0, 0], stuff_colour)
    with pytest.raises(ValueError, match="size"):
        visualization.overlay_panoptic(image[:4], panoptic, 1000, visualization.class_palette(7))


def test_segment_boundaries_marks_both_sides():
    labels = np.array([[1, 1, 2], [1, 1, 2]])
    np.testing.assert_array_equal(visualization.segment_boundaries(labels), [[0, 1, 1], [0, 1, 1]])


# ---------------------------------------------------------------- image files


def test_unreadable_image_errors_name_the_file(tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    with pytest.raises(ValueError, match="broken.png"):
        read_image_file(broken)
    with pytest.raises(ValueError, match="missing.jpg"):
        read_image_file(tmp_path / "missing.jpg")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(FileNotFoundError, match="No image files"):
        list_images(tmp_path / "empty_dir")


def test_an_image_over_the_limit_is_refused_from_its_header(tmp_path):
    path = tmp_path / "huge.png"
    path.write_bytes(blank_png(8000, 8000))  # 64 megapixels in ~60 KB
    with pytest.raises(ImageTooLargeError, match="huge.png is 8000x8000 \\(64 megapixels to decode\\), over the limit "
                       "of 16 megapixels .*--downscale") as raised:
        read_image_file(path)
    assert raised.value.size == (8000, 8000)
    assert read_image_file(path, max_megapixels=64).shape == (8000, 8000, 3)


def test_downscaling_keeps_the_picture_and_its_aspect_ratio(tmp_path):
    gradient = np.broadcast_to(np.linspace(0, 255, 2000, dtype=np.uint8)[np.newaxis, :, np.newaxis], (1000, 2000, 3))
    path = tmp_path / "wide.jpg"
    path.write_bytes(encode_with_pil(np.ascontiguousarray(gradient), "JPEG", quality=95))
    image = read_downscaled_image_file(path, max_megapixels=0.5)
    assert image.shape == (500, 1000, 3) and image.dtype == np.uint8
    np.testing.assert_allclose(image[250].mean(axis=-1), gradient[500, 1::2, 0], atol=4)
    small = tmp_path / "small.png"
    small.write_bytes(encode_with_pil(gradient[:20, :30].copy(), "PNG"))
    np.testing.assert_array_equal(read_downscaled_image_file(small, max_megapixels=0.5), gradient[:20, :30])
    with pytest.raises(ImageTooLargeError, match=f"over {DOWNSCALE_MAX_FACTOR} times the limit"):
        read_downscaled_image_file(path, max_megapixels=2.0 / DOWNSCALE_MAX_FACTOR / 2)


def test_fitted_size_stays_within_the_limit():
    assert fitted_size((1000, 2000), 500_000) == (500, 1000)
    assert fitted_size((33, 47), 1000) == (26, 37)
    assert fitted_size((10, 10), 1000) == (10, 10)  # never enlarged
    assert fitted_size((1, 100_000), 1000) == (1, 1000)
    assert fitted_size((100_000, 1), 1000) == (1000, 1)
    for size, limit in (((8000, 6000), 16_000_000), ((4001, 3999), 12_000_000), ((7, 3), 5)):
        height, width = fitted_size(size, limit)
        assert height * width <= limit


def test_output_stems_stay_distinct():
    assert output_stems(["a/x.png", "a/y.jpg"]) == ["x", "y"]
    assert output_stems(["a/x.png", "a/x.jpg"]) == ["x_png", "x_jpg"]


# --------------------------------------------------------------------- panoptic


@pytest.fixture(scope="module")
def panoptic(tmp_path_factory):
    """A tiny training run, its export, and input images of different sizes (PNG and JPEG)."""
    root = tmp_path_factory.mktemp("predict")
    config = tiny_panoptic_config(root / "tfds")
    write_training_run(root / "run", config, seed=1)
    _, export_dir = export_model(root / "exports", config=config, model_dir=root / "run")
    assert export_dir == str(root / "exports" / "1")  # a serving base folder gets its first version
    rng = np.random.default_rng(3)
    images = root / "images"
    images.mkdir()
    (images / "a.png").write_bytes(tf.io.encode_png(rng.integers(0, 256, (33, 47, 3), dtype=np.uint8)).numpy())
    (images / "b.jpg").write_bytes(tf.io.encode_jpeg(rng.integers(0, 256, (50, 30, 3), dtype=np.uint8)).numpy())
    (images / "notes.txt").write_text("not an image")
    return types.SimpleNamespace(
        root=root, config=config, export=root / "exports", images=images,
        predictor=Predictor.from_saved_model(root / "exports"),  # its highest version, as TF Serving
    )


@pytest.mark.full
def test_saved_model_and_checkpoint_predictions_are_identical(panoptic):
    from_export = panoptic.predictor
    from_checkpoint = Predictor.from_experiment(panoptic.config, model_dir=panoptic.root / "run")
    assert from_export.info["label_divisor"] == from_checkpoint.info["label_divisor"] == 1000
    assert from_export.info["class_names"] == from_checkpoint.info["class_names"]
    for path in list_images(panoptic.images):
        image = read_image_file(path)
        exported, live = from_export(image), from_checkpoint(image)
        assert exported["panoptic_pred"].shape == image.shape[:2]
        for name in ("panoptic_pred", "semantic_pred", "instance_pred", "semantic_probs", "offset_map"):
            np.testing.assert_array_equal(exported[name], live[name], err_msg=f"{path}: {name}")


@pytest.mark.full
def test_write_panoptic_prediction_png_and_npy(panoptic, tmp_path):
    predictor = panoptic.predictor
    image = read_image_file(panoptic.images / "a.png")
    outputs = predictor(image)
    png_files = write_panoptic_prediction(outputs, image, str(tmp_path / "a"), predictor.info, overlay=True)
    npy_files = write_panoptic_prediction(outputs, image, str(tmp_path / "a"), predictor.info, file_format="npy")
    assert [p.rsplit("/", 1)[-1] for p in png_files + npy_files] == [
        "a_panoptic.png", "a_semantic.png", "a_overlay.png", "a_panoptic.npy", "a_semantic.npy"]
    decoded = visualization.decode_panoptic_rgb(tf.io.decode_png((tmp_path / "a_panoptic.png").read_bytes()).numpy())
    np.testing.assert_array_equal(decoded, outputs["panoptic_pred"])
    np.testing.assert_array_equal(np.load(tmp_path / "a_panoptic.npy"), outputs["panoptic_pred"])
    semantic = tf.io.decode_png((tmp_path / "a_semantic.png").read_bytes()).numpy()[..., 0]
    np.testing.assert_array_equal(semantic, outputs["semantic_pred"])
    assert tf.io.decode_png((tmp_path / "a_overlay.png").read_bytes()).shape == (33, 47, 3)


@pytest.mark.full
def test_predict_tool_on_a_folder_with_an_unreadable_file(panoptic, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for name in ("a.png", "b.jpg"):
        (images / name).write_bytes((panoptic.images / name).read_bytes())
    (images / "c_broken.png").write_bytes(b"\x89PNG truncated")
    output = tmp_path / "out"
    result = run_command(tool_command(
        "predict", "--saved_model", panoptic.export, "--input", images, "--output", output, "--overlay",
        "--skip_unreadable"))
    assert result.returncode == 1, result.stderr[-3000:]
    assert "c_broken.png" in result.stderr
    assert "Wrote predictions of 2 image(s)" in result.stdout
    assert sorted(p.name for p in output.iterdir()) == [
        "a_overlay.png", "a_panoptic.png", "a_semantic.png", "b_overlay.png", "b_panoptic.png", "b_semantic.png"]
    expected = panoptic.predictor(read_image_file(images / "b.jpg"))["panoptic_pred"]
    written = visualization.decode_panoptic_rgb(tf.io.decode_png((output / "b_panoptic.png").read_bytes()).numpy())
    np.testing.assert_array_equal(written, expected)


@pytest.mark.full
def test_predict_tool_refuses_or_downscales_images_over_the_limit(panoptic, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    (images / "a.png").write_bytes((panoptic.images / "a.png").read_bytes())  # 33x47
    command = ["predict", "--saved_model", panoptic.export, "--input", images, "--max_megapixels", 0.001]
    refused = run_command(tool_command(*command, "--output", tmp_path / "refused"))
    assert_one_line_error(refused, "a.png is 33x47", "over the limit of 0.001 megapixels", "--downscale")
    downscaled = run_command(tool_command(*command, "--output", tmp_path / "out", "--downscale"))
    assert downscaled.returncode == 0, downscaled.stderr[-3000:]
    assert "a.png (33x47) predicted at 26x37 (--downscale)" in downscaled.stdout
    panoptic_png = tf.io.decode_png((tmp_path / "out" / "a_panoptic.png").read_bytes())
    assert panoptic_png.shape[:2] == (26, 37)


@pytest.mark.full
def test_predict_tool_limit_cannot_exceed_the_exported_one(panoptic, tmp_path):
    result = run_command(tool_command(
        "predict", "--saved_model", panoptic.export, "--input", panoptic.images, "--output", tmp_path / "out",
        "--max_megapixels", 50))
    assert_one_line_error(result, "--max_megapixels 50 is over the limit of 16 megapixels", "re-export")


@pytest.mark.full
def test_predict_tool_names_a_missing_model_dir_and_an_unwritable_output(panoptic, tmp_path):
    missing = run_command(tool_command(
        "predict", "--model_dir", tmp_path / "no_such_run", "--input", panoptic.images, "--output", tmp_path / "o"))
    assert_one_line_error(missing, "--model_dir", "no_such_run", "does not exist")
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    unwritable = run_command(tool_command(
        "predict", "--saved_model", panoptic.export, "--input", panoptic.images, "--output", blocker / "out"))
    assert_one_line_error(unwritable, "Cannot write to output folder", str(blocker))


# --------------------------------------------------------------- classification


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    from axial_tf.models.classifier import AxialResNetClassifier

    root = tmp_path_factory.mktemp("classifier")
    model = AxialResNetClassifier(
        "axial_resnet_s", num_classes=6, backbone_overrides={**TINY_BACKBONE, "output_stride": 32}
    )
    model.save(root / "classifier.keras")
    return types.SimpleNamespace(root=root, model=model, path=root / "classifier.keras")


@pytest.mark.full
def test_classification_export_top_k_matches_the_evaluation_path(classifier):
    result = run_command(tool_command(
        "export", "--keras_model", classifier.path, "--image_size", 32, "--top_k", 3,
        "--output", classifier.root / "export"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Wrote SavedModel {classifier.root / 'export' / '1'} " in result.stdout
    predictor = Predictor.from_saved_model(classifier.root / "export")
    assert predictor.info["task"] == "classification" and predictor.info["image_size"] == 32
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, (40, 52, 3), dtype=np.uint8)
    outputs = predictor(image)
    logits = classifier.model(classification_eval_image(image, 32)[tf.newaxis], training=False).numpy()[0]
    np.testing.assert_allclose(outputs["logits"], logits, atol=1e-5)
    np.testing.assert_array_equal(outputs["classes"], np.argsort(-logits, kind="stable")[:3])
    assert np.all(np.diff(outputs["probabilities"]) <= 0)
    record = classification_record(outputs, "x.png")
    assert record["class_names"] == [str(c) for c in record["classes"]]
    loaded = tf.saved_model.load(str(classifier.root / "export" / "1"))
    encoded = [tf.io.encode_png(image).numpy(), tf.io.encode_png(image[:20, :30]).numpy()]
    batch = loaded.signatures["serving_encoded"](image_bytes=tf.constant(encoded))
    np.testing.assert_array_equal(batch["classes"][0], outputs["classes"])
    assert batch["class_names"].shape == (2, 3)


@pytest.mark.full
def test_tflite_classifier_matches_keras(classifier):
    flatbuffer = convert_classifier_to_tflite(classifier.model, 32, top_k=3)
    images = np.random.default_rng(6).uniform(0, 255, (1, 32, 32, 3)).astype(np.float32)
    outputs = run_tflite_classifier(flatbuffer, images)
    logits = classifier.model(images, training=False).numpy()
    np.testing.assert_allclose(outputs["logits"], logits, atol=1e-4)
    np.testing.assert_array_equal(outputs["classes"][0], np.argsort(-logits[0], kind="stable")[:3])


@pytest.mark.full
def test_panoptic_keras_model_without_config_is_a_clear_error(panoptic, tmp_path):
    from axial_tf.experiment.checkpoints import load_model
    from axial_tf.export import build_serving_module

    model = load_model(panoptic.config, model_dir=panoptic.root / "run")
    model.save(tmp_path / "panoptic.keras")
    with pytest.raises(ValueError, match="needs its experiment config"):
        build_serving_module(keras_model=tmp_path / "panoptic.keras")
