"""Backbones: DeepLab2 parameter-count goldens, endpoints, any input size, atrous consistency."""

import json

import numpy as np
import pytest

import keras
from conftest import FIXTURES_DIR
from axial_tf.models import AxialResNet, get_backbone, list_backbones, stage_plan

GOLDENS = json.loads((FIXTURES_DIR / "deeplab2" / "param_counts.json").read_text())["results"]
# The largest instances take ~15 s and ~2 GB each to build: run them with -m slow.
_SLOW_PARAMS = 150e6


def _count(weights):
    return sum(int(np.prod(w.shape)) for w in weights)


def _golden_id(result):
    return f"{result['name']}_x{result['backbone_layer_multiplier']}"


@pytest.mark.parametrize(
    "golden",
    [
        pytest.param(g, marks=[pytest.mark.slow] if g["trainable_params"] > _SLOW_PARAMS else [])
        for g in GOLDENS
    ],
    ids=_golden_id,
)
def test_parameter_counts_equal_deeplab2(golden):
    if golden["name"] not in list_backbones():
        pytest.fail(f"DeepLab2 instance {golden['name']} has no axial_tf backbone")
    model = get_backbone(golden["name"], backbone_layer_multiplier=golden["backbone_layer_multiplier"])
    assert _count(model.trainable_weights) == golden["trainable_params"]
    assert _count(model.non_trainable_weights) == golden["non_trainable_params"]
    # Same block plan: type, filters and stride of every block of every stage.
    plan = {f"stage{i}": blocks for i, blocks in stage_plan(model.backbone_config)}
    for stage, blocks in golden["blocks"].items():
        ours = [("axial" if b.get("attention") is not None else "conv", b["filters_list"], b["strides"]) for b in plan[stage]]
        theirs = [(b["type"], b["filters"], b["strides"]) for b in blocks]
        assert ours == theirs, stage
    keras.backend.clear_session()


def _tiny(name="axial_deeplab_s", **overrides):
    args = dict(width_multiplier=0.0625, stem_width_multiplier=0.125, backbone_layer_multiplier=0.34)
    args.update(overrides)
    return get_backbone(name, **args)


def test_endpoints_shapes_and_relu():
    model = _tiny(attention={"num_heads": 2})
    outputs = model(np.random.default_rng(0).normal(size=(1, 65, 65, 3)).astype("float32"))
    shapes = {k: tuple(v.shape) for k, v in outputs.items()}
    assert shapes["res1"] == (1, 33, 33, 16)
    assert shapes["res2"][1:3] == (17, 17) and shapes["res3"][1:3] == (9, 9)
    assert shapes["res4"][1:3] == (5, 5) and shapes["res5"][1:3] == (5, 5)
    for i in range(1, 6):
        np.testing.assert_array_equal(np.asarray(outputs[f"res{i}"]), np.maximum(np.asarray(outputs[f"stage{i}"]), 0))


def _randomise_bn(model, seed=0):
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        if variable.path.endswith(("gamma", "moving_variance")):
            variable.assign(rng.uniform(0.5, 1.5, variable.shape).astype("float32"))
        elif variable.path.endswith(("beta", "moving_mean")):
            variable.assign(rng.normal(0, 0.1, variable.shape).astype("float32"))


@pytest.mark.parametrize("name", ["axial_deeplab_s", "max_deeplab_s_backbone", "swidernet"])
def test_any_input_size_after_first_call(name):
    """A model first called at one size gives, at another size, what a fresh copy gives."""
    model = _tiny(name, attention={"num_heads": 2}, stem_width_multiplier=0.0625, width_multiplier=0.03125)
    _randomise_bn(model)
    model(np.zeros((1, 33, 33, 3), "float32"))
    image = np.random.default_rng(1).normal(size=(2, 41, 23, 3)).astype("float32")
    fresh = AxialResNet.from_config(model.get_config())
    fresh.set_weights(model.get_weights())
    a, b = model(image), fresh(image)
    for key in ("res2", "res5"):
        np.testing.assert_allclose(np.asarray(a[key]), np.asarray(b[key]), atol=1e-5)
    assert a["res5"].shape[1:3] == (3, 2)


@pytest.mark.parametrize("name", ["resnet50", "resnet50_beta", "swidernet"])
def test_atrous_output_stride_8_matches_16(name):
    """Convolutional backbones: OS 8 features, subsampled, equal OS 16 features (same weights)."""
    os16 = _tiny(name, output_stride=16, stem_width_multiplier=0.0625)
    os8 = _tiny(name, output_stride=8, stem_width_multiplier=0.0625)
    _randomise_bn(os16)
    os8.set_weights(os16.get_weights())
    image = np.random.default_rng(2).normal(size=(1, 49, 49, 3)).astype("float32")
    a, b = os16(image), os8(image)
    np.testing.assert_allclose(np.asarray(b["res5"])[:, ::2, ::2], np.asarray(a["res5"]), atol=2e-4, rtol=1e-4)
    np.testing.assert_allclose(np.asarray(b["res3"]), np.asarray(a["res3"]), atol=1e-5)


def test_drop_path_schedules_and_atrous_plan():
    config = get_backbone("resnet50", width_multiplier=0.0625, stem_width_multiplier=0.0625,
                          drop_path_keep_prob=0.6, drop_path_schedule="linear", drop_path_beyond_stride=4,
                          output_stride=8).backbone_config
    plan = dict(stage_plan(config))
    # linear: keep = 1 - (1 - 0.6) * (log2(stride) - 1) / 4
    assert plan[2][0]["drop_path_keep_prob"] == 1.0  # stride 2 < drop_path_beyond_stride
    assert plan[2][1]["drop_path_keep_prob"] == pytest.approx(1 - 0.4 * 1 / 4)
    assert plan[5][-1]["drop_path_keep_prob"] == pytest.approx(0.6)
    assert [b["strides"] for b in plan[4]] == [1] * len(plan[4])
    assert [b["dilation_rate"] for b in plan[4]] == [1] + [2] * (len(plan[4]) - 1)
    assert plan[5][0]["dilation_rate"] == 2 and plan[5][1]["dilation_rate"] == 4


@pytest.mark.parametrize(
    "overrides,message",
    [
        (dict(stem_type="vgg"), "stem_type"),
        (dict(output_stride=12), "output_stride"),
        (dict(drop_path_schedule="cubic"), "drop_path_schedule"),
        (dict(num_blocks=(1, 2)), "num_blocks"),
        (dict(colour="red"), "colour"),
    ],
)
def test_bad_backbone_settings_are_named(overrides, message):
    with pytest.raises(ValueError, match=message):
        get_backbone("resnet50", **overrides)


def test_unknown_name_suggests():
    with pytest.raises(ValueError, match="axial_resnet_s"):
        get_backbone("axial_resnet_ss")


def test_remat_gives_same_gradients():
    import tensorflow as tf

    image = np.random.default_rng(3).normal(size=(1, 33, 33, 3)).astype("float32")
    grads = []
    for remat in (False, True):
        keras.utils.set_random_seed(0)
        model = _tiny(attention={"num_heads": 2}, remat=remat, drop_path_keep_prob=1.0)
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model(image, training=True)["res5"] ** 2)
        grads.append([np.asarray(tf.convert_to_tensor(g)) for g in tape.gradient(loss, model.trainable_weights)])
    for a, b in zip(*grads):
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)
