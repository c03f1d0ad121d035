"""Axial-ResNet: a general ResNet / Wide-ResNet / Axial-ResNet backbone builder.

Named models (Axial-ResNet-S, Axial-DeepLab-L, SWideRNet, MaX-DeepLab-L, ...) are
just configurations of `AxialResNet`; see `backbone_registry.py`. Optionally the
backbone ends with MaX-DeepLab's stacked (hourglass) decoder, planned by
`stacked_decoder_plan`.
"""

import math

import keras
from keras import ops

from axial_tf.layers import AxialBlock, ConvBN
from axial_tf.layers.resized_fuse import ResizedFuse
from axial_tf.models.presets import PresetMixin

STEM_TYPES = ("resnet", "resnet_beta", "wider_resnet", "none")
DROP_PATH_SCHEDULES = ("constant", "linear")
# Input stride of each of the five stages in the original (non-atrous) network.
_STAGE_INPUT_STRIDES = (1, 2, 4, 8, 16)


@keras.saving.register_keras_serializable(package="axial_tf")
class InceptionStem(keras.layers.Layer):
    """The `resnet_beta` stem: three 3x3 convolutions, the first with stride 2.

    Widths are `64m, 64m, 128m` for `width_multiplier=m`; the last convolution
    has no activation (blocks activate their input).

    Args:
        width_multiplier: channel multiplier `m`.
        **kwargs: `ConvBN` batch-norm arguments and standard layer arguments.
    """

    def __init__(self, width_multiplier=1.0, batch_norm_momentum=0.99, batch_norm_epsilon=1e-3,
                 sync_batch_norm=False, **kwargs):
        super().__init__(**kwargs)
        self.width_multiplier = width_multiplier
        self.batch_norm_momentum = batch_norm_momentum
        self.batch_norm_epsilon = batch_norm_epsilon
        self.sync_batch_norm = sync_batch_norm
        bn = dict(batch_norm_momentum=batch_norm_momentum, batch_norm_epsilon=batch_norm_epsilon,
                  sync_batch_norm=sync_batch_norm, dtype=self.dtype_policy)
        narrow, wide = int(64 * width_multiplier), int(128 * width_multiplier)
        self.conv1_bn_act = ConvBN(narrow, 3, strides=2, activation="relu", name="conv1_bn_act", **bn)
        self.conv2_bn_act = ConvBN(narrow, 3, activation="relu", name="conv2_bn_act", **bn)
        self.conv3_bn = ConvBN(wide, 3, name="conv3_bn", **bn)

    def build(self, input_shape):
        shape = input_shape
        for layer in self.deeplab2_children():
            layer.build(shape)
            shape = layer.compute_output_shape(shape)

    def deeplab2_children(self):
        return [self.conv1_bn_act, self.conv2_bn_act, self.conv3_bn]

    def call(self, inputs, training=None):
        x = inputs
        for layer in self.deeplab2_children():
            x = layer(x, training=training)
        return x

    def compute_output_shape(self, input_shape):
        shape = input_shape
        for layer in self.deeplab2_children():
            shape = layer.compute_output_shape(shape)
        return shape

    def get_config(self):
        return {
            **super().get_config(),
            "width_multiplier": self.width_multiplier,
            "batch_norm_momentum": self.batch_norm_momentum,
            "batch_norm_epsilon": self.batch_norm_epsilon,
            "sync_batch_norm": self.sync_batch_norm,
        }


