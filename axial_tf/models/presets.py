"""`from_preset` of the model classes: a published checkpoint by name, as a ready Keras model.

Fetching and converting a checkpoint needs the experiment configs and the checkpoint
converters, which sit above the models; `import axial_tf` registers that loader here
(`axial_tf.experiment.pretrained.load_preset_model`), so the classes stay below it.
"""

_loader = []  # the registered loader: name -> Keras model


def set_preset_loader(loader):
    """Registers the function that turns a preset name into its model (called by `import axial_tf`)."""
    _loader[:] = [loader]


def from_preset(model_class, name):
    """The model of preset `name`, checked to be a `model_class`.

    Raises:
        ValueError: The preset holds another kind of model (e.g. a backbone asked for as an
            `AxialDeepLab`); the message names both.
    """
    if not _loader:
        raise RuntimeError("No preset loader is registered: import axial_tf first.")
    model = _loader[0](name)
    if not isinstance(model, model_class):
        raise ValueError(f"Preset {name!r} holds an {type(model).__name__}, not an {model_class.__name__}; load it "
                         f"with {type(model).__name__}.from_preset.")
    return model


class PresetMixin:
    """Gives a model class `from_preset`, the keras-hub way of loading a pretrained model by name."""

    @classmethod
    def from_preset(cls, name):
        """The pretrained model of a published checkpoint (`python -m axial_tf.presets list`).

        Fetched, converted and cached under `AXIAL_TF_HOME` on first use (see `axial_tf.presets`).

        Example:
        >>> model = AxialDeepLab.from_preset("axial_swidernet_1_1_1_os16_cityscapes")
        """
        return from_preset(cls, name)
