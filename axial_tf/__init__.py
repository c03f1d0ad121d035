"""axial_tf: Axial-DeepLab and Axial-ResNet for TensorFlow 2 / Keras 3.

Importing the package registers every layer and model with Keras serialization,
so `keras.models.load_model("model.keras")` works after `import axial_tf`.
"""

import os as _os
import sys as _sys

__version__ = "0.1.0"

# TensorFlow leaves its oneDNN kernels off on some x86 CPUs (measured on an AVX2-only AMD EPYC:
# off by default, float32 matmul at 72 instead of 150 GFLOP/s, attention layer training 1.4x
# slower). Turn them on unless the user chose (TF_ENABLE_ONEDNN_OPTS=0 keeps them off); TensorFlow
# reads the variable once, when it loads, so this only acts if it is not loaded yet.
if "tensorflow" not in _sys.modules:
    _os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

from axial_tf import layers  # noqa: F401  (registers the layers)
from axial_tf import models  # noqa: F401  (registers the models)


def _load_preset_model(name):
    # The conversion needs the experiment configs and converters, which sit above the models; it
    # is imported on first use only (importing it loads the dataset code).
    from axial_tf.experiment.pretrained import load_preset_model

    return load_preset_model(name)


models.presets.set_preset_loader(_load_preset_model)
