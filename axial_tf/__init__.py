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
