"""Backbones: DeepLab2 parameter-count goldens, endpoints, any input size, atrous consistency."""

import inspect
import json

import numpy as np
import pytest

import keras
from conftest import fixture_files, randomize_batch_norms
from axial_tf.layers import resize_bilinear_align_corners
from axial_tf.layers.resized_fuse import ResizedFuse
from axial_tf.models import AxialResNet, backbone_config, endpoint_strides, get_backbone, list_backbones, stage_plan
from axial_tf.models import backbone_registry
from axial_tf.models.axial_resnet import stacked_decoder_plan

def _goldens():
    """DeepLab2's parameter counts from every fixture root, each instance and multiplier once."""
    goldens = {}
    for path in fixture_files("deeplab2/param_counts.json"):
        for result in json.loads(path.read_text())["results"]:
            goldens.setdefault((result["name"], result["backbone_layer_multiplier"]), result)
    return list(goldens.values())


GOLDENS = _goldens()
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
@pytest.mark.full
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


@pytest.mark.parametrize(
    "name, instance, layers",
    [
        ("swidernet_1_1_1", "swidernet", 1.0),
        ("swidernet_1_1_3", "swidernet", 3.0),
        ("swidernet_1_1_4.5", "swidernet", 4.5),
        ("axial_swidernet_1_1_1", "axial_swidernet", 1.0),
        ("axial_swidernet_1_1_3", "axial_swidernet", 3.0),
        ("axial_swidernet_1_1_4.5", "axial_swidernet", 4.5),
    ],
)
def test_swidernet_names_are_the_counted_deeplab2_instances(name, instance, layers):
    """SWideRNet-(1, 1, l) is DeepLab2's instance at layer multiplier l, whose counts a golden checks."""
    assert (instance, layers) in {(g["name"], g["backbone_layer_multiplier"]) for g in GOLDENS}
    expected = backbone_config(instance, stem_width_multiplier=1.0, width_multiplier=1.0, backbone_layer_multiplier=layers)
    assert backbone_config(name) == expected


def test_every_backbone_name_is_written_out():
    """Each registered name is a literal key of the registry, so grep finds its definition."""
    source = inspect.getsource(backbone_registry)
    assert [name for name in list_backbones() if f'"{name}":' not in source] == []


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


@pytest.mark.parametrize("name", ["axial_deeplab_s", "max_deeplab_s_backbone", "swidernet"])
@pytest.mark.sweep
def test_any_input_size_after_first_call(name):
    """A model first called at one size gives, at another size, what a fresh copy gives."""
    model = _tiny(name, attention={"num_heads": 2}, stem_width_multiplier=0.0625, width_multiplier=0.03125)
    randomize_batch_norms(model)
    model(np.zeros((1, 33, 33, 3), "float32"))
    image = np.random.default_rng(1).normal(size=(2, 41, 23, 3)).astype("float32")
    fresh = AxialResNet.from_config(model.get_config())
    fresh.set_weights(model.get_weights())
    a, b = model(image), fresh(image)
    for key in ("res2", "res5"):
        np.testing.assert_allclose(np.asarray(a[key]), np.asarray(b[key]), atol=1e-5)
    assert a["res5"].shape[1:3] == (3, 2)


@pytest.mark.parametrize("name", ["resnet50", "resnet50_beta", "swidernet"])
@pytest.mark.sweep
def test_atrous_output_stride_8_matches_16(name):
    """Convolutional backbones: OS 8 features, subsampled, equal OS 16 features (same weights)."""
    os16 = _tiny(name, output_stride=16, stem_width_multiplier=0.0625)
    os8 = _tiny(name, output_stride=8, stem_width_multiplier=0.0625)
    randomize_batch_norms(os16)
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


@pytest.mark.full
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


def _count_by_component(model):
    """Trainable parameters per DeepLab2 component: stem, stage1..5, and "other" (e.g. the stacked decoder)."""
    counts = {}
    for weight in model.trainable_weights:
        top = weight.path.split("/")[0]
        key = top if top == "stem" or (top.startswith("stage") and top[len("stage"):].isdigit()) else "other"
        counts[key] = counts.get(key, 0) + int(np.prod(weight.shape))
    return counts


@pytest.mark.slow
@pytest.mark.parametrize(
    "golden",
    [g for g in GOLDENS if g["name"] == "max_deeplab_l_backbone"],
    ids=_golden_id,
)
def test_stacked_decoder_parameters_by_component_equal_deeplab2(golden):
    """MaX-DeepLab-L: the stacked decoder holds exactly DeepLab2's "other" parameters."""
    model = get_backbone(golden["name"], backbone_layer_multiplier=golden["backbone_layer_multiplier"])
    assert _count_by_component(model) == golden["trainable_params_by_component"]
    assert len(model.trainable_weights) == golden["num_trainable_variables"]
    keras.backend.clear_session()


def _tiny_max_deeplab_l(**overrides):
    args = dict(width_multiplier=0.0625, stem_width_multiplier=0.0625, backbone_layer_multiplier=0.34,
                attention={"num_heads": 2})
    args.update(overrides)
    return get_backbone("max_deeplab_l_backbone", **args)


