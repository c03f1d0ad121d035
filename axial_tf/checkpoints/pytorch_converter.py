"""Loads weights of the PyTorch reference (csrhddlam/axial-deeplab) into axial_tf models.

The reference's `AxialAttentionNet` (`lib/models/axialnet.py`; released e.g. as
`axial26s`) is an `AxialResNetClassifier` here: a 7x7/2 stem with a 3x3/2 max
pool, bottlenecks of output width `2 * planes`, attention with key depth half
the value depth (key_expansion 0.5, value_expansion 1, `num_heads = groups`),
striding by a 2x2 average pool after both passes, BN epsilon 1e-5 and momentum
0.1 (Keras 0.9).

Differences in layout that the conversion takes care of:
  * `qkv_transform` output channels are group-major (`[q, k, v]` inside each
    group); ours are `[q of all heads, k of all heads, v of all heads]`.
  * `bn_output` sees the content and positional outputs interleaved
    (channel `2 * c + term`); ours has one block per term.
  * `relative` holds the three embeddings as columns over `2K - 1` offsets
    (K = the attended length the module was built for). The query and value
    embeddings are indexed by `query - key`, the key embedding by
    `key - query`. Ours are `[2 * 255 - 1, depth]` tables indexed by
    `key - query`; rows beyond `K - 1` repeat the edge rows, so on inputs
    longer than K the offsets are clipped to the learned range.
  * Convolution kernels `[out, in, kh, kw]` become `[kh, kw, in, out]`, the
    classifier's `[out, in]` becomes `[in, out]`.

Reading `.pth` files needs torch (`pip install axial_tf[torch]`); a dict of
numpy arrays or an `.npz` needs nothing else.

Example:
    model = convert_pytorch_state_dict("axial26s.pth")  # layers, widths, heads, classes inferred
    logits = model(images)  # images: [B, 224, 224, 3] in [0, 255]
"""

import dataclasses
import pathlib
import pickle
import re
import warnings
from typing import Callable, Optional

import numpy as np

from axial_tf.layers import AxialAttention, AxialAttention2D, AxialBlock
from axial_tf.models.axial_resnet import AxialResNet
from axial_tf.models.classifier import AxialResNetClassifier

PYTORCH_BN_EPSILON = 1e-5
PYTORCH_BN_MOMENTUM = 0.9  # Keras momentum = 1 - PyTorch momentum (0.1).
# Constructors of lib/models/axialnet.py: block counts of layer1..4 and width factor s.
REFERENCE_MODELS = {
    "axial26s": dict(layers=(1, 2, 4, 1), s=0.5),
    "axial50s": dict(layers=(3, 4, 6, 3), s=0.5),
    "axial50m": dict(layers=(3, 4, 6, 3), s=0.75),
    "axial50l": dict(layers=(3, 4, 6, 3), s=1.0),
}
# Buffers without a Keras counterpart: BN call counters; `flatten_index` is checked, not loaded.
_SKIPPED_SUFFIXES = ("num_batches_tracked", "flatten_index")
_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "net")


@dataclasses.dataclass
class _Entry:
    """One PyTorch tensor (`key`) that sets one of our variables."""

    key: str
    variable: object
    torch_shape: tuple  # expected PyTorch shape; None entries match any size
    convert: Callable[[np.ndarray], np.ndarray] = lambda value: value


def _join(prefix, name):
    return f"{prefix}.{name}" if prefix else name


# ---------------------------------------------------------------- reading


def load_state_dict(source):
    """Reads a PyTorch state dict as `{key: numpy array}`.

    Args:
        source: a dict of arrays or torch tensors; a `.pth`/`.pt`/`.tar`
            checkpoint (needs torch); or an `.npz` (keys `sd/<key>` as in the
            reference fixtures, or plain state-dict keys). Checkpoints that wrap
            the state dict (`{"state_dict": ...}`, `{"model": ...}`) and keys
            prefixed by `module.` (`torch.nn.DataParallel`) are unwrapped.

    Returns:
        dict of state-dict keys to numpy arrays.

    Raises:
        ImportError: a `.pth` file was given and torch is not installed.
        ValueError: the source holds no state dict.
    """
    if isinstance(source, (str, pathlib.Path)):
        path = pathlib.Path(source)
        if not path.is_file():
            raise ValueError(f"PyTorch checkpoint {path} does not exist.")
        if path.suffix == ".npz":
            with np.load(path) as archive:
                keys = list(archive.keys())
                if any(key.startswith("sd/") for key in keys):
                    state = {key[len("sd/"):]: archive[key] for key in keys if key.startswith("sd/")}
                else:
                    state = {key: archive[key] for key in keys}
        else:
            state = _torch_load(path)
    else:
        state = source
    state = _unwrap(state, str(source) if isinstance(source, (str, pathlib.Path)) else "the state dict")
    return {key: _to_numpy(value) for key, value in state.items()}


