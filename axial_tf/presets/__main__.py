"""`python -m axial_tf.presets list` prints the catalogue; `... fetch NAME` fills its cache entry.

Example:
    python -m axial_tf.presets list
    python -m axial_tf.presets fetch axial_swidernet_1_1_1_os16_cityscapes
"""

import argparse
import sys

from axial_tf.presets.cache import ensure_checkpoint
from axial_tf.presets.catalogue import PRESETS, UNSUPPORTED
from axial_tf.presets.download import ArchiveError, DownloadError

_COLUMNS = ("name", "task", "config", "published metrics", "source")
_FOOTNOTE = ("[*] evaluated by the official Cityscapes script, [**] by DeepLab2's pipeline "
             "(DeepLab2 g3doc/projects/axial_deeplab.md). DeepLab2's ImageNet checkpoint page publishes "
             "no accuracy.")


def catalogue_rows():
    """One row of strings per preset, in `_COLUMNS` order."""
    rows = []
    for preset in PRESETS:
        config = preset.config or (f"(PyTorch {preset.pytorch_arch})" if preset.pytorch_arch else "-")
        metrics = ", ".join(f"{metric.name} {metric.value}" for metric in preset.metrics) or "-"
        rows.append((preset.name, preset.task, config, metrics, preset.url))
    return rows


def format_table(rows, columns=_COLUMNS):
    """Left-aligned text columns under a header line."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(columns, *rows)]
    lines = [columns, tuple("-" * width for width in widths), *rows]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip()
                     for line in lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m axial_tf.presets", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="print the catalogue")
    fetch = commands.add_parser("fetch", help="download, verify and extract a preset; print its checkpoint")
    fetch.add_argument("name")
    fetch.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the server")
    args = parser.parse_args(argv)
    if args.command == "list":
        print(format_table(catalogue_rows()))
        print()
        print(_FOOTNOTE)
        print("Published checkpoints axial_tf cannot express:")
        for checkpoint, reason in UNSUPPORTED.items():
            print(f"  {checkpoint}: {reason}.")
        return 0
    try:
        print(ensure_checkpoint(args.name, timeout=args.timeout))
    except (ValueError, DownloadError, ArchiveError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