@keras.saving.register_keras_serializable(package="axial_tf")
class BlockGroup(keras.layers.Layer):
    """A stage: residual blocks producing features of one resolution.

    Args:
        block_configs: one dict of `AxialBlock` arguments per block (see
            `AxialResNet.stage_plan`); block `i` is named `block{i+1}`.
        remat: recompute each block's activations in the backward pass
            (gradient checkpointing) to save memory.
        **kwargs: standard layer arguments.
    """

    def __init__(self, block_configs, remat=False, **kwargs):
        super().__init__(**kwargs)
        self.block_configs = [dict(c) for c in block_configs]
        self.remat = remat
        names = [f"block{i + 1}" for i in range(len(block_configs))]
        scope = keras.RematScope(mode="list_of_layers", layer_names=names) if remat else _NullScope()
        with scope:
            self.blocks = [
                AxialBlock(name=name, dtype=self.dtype_policy, **config)
                for name, config in zip(names, self.block_configs)
            ]

    def build(self, input_shape):
        shape = input_shape
        for block in self.blocks:
            block.build(shape)
            shape = block.compute_output_shape(shape)

    def deeplab2_children(self):
        return self.blocks

    def call(self, inputs, training=None):
        x = inputs
        for block in self.blocks:
            x = block(x, training=training)
        return x

    def compute_output_shape(self, input_shape):
        shape = input_shape
        for block in self.blocks:
            shape = block.compute_output_shape(shape)
        return shape

    def get_config(self):
        return {**super().get_config(), "block_configs": self.block_configs, "remat": self.remat}


@keras.saving.register_keras_serializable(package="axial_tf")
class SymmetricMaxPool2D(keras.layers.Layer):
    """Max pooling with `padding` pixels on every side, as PyTorch's `MaxPool2d(padding=p)`.

    Keras' "same" pooling pads only after the input for a 3x3/2 pool on even
    sizes, which shifts the grid by a pixel relative to PyTorch-trained weights.

    Args:
        pool_size: window size.
        strides: pooling stride.
        padding: pixels padded (with -inf, so they never win) before and after.
        **kwargs: standard layer arguments.
    """

    def __init__(self, pool_size=3, strides=2, padding=1, **kwargs):
        super().__init__(**kwargs)
        self.pool_size, self.strides, self.padding = int(pool_size), int(strides), int(padding)

    def call(self, inputs):
        p = self.padding
        lowest = float("-inf")
        padded = ops.pad(inputs, ((0, 0), (p, p), (p, p), (0, 0)), constant_values=lowest)
        return ops.max_pool(padded, self.pool_size, self.strides, padding="valid")

    def compute_output_shape(self, input_shape):
        def out(size):
            return None if size is None else (size + 2 * self.padding - self.pool_size) // self.strides + 1

        return (input_shape[0], out(input_shape[1]), out(input_shape[2]), input_shape[3])

    def get_config(self):
        return {**super().get_config(), "pool_size": self.pool_size, "strides": self.strides, "padding": self.padding}


class _NullScope:
    def __enter__(self):
        return self

    def __exit__(self, *args):
        return False


def drop_path_keep_prob_for(stride, keep_prob, schedule, beyond_stride):
    """Stochastic-depth keep probability of a block working at `stride`.

    "constant" uses `keep_prob` for every block at or beyond `beyond_stride`;
    "linear" decays from 1 at stride 2 to `keep_prob` at stride 32 (stage 5).
    """
    if schedule not in DROP_PATH_SCHEDULES:
        raise ValueError(f"drop_path_schedule must be one of {DROP_PATH_SCHEDULES}, got {schedule!r}.")
    if stride < beyond_stride:
        return 1.0
    if schedule == "constant":
        return keep_prob
    stage = math.log2(stride) - 1  # stride 2 -> 0 ... stride 32 -> 4
    return 1.0 - (1.0 - keep_prob) * stage / 4.0


