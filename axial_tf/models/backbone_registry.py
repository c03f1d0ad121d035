"""Named backbones: each is a configuration of `AxialResNet`.

Names and settings follow DeepLab2's `axial_resnet_instances` and the
Axial-DeepLab paper (S/M/L/XL = width 0.5 / 0.75 / 1.0 / 2.0); `list_backbones()`
lists them.
"""

import difflib

from axial_tf.models.axial_resnet import AxialResNet

_RESNET50 = dict(stem_type="resnet", use_axial_beyond_stride=0, drop_path_keep_prob=1.0)
_AXIAL_RESNET = dict(_RESNET50, use_axial_beyond_stride=2)
_SWIDERNET = dict(
    stem_type="wider_resnet",
    num_blocks=(3, 6, 3, 3),
    use_axial_beyond_stride=0,
    drop_path_keep_prob=0.8,
    drop_path_beyond_stride=4,
)
# Axial-SWideRNet: the last two stages of SWideRNet made of axial-attention blocks.
_AXIAL_SWIDERNET = dict(
    _SWIDERNET,
    use_axial_beyond_stride=16,
    attention_bottleneck_expansion=4,
    attention={"key_expansion": 2, "value_expansion": 4},
)

BACKBONES = {
    "resnet50": _RESNET50,
    "resnet50_beta": dict(_RESNET50, stem_type="resnet_beta"),
    "axial_resnet_s": dict(_AXIAL_RESNET, width_multiplier=0.5),
    "axial_resnet_m": dict(_AXIAL_RESNET, width_multiplier=0.75),
    "axial_resnet_l": dict(_AXIAL_RESNET, width_multiplier=1.0),
    "axial_deeplab_s": dict(_AXIAL_RESNET, stem_type="resnet_beta", width_multiplier=0.5),
    "axial_deeplab_m": dict(_AXIAL_RESNET, stem_type="resnet_beta", width_multiplier=0.75),
    "axial_deeplab_l": dict(_AXIAL_RESNET, stem_type="resnet_beta", width_multiplier=1.0),
    # XL: "multiply all the channels by ... 2" (paper Sec. 4.1); its M-Adds in Table 6
    # match a stem scaled with the width (docs/paper_facts.md).
    "axial_resnet_xl": dict(_AXIAL_RESNET, width_multiplier=2.0, stem_width_multiplier=2.0),
    "axial_deeplab_xl": dict(_AXIAL_RESNET, stem_type="resnet_beta", width_multiplier=2.0, stem_width_multiplier=2.0),
    "max_deeplab_s_backbone": dict(
        stem_type="resnet_beta", use_axial_beyond_stride=16, drop_path_keep_prob=0.8, drop_path_beyond_stride=16
    ),
    "swidernet": _SWIDERNET,
    "axial_swidernet": _AXIAL_SWIDERNET,
    # SWideRNet-(w1, w2, l) of Chen et al. 2020: stem width, backbone width and layer multipliers.
    # DeepLab2 sets them on "swidernet"/"axial_swidernet" in each experiment; the axial names are
    # its config names (configs/cityscapes/axial_deeplab/axial_swidernet_1_1_3_os16.textproto).
    "swidernet_1_1_1": dict(
        _SWIDERNET, stem_width_multiplier=1.0, width_multiplier=1.0, backbone_layer_multiplier=1.0
    ),
    "swidernet_1_1_3": dict(
        _SWIDERNET, stem_width_multiplier=1.0, width_multiplier=1.0, backbone_layer_multiplier=3.0
    ),
    "swidernet_1_1_4.5": dict(
        _SWIDERNET, stem_width_multiplier=1.0, width_multiplier=1.0, backbone_layer_multiplier=4.5
    ),
    "axial_swidernet_1_1_1": dict(
        _AXIAL_SWIDERNET, stem_width_multiplier=1.0, width_multiplier=1.0, backbone_layer_multiplier=1.0
    ),
    "axial_swidernet_1_1_3": dict(
        _AXIAL_SWIDERNET, stem_width_multiplier=1.0, width_multiplier=1.0, backbone_layer_multiplier=3.0
    ),
    "axial_swidernet_1_1_4.5": dict(
        _AXIAL_SWIDERNET, stem_width_multiplier=1.0, width_multiplier=1.0, backbone_layer_multiplier=4.5
    ),
    # Axial-SWideRNet-(1, 1, 1) followed by one stack of the stacked decoder (DeepLab2's MaXDeepLabLBackbone).
    "max_deeplab_l_backbone": dict(_AXIAL_SWIDERNET, backbone_decoder_num_stacks=1),
}


def list_backbones():
    """Names accepted by `get_backbone`, sorted."""
    return sorted(BACKBONES)


def backbone_config(name, **overrides):
    """The `AxialResNet` arguments of a named backbone, with overrides applied.

    Raises:
        ValueError: unknown name (with the closest names) or unknown override key.
    """
    if name not in BACKBONES:
        close = difflib.get_close_matches(name, BACKBONES, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"Unknown backbone {name!r}.{hint} Known: {', '.join(list_backbones())}.")
    accepted = set(AxialResNet.__init__.__code__.co_varnames[1 : AxialResNet.__init__.__code__.co_argcount])
    unknown = sorted(set(overrides) - accepted)
    if unknown:
        raise ValueError(f"Unknown override(s) {unknown} for backbone {name!r}; accepted: {sorted(accepted)}.")
    config = {**BACKBONES[name], **overrides}
    if "attention" in overrides:  # merge attention settings instead of replacing them
        config["attention"] = {**BACKBONES[name].get("attention", {}), **overrides["attention"]}
    return config


def get_backbone(name, **overrides):
    """Builds a named backbone, e.g. `get_backbone("axial_resnet_s", output_stride=8)`."""
    return AxialResNet(name=name, **backbone_config(name, **overrides))


def resolve_backbone(backbone, overrides=None):
    """The backbone of a task model: an `AxialResNet` as given, or the registry's of that name.

    Args:
        backbone: an `AxialResNet`, or a registry name.
        overrides: `AxialResNet` settings, only with a name.

    Raises:
        ValueError: overrides with a built backbone, or neither an `AxialResNet` nor a name.
    """
    if isinstance(backbone, str):
        return get_backbone(backbone, **(overrides or {}))
    if overrides:
        raise ValueError("backbone_overrides apply only when backbone is given by name.")
    if not isinstance(backbone, AxialResNet):
        raise ValueError(f"backbone must be an AxialResNet or a registry name, got {type(backbone).__name__}.")
    return backbone
