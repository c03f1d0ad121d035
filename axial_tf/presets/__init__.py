"""Pretrained presets: the published Axial-DeepLab and backbone checkpoints, by name.

`catalogue` lists them (URL, archive layout, matching config, published metrics, license,
citation); `cache` downloads, verifies and extracts one into AXIAL_TF_HOME once; `download` is
the resumable, atomic fetch underneath. `python -m axial_tf.presets list` prints the catalogue.

Example:
    from axial_tf import presets
    presets.lookup("axial_swidernet_1_1_1_os16_cityscapes").metrics
    prefix = presets.ensure_checkpoint("axial_swidernet_1_1_1_os16_cityscapes")
"""

from axial_tf.presets.cache import (
    archive_path,
    converted_path,
    ensure_checkpoint,
    home,
    preset_dir,
    store_converted,
)
from axial_tf.presets.catalogue import (
    PRESETS,
    UNSUPPORTED,
    Metric,
    Preset,
    list_presets,
    lookup,
)
from axial_tf.presets.download import (
    ArchiveError,
    ChecksumError,
    DownloadError,
    fetch_archive,
)

__all__ = [
    "PRESETS",
    "UNSUPPORTED",
    "ArchiveError",
    "ChecksumError",
    "DownloadError",
    "Metric",
    "Preset",
    "archive_path",
    "converted_path",
    "ensure_checkpoint",
    "fetch_archive",
    "home",
    "list_presets",
    "lookup",
    "preset_dir",
    "store_converted",
]
