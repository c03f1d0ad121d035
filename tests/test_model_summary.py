"""M-Adds counting against hand-computed numbers, and the model_summary tool."""

import numpy as np
import pytest

import keras
from axial_tf.layers import AxialAttention, AxialAttention2D, AxialBlock, ConvBN
from axial_tf.models import get_backbone
from axial_tf.tools import model_summary
from axial_tf.utils.flops import attention_pairs, count_madds

TINY_OVERRIDES = ["width_multiplier=0.0625", "stem_width_multiplier=0.125", "backbone_layer_multiplier=0.34",
                  "attention={num_heads: 2}", "output_stride=32"]


def _built(layer, input_shape):
    layer.build((None, *input_shape))
    return layer


def test_convolutions_and_dense():
    conv = _built(keras.layers.Conv2D(8, 3, padding="same"), (10, 10, 4))
    assert count_madds(conv, (10, 10, 4)).total == 10 * 10 * 9 * 4 * 8
    strided = _built(ConvBN(8, 7, strides=2), (9, 9, 3))  # 5x5 output
    report = count_madds(strided, (9, 9, 3))
    assert report.total == 5 * 5 * 49 * 3 * 8 and report.output_shapes == (1, 5, 5, 8)
    depthwise = _built(ConvBN(None, 5, depthwise=True), (6, 6, 4))
    assert count_madds(depthwise, (6, 6, 4)).total == 6 * 6 * 25 * 4
    dense = _built(keras.layers.Dense(10), (16,))
    assert count_madds(dense, (16,)).total == 160


def test_attention_pairs():
    assert attention_pairs(5, None) == 25
    assert attention_pairs(5, 3) == 13  # 3 keys per query, 2 at each end
    assert attention_pairs(5, 11) == 25  # a span wider than the axis is global


def test_global_axial_attention():
    layer = _built(AxialAttention(total_key_depth=4, total_value_depth=8, num_heads=2), (5, 4))
    report = count_madds(layer, (5, 4))
    # qkv 5*4*(4+4+8); 3 similarities of 25 pairs * Dk 4; 2 retrievals of 25 pairs * Dv 8.
    assert report.by_path == {
        f"{layer.name}/qkv": 320,
        f"{layer.name}/similarity": 300,
        f"{layer.name}/retrieval": 400,
    }
    assert report.output_shapes == (1, 5, 8)


def test_local_axial_attention_and_switched_off_terms():
    layer = _built(AxialAttention(4, 8, num_heads=2, span=3, use_key_rpe_similarity=False,
                                  retrieve_value_rpe=False), (5, 4))
    report = count_madds(layer, (5, 4))
    assert report.total == 320 + 13 * 4 * 2 + 13 * 8 * 1


@pytest.mark.parametrize(
    "stride_mode, width_rows, output_shape",
    [("subsample", 3, (1, 3, 3, 8)), ("average_pool", 5, (1, 2, 3, 8))],
)
def test_axial_attention_2d_strides(stride_mode, width_rows, output_shape):
    layer = _built(AxialAttention2D(4, num_heads=2, strides=2, stride_mode=stride_mode), (5, 6, 4))
    report = count_madds(layer, (5, 6, 4))
    # Dk 4, Dv 8. Height pass: 6 columns of length 5 (C 4); width pass: one row of length 6 (C 8)
    # per remaining row: 3 after subsampling, all 5 when the average pool comes last.
    height_pass = 6 * (5 * 4 * 16 + 25 * (3 * 4 + 2 * 8))
    width_pass = width_rows * (6 * 8 * 16 + 36 * (3 * 4 + 2 * 8))
    assert report.total == height_pass + width_pass
    assert report.output_shapes == output_shape


def test_axial_block_by_hand():
    block = _built(AxialBlock([16, 8, 32], strides=2, attention={"num_heads": 2}), (9, 11, 16))
    report = count_madds(block, (9, 11, 16))
    shortcut = 5 * 6 * 16 * 32  # 1x1 stride 2 -> 5x6
    conv1 = 9 * 11 * 16 * 16
    height = 11 * (9 * 16 * 32 + 81 * (3 * 8 + 2 * 16))  # Dk 8, Dv 16
    width = 5 * (11 * 16 * 32 + 121 * (3 * 8 + 2 * 16))  # rows 0, 2, 4, 6, 8
    conv3 = 5 * 6 * 16 * 32
    assert report.total == shortcut + conv1 + height + width + conv3
    assert report.output_shapes == (1, 5, 6, 32)