@keras.saving.register_keras_serializable(package="axial_tf")
class AxialResNet(PresetMixin, keras.Model):
    """A configurable (Axial-)ResNet backbone returning multi-scale endpoints.

    Five stages at input strides 1, 2, 4, 8, 16 (stage 1 exists only for
    `wider_resnet` and stem-less fully axial nets). A block becomes an axial
    bottleneck once its stride reaches `use_axial_beyond_stride`; otherwise it is
    a conv bottleneck (`resnet`, `resnet_beta`) or a basic block / wide bottleneck
    (`wider_resnet`). Past `output_stride` strides turn into atrous rates (conv
    blocks) or non-strided global attention (axial blocks).

    The model is functional: built in `__init__` on `(None, None, 3)` inputs and
    usable at any input size. Outputs are a dict with `stage1`..`stage5`
    (non-activated block outputs; `stage1` is the stem when there is no stage 1)
    and `res1`..`res5` (their ReLU), as DeepLab2 names them.

    With `backbone_decoder_num_stacks > 0` (MaX-DeepLab-L) the encoder is followed
    by a stacked decoder: from the last stage it goes up to
    `high_resolution_output_stride` and back down to the output stride, once per
    stack (stride 8, 4, 8, 16 for one stack at output stride 16). Each decoder
    stage fuses the previous stage's output with the last two features at its
    stride (`ResizedFuse`) and applies `backbone_decoder_blocks_per_stage`
    residual blocks; see `stacked_decoder_plan`. As in DeepLab2, `stage*` and
    `res*` stay the encoder's features (taken before the decoder) and the extra
    endpoint `backbone_output` is the ReLU of the last decoder stage, at the
    output stride with `round(2048 * width_multiplier)` channels: it is the
    feature that classification heads and MaX-DeepLab pool or decode. Without a
    stacked decoder `backbone_output` is the last stage's `res` endpoint.

    Args:
        stem_type: "resnet" (7x7/2), "resnet_beta" (Inception stem),
            "wider_resnet" (3x3/2, adds stage 1) or "none" (fully axial).
        num_blocks: blocks in stages 2..5.
        stage1_blocks: blocks in stage 1 (wider_resnet / none).
        width_multiplier: channel multiplier of stages.
        stem_width_multiplier: channel multiplier of the stem (and of stage 1 in
            wider_resnet).
        backbone_layer_multiplier: multiplies (and truncates) `num_blocks`.
        output_stride: 8, 16 or 32.
        use_axial_beyond_stride: blocks at this stride or beyond are axial (0: none).
        attention: `AxialAttention2D` settings of axial blocks (num_heads,
            key_expansion, value_expansion, span, ...).
        stage_attention: per-stage overrides of `attention`, e.g. `{5: {"span": 33}}`.
        attention_bottleneck_expansion: width of the 1x1 conv before attention,
            relative to the attention's base filters.
        block_output_expansion: bottleneck output width relative to the base
            filters (4 in DeepLab2 / ResNet, 2 in the PyTorch Axial-ResNets).
        stem_max_pool: follow the stem with a 3x3/2 max pool (the PyTorch
            reference); stage 2 then keeps its resolution.
        stage_filters: optional base widths of the 5 stages (replaces
            `round(32 * stride * width_multiplier)`).
        drop_path_keep_prob: stochastic-depth keep probability.
        drop_path_beyond_stride: blocks below this stride are never dropped.
        drop_path_schedule: "constant" or "linear".
        backbone_decoder_num_stacks: stacked-decoder hourglasses after the last
            stage (0: none, 1 in MaX-DeepLab-L).
        backbone_decoder_blocks_per_stage: residual blocks per decoder stage.
        high_resolution_output_stride: the finest stride the stacked decoder
            reaches before turning back (2, 4 or 8, below `output_stride`).
        remat: gradient checkpointing per block (saves memory when training).
        batch_norm_momentum: BN momentum.
        batch_norm_epsilon: BN epsilon.
        sync_batch_norm: synchronised BN across replicas.
        input_channels: channels of the input image.
        **kwargs: `keras.Model` arguments (e.g. `name`).

    Example:
    >>> backbone = AxialResNet(stem_type="resnet_beta", width_multiplier=0.125,
    ...                        stem_width_multiplier=0.25, num_blocks=(1, 1, 1, 1),
    ...                        use_axial_beyond_stride=2)
    >>> endpoints = backbone(keras.random.normal((1, 65, 65, 3)))
    >>> endpoints["res5"].shape  # (1, 5, 5, 256)
    """

    def __init__(
        self,
        stem_type="resnet_beta",
        num_blocks=(3, 4, 6, 3),
        stage1_blocks=3,
        width_multiplier=1.0,
        stem_width_multiplier=1.0,
        backbone_layer_multiplier=1.0,
        output_stride=16,
        use_axial_beyond_stride=16,
        attention=None,
        stage_attention=None,
        attention_bottleneck_expansion=2,
        block_output_expansion=4,
        stem_max_pool=False,
        stage_filters=None,
        drop_path_keep_prob=1.0,
        drop_path_beyond_stride=16,
        drop_path_schedule="constant",
        backbone_decoder_num_stacks=0,
        backbone_decoder_blocks_per_stage=1,
        high_resolution_output_stride=4,
        remat=False,
        batch_norm_momentum=0.99,
        batch_norm_epsilon=1e-3,
        sync_batch_norm=False,
        input_channels=3,
        **kwargs,
    ):
        config = dict(
            stem_type=stem_type,
            num_blocks=[int(n) for n in num_blocks],
            stage1_blocks=int(stage1_blocks),
            width_multiplier=width_multiplier,
            stem_width_multiplier=stem_width_multiplier,
            backbone_layer_multiplier=backbone_layer_multiplier,
            output_stride=int(output_stride),
            use_axial_beyond_stride=int(use_axial_beyond_stride),
            attention=dict(attention or {}),
            stage_attention={int(k): dict(v) for k, v in (stage_attention or {}).items()},
            attention_bottleneck_expansion=attention_bottleneck_expansion,
            block_output_expansion=int(block_output_expansion),
            stem_max_pool=bool(stem_max_pool),
            stage_filters=None if stage_filters is None else [int(f) for f in stage_filters],
            drop_path_keep_prob=float(drop_path_keep_prob),
            drop_path_beyond_stride=int(drop_path_beyond_stride),
            drop_path_schedule=drop_path_schedule,
            backbone_decoder_num_stacks=int(backbone_decoder_num_stacks),
            backbone_decoder_blocks_per_stage=int(backbone_decoder_blocks_per_stage),
            high_resolution_output_stride=int(high_resolution_output_stride),
            remat=bool(remat),
            batch_norm_momentum=batch_norm_momentum,
            batch_norm_epsilon=batch_norm_epsilon,
            sync_batch_norm=sync_batch_norm,
            input_channels=int(input_channels),
        )
        _validate(config)
        bn = dict(batch_norm_momentum=batch_norm_momentum, batch_norm_epsilon=batch_norm_epsilon,
                  sync_batch_norm=sync_batch_norm)

        inputs = keras.Input((None, None, config["input_channels"]), name="image")
        stem = _build_stem(config, bn)
        x = inputs if stem is None else stem(inputs)
        if config["stem_max_pool"]:
            x = SymmetricMaxPool2D(name="stem_max_pool")(x)
        endpoints = {}
        if stem is not None:
            endpoints["stage1"] = x
        stages = []
        for index, blocks in stage_plan(config):
            stage = BlockGroup(blocks, remat=config["remat"], name=f"stage{index}")
            x = stage(x)
            endpoints[f"stage{index}"] = x
            stages.append(stage)
        decoder_output, decoder_layers = _apply_stacked_decoder(config, x, endpoints, bn)
        for key in list(endpoints):
            endpoints["res" + key[len("stage"):]] = keras.layers.ReLU(name="res" + key[len("stage"):])(endpoints[key])
        # The feature heads pool or decode: the stacked decoder's output, else res5 (as DeepLab2).
        if decoder_output is not None:
            endpoints["backbone_output"] = keras.layers.ReLU(name="backbone_output")(decoder_output)
        else:
            endpoints["backbone_output"] = endpoints[f"res{stages[-1].name[len('stage'):]}"]
        super().__init__(inputs=inputs, outputs=endpoints, **kwargs)
        self.backbone_config = config
        self.stem = stem
        self.stages = stages
        self.decoder_layers = decoder_layers

    def deeplab2_children(self):
        """Sub-layers in DeepLab2's encoder naming (`_stem`, `_stage2`, ..., `_decoder_stage1`, ...)."""
        return ([self.stem] if self.stem is not None else []) + self.stages + self.decoder_layers

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable, **self.backbone_config}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _validate(config):
    if config["stem_type"] not in STEM_TYPES:
        raise ValueError(f"stem_type must be one of {STEM_TYPES}, got {config['stem_type']!r}.")
    if config["output_stride"] not in (4, 8, 16, 32):
        raise ValueError(f"output_stride must be 4, 8, 16 or 32, got {config['output_stride']}.")
    if len(config["num_blocks"]) != 4:
        raise ValueError(f"num_blocks lists the blocks of stages 2-5 (4 numbers), got {config['num_blocks']}.")
    if config["stage_filters"] is not None and len(config["stage_filters"]) != 5:
        raise ValueError(f"stage_filters needs 5 base widths (stages 1-5), got {config['stage_filters']}.")
    if config["stem_max_pool"] and config["stem_type"] not in ("resnet", "resnet_beta"):
        raise ValueError("stem_max_pool needs stem_type 'resnet' or 'resnet_beta'.")
    if config["stem_type"] == "none" and config["use_axial_beyond_stride"] != 1:
        raise ValueError("stem_type='none' (fully axial) needs use_axial_beyond_stride=1.")
    bad_stages = set(config["stage_attention"]) - {1, 2, 3, 4, 5}
    if bad_stages:
        raise ValueError(f"stage_attention keys must be stage numbers 1-5, got {sorted(bad_stages)}.")
    if not 0.0 < config["drop_path_keep_prob"] <= 1.0:
        raise ValueError(f"drop_path_keep_prob must be in (0, 1], got {config['drop_path_keep_prob']}.")
    if config["drop_path_schedule"] not in DROP_PATH_SCHEDULES:
        raise ValueError(
            f"drop_path_schedule must be one of {DROP_PATH_SCHEDULES}, got {config['drop_path_schedule']!r}."
        )
    _validate_stacked_decoder(config)