def _torch_load(path):
    try:
        import torch
    except ImportError as error:
        raise ImportError(
            f"Reading the PyTorch checkpoint {path} needs torch: `pip install axial_tf[torch]` "
            "(the CPU build is enough), or pass the state dict as a dict of numpy arrays."
        ) from error
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"torch.load({path}, weights_only=True) refused the file ({error}). If you trust it, load it "
            "with torch.load(..., weights_only=False) and pass the state dict instead of the path."
        ) from error


def _unwrap(state, source):
    if not isinstance(state, dict):
        raise ValueError(f"{source} is not a state dict (got {type(state).__name__}).")
    for key in _WRAPPER_KEYS:
        if isinstance(state.get(key), dict):
            state = state[key]
            break
    if state and all(key.startswith("module.") for key in state):
        state = {key[len("module."):]: value for key, value in state.items()}
    if not state:
        raise ValueError(f"{source} holds no state-dict entries.")
    return state


def _to_numpy(value):
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    return np.asarray(value)


# ---------------------------------------------------------------- per-layer entries


def _conv_entries(key_prefix, conv):
    kernel_h, kernel_w, in_channels, out_channels = conv.kernel.shape
    return [
        _Entry(
            _join(key_prefix, "weight"),
            conv.kernel,
            (out_channels, in_channels, kernel_h, kernel_w),
            lambda value: np.transpose(value, (2, 3, 1, 0)),
        )
    ]


def _bn_entries(key_prefix, batch_norm, convert=lambda value: value):
    channels = batch_norm.gamma.shape[0]
    pairs = (("weight", batch_norm.gamma), ("bias", batch_norm.beta),
             ("running_mean", batch_norm.moving_mean), ("running_var", batch_norm.moving_variance))
    return [_Entry(_join(key_prefix, name), variable, (channels,), convert) for name, variable in pairs]


def _dense_entries(key_prefix, dense):
    in_features, units = dense.kernel.shape
    return [
        _Entry(_join(key_prefix, "weight"), dense.kernel, (units, in_features), np.transpose),
        _Entry(_join(key_prefix, "bias"), dense.bias, (units,)),
    ]


def qkv_permutation(groups, group_planes):
    """Reference `qkv_transform` channel of each of our qkv columns.

    Our columns are queries (head-major), then keys, then values; the
    reference's group `g` owns channels `g * 2 * gp ... (g + 1) * 2 * gp - 1`
    as `gp/2` query, `gp/2` key and `gp` value channels.

    Args:
        groups: attention groups (our heads).
        group_planes: value channels per group `gp` (queries/keys get `gp/2`).

    Returns:
        int array `[4 * groups * group_planes / 2]` of reference channel indices.
    """
    half = group_planes // 2
    group_start = (np.arange(groups) * 2 * group_planes)[:, None]
    queries = group_start + np.arange(half)
    keys = group_start + half + np.arange(half)
    values = group_start + group_planes + np.arange(group_planes)
    return np.concatenate([queries.ravel(), keys.ravel(), values.ravel()])


def relative_tables(relative, group_planes, max_span):
    """Splits a reference `relative` parameter into our three offset tables.

    Args:
        relative: `[2 * gp, 2K - 1]` reference embeddings (query, key, value rows).
        group_planes: value channels per group `gp`.
        max_span: our tables cover offsets `-(max_span-1) ... max_span-1`.

    Returns:
        `(query, key, value)` tables `[2 * max_span - 1, gp/2 | gp/2 | gp]`; row
        `max_span - 1 + d` holds offset `d = key - query`, clipped to the
        reference's `+-(K - 1)`.

    Raises:
        ValueError: K exceeds `max_span`.
    """
    kernel = (relative.shape[1] + 1) // 2
    if kernel > max_span:
        raise ValueError(f"reference attention length {kernel} exceeds our max_span {max_span}.")
    offsets = np.clip(np.arange(2 * max_span - 1) - (max_span - 1), 1 - kernel, kernel - 1)  # key - query
    half = group_planes // 2
    # Query and value columns count query - key, the key column counts key - query.
    query = relative[:half, kernel - 1 - offsets].T
    key = relative[half:group_planes, kernel - 1 + offsets].T
    value = relative[group_planes:, kernel - 1 - offsets].T
    return query, key, value


