"""Prints parameters, multiply-adds per stage and endpoint shapes of a backbone.

    axial-tf-model-summary axial_resnet_s [--input_size 224] [--num_classes 1000] \
        [--overrides output_stride=32 stem_max_pool=true "attention={num_heads: 4}"]

NAME is a registered backbone (`axial_tf.models.list_backbones()`) or a PyTorch
reference architecture (axial26s, axial50s, axial50m, axial50l; see
`axial_tf.checkpoints.pytorch_converter.REFERENCE_MODELS`). Override values are
YAML (`true`, `0.5`, `[1, 1, 1, 1]`, `{num_heads: 4}`). With --num_classes the
model is an `AxialResNetClassifier` (global pooling + dense head); without, the
backbone alone. M-Adds are counted analytically for one image (see
`axial_tf/utils/flops.py` for what is counted).

For the paper's ImageNet "Conv-Stem + Axial-Attention" models use
`--num_classes 1000 --overrides output_stride=32 stem_max_pool=true`.
"""

import argparse
import collections
import math
import os
import re
import sys

import numpy as np
import yaml

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Path parts that name a counted part of a model, in the order they are printed.
_PART_PATTERN = re.compile(r"(?:^|/)(stem|stage\d)(?:/|$)")
_ATTENTION_SUFFIXES = ("/qkv", "/similarity", "/retrieval")


def parse_overrides(items):
    """`["output_stride=32", "attention={num_heads: 4}"]` -> dict with YAML-parsed values.

    Raises:
        ValueError: an item is not `key=value` or its value is not YAML.
    """
    overrides = {}
    for item in items:
        key, separator, value = item.partition("=")
        if not separator or not key:
            raise ValueError(f"Override {item!r} is not of the form key=value.")
        try:
            overrides[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as error:
            raise ValueError(f"Override {item!r}: the value is not valid YAML ({error}).") from error
    return overrides


def build_model(name, overrides, num_classes=None):
    """A registered backbone or reference architecture, with an optional classification head."""
    from axial_tf.checkpoints.pytorch_converter import REFERENCE_MODELS, build_axial_attention_net
    from axial_tf.models import get_backbone
    from axial_tf.models.classifier import AxialResNetClassifier

    if name in REFERENCE_MODELS:
        model = build_axial_attention_net(num_classes=num_classes or 1000, name=name,
                                          **REFERENCE_MODELS[name], **overrides)
        return model if num_classes else model.backbone
    backbone = get_backbone(name, **overrides)
    return AxialResNetClassifier(backbone, num_classes) if num_classes else backbone


def _part_of(path):
    match = _PART_PATTERN.search(path)
    return match.group(1) if match else "head"


def madds_by_part(report):
    """`{part: (convolution/dense M-Adds, attention M-Adds)}` for stem, stage1..5 and head."""
    parts = collections.OrderedDict()
    for path, madds in report.by_path.items():
        conv, attention = parts.get(_part_of(path), (0, 0))
        if path.endswith(_ATTENTION_SUFFIXES):
            attention += madds
        else:
            conv += madds
        parts[_part_of(path)] = (conv, attention)
    return parts


def summary_text(model, input_size):
    """The printed summary of `model` on one `input_size` x `input_size` RGB image."""
    from axial_tf.models import AxialResNet
    from axial_tf.utils.flops import count_madds

    backbone = model if isinstance(model, AxialResNet) else model.backbone
    count = lambda weights: sum(int(np.prod(w.shape)) for w in weights)  # noqa: E731
    tables = count(w for w in model.trainable_weights if w.path.endswith("rpe/embeddings"))
    report = count_madds(model, (input_size, input_size, 3))
    head = "" if model is backbone else f" + {model.num_classes}-class head"
    lines = [
        f"{backbone.name}{head}, input {input_size}x{input_size}x3",
        f"Parameters: total {count(model.weights):,}  trainable {count(model.trainable_weights):,}  "
        f"non-trainable {count(model.non_trainable_weights):,}",
        f"  of which relative-position tables: {tables:,}",
        "",
        "M-Adds (convolutions and dense layers; attention = qkv projection + 3 similarities + 2 retrievals):",
        f"  {'part':<8}{'conv/dense':>14}{'attention':>14}{'total':>14}",
    ]
    for part, (conv, attention) in madds_by_part(report).items():
        lines.append(f"  {part:<8}{conv / 1e6:>13.1f}M{attention / 1e6:>13.1f}M{(conv + attention) / 1e6:>13.1f}M")
    lines += [f"  {'total':<8}{'':>28}{report.total / 1e9:>13.3f}B", "", "Endpoints (output stride):"]
    endpoints = count_madds(backbone, (input_size, input_size, 3)).output_shapes
    for key in sorted(endpoints, key=lambda key: (key[-1], key)):
        height = endpoints[key][1]
        stride = 2 ** round(math.log2(input_size / height))  # sizes are ceil(input / stride)
        lines.append(f"  {key:<8}{str(list(endpoints[key][1:])):<20}{stride}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name", help="registered backbone or reference architecture")
    parser.add_argument("--input_size", type=int, default=224, help="side of the square input image")
    parser.add_argument("--num_classes", type=int, default=None, help="add a classification head")
    parser.add_argument("--overrides", nargs="*", default=[], help="backbone settings as key=value (YAML values)")
    args = parser.parse_args(argv)
    try:
        model = build_model(args.name, parse_overrides(args.overrides), args.num_classes)
        print(summary_text(model, args.input_size))
    except ValueError as error:
        sys.exit(f"error: {error}")


def console_main():
    """The `axial-tf-model-summary` command."""
    main()


if __name__ == "__main__":
    console_main()