def _validate_stacked_decoder(config):
    stacks, high = config["backbone_decoder_num_stacks"], config["high_resolution_output_stride"]
    if stacks < 0:
        raise ValueError(f"backbone_decoder_num_stacks must be >= 0, got {stacks}.")
    if config["backbone_decoder_blocks_per_stage"] < 1:
        raise ValueError(
            f"backbone_decoder_blocks_per_stage must be >= 1, got {config['backbone_decoder_blocks_per_stage']}."
        )
    if stacks == 0:
        return
    if high not in (2, 4, 8) or high >= config["output_stride"]:
        raise ValueError(
            f"high_resolution_output_stride must be 2, 4 or 8 and below output_stride={config['output_stride']}, "
            f"got {high}."
        )
    finest = min(_stage_output_strides(config).values())
    if high < finest:
        raise ValueError(
            f"high_resolution_output_stride={high}: the stacked decoder needs an encoder feature at that stride, "
            f"but the finest one is at stride {finest} (stem_max_pool?)."
        )


def _build_stem(config, bn):
    stem_channels = int(round(64 * config["stem_width_multiplier"]))
    stem_type = config["stem_type"]
    if stem_type == "none":
        return None
    if stem_type == "resnet_beta":
        return InceptionStem(config["stem_width_multiplier"], name="stem", **bn)
    kernel = 7 if stem_type == "resnet" else 3
    return ConvBN(stem_channels, kernel, strides=2, name="stem", **bn)