def _attention_entries(key_prefix, layer):
    """Entries of one reference `AxialAttention` module loaded into our 1-D `AxialAttention`."""
    groups, value_depth = layer.num_heads, layer.total_value_depth
    group_planes = value_depth // groups
    if 2 * layer.total_key_depth != value_depth or layer.num_similarity_terms != 3 or layer.num_retrieval_terms != 2:
        raise ValueError(
            f"{layer.name}: the reference layout needs key depth = value depth / 2 and all similarity and "
            f"retrieval terms, got key depth {layer.total_key_depth}, value depth {value_depth}."
        )
    in_channels = layer.qkv_kernel.shape[0]
    permutation = qkv_permutation(groups, group_planes)
    max_span = layer.query_rpe.max_span
    relative_key = _join(key_prefix, "relative")

    def table(index):
        return lambda value: relative_tables(value, group_planes, max_span)[index]

    entries = [
        _Entry(_join(key_prefix, "qkv_transform.weight"), layer.qkv_kernel, (2 * value_depth, in_channels, 1),
               lambda value: value[permutation, :, 0].T),
        *_bn_entries(_join(key_prefix, "bn_qkv"), layer.batch_norm_qkv, lambda value: value[permutation]),
        *_bn_entries(_join(key_prefix, "bn_similarity"), layer.batch_norm_similarity),
        # Reference channel 2 * c + term -> ours term * Dv + c.
        *_bn_entries(_join(key_prefix, "bn_output"), layer.batch_norm_retrieved_output,
                     lambda value: value.reshape(value_depth, 2).T.reshape(-1)),
    ]
    for index, rpe in enumerate((layer.query_rpe, layer.key_rpe, layer.value_rpe)):
        entries.append(_Entry(relative_key, rpe.embeddings, (2 * group_planes, None), table(index)))
    return entries


def _block_entries(key_prefix, block):
    """Entries of one reference `AxialBlock` (`layerI.J`) loaded into our `AxialBlock`."""
    if not isinstance(block.attention_layer, AxialAttention2D):
        raise ValueError(f"{block.name} is not an axial block; the reference has attention in every block.")
    entries = [
        *_conv_entries(_join(key_prefix, "conv_down"), block.conv1_bn_act.conv),
        *_bn_entries(_join(key_prefix, "bn1"), block.conv1_bn_act.batch_norm),
        *_attention_entries(_join(key_prefix, "hight_block"), block.attention_layer.height_axis),
        *_attention_entries(_join(key_prefix, "width_block"), block.attention_layer.width_axis),
        *_conv_entries(_join(key_prefix, "conv_up"), block.conv3_bn.conv),
        *_bn_entries(_join(key_prefix, "bn2"), block.conv3_bn.batch_norm),
    ]
    if block.shortcut is not None:
        entries += _conv_entries(_join(key_prefix, "downsample.0"), block.shortcut.conv)
        entries += _bn_entries(_join(key_prefix, "downsample.1"), block.shortcut.batch_norm)
    return entries


def _classifier_entries(classifier):
    backbone = classifier.backbone
    config = backbone.backbone_config
    if config["stem_type"] != "resnet" or not config["stem_max_pool"] or len(backbone.stages) != 4:
        raise ValueError(
            "The classifier's backbone is not shaped like the reference AxialAttentionNet "
            "(stem_type 'resnet' with stem_max_pool and four stages); build it with build_axial_attention_net."
        )
    entries = [*_conv_entries("conv1", backbone.stem.conv), *_bn_entries("bn1", backbone.stem.batch_norm)]
    for stage_index, stage in enumerate(backbone.stages, start=1):
        for block_index, block in enumerate(stage.blocks):
            if not isinstance(block, AxialBlock):
                raise ValueError(f"{stage.name}/{block.name} is not an AxialBlock.")
            entries += _block_entries(f"layer{stage_index}.{block_index}", block)
    return entries + _dense_entries("fc", classifier.get_layer("logits"))


# ---------------------------------------------------------------- assignment


