"""The experiment: config schema, builders, tasks and the checkpoint layout.

Everything below training, evaluation and export that turns an experiment config into objects.
"""

from axial_tf.utils.optional_imports import tensorflow_installed, tensorflow_needed

if not tensorflow_installed():
    raise tensorflow_needed("axial_tf.experiment (configs, tasks and serving modules)")
