"""Panoptic-DeepLab decoder parts: ASPP, a single decoder branch and a prediction head."""

import keras
from keras import ops

from axial_tf.layers import ConvBN, SeparableConvBN, resize_bilinear_align_corners


def _bn_args(layer):
    return dict(
        batch_norm_momentum=layer.batch_norm_momentum,
        batch_norm_epsilon=layer.batch_norm_epsilon,
        sync_batch_norm=layer.sync_batch_norm,
        dtype=layer.dtype_policy,
    )


class _BatchNormArgs(keras.layers.Layer):
    """Holds the batch-norm settings shared by the decoder layers."""

    def __init__(self, batch_norm_momentum=0.99, batch_norm_epsilon=1e-3, sync_batch_norm=False, **kwargs):
        super().__init__(**kwargs)
        self.batch_norm_momentum = batch_norm_momentum
        self.batch_norm_epsilon = batch_norm_epsilon
        self.sync_batch_norm = sync_batch_norm

    def get_config(self):
        return {
            **super().get_config(),
            "batch_norm_momentum": self.batch_norm_momentum,
            "batch_norm_epsilon": self.batch_norm_epsilon,
            "sync_batch_norm": self.sync_batch_norm,
        }


@keras.saving.register_keras_serializable(package="axial_tf")
class ASPP(_BatchNormArgs):
    """Atrous spatial pyramid pooling, or only its 1x1 projection.

    Full ASPP: a 1x1 conv, one 3x3 atrous conv per rate and image pooling (global
    average, 1x1 conv, broadcast back), concatenated and projected by a 1x1 conv
    with dropout 0.1 while training. Axial-DeepLab uses `use_only_1x1_proj=True`:
    just the projection (the attention already sees the whole image).

    Args:
        filters: output (and branch) channels.
        atrous_rates: rates of the three atrous branches.
        use_only_1x1_proj: keep only the 1x1 projection.
        **kwargs: batch-norm settings and standard layer arguments.
    """

    def __init__(self, filters, atrous_rates=(6, 12, 18), use_only_1x1_proj=True, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.atrous_rates = [int(r) for r in atrous_rates]
        self.use_only_1x1_proj = use_only_1x1_proj
        bn = _bn_args(self)
        self.branches = []
        if not use_only_1x1_proj:
            self.branches.append(ConvBN(filters, 1, activation="relu", name="conv_bn_act", **bn))
            for i, rate in enumerate(self.atrous_rates):
                self.branches.append(
                    ConvBN(filters, 3, dilation_rate=rate, activation="relu", name=f"aspp_conv{i + 1}", **bn)
                )
            self.pool_conv = ConvBN(filters, 1, activation="relu", name="aspp_pool", **bn)
            self.dropout = keras.layers.Dropout(0.1, name="proj_drop")
        self.proj_conv_bn_act = ConvBN(filters, 1, activation="relu", name="proj_conv_bn_act", **bn)

    def build(self, input_shape):
        for branch in self.branches:
            branch.build(input_shape)
        if self.branches:
            self.pool_conv.build((input_shape[0], 1, 1, input_shape[-1]))
            self.proj_conv_bn_act.build((*input_shape[:-1], self.filters * (len(self.branches) + 1)))
        else:
            self.proj_conv_bn_act.build(input_shape)

    def deeplab2_children(self):
        pool = [self.pool_conv] if self.branches else []
        return [*self.branches, *pool, self.proj_conv_bn_act]

    def call(self, inputs, training=None):
        if not self.branches:
            return self.proj_conv_bn_act(inputs, training=training)
        outputs = [branch(inputs, training=training) for branch in self.branches]
        pooled = self.pool_conv(ops.mean(inputs, axis=(1, 2), keepdims=True), training=training)
        outputs.append(ops.broadcast_to(pooled, ops.shape(outputs[0])))  # [B, H, W, filters]
        projected = self.proj_conv_bn_act(ops.concatenate(outputs, axis=-1), training=training)
        return self.dropout(projected, training=training)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.filters)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "atrous_rates": self.atrous_rates,
            "use_only_1x1_proj": self.use_only_1x1_proj,
        }


