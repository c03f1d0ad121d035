"""Process-wide run settings and the replica's role in a distributed run."""

import keras
import tensorflow as tf


def configure_runtime(config):
    """Seeds, op determinism and the Keras dtype policy for a run (call before building models)."""
    keras.utils.set_random_seed(config.training.seed)
    if config.training.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.mixed_precision.set_global_policy(config.training.mixed_precision)


def is_chief(strategy):
    """Whether this process writes the run's files (checkpoints, summaries, metrics)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    return resolver.task_type == "chief" or (resolver.task_type == "worker" and resolver.task_id == 0
                                              and "chief" not in resolver.cluster_spec().as_dict())


def worker_name(strategy):
    """`{task_type}_{task_id}` of this process in a multi-worker cluster ("0" outside one)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    return f"{resolver.task_type}_{resolver.task_id}" if resolver is not None else "0"