def test_functional_model_counts_every_layer_once():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(5, name="fc")(x)
    model = keras.Model(inputs, outputs, name="toy")
    report = count_madds(model, (8, 8, 3))
    assert report.by_path == {"toy/conv": 8 * 8 * 9 * 3 * 4, "toy/fc": 4 * 5}
    assert report.output_shapes == (1, 5)


def test_unknown_layer_with_weights_is_named():
    class Mystery(keras.layers.Layer):
        def build(self, input_shape):
            self.kernel = self.add_weight(shape=(input_shape[-1], 2))

        def call(self, inputs):
            return inputs @ self.kernel

    layer = _built(Mystery(name="mystery"), (3,))
    with pytest.raises(ValueError, match="no multiply-add counter for layer 'mystery' of class Mystery"):
        count_madds(layer, (3,))
    with pytest.raises(ValueError, match="fully known input shape"):
        count_madds(layer, (None,))


def test_backbone_stages_add_up():
    backbone = get_backbone("axial_resnet_s", **model_summary.parse_overrides(TINY_OVERRIDES))
    report = count_madds(backbone, (64, 64, 3))
    parts = model_summary.madds_by_part(report)
    assert list(parts) == ["stem", "stage2", "stage3", "stage4", "stage5"]
    assert sum(conv + attention for conv, attention in parts.values()) == report.total
    assert all(attention > 0 for part, (_, attention) in parts.items() if part != "stem")
    assert report.output_shapes["res5"] == (1, 2, 2, 128)


def test_summary_tool_prints_params_madds_and_endpoints(capsys):
    model_summary.main(["axial_resnet_s", "--input_size", "64", "--num_classes", "10",
                        "--overrides", *TINY_OVERRIDES])
    text = capsys.readouterr().out
    model = model_summary.build_model("axial_resnet_s", model_summary.parse_overrides(TINY_OVERRIDES), 10)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert f"trainable {trainable:,}" in text
    assert f"{count_madds(model, (64, 64, 3)).total / 1e9:.3f}B" in text
    for line in ("stage5", "head", "res5    [2, 2, 128]         32", "res2    [16, 16, 16]        4"):
        assert line in text


def test_summary_tool_builds_reference_architectures():
    model = model_summary.build_model("axial26s", {"attention": {"num_heads": 2}}, None)
    assert model.backbone_config["num_blocks"] == [1, 2, 4, 1]
    assert model.backbone_config["attention"]["stride_mode"] == "average_pool"


def test_summary_tool_rejects_bad_overrides():
    with pytest.raises(SystemExit, match="not of the form key=value"):
        model_summary.main(["axial_resnet_s", "--overrides", "output_stride"])
    with pytest.raises(SystemExit, match="Unknown override"):
        model_summary.main(["axial_resnet_s", "--overrides", "depth=3"])


def test_prediction_head_by_hand():
    from axial_tf.models.panoptic_decoder import PredictionHead

    head = _built(PredictionHead(3, 8), (9, 9, 16))
    depthwise, pointwise, final = 81 * 25 * 16, 81 * 16 * 8, 81 * 8 * 3
    assert count_madds(head, (9, 9, 16)).total == depthwise + pointwise + final


def test_whole_axial_deeplab_is_counted():
    from axial_tf.models.axial_deeplab import AxialDeepLab

    model = AxialDeepLab("axial_deeplab_s", num_classes=5, backbone_overrides={
        "width_multiplier": 0.0625, "stem_width_multiplier": 0.125, "backbone_layer_multiplier": 0.34,
        "attention": {"num_heads": 2}})
    report = count_madds(model, (33, 33, 3))
    parts = report.by_prefix(depth=2)
    assert {f"{model.name}/{name}" for name in ("axial_deeplab_s", "semantic_decoder", "instance_decoder",
                                                "semantic_head", "instance_center_head",
                                                "instance_regression_head")} == set(parts)
    assert report.output_shapes["semantic_logits"] == (1, 33, 33, 5)
    backbone = count_madds(model.backbone, (33, 33, 3)).total
    assert parts[f"{model.name}/axial_deeplab_s"] == backbone