@keras.saving.register_keras_serializable(package="axial_tf")
class PanopticDecoderBranch(_BatchNormArgs):
    """One decoder of Panoptic-DeepLab (semantic or instance).

    ASPP on the high-level feature, then for each low-level feature (e.g. res3,
    then res2): project it with a 1x1 conv, upsample the running features to its
    size (bilinear, aligned corners), concatenate `[running, projected]` and fuse
    with a 5x5 depthwise-separable conv.

    Args:
        aspp_channels: ASPP output channels.
        decoder_channels: channels after each fusion.
        low_level_channels: projection channels of each low-level feature.
        atrous_rates: ASPP rates (full ASPP only).
        aspp_use_only_1x1_proj: ASPP reduced to its projection.
        **kwargs: batch-norm settings and standard layer arguments.

    Call arguments:
        features: list `[high_level, low_level_1, low_level_2, ...]` of `[B, h, w, c]`.
    """

    def __init__(self, aspp_channels=256, decoder_channels=256, low_level_channels=(64, 32),
                 atrous_rates=(6, 12, 18), aspp_use_only_1x1_proj=True, **kwargs):
        super().__init__(**kwargs)
        self.aspp_channels = int(aspp_channels)
        self.decoder_channels = int(decoder_channels)
        self.low_level_channels = [int(c) for c in low_level_channels]
        self.atrous_rates = [int(r) for r in atrous_rates]
        self.aspp_use_only_1x1_proj = aspp_use_only_1x1_proj
        bn = _bn_args(self)
        self.aspp = ASPP(aspp_channels, atrous_rates, aspp_use_only_1x1_proj, name="aspp", **bn)
        self.low_level_convs = [
            ConvBN(c, 1, activation="relu", name=f"low_level_conv{i + 1}", **bn)
            for i, c in enumerate(self.low_level_channels)
        ]
        # DeepLab2 wraps each fusion conv in a one-layer stack named conv1_bn_act.
        self.fusion_convs = [
            ConvStack(SeparableConvBN(decoder_channels, 5, name="conv1_bn_act", **bn), name=f"fusion_conv{i + 1}")
            for i in range(len(self.low_level_channels))
        ]

    def build(self, input_shapes):
        self.aspp.build(input_shapes[0])
        channels = self.aspp_channels
        for shape, project, fuse in zip(input_shapes[1:], self.low_level_convs, self.fusion_convs):
            project.build(shape)
            fuse.build((*shape[:-1], channels + project.filters))
            channels = self.decoder_channels

    def deeplab2_children(self):
        return [self.aspp, *self.low_level_convs, *self.fusion_convs]

    def call(self, features, training=None):
        x = self.aspp(features[0], training=training)
        for low_level, project, fuse in zip(features[1:], self.low_level_convs, self.fusion_convs):
            low_level = project(low_level, training=training)
            x = resize_bilinear_align_corners(x, ops.shape(low_level)[1:3])
            x = fuse(ops.concatenate([x, low_level], axis=-1), training=training)
        return x

    def compute_output_shape(self, input_shapes):
        channels = self.decoder_channels if self.low_level_convs else self.aspp_channels
        return (*input_shapes[-1][:-1], channels)

    def get_config(self):
        return {
            **super().get_config(),
            "aspp_channels": self.aspp_channels,
            "decoder_channels": self.decoder_channels,
            "low_level_channels": self.low_level_channels,
            "atrous_rates": self.atrous_rates,
            "aspp_use_only_1x1_proj": self.aspp_use_only_1x1_proj,
        }


@keras.saving.register_keras_serializable(package="axial_tf")
class ConvStack(keras.layers.Layer):
    """A named wrapper around one layer (DeepLab2's stacked-conv naming level)."""

    def __init__(self, layer, **kwargs):
        super().__init__(**kwargs)
        self.layer = layer

    def build(self, input_shape):
        self.layer.build(input_shape)

    def deeplab2_children(self):
        return [self.layer]

    def call(self, inputs, training=None):
        return self.layer(inputs, training=training)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def get_config(self):
        return {**super().get_config(), "layer": keras.saving.serialize_keras_object(self.layer)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["layer"] = keras.saving.deserialize_keras_object(config["layer"])
        return cls(**config)


@keras.saving.register_keras_serializable(package="axial_tf")
class PredictionHead(_BatchNormArgs):
    """A 5x5 depthwise-separable conv-BN-ReLU, then a 1x1 conv with bias.

    Args:
        output_channels: predicted channels (classes, 1 for the heatmap, 2 for offsets).
        head_channels: channels of the separable conv.
        **kwargs: batch-norm settings and standard layer arguments.
    """

    def __init__(self, output_channels, head_channels, **kwargs):
        super().__init__(**kwargs)
        self.output_channels = int(output_channels)
        self.head_channels = int(head_channels)
        self.conv1_bn_act = SeparableConvBN(head_channels, 5, name="conv1_bn_act", **_bn_args(self))
        self.final_conv = keras.layers.Conv2D(
            output_channels, 1, name="final_conv", kernel_initializer="he_normal", dtype=self.dtype_policy
        )

    def build(self, input_shape):
        self.conv1_bn_act.build(input_shape)
        self.final_conv.build((*input_shape[:-1], self.head_channels))

    def call(self, inputs, training=None):
        return self.final_conv(self.conv1_bn_act(inputs, training=training))

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.output_channels)

    def get_config(self):
        return {**super().get_config(), "output_channels": self.output_channels, "head_channels": self.head_channels}
