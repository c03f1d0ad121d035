"""axial_tf: Axial-DeepLab and Axial-ResNet for TensorFlow 2 / Keras 3.

Importing the package registers every layer and model with Keras serialization,
so `keras.models.load_model("model.keras")` works after `import axial_tf`.
"""

__version__ = "0.1.0"

from axial_tf import layers  # noqa: F401  (registers the layers)
from axial_tf import models  # noqa: F401  (registers the models)
