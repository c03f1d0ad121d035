"""Resized fusion of multi-resolution features (MaX-DeepLab's stacked decoder)."""

import keras
from keras import ops

from axial_tf.layers.conv_bn import ConvBN
from axial_tf.layers.resize import resize_bilinear_align_corners


@keras.saving.register_keras_serializable(package="axial_tf")
class ResizedFuse(keras.layers.Layer):
    """Brings features of several strides to one stride and width, sums them, applies ReLU.

    Input `i` (stride `input_strides[i]`, `C_i` channels) reaches `num_channels`
    channels at `target_stride` in one of three ways:
      * `C_i == num_channels`: no projection (a feature reused at many decoder
        stages would otherwise need many 1x1 convs); resized with aligned
        corners if its stride differs from the target.
      * its stride is half the target: ReLU, then a 1x1 conv with stride 2 and
        BN (`strided_conv_bn{i+1}`), which lands exactly on the target grid.
      * otherwise: ReLU, 1x1 conv and BN (`resized_conv_bn{i+1}`), then resized.
    The projected inputs are non-activated, like the BN output ending a residual
    branch, so the sum is activated once at the end.

    DeepLab2 picks the strided path when an input's `(h + 1) // 2` equals the
    static target size. A map at stride `s` of an `H`-pixel image has
    `ceil(H / s)` pixels, so that test holds exactly when the input stride is
    half the target stride (or for 1-pixel maps, where both paths give the same
    values). Deciding from strides keeps the model valid at any input size.

    The output takes the spatial size of the first input at `target_stride`.

    Args:
        num_channels: output channels.
        input_strides: output stride of each input, in call order.
        target_stride: output stride of the result; one input must have it.
        batch_norm_momentum: BN momentum.
        batch_norm_epsilon: BN epsilon.
        sync_batch_norm: synchronised BN across replicas.
        **kwargs: standard layer arguments.

    Example:
    >>> fuse = ResizedFuse(32, input_strides=[16, 8, 4], target_stride=8)
    >>> y = fuse([keras.random.normal((1, 3, 4, 64)),    # stride 16
    ...           keras.random.normal((1, 5, 7, 32)),    # stride 8
    ...           keras.random.normal((1, 9, 13, 16))])  # stride 4 -> y: [1, 5, 7, 32]
    """

    def __init__(self, num_channels, input_strides, target_stride, batch_norm_momentum=0.99,
                 batch_norm_epsilon=1e-3, sync_batch_norm=False, **kwargs):
        super().__init__(**kwargs)
        self.num_channels = int(num_channels)
        self.input_strides = [int(s) for s in input_strides]
        self.target_stride = int(target_stride)
        if self.target_stride not in self.input_strides:
            raise ValueError(
                f"{self.name}: no input at target_stride={self.target_stride} to take the output size "
                f"from; input_strides={self.input_strides}."
            )
        self.batch_norm_momentum = batch_norm_momentum
        self.batch_norm_epsilon = batch_norm_epsilon
        self.sync_batch_norm = sync_batch_norm
        self.projections = []  # per input: a ConvBN, or None when the width already fits

    def _is_strided(self, index):
        return self.input_strides[index] * 2 == self.target_stride

    def build(self, input_shapes):
        if len(input_shapes) != len(self.input_strides):
            raise ValueError(
                f"{self.name}: called on {len(input_shapes)} features but input_strides has "
                f"{len(self.input_strides)} entries."
            )
        self.projections = []
        for index, shape in enumerate(input_shapes):
            if shape[-1] == self.num_channels:
                self.projections.append(None)
                continue
            strided = self._is_strided(index)
            projection = ConvBN(
                self.num_channels,
                strides=2 if strided else 1,
                batch_norm_momentum=self.batch_norm_momentum,
                batch_norm_epsilon=self.batch_norm_epsilon,
                sync_batch_norm=self.sync_batch_norm,
                name=f"{'strided' if strided else 'resized'}_conv_bn{index + 1}",
                dtype=self.dtype_policy,
            )
            projection.build(shape)
            self.projections.append(projection)

    def deeplab2_children(self):
        return [p for p in self.projections if p is not None]

    def call(self, inputs, training=None):
        reference = inputs[self.input_strides.index(self.target_stride)]
        size = ops.shape(reference)[1:3]
        fused = None
        for index, (feature, projection) in enumerate(zip(inputs, self.projections)):
            if projection is not None:
                feature = projection(ops.relu(feature), training=training)
            on_target_grid = self.input_strides[index] == self.target_stride or (
                projection is not None and self._is_strided(index)
            )
            if not on_target_grid:
                feature = resize_bilinear_align_corners(feature, size)  # [B, h, w, num_channels]
            fused = feature if fused is None else fused + feature
        return ops.relu(fused)

    def compute_output_shape(self, input_shapes):
        reference = input_shapes[self.input_strides.index(self.target_stride)]
        return (*reference[:-1], self.num_channels)

    def get_config(self):
        return {
            **super().get_config(),
            "num_channels": self.num_channels,
            "input_strides": self.input_strides,
            "target_stride": self.target_stride,
            "batch_norm_momentum": self.batch_norm_momentum,
            "batch_norm_epsilon": self.batch_norm_epsilon,
            "sync_batch_norm": self.sync_batch_norm,
        }