def _assign(entries, state_dict, source, strict, expected_weights=None):
    """Checks keys and shapes of `state_dict` against `entries`, then assigns.

    Returns:
        Sorted keys of `state_dict` that no entry uses (empty when strict).

    Raises:
        ValueError: missing keys, unknown keys (strict), shape mismatches, or
            variables of `expected_weights` that no entry sets; all named.
    """
    wanted = {entry.key for entry in entries}
    skipped = {key for key in state_dict if key.endswith(_SKIPPED_SUFFIXES)}
    missing = sorted(wanted - set(state_dict))
    unknown = sorted(set(state_dict) - wanted - skipped)
    problems = []
    if missing:
        problems.append(f"missing key(s): {missing}")
    if unknown and strict:
        problems.append(f"unknown key(s) (pass strict=False to ignore them): {unknown}")
    for entry in entries:
        if entry.key in state_dict and not _shape_matches(state_dict[entry.key].shape, entry.torch_shape):
            expected = ["*" if size is None else size for size in entry.torch_shape]
            problems.append(f"{entry.key}: shape {list(state_dict[entry.key].shape)}, expected {expected}")
    problems += _flatten_index_problems(state_dict)
    if expected_weights is not None:
        covered = {id(entry.variable) for entry in entries}
        uncovered = [weight.path for weight in expected_weights if id(weight) not in covered]
        if uncovered:
            problems.append(f"our variables without a reference counterpart: {uncovered}")
    if problems:
        raise ValueError(f"Cannot load {source}:\n  " + "\n  ".join(dict.fromkeys(problems)))

    for entry in entries:
        value = np.asarray(entry.convert(state_dict[entry.key]), dtype=entry.variable.dtype)
        if tuple(value.shape) != tuple(entry.variable.shape):
            raise ValueError(
                f"Cannot load {source}: {entry.key} converts to {list(value.shape)}, "
                f"but {entry.variable.path} is {list(entry.variable.shape)}."
            )
        entry.variable.assign(value)
    if unknown:
        warnings.warn(f"Ignored {len(unknown)} unknown key(s) of {source}: {unknown}")
    return unknown


def _shape_matches(shape, expected):
    return len(shape) == len(expected) and all(e is None or s == e for s, e in zip(shape, expected))


def _flatten_index_problems(state_dict):
    """`flatten_index` must be the reference's index grid for the `relative` beside it."""
    problems = []
    for key, index in state_dict.items():
        if not key.endswith("flatten_index"):
            continue
        relative_key = key[: -len("flatten_index")] + "relative"
        if relative_key not in state_dict:
            problems.append(f"{key} has no {relative_key} beside it")
            continue
        kernel = (state_dict[relative_key].shape[1] + 1) // 2
        positions = np.arange(kernel)
        expected = (positions[:, None] - positions[None, :] + kernel - 1).ravel()
        if index.shape != expected.shape or not np.array_equal(index, expected):
            problems.append(f"{key} is not the index grid of a length-{kernel} attention")
    return problems


# ---------------------------------------------------------------- public API


def axial_attention_from_pytorch(state_dict_or_path, prefix="", name=None, strict=True):
    """Builds our 1-D `AxialAttention` holding a reference `AxialAttention` module.

    The reference module attends along H (`width=False`) or W (`width=True`) of
    an NCHW tensor and, with `stride > 1`, average-pools H and W afterwards;
    apply the returned layer to the sequences of that axis (`[N, L, C]`) and
    pool likewise (`AxialAttention2D(stride_mode="average_pool")` does both for
    a height + width pair).

    Args:
        state_dict_or_path: anything `load_state_dict` reads.
        prefix: the module's key prefix, e.g. "layer1.0.hight_block" ("" for a
            state dict of the module alone).
        name: name of the new layer.
        strict: unknown keys (under `prefix`) are an error; otherwise a warning.

    Returns:
        A built `AxialAttention` with `num_heads = groups`, key depth
        `out_planes / 2`, value depth `out_planes` and PyTorch BN settings.

    Raises:
        ValueError: missing or unknown keys, or shapes that do not fit.
    """
    state_dict = load_state_dict(state_dict_or_path)
    scope = {key: value for key, value in state_dict.items() if key.startswith(_join(prefix, ""))}
    for required in ("qkv_transform.weight", "bn_similarity.weight"):
        if _join(prefix, required) not in scope:
            raise ValueError(f"Cannot load a reference AxialAttention: {_join(prefix, required)!r} is missing.")
    out_planes2, in_planes, _ = scope[_join(prefix, "qkv_transform.weight")].shape
    groups = scope[_join(prefix, "bn_similarity.weight")].shape[0] // 3
    layer = AxialAttention(
        total_key_depth=out_planes2 // 4,
        total_value_depth=out_planes2 // 2,
        num_heads=groups,
        batch_norm_epsilon=PYTORCH_BN_EPSILON,
        batch_norm_momentum=PYTORCH_BN_MOMENTUM,
        name=name,
    )
    layer.build((None, None, in_planes))
    _assign(_attention_entries(prefix, layer), scope, prefix or "the AxialAttention state dict", strict)
    return layer


