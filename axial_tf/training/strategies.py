"""tf.distribute strategies by name."""

import json
import os

import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multi_worker_mirrored", "tpu")


def get_strategy(name, tpu_address=None):
    """Returns the strategy for `name`.

    Args:
        name: "default" (the current/one-device strategy), "mirrored" (all local
            devices), "multi_worker_mirrored" (workers from the TF_CONFIG
            environment variable) or "tpu".
        tpu_address: TPU name or address for "tpu" (None = the local TPU).

    Raises:
        ValueError: unknown name, or multi_worker_mirrored without a valid TF_CONFIG.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker_mirrored":
        raw = os.environ.get("TF_CONFIG")
        if not raw:
            raise ValueError("multi_worker_mirrored needs the TF_CONFIG environment variable (cluster and task).")
        try:
            tf_config = json.loads(raw)
            tf_config["cluster"]["worker"], tf_config["task"]["index"]
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"TF_CONFIG is not a valid cluster spec ({error}): {raw}") from None
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu_address or "")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(f"Unknown strategy {name!r}; choose one of {STRATEGIES}.")
