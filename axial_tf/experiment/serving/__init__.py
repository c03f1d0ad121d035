"""Serving modules: a trained model with its evaluation pre- and post-processing as `tf.Module` signatures."""