@pytest.mark.parametrize("output_stride", [16, 32])
@pytest.mark.sweep
def test_stacked_decoder_plan_goes_up_and_back_down(output_stride):
    """One stack: strides OS/2 ... 4 ... OS; the last stage is sized like stage 5 (axial, 2048w channels)."""
    config = _tiny_max_deeplab_l(output_stride=output_stride).backbone_config
    plan = stacked_decoder_plan(config)
    going_up = [output_stride // 2 ** i for i in range(1, int(np.log2(output_stride // 4)) + 1)]
    assert [stage["stride"] for stage in plan] == going_up + going_up[-2::-1] + [output_stride]
    # round(64 * stride * width) channels, 128 = 2048 / 16 at the output stride (stage-5 sized).
    assert [stage["channels"] for stage in plan[:-1]] == [4 * s for s in going_up + going_up[-2::-1]]
    assert plan[-1]["channels"] == 128
    assert plan[-1]["blocks"][0]["filters_list"] == [128, 32, 128]
    # Axial from (original-network) stride 16 on, like the encoder; basic conv blocks below.
    axial = [stage["blocks"][0].get("attention") is not None for stage in plan]
    assert axial == [stage["stride"] >= 16 for stage in plan]


@pytest.mark.parametrize("size", [(41, 23), (33, 50)])
@pytest.mark.sweep
def test_stacked_decoder_endpoints_at_odd_sizes(size):
    """Encoder endpoints are unchanged by the decoder; backbone_output is the decoded ReLU feature at OS 16."""
    model = _tiny_max_deeplab_l()
    image = np.random.default_rng(4).normal(size=(2, *size, 3)).astype("float32")
    outputs = model(image)
    strides = endpoint_strides(model)
    for key, stride in strides.items():
        expected = tuple(-(-s // stride) for s in size)
        assert tuple(outputs[key].shape[1:3]) == expected, key
    assert strides["backbone_output"] == 16 and outputs["backbone_output"].shape[-1] == 128
    assert float(np.min(np.asarray(outputs["backbone_output"]))) >= 0.0
    # The decoder changes the feature: backbone_output is not res5.
    assert not np.allclose(np.asarray(outputs["backbone_output"]), np.asarray(outputs["res5"]))


def test_stacked_decoder_any_input_size_and_config_round_trip():
    """Built on one size, the decoder gives at another size what a fresh copy from its config gives."""
    model = _tiny_max_deeplab_l()
    randomize_batch_norms(model)
    model(np.zeros((1, 33, 33, 3), "float32"))
    fresh = AxialResNet.from_config(model.get_config())
    fresh.set_weights(model.get_weights())
    image = np.random.default_rng(5).normal(size=(1, 45, 30, 3)).astype("float32")
    np.testing.assert_allclose(
        np.asarray(model(image)["backbone_output"]), np.asarray(fresh(image)["backbone_output"]), atol=1e-5
    )


def test_resized_fuse_paths_match_their_definition():
    """Strided 1x1 conv when the stride doubles, bilinear (aligned corners) resizing otherwise."""
    fuse = ResizedFuse(8, input_strides=[16, 8, 4, 4], target_stride=8, batch_norm_epsilon=0.0)
    rng = np.random.default_rng(6)
    coarse, same, fine, fine_same_width = (
        rng.normal(size=shape).astype("float32") for shape in [(1, 3, 4, 6), (1, 5, 7, 8), (1, 10, 13, 4), (1, 10, 13, 8)]
    )
    fused = np.asarray(fuse([coarse, same, fine, fine_same_width]))
    assert fused.shape == (1, 5, 7, 8)
    # Names follow DeepLab2: which input, and how it is brought to the target grid.
    assert [p.name if p else None for p in fuse.projections] == ["resized_conv_bn1", None, "strided_conv_bn3", None]
    kernel = {p.name: np.asarray(p.conv.kernel)[0, 0] for p in fuse.projections if p}  # [C_in, C_out]
    # Inference BN with fresh statistics and epsilon 0 is the identity.
    projected_coarse = np.maximum(coarse, 0) @ kernel["resized_conv_bn1"]
    expected = (
        np.asarray(resize_bilinear_align_corners(projected_coarse, (5, 7)))
        + same
        + (np.maximum(fine, 0) @ kernel["strided_conv_bn3"])[:, ::2, ::2]
        + np.asarray(resize_bilinear_align_corners(fine_same_width, (5, 7)))
    )
    np.testing.assert_allclose(fused, np.maximum(expected, 0), atol=1e-5)


@pytest.mark.parametrize(
    "overrides,message",
    [
        (dict(high_resolution_output_stride=16), "high_resolution_output_stride"),
        (dict(high_resolution_output_stride=3), "high_resolution_output_stride"),
        (dict(backbone_decoder_blocks_per_stage=0), "backbone_decoder_blocks_per_stage"),
        (dict(backbone_decoder_num_stacks=-1), "backbone_decoder_num_stacks"),
    ],
)
def test_bad_stacked_decoder_settings_are_named(overrides, message):
    with pytest.raises(ValueError, match=message):
        _tiny_max_deeplab_l(**overrides)


def test_resized_fuse_needs_an_input_at_the_target_stride():
    with pytest.raises(ValueError, match="target_stride"):
        ResizedFuse(8, input_strides=[16, 4], target_stride=8)
