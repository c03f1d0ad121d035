"""The tf.distribute replica context, for layers whose math spans replicas.

Synchronised batch statistics and per-replica random masks need to know the
replica a call runs on. Keras 3 synchronises batch norm on TensorFlow only as
well; on other backends (and outside a strategy) there is one replica.
"""

import keras


def _replica_context():
    """The current multi-replica tf.distribute context, or `None`."""
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return None
    return context


def all_reduce_sum(tensors):
    """Sums a list of `tensors` over the replicas in sync (unchanged with one replica)."""
    context = _replica_context()
    if context is None:
        return tensors
    import tensorflow as tf

    return context.all_reduce(tf.distribute.ReduceOp.SUM, tensors)


def replica_position():
    """`(num_replicas_in_sync, replica_id)` of the current call; `(1, 0)` with one replica."""
    context = _replica_context()
    if context is None:
        return 1, 0
    return context.num_replicas_in_sync, context.replica_id_in_sync_group