def stage_plan(config):
    """Lists `(stage_number, [AxialBlock kwargs per block])` for a backbone config.

    This is where strides, atrous rates, block types, widths and drop-path
    probabilities are decided; the model only instantiates the plan.
    """
    wide = config["stem_type"] == "wider_resnet"
    has_stage1 = wide or config["stem_type"] == "none"
    counts = [config["stage1_blocks"]] + [int(n * config["backbone_layer_multiplier"]) for n in config["num_blocks"]]
    output_stride = config["output_stride"]
    plan = []
    for index in range(0 if has_stage1 else 1, 5):
        stride_in = _STAGE_INPUT_STRIDES[index]
        stage_stride = 2
        if wide and index == 0:  # the wide stem already strided: stage 1 runs at stride 2
            stride_in, stage_stride = 2, 1
        if config["stem_max_pool"] and index == 1:  # the pool already strided: stage 2 keeps stride 4
            stride_in, stage_stride = 4, 1
        if config["stage_filters"] is not None:
            filters = config["stage_filters"][index]
        else:
            multiplier = config["stem_width_multiplier"] if wide and index == 0 else config["width_multiplier"]
            filters = int(round(_STAGE_INPUT_STRIDES[index] * 32 * multiplier))
        attention = _stage_attention(config, index + 1)
        blocks = []
        current = stride_in  # stride of the block's input in the original network
        for block_index in range(counts[index]):
            first = block_index == 0
            strides = stage_stride if first and stride_in < output_stride else 1
            rate = current // output_stride if current > output_stride else 1
            # A first block whose stride became atrous: its later convs see the doubled rate.
            strided_rate = stride_in * stage_stride // output_stride if stride_in * stage_stride > output_stride else 1
            second_rate = strided_rate if first else rate
            blocks.append(_block_config(config, filters, attention, current, stride_in * stage_stride,
                                        strides, rate, second_rate))
            if first:
                current *= stage_stride
        if blocks:
            plan.append((index + 1, blocks))
    return plan


