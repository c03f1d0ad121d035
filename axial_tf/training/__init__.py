"""training."""

from axial_tf.utils.optional_imports import tensorflow_installed, tensorflow_needed

if not tensorflow_installed():
    raise tensorflow_needed("axial_tf.training (the Trainer and Evaluator)")
