"""PyTorch reference (csrhddlam/axial-deeplab) weights load into our layers and give its outputs.

Every case in fixtures/pytorch_axial/ is discovered; its json says which reference
class produced it: a single-axis `AxialAttention` module, or a whole `AxialAttentionNet`.
"""

import json
import sys

import numpy as np
import pytest

import keras
from conftest import fixture_cases
from axial_tf.checkpoints.pytorch_converter import (
    axial_attention_from_pytorch,
    convert_pytorch_state_dict,
    load_state_dict,
)
from axial_tf.models.classifier import IMAGENET_MEAN_RGB, IMAGENET_STDDEV_RGB

CASES = fixture_cases("pytorch_axial", "*.json")
ATOL = 1e-4


def _reference_class(meta):
    """'AxialAttention' or 'AxialAttentionNet' from e.g. '...axialnet.py:AxialAttentionNet(AxialBlock, ...)'."""
    return meta["reference"].rsplit(":", 1)[-1].split("(")[0]


def _cases_of(reference_class):
    return [case for case in CASES if _reference_class(json.loads(case.read_text())) == reference_class]


def _nhwc(nchw):
    return np.transpose(nchw, (0, 2, 3, 1))


def _nchw(nhwc):
    return np.transpose(np.asarray(nhwc), (0, 3, 1, 2))


def _apply_along_axis(layer, images, width, stride, training):
    """Runs a 1-D layer as the reference module does: along W (width) or H, then an avg pool."""
    batch, height, width_size, channels = images.shape
    if width:
        sequences = images.reshape(batch * height, width_size, channels)  # [B*H, W, C]
        outputs = keras.ops.reshape(layer(sequences, training=training), (batch, height, width_size, -1))
    else:
        sequences = np.transpose(images, (0, 2, 1, 3)).reshape(batch * width_size, height, channels)  # [B*W, H, C]
        outputs = keras.ops.reshape(layer(sequences, training=training), (batch, width_size, height, -1))
        outputs = keras.ops.transpose(outputs, (0, 2, 1, 3))
    if stride > 1:
        outputs = keras.ops.average_pool(outputs, stride, stride, padding="valid")
    return outputs  # [B, H', W', C]


def test_every_fixture_case_has_a_converter():
    known = {"AxialAttention", "AxialAttentionNet"}
    unknown = {case.name: _reference_class(json.loads(case.read_text())) for case in CASES}
    assert {name: cls for name, cls in unknown.items() if cls not in known} == {}


@pytest.mark.parametrize("case", _cases_of("AxialAttention"), ids=lambda case: case.stem)
def test_axial_attention_module_matches_reference(case):
    meta = json.loads(case.read_text())
    arrays = np.load(case.with_suffix(".npz"))
    kwargs = meta["constructor_kwargs"]
    layer = axial_attention_from_pytorch(case.with_suffix(".npz"))
    assert layer.num_heads == kwargs["groups"]
    assert layer.total_value_depth == kwargs["out_planes"]
    images = _nhwc(arrays["input"])
    attended_length = images.shape[2] if kwargs["width"] else images.shape[1]
    assert attended_length == kwargs["kernel_size"]

    # Same order as the fixture: eval first, then one training call (which updates BN statistics).
    for mode, training in (("output_eval", False), ("output_train", True)):
        outputs = _nchw(_apply_along_axis(layer, images, kwargs["width"], kwargs["stride"], training))
        assert outputs.shape == tuple(meta["output_shape"])
        np.testing.assert_allclose(outputs, arrays[mode], atol=ATOL, rtol=0, err_msg=mode)
    _assert_running_means_updated_like_reference(layer, arrays, axial_attention_from_pytorch)