def _stage_attention(config, stage_number):
    """`AxialAttention2D` settings of a stage: the shared ones with the stage's overrides."""
    return {**config["attention"], **config["stage_attention"].get(stage_number, {})}


def _block_config(config, filters, attention, resnet_stride, group_output_stride, strides, dilation_rate,
                  second_dilation_rate):
    """`AxialBlock` kwargs of one block.

    Args:
        config: backbone config.
        filters: base width of the block's group.
        attention: attention settings, used if the block is axial.
        resnet_stride: stride of the block's input in the original (non-atrous)
            network; decides axial vs conv and the drop-path probability.
        group_output_stride: original-network stride at the end of the block's
            group; in wider_resnet, groups ending at stride 32 use bottlenecks.
        strides: the block's stride.
        dilation_rate: atrous rate of its 3x3 convolutions.
        second_dilation_rate: atrous rate of a basic block's second 3x3 conv.

    Returns:
        dict of `AxialBlock` arguments.
    """
    block = dict(
        strides=strides,
        dilation_rate=dilation_rate,
        second_dilation_rate=second_dilation_rate,
        drop_path_keep_prob=drop_path_keep_prob_for(
            resnet_stride, config["drop_path_keep_prob"], config["drop_path_schedule"],
            config["drop_path_beyond_stride"],
        ),
        batch_norm_momentum=config["batch_norm_momentum"],
        batch_norm_epsilon=config["batch_norm_epsilon"],
        sync_batch_norm=config["sync_batch_norm"],
    )
    out_channels = filters * config["block_output_expansion"]
    if resnet_stride >= config["use_axial_beyond_stride"] > 0:
        expansion = config["attention_bottleneck_expansion"]
        block.update(filters_list=[int(filters * expansion), filters, out_channels], attention=attention)
    elif config["stem_type"] != "wider_resnet":
        block.update(filters_list=[filters, filters, out_channels])
    elif group_output_stride < 32:
        block.update(filters_list=[filters * 4, filters * 4])
    else:
        block.update(filters_list=[filters, filters * 2, filters * 4])
    return block


