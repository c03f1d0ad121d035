"""TensorFlow as an optional dependency: one clear line when a feature needs it and it is missing.

The layers, models and losses run on every Keras backend and import no TensorFlow. The data
pipelines, the Trainer, the export and the tools do; their packages check for it when they load,
so a JAX or PyTorch user without TensorFlow learns which install they lack:

    if not tensorflow_installed():
        raise tensorflow_needed("axial_tf.data (the tf.data pipelines)")
"""

import importlib
import importlib.util

TENSORFLOW_INSTALL = "pip install 'axial_tf[tensorflow]'"


def tensorflow_installed():
    """Whether the `tensorflow` package can be imported (found without importing it)."""
    return importlib.util.find_spec("tensorflow") is not None


def tensorflow_needed(feature):
    """The one-line error for `feature`, which needs TensorFlow, when it is not installed.

    Args:
        feature: What needs TensorFlow (e.g. "axial_tf.data (the tf.data pipelines)").

    Returns:
        A `ModuleNotFoundError` naming `feature` and the install command.
    """
    return ModuleNotFoundError(f"{feature} needs TensorFlow: {TENSORFLOW_INSTALL}", name="tensorflow")


def require_tensorflow(feature):
    """Imports and returns the `tensorflow` module, which `feature` needs.

    Raises:
        ModuleNotFoundError: `tensorflow_needed(feature)` when TensorFlow is not installed.
    """
    if not tensorflow_installed():
        raise tensorflow_needed(feature)
    return importlib.import_module("tensorflow")
