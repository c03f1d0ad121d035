"""Runtime settings: how the layers compute on the machine at hand, never what they compute.

A layer's config (`get_config`, `.keras` files, SavedModels) holds only the math. The
knobs below change speed and memory, never a result; they are read when a layer is called
(a `tf.function` keeps the values it was traced with):

  * `max_chunk_logits` (default 2**26 = 64 Mi elements, 256 MB of float32): global
    `AxialAttention` forms at most this many logits of one similarity term at once and
    loops over chunks of sequences beyond that. Without the bound Axial-DeepLab-S at
    1025 x 2049 formed 1025 x 8 x 513 x 513 logits (8.6 GB per term) and crashed inside
    TensorFlow; at 513 x 513 the bound takes working memory from 4.2 to 2.3 GB (latency
    2.8 -> 3.3 s). `None` never splits: the attention is one product whatever the sizes,
    also when they are unknown while tracing (graphs traced for export: the chunk loop is a
    TensorList `While` that tf2onnx cannot convert).
  * `max_im2col_elements` (default 2**26): on TensorFlow with oneDNN, on the CPU, a dense
    `ConvBN` convolution whose im2col buffer (`in_channels * k^2 * out_height * out_width`)
    would exceed this runs as one call on a batch of overlapping row bands. Past 1 GB of
    im2col oneDNN falls back to its reference kernel: on an AVX2-only CPU Axial-DeepLab-S at
    1025 x 2049 sat in the stem's 64 -> 128 3x3 convolution at 513 x 1025 without finishing
    a call in 536 s; with bands that convolution takes 2.2 s and the model 50.7 s.
    `None` never splits (e.g. while tracing a graph to export, so that it holds no
    CPU-only branch).
  * `fold_batch_norms` (default True): a `ConvBN` whose batch norm uses its moving
    statistics (inference, frozen layers) convolves with the BN's scale folded into the
    kernel and its shift as a bias, which grappler fuses into one convolution kernel
    (`batch_norm_folding.py`; docs/performance.md, "Batch norms folded into convolutions").
    Off, the BN runs after the convolution as Keras' elementwise ops: results differ by
    float rounding only. The switch is for comparisons (benchmarks/model_speed.py
    `--compare_folding`, the folding tests), not for users' models.
  * oneDNN itself is a process setting, not part of this object: `import axial_tf` sets
    `TF_ENABLE_ONEDNN_OPTS=1` unless the user chose (a 4096^2 float32 matmul 72 -> 150
    GFLOP/s on an AVX2-only CPU where TensorFlow left it off), and TensorFlow reads it once,
    when it loads. `onednn_enabled()` tells whether it is on.

The settings are process-wide, not per thread, so that the replica threads of a
`tf.distribute` strategy see what the calling thread set.

Example:
>>> with runtime_settings(max_chunk_logits=2**24):
...     y = AxialAttention(16, 32, 4)(keras.random.normal((2, 10, 8)))
"""

import contextlib
import dataclasses
import functools
import warnings

import keras

# Constructor arguments that were runtime settings before they moved here. Configs saved
# then (`.keras` files) still hold them: they are accepted and ignored.
_RETIRED_ARGUMENTS = ("max_chunk_logits", "max_im2col_elements")
_noted_arguments = set()


@dataclasses.dataclass(frozen=True)
class RuntimeSettings:
    """Speed and memory settings of the layers (see the module docstring).

    Args:
        max_chunk_logits: most logit elements of one similarity term that global
            `AxialAttention` forms at once; `None` never splits.
        max_im2col_elements: a dense `ConvBN` convolution on TensorFlow + oneDNN on the
            CPU whose im2col buffer would be larger runs on row bands; `None` never does.
        fold_batch_norms: fold `ConvBN` batch norms that use moving statistics into the
            convolution.

    Example:
    >>> RuntimeSettings().max_chunk_logits
    67108864
    """

    max_chunk_logits: int | None = 2**26
    max_im2col_elements: int | None = 2**26
    fold_batch_norms: bool = True

    def __post_init__(self):
        if self.max_chunk_logits is not None and self.max_chunk_logits < 1:
            raise ValueError(f"max_chunk_logits must be positive or None, got {self.max_chunk_logits}.")
        if self.max_im2col_elements is not None and self.max_im2col_elements < 1:
            raise ValueError(f"max_im2col_elements must be positive or None, got {self.max_im2col_elements}.")


_current = RuntimeSettings()


def get_runtime_settings():
    """The `RuntimeSettings` in effect."""
    return _current


@contextlib.contextmanager
def runtime_settings(**changes):
    """Changes some runtime settings inside a `with` block, then restores the previous ones.

    Args:
        **changes: `RuntimeSettings` fields and their values.

    Yields:
        The `RuntimeSettings` in effect inside the block.
    """
    global _current
    previous = _current
    _current = dataclasses.replace(previous, **changes)
    try:
        yield _current
    finally:
        _current = previous


def drop_retired_arguments(kwargs):
    """Removes (in place) constructor arguments that are runtime settings now, with a one-time note."""
    for name in _RETIRED_ARGUMENTS:
        if name not in kwargs:
            continue
        del kwargs[name]
        if name not in _noted_arguments:
            _noted_arguments.add(name)
            warnings.warn(
                f"Ignoring `{name}` (from a config saved by an older axial_tf): it is a runtime setting now, "
                f"see axial_tf.layers.runtime_settings.",
                stacklevel=3,
            )


@functools.cache
def onednn_enabled():
    """Whether TensorFlow runs its oneDNN kernels (fixed when TensorFlow loads)."""
    from tensorflow.python.util import _pywrap_util_port  # TensorFlow's own switch; no public API

    return bool(_pywrap_util_port.IsMklEnabled())


def convolutions_on_onednn_cpu():
    """Whether TensorFlow convolutions of a call run on oneDNN's CPU kernels.

    True on the TensorFlow backend with oneDNN on and no GPU visible to TensorFlow (so every
    op is placed on the CPU). Decided in Python when a layer is called or traced.
    """
    if keras.backend.backend() != "tensorflow" or not onednn_enabled():
        return False
    import tensorflow as tf

    return not tf.config.list_logical_devices("GPU")
