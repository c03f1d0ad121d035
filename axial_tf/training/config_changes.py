"""Which config changes a resumed training run accepts: the one place that decides.

A model directory's checkpoints were trained with the config saved next to them
(`config.yaml`). Resuming with another config is refused when the difference changes the run
itself, unless the caller explicitly allows it (`--allow_config_change`), and accepted and logged
when it only changes how long the run goes, how it is observed or where it runs:

- `SAFE_TO_CHANGE` (accepted, logged): `training.steps` (train longer or shorter; the learning-rate
  schedule then spans the new total), the checkpoint and summary intervals and the number of
  checkpoints kept, `training.init_checkpoint` (read only by a run without checkpoints), how steps
  execute (`training.strategy`, `jit_compile`, `remat`, `deterministic`), where the same data lives
  (`data.data_dir`, `data.manual_dir`), in-memory caching (`data.cache`), and everything about
  evaluation (`data.eval_split`, the `evaluation` section), which never feeds back into training.
- Everything else changes the run and is refused: the model (`model.*`, also
  `training.mixed_precision` and `sync_batch_norm`), the training examples, their order and
  augmentation (the other `data.*` keys, `training.batch_size`, `training.seed`), the losses and the
  optimizer. Keys added to the schema later are refused until listed here.
"""

import dataclasses
from typing import Any

import tensorflow as tf

from axial_tf.experiment.config import (
    CONFIG_FILENAME,
    CONFIG_HISTORY_FILENAME,
    ConfigError,
    config_to_dict,
    load_config,
)

SAFE_TO_CHANGE = (
    "training.steps",
    "training.checkpoint_interval",
    "training.keep_checkpoints",
    "training.summary_interval",
    "training.init_checkpoint",
    "training.strategy",
    "training.jit_compile",
    "training.remat",
    "training.deterministic",
    "data.data_dir",
    "data.manual_dir",
    "data.cache",
    "data.eval_split",
    "evaluation",
)
SHOWN_CHANGES = 6  # a refusal lists this many changed keys, then counts the rest


class ConfigChangeError(ConfigError):
    """A resumed run's config changes the model, the data order, the losses or the optimizer."""


@dataclasses.dataclass(frozen=True)
class ConfigChange:
    """One key whose value differs between the saved config and the new one.

    Attributes:
        key: Dotted key path, e.g. "model.output_stride".
        old: The saved value.
        new: The new value.
    """

    key: str
    old: Any
    new: Any

    @property
    def changes_the_run(self):
        """Whether the change is refused on resume (see the module doc)."""
        return not any(self.key == safe or self.key.startswith(safe + ".") for safe in SAFE_TO_CHANGE)

    def __str__(self):
        return f"{self.key}: {self.old!r} -> {self.new!r}"


def config_changes(saved, new):
    """The keys whose values differ between two configs, in schema order.

    Args:
        saved: The `ExperimentConfig` the model directory was trained with.
        new: The `ExperimentConfig` of the resumed run.

    Returns:
        A list of `ConfigChange`.
    """
    old_values, new_values = _flatten(config_to_dict(saved)), _flatten(config_to_dict(new))
    keys = list(old_values) + [key for key in new_values if key not in old_values]
    return [ConfigChange(key, old_values.get(key), new_values.get(key))
            for key in keys if old_values.get(key) != new_values.get(key)]


def check_resume_config(config, saved_path, allow_config_change=False):
    """Compares a resumed run's config with the one saved in its model directory.

    Args:
        config: The new `ExperimentConfig`.
        saved_path: The model directory's `config.yaml` (a missing file has nothing to compare).
        allow_config_change: Accept changes that change the run.

    Returns:
        The `ConfigChange`s found (the caller logs them).

    Raises:
        ConfigChangeError: A change that changes the run, without `allow_config_change`.
        ConfigError: The saved config cannot be read, without `allow_config_change`.
    """
    if not tf.io.gfile.exists(saved_path):
        return []
    try:
        saved = load_config(saved_path)
    except ConfigError as error:
        if allow_config_change:
            return []
        raise ConfigError(f"Cannot compare the resumed run's config with the saved one: {error} "
                          "(pass --allow_config_change to resume with the new config anyway)") from None
    changes = config_changes(saved, config)
    refused = [change for change in changes if change.changes_the_run]
    if refused and not allow_config_change:
        shown = "; ".join(map(str, refused[:SHOWN_CHANGES]))
        more = f"; and {len(refused) - SHOWN_CHANGES} more" if len(refused) > SHOWN_CHANGES else ""
        raise ConfigChangeError(
            f"{saved_path}: the resumed run's config changes the run ({shown}{more}) but the checkpoints "
            "next to it were trained with this saved config; resume with the same settings, use a new "
            f"model_dir, or pass --allow_config_change (the old {CONFIG_FILENAME} is then kept in "
            f"{CONFIG_HISTORY_FILENAME})"
        )
    return changes


def _flatten(values, prefix=""):
    """`{"a.b.c": value}` of a nested dict (lists stay values; an empty dict has no keys)."""
    flat = {}
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, path + "."))
        else:
            flat[path] = value
    return flat