def _assert_running_means_updated_like_reference(model, arrays, rebuild):
    """BN momentum 0.1 (PyTorch) must have become 0.9 (Keras): compare the updated running means.

    `rebuild` converts the state dict with the reference's updated BN buffers.
    Running variances are not compared: PyTorch updates them with the unbiased
    batch variance, Keras with the biased one. A wrong momentum would be off by
    ~0.1 * (batch mean - old mean), far above the tolerance.
    """
    state = {key[len("sd/"):]: arrays[key] for key in arrays.files if key.startswith("sd/")}
    updated = {key[len("updated/"):]: arrays[key] for key in arrays.files if key.startswith("updated/")}
    expected = rebuild({**state, **updated})
    compared = 0
    for ours, theirs in zip(model.weights, expected.weights, strict=True):
        if ours.path.endswith("moving_mean"):
            np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), atol=ATOL, rtol=0, err_msg=ours.path)
            compared += 1
    assert compared > 0


def _imagenet_denormalise(images):
    """The fixture input is normalised; our converted model takes [0, 255] images."""
    return ((images * np.array(IMAGENET_STDDEV_RGB) + np.array(IMAGENET_MEAN_RGB)) * 255.0).astype("float32")


def _net_outputs(case):
    """Converted network (settings inferred from the state dict) and its res5/pooled/logits per mode."""
    arrays = np.load(case.with_suffix(".npz"))
    model = convert_pytorch_state_dict(case.with_suffix(".npz"))
    pooled = model.get_layer("pooled")
    probe = keras.Model(model.input, [pooled.input, pooled.output, model.output])
    images = _imagenet_denormalise(_nhwc(arrays["input"]))
    results = {}
    for mode in ("eval", "train"):  # as the fixture: a training call updates the BN statistics
        res5, pooled_features, logits = probe(images, training=mode == "train")
        results[mode] = (_nchw(res5), np.asarray(pooled_features), np.asarray(logits))
    return model, arrays, results


@pytest.mark.parametrize("case", _cases_of("AxialAttentionNet"), ids=lambda case: case.stem)
def test_axial_attention_net_matches_reference(case):
    meta = json.loads(case.read_text())
    kwargs = meta["constructor_kwargs"]
    model, arrays, results = _net_outputs(case)

    config = model.backbone.backbone_config
    assert config["num_blocks"] == list(kwargs["layers"])
    assert config["attention"]["num_heads"] == kwargs["groups"]
    assert config["stage_filters"][1:] == [int(base * kwargs["s"]) for base in (128, 256, 512, 1024)]
    assert model.num_classes == kwargs["num_classes"]

    res5, pooled, logits = results["eval"]
    np.testing.assert_allclose(logits, arrays["output_eval"], atol=ATOL, rtol=0)
    np.testing.assert_allclose(pooled, arrays["pooled_eval"], atol=ATOL, rtol=0)
    # layer4 reaches |x| ~ 50 and the stored tensor itself carries up to 1.0e-4 of PyTorch
    # float32 round-off (a float64 PyTorch run differs from it by that much), so it is
    # compared relative to its scale.
    layer4 = arrays["layer4_eval"]
    assert res5.shape == layer4.shape
    assert np.abs(res5 - layer4).max() <= 1e-5 * np.abs(layer4).max()
    np.testing.assert_allclose(results["train"][2], arrays["output_train"], atol=ATOL, rtol=0)
    _assert_running_means_updated_like_reference(model, arrays, convert_pytorch_state_dict)


# ---------------------------------------------------------------- conversion rules and errors


def _layer_state(case_name="axial_attention_h_s1"):
    return load_state_dict(fixture_cases("pytorch_axial", f"{case_name}.npz")[0])


def test_relative_tables_extend_with_edge_rows():
    """Offsets past the reference's K - 1 reuse the edge rows, so long inputs clip offsets."""
    state = _layer_state()
    kernel = (state["relative"].shape[1] + 1) // 2
    layer = axial_attention_from_pytorch(state)
    centre = layer.query_rpe.max_span - 1
    beyond = centre - kernel + 1  # rows past the reference's offsets on each side
    for rpe in (layer.query_rpe, layer.key_rpe, layer.value_rpe):
        table = np.asarray(rpe.embeddings)
        np.testing.assert_array_equal(table[centre + kernel:], np.repeat(table[None, centre + kernel - 1], beyond, 0))
        np.testing.assert_array_equal(table[:beyond], np.repeat(table[None, beyond], beyond, 0))
    # Sign conventions: our row centre + d is offset d = key - query; the reference reads
    # column K-1-d for queries/values and K-1+d for keys.
    half, group_planes = layer.key_depth_per_head, layer.value_depth_per_head
    relative = state["relative"]
    row = centre + 2
    np.testing.assert_array_equal(np.asarray(layer.query_rpe.embeddings)[row], relative[:half, kernel - 3])
    np.testing.assert_array_equal(np.asarray(layer.key_rpe.embeddings)[row], relative[half:group_planes, kernel + 1])
    np.testing.assert_array_equal(np.asarray(layer.value_rpe.embeddings)[row], relative[group_planes:, kernel - 3])