def axial_attention_net_config(layers, groups=8, s=0.5, stem_channels=None, planes=None):
    """`AxialResNet` arguments equivalent to the reference `AxialAttentionNet`.

    Args:
        layers: blocks of layer1..layer4 (4 ints).
        groups: attention groups (our heads).
        s: width factor: stem `int(64 s)`, planes `int(128 s) ... int(1024 s)`.
        stem_channels: stem width, overriding `s` (e.g. read from a state dict).
        planes: the four stage widths, overriding `s`.

    Returns:
        dict of `AxialResNet` keyword arguments.
    """
    if len(layers) != 4:
        raise ValueError(f"layers lists the blocks of the reference's 4 stages, got {list(layers)}.")
    stem_channels = int(64 * s) if stem_channels is None else int(stem_channels)
    planes = [int(base * s) for base in (128, 256, 512, 1024)] if planes is None else [int(p) for p in planes]
    return dict(
        stem_type="resnet",
        stem_width_multiplier=stem_channels / 64,
        stem_max_pool=True,
        num_blocks=[int(n) for n in layers],
        stage_filters=[stem_channels, *planes],  # stage 1 does not exist; its entry is unused
        output_stride=32,
        use_axial_beyond_stride=2,
        attention=dict(num_heads=int(groups), key_expansion=0.5, value_expansion=1, stride_mode="average_pool"),
        attention_bottleneck_expansion=1,
        block_output_expansion=2,
        drop_path_keep_prob=1.0,
        batch_norm_epsilon=PYTORCH_BN_EPSILON,
        batch_norm_momentum=PYTORCH_BN_MOMENTUM,
    )


def build_axial_attention_net(layers, num_classes=1000, groups=8, s=0.5, input_normalization="imagenet",
                              name="axial_attention_net", stem_channels=None, planes=None, **backbone_overrides):
    """Our (randomly initialised) equivalent of the reference `AxialAttentionNet`.

    Args:
        layers: blocks of layer1..layer4, e.g. `(1, 2, 4, 1)` for axial26s.
        num_classes: classifier outputs.
        groups: attention groups.
        s: width factor (see `axial_attention_net_config`).
        input_normalization: see `AxialResNetClassifier`; "imagenet" matches
            the reference's input normalisation, so the model takes [0, 255].
        name: model name.
        stem_channels: stem width overriding `s`.
        planes: stage widths overriding `s`.
        **backbone_overrides: further `AxialResNet` settings (e.g. `remat`);
            an `attention` dict is merged into the reference's attention settings.

    Returns:
        An `AxialResNetClassifier`.
    """
    config = axial_attention_net_config(layers, groups, s, stem_channels, planes)
    # Attention overrides adjust the reference's attention settings instead of replacing them.
    attention = {**config["attention"], **backbone_overrides.pop("attention", {})}
    backbone = AxialResNet(name=f"{name}_backbone", **{**config, **backbone_overrides, "attention": attention})
    return AxialResNetClassifier(backbone, num_classes, input_normalization=input_normalization, name=name)


def load_pytorch_classifier(classifier, state_dict_or_path, strict=True):
    """Loads a reference `AxialAttentionNet` state dict into a classifier built alike.

    Args:
        classifier: an `AxialResNetClassifier` from `build_axial_attention_net`.
        state_dict_or_path: anything `load_state_dict` reads.
        strict: unknown keys are an error; otherwise they are skipped with a warning.

    Returns:
        Sorted unknown keys that were skipped (empty when strict).

    Raises:
        ValueError: missing or unknown keys, shape mismatches, or variables of
            the classifier the state dict does not set (all named).
    """
    state_dict = load_state_dict(state_dict_or_path)
    source = str(state_dict_or_path) if isinstance(state_dict_or_path, (str, pathlib.Path)) else "the state dict"
    return _assign(_classifier_entries(classifier), state_dict, source, strict, classifier.weights)