def stacked_decoder_plan(config):
    """Lists the stages of the stacked decoder of a backbone config (MaX-DeepLab).

    Starting at the output stride, the decoder halves its stride down to
    `high_resolution_output_stride`, then doubles it back up; reaching the output
    stride again completes one stack (e.g. strides 8, 4, 8, 16 for one stack at
    output stride 16). A stage at stride `s` is sized like the original network's
    blocks at `s`, except that stages at the output stride are sized like its last
    stage (stride 32): `round(64 * r * width_multiplier)` channels for `r = s` or
    32, blocks of base width a quarter of that, atrous past the output stride.

    Args:
        config: backbone config (`AxialResNet.backbone_config`).

    Returns:
        List of dicts, one per stage in call order: `stage` (1-based number),
        `stride` (output stride of its features), `channels` (width its inputs
        are fused to) and `blocks` (`AxialBlock` kwargs, as in `stage_plan`).
    """
    output_stride, high = config["output_stride"], config["high_resolution_output_stride"]
    plan = []
    stride, step, stacks_done = output_stride, 0.5, 0
    while stacks_done < config["backbone_decoder_num_stacks"]:
        stride = int(stride * step)
        if stride == output_stride:
            stacks_done += 1
            step = 0.5
        if stride == high:
            step = 2
        resnet_stride = 32 if stride == output_stride else stride
        channels = int(round(resnet_stride * 64 * config["width_multiplier"]))
        rate = resnet_stride // output_stride if resnet_stride > output_stride else 1
        attention = _stage_attention(config, int(math.log2(resnet_stride)))
        block = _block_config(config, channels // 4, attention, resnet_stride, resnet_stride, 1, rate, rate)
        plan.append(dict(stage=len(plan) + 1, stride=stride, channels=channels,
                         blocks=[dict(block) for _ in range(config["backbone_decoder_blocks_per_stage"])]))
    return plan


def _apply_stacked_decoder(config, encoder_output, endpoints, bn):
    """Adds the stacked decoder to the graph after the encoder.

    Each stage fuses the previous stage's output with the last two features at
    its stride (the encoder's, then earlier decoder outputs), so every stage sees
    one feature from the way up and one from the way down.

    Args:
        config: backbone config.
        encoder_output: the last stage's non-activated output.
        endpoints: the encoder's `stage*` endpoints.
        bn: batch-norm arguments of the new layers.

    Returns:
        `(output, layers)`: the last stage's non-activated output (None without a
        decoder) and the decoder layers in call order.
    """
    plan = stacked_decoder_plan(config)
    if not plan:
        return None, []
    features_at_stride = {}
    # A later stage at the same stride replaces an earlier one (stage 5 replaces
    # stage 4 at output stride 16), as in DeepLab2.
    for key, stride in _stage_output_strides(config).items():
        features_at_stride[stride] = [endpoints[key]]
    current = encoder_output  # [B, ceil(H / os), ceil(W / os), C]
    current_stride = config["output_stride"]
    layers = []
    for stage in plan:
        stride, name = stage["stride"], f"decoder_stage{stage['stage']}"
        inputs = [current] + features_at_stride[stride][-2:]
        fuse = ResizedFuse(stage["channels"], [current_stride] + [stride] * (len(inputs) - 1), stride,
                           name=f"{name}_resized_fuse", **bn)
        group = BlockGroup(stage["blocks"], remat=config["remat"], name=name)
        current = group(fuse(inputs))  # [B, ceil(H / stride), ceil(W / stride), C']
        current_stride = stride
        features_at_stride[stride].append(current)
        layers += [fuse, group]
    return current, layers


def _stage_output_strides(config):
    """Output stride of each `stage*` endpoint of a backbone config."""
    strides = {}
    stride = 1 if config["stem_type"] == "none" else 2
    stride *= 2 if config["stem_max_pool"] else 1  # stage1 is taken after the pool
    if config["stem_type"] != "none":
        strides["stage1"] = stride
    for index, blocks in stage_plan(config):
        stride *= blocks[0]["strides"]
        strides[f"stage{index}"] = stride
    return strides


def endpoint_strides(backbone):
    """Output stride of each endpoint of a backbone, for decoders picking features."""
    config = backbone.backbone_config
    plan_strides = _stage_output_strides(config)
    strides = {**plan_strides, **{"res" + k[5:]: v for k, v in plan_strides.items()}}
    strides["backbone_output"] = config["output_stride"] if config["backbone_decoder_num_stacks"] > 0 else strides["res5"]
    return strides