def test_layer_converter_reads_a_module_inside_a_network():
    case = _cases_of("AxialAttentionNet")[0]
    state = load_state_dict(case.with_suffix(".npz"))
    network = convert_pytorch_state_dict(state)
    layer = axial_attention_from_pytorch(state, prefix="layer2.0.width_block")
    ours = network.backbone.stages[1].blocks[0].attention_layer.width_axis
    for mine, theirs in zip(layer.weights, ours.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(mine), np.asarray(theirs))


def test_converted_layer_runs_on_longer_sequences():
    layer = axial_attention_from_pytorch(_layer_state())
    outputs = layer(np.random.default_rng(0).normal(size=(2, 23, 16)).astype("float32"))
    assert outputs.shape == (2, 23, 16) and np.isfinite(np.asarray(outputs)).all()


def test_missing_unknown_and_misshaped_keys_are_named():
    state = _layer_state()
    without = {key: value for key, value in state.items() if key != "bn_output.bias"}
    with pytest.raises(ValueError, match=r"missing key\(s\): \['bn_output.bias'\]"):
        axial_attention_from_pytorch(without)
    with pytest.raises(ValueError, match=r"unknown key\(s\).*extra\.weight"):
        axial_attention_from_pytorch({**state, "extra.weight": np.zeros(3)})
    with pytest.warns(UserWarning, match=r"extra\.weight"):
        axial_attention_from_pytorch({**state, "extra.weight": np.zeros(3)}, strict=False)
    bad = dict(state, **{"bn_similarity.bias": np.zeros(5, "float32")})
    with pytest.raises(ValueError, match=r"bn_similarity\.bias: shape \[5\], expected \[6\]"):
        axial_attention_from_pytorch(bad)
    with pytest.raises(ValueError, match=r"flatten_index is not the index grid"):
        axial_attention_from_pytorch(dict(state, flatten_index=state["flatten_index"][::-1].copy()))


def test_architecture_mismatch_lists_the_keys():
    case = _cases_of("AxialAttentionNet")[0]
    state = load_state_dict(case.with_suffix(".npz"))
    layers = json.loads(case.read_text())["constructor_kwargs"]["layers"]
    deeper = [*layers[:3], layers[3] + 1]
    with pytest.raises(ValueError, match=rf"missing key\(s\): \[.*'layer4\.{layers[3]}\.conv_down\.weight'"):
        convert_pytorch_state_dict(state, layers=deeper)
    with pytest.raises(ValueError, match="Unknown reference model"):
        convert_pytorch_state_dict(state, model_name="axial99")


def test_reading_pth_without_torch_says_how_to_install(tmp_path, monkeypatch):
    path = tmp_path / "axial26s.pth"
    path.write_bytes(b"not read")
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` fail
    with pytest.raises(ImportError, match=r"pip install axial_tf\[torch\]"):
        load_state_dict(path)


def test_reads_a_pth_saved_by_the_reference_trainer(tmp_path):
    """The reference trains under nn.DataParallel: keys start with `module.`, wrapped in a dict."""
    torch = pytest.importorskip("torch")
    state = _layer_state()
    path = tmp_path / "checkpoint.pth.tar"
    wrapped = {f"module.{key}": torch.from_numpy(np.array(value)) for key, value in state.items()}
    torch.save({"epoch": 3, "state_dict": wrapped}, path)
    loaded = load_state_dict(path)
    assert sorted(loaded) == sorted(state)
    for key, value in state.items():
        np.testing.assert_array_equal(loaded[key], value)
