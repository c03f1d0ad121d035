"""Pretrained presets as ready models: fetch a published checkpoint once, convert it once, load it.

`axial_tf.presets` fetches, verifies and extracts the archive into the cache; here the
checkpoint becomes the Keras model the preset's shipped config describes (DeepLab2 archives
through the DeepLab2 converter, every variable required for whole models; the PyTorch
reference's `.pth` through the PyTorch converter), saved once as the cache's
`converted.keras` and loaded from there, in safe mode, ever after.

Example:
    model = load_preset_model("axial_swidernet_1_1_1_os16_cityscapes")  # an AxialDeepLab
    config, keras_path = preset_experiment("axial_swidernet_1_1_1_os16_cityscapes")  # for the tools
"""

import os

from axial_tf.checkpoints.deeplab2_converter import load_deeplab2_checkpoint
from axial_tf.checkpoints.pytorch_converter import convert_pytorch_checkpoint
from axial_tf.experiment.checkpoints import load_keras_model
from axial_tf.experiment.config import load_config, shipped_config
from axial_tf.experiment.tasks import build_model
from axial_tf.presets.cache import converted_path, ensure_checkpoint, store_converted
from axial_tf.presets.catalogue import BACKBONE, PYTORCH_PTH, lookup

PRESET_PREFIX = "preset:"  # `training.init_checkpoint: preset:NAME`


def load_preset_model(name, progress=True):
    """The model of a preset, fetched and converted on first use (see the module docstring).

    Args:
        name: A catalogue name (`python -m axial_tf.presets list`).
        progress: Print download progress.

    Returns:
        An `AxialDeepLab` (panoptic presets), `AxialResNetClassifier` (classification) or
        `AxialResNet` (ImageNet backbones).

    Raises:
        ValueError: An unknown name (with the close matches), or a checkpoint that does not fit the
            preset's model (naming the variables).
        DownloadError, ArchiveError: See `axial_tf.presets.ensure_checkpoint`.
    """
    preset = lookup(name)
    path = converted_path(preset)
    if path is None:
        model = _convert(preset, ensure_checkpoint(preset, progress=progress))
        path = store_converted(preset, model.save)
    return load_keras_model(path)


def preset_experiment(name, config_path=None, overrides=(), progress=True):
    """`(config, keras_path)` of a preset: its experiment config and its converted model file.

    What the tools need to evaluate, export or predict with a preset (the config supplies the
    label space, input size and post-processing a `.keras` file does not hold).

    Args:
        name: A catalogue name.
        config_path: An experiment file to use instead of the preset's shipped config (e.g. the
            same model evaluated on another split or dataset).
        overrides: "key.sub=value" overrides of the config.
        progress: Print download progress.
    """
    preset = lookup(name)
    if config_path is None and preset.config is None:
        raise ValueError(f"Preset {name!r} ships no experiment config; give one with --config.")
    load_preset_model(name, progress=progress)
    return load_config(config_path or _config_path(preset), overrides=overrides), converted_path(preset)


def init_checkpoint_source(source, progress=True):
    """What `training.init_checkpoint` names: `preset:NAME` becomes the preset's checkpoint.

    A DeepLab2 preset gives its extracted checkpoint prefix (fine-tuning restores what matches
    and reports the rest); a PyTorch preset its converted `.keras` file. Other sources are
    returned as they are.
    """
    if not str(source).startswith(PRESET_PREFIX):
        return source
    preset = lookup(str(source)[len(PRESET_PREFIX):])
    if preset.archive == PYTORCH_PTH:
        load_preset_model(preset.name, progress=progress)
        return converted_path(preset)
    return ensure_checkpoint(preset, progress=progress)


def _convert(preset, checkpoint):
    """The Keras model of `preset` with the weights of its downloaded `checkpoint`."""
    if preset.archive == PYTORCH_PTH:  # reading a .pth needs the [torch] extra
        return convert_pytorch_checkpoint(checkpoint, arch=preset.pytorch_arch, num_classes=1000)
    if preset.config is None:
        raise ValueError(f"Preset {preset.name!r} ships no experiment config to build its model from; fine-tune from "
                         f"it with training.init_checkpoint: preset:{preset.name}.")
    model = build_model(load_config(_config_path(preset)), sync_batch_norm=False)
    if preset.task == BACKBONE:
        # An ImageNet encoder: the decoder of the shipped config stays untrained and is dropped.
        load_deeplab2_checkpoint(model, checkpoint, strict=False)
        return model.backbone
    load_deeplab2_checkpoint(model, checkpoint, strict=True)
    return model


def _config_path(preset):
    """The preset's experiment file: a shipped config (relative to configs/) or a file of its own."""
    return preset.config if os.path.isabs(preset.config) else shipped_config(preset.config)