def _infer_architecture(state_dict):
    """Block counts, widths, groups and classes of a reference state dict."""
    needed = ("conv1.weight", "fc.weight", "layer1.0.hight_block.bn_similarity.weight")
    absent = [key for key in needed if key not in state_dict]
    if absent:
        raise ValueError(f"Not an AxialAttentionNet state dict: {absent} missing.")
    blocks = {}
    for key in state_dict:
        match = re.match(r"layer(\d+)\.(\d+)\.", key)
        if match:
            stage, block = int(match.group(1)), int(match.group(2))
            blocks[stage] = max(blocks.get(stage, 0), block + 1)
    if sorted(blocks) != [1, 2, 3, 4]:
        raise ValueError(f"Not an AxialAttentionNet state dict: stages {sorted(blocks)} instead of layer1..layer4.")
    return dict(
        layers=[blocks[stage] for stage in (1, 2, 3, 4)],
        stem_channels=state_dict["conv1.weight"].shape[0],
        planes=[state_dict[f"layer{stage}.0.conv_down.weight"].shape[0] for stage in (1, 2, 3, 4)],
        groups=state_dict["layer1.0.hight_block.bn_similarity.weight"].shape[0] // 3,
        num_classes=state_dict["fc.weight"].shape[0],
    )


def convert_pytorch_state_dict(
    state_dict_or_path,
    model_name: Optional[str] = None,
    layers=None,
    groups=None,
    s=None,
    num_classes=None,
    input_normalization="imagenet",
    strict=True,
    **backbone_overrides,
):
    """Converts a reference `AxialAttentionNet` state dict into an `AxialResNetClassifier`.

    Architecture settings not given are read from the state dict's shapes;
    given ones must agree with them (mismatches are reported by key).

    Args:
        state_dict_or_path: anything `load_state_dict` reads (e.g. "axial26s.pth").
        model_name: a reference constructor name (`REFERENCE_MODELS`), giving
            `layers` and `s`.
        layers: blocks of layer1..layer4.
        groups: attention groups.
        s: width factor.
        num_classes: classifier outputs.
        input_normalization: see `AxialResNetClassifier` ("imagenet": the model
            takes [0, 255] images and normalises them as the reference).
        strict: unknown keys are an error; otherwise skipped with a warning.
        **backbone_overrides: further `AxialResNet` settings (e.g. `remat`).

    Returns:
        The converted `AxialResNetClassifier` (named `model_name` if given).

    Raises:
        ImportError: a `.pth` path was given and torch is missing.
        ValueError: unknown model name, conflicting settings, or keys/shapes
            that do not fit the architecture.
    """
    state_dict = load_state_dict(state_dict_or_path)
    if model_name is not None:
        if model_name not in REFERENCE_MODELS:
            raise ValueError(f"Unknown reference model {model_name!r}; known: {sorted(REFERENCE_MODELS)}.")
        if layers is not None or s is not None:
            raise ValueError("Give either model_name or layers/s, not both.")
        layers, s = REFERENCE_MODELS[model_name]["layers"], REFERENCE_MODELS[model_name]["s"]
    inferred = _infer_architecture(state_dict)
    widths = {} if s is not None else dict(stem_channels=inferred["stem_channels"], planes=inferred["planes"])
    model = build_axial_attention_net(
        layers=inferred["layers"] if layers is None else layers,
        num_classes=inferred["num_classes"] if num_classes is None else num_classes,
        groups=inferred["groups"] if groups is None else groups,
        s=0.5 if s is None else s,
        input_normalization=input_normalization,
        name=model_name or "axial_attention_net",
        **widths,
        **backbone_overrides,
    )
    load_pytorch_classifier(model, state_dict, strict=strict)
    return model


def convert_pytorch_checkpoint(path, arch=None, num_classes=None, strict=True):
    """`convert_pytorch_state_dict` for a checkpoint file and a reference architecture name.

    The entry point of `tools/convert_checkpoint.py --from pytorch`.

    Args:
        path: `.pth`/`.pt`/`.tar` (needs torch) or `.npz` state dict.
        arch: a `REFERENCE_MODELS` name (e.g. "axial26s"), or None to infer
            the architecture from the state dict.
        num_classes: classifier outputs (None: from the state dict).
        strict: unknown keys are an error.

    Returns:
        The converted `AxialResNetClassifier`.
    """
    return convert_pytorch_state_dict(path, model_name=arch, num_classes=num_classes, strict=strict)
