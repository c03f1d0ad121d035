"""Shared pieces of the benchmark scripts: threads, timing, memory, FLOP counts.

Every benchmark script runs in its own process (started by `run_all.py`), sets
TensorFlow to `THREADS` threads before any op runs, and prints one JSON record
per measurement on a line starting with `RECORD_PREFIX`, so the driver can
collect results from any mix of scripts. Nothing here asserts on timings.
TensorFlow is imported only inside the functions that use it, so the
TensorFlow-free `gpu_speed.py` (JAX and PyTorch backends) shares the rest.
"""

import json
import linecache
import os
import pathlib
import platform
import resource
import statistics
import subprocess
import sys
import time
import types

THREADS = 2
RECORD_PREFIX = "BENCHMARK_RECORD "
REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
# The layer as it was before the performance work (the first commit of the layers).
BASELINE_COMMIT = "c92d10d"

# The four layer cases of the issue: input shape, filters, span. All use 8 heads,
# key_expansion 1, value_expansion 2.
LAYER_CASES = {
    "ds_stage4": dict(shape=(2, 33, 33, 512), filters=256, span=None),
    "cityscapes_os16": dict(shape=(1, 65, 129, 1024), filters=512, span=None),
    "resnet_s_stage2": dict(shape=(8, 56, 56, 64), filters=32, span=None),
    "local_span65": dict(shape=(1, 129, 257, 256), filters=128, span=65),
}


def setup_tensorflow(threads=THREADS):
    """Imports TensorFlow with `threads` intra- and inter-op threads; returns the module."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, str(REPO_ROOT))
    import axial_tf  # noqa: F401  (before TensorFlow: it turns oneDNN on unless TF_ENABLE_ONEDNN_OPTS says)
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    return tf


def _onednn_state():
    """Whether TensorFlow's oneDNN kernels are on in this process, and what turned them on or off."""
    from tensorflow.python.util import _pywrap_util_port

    setting = os.environ.get("TF_ENABLE_ONEDNN_OPTS")
    return ("on" if _pywrap_util_port.IsMklEnabled() else "off") + (
        f" (TF_ENABLE_ONEDNN_OPTS={setting})" if setting is not None else " (TensorFlow's default)")


def emit(**record):
    """Prints one result record for `run_all.py`."""
    print(RECORD_PREFIX + json.dumps(record), flush=True)


def wait(result):
    """Blocks until every tensor in `result` is computed (copies it to numpy)."""
    import tensorflow as tf

    # Composite results (the IndexedSlices gradients of gathered tables) are waited for
    # component by component: densifying them would add eager ops to the timed call.
    for tensor in tf.nest.flatten(result, expand_composites=True):
        tensor.numpy()


def time_call(fn, wait=wait):
    """Seconds of one call of `fn`, including waiting (`wait`) for its outputs."""
    start = time.perf_counter()
    wait(fn())
    return time.perf_counter() - start


def interleaved_seconds(functions, rounds, warmup=1, calls_per_turn=1, wait=wait):
    """Times several functions in alternation, so machine load hits them alike.

    Args:
        functions: dict name -> zero-argument callable.
        rounds: turns of each function.
        warmup: untimed calls of each function first (tracing, allocation).
        calls_per_turn: consecutive timed calls in each turn. Repeated calls are what a
            loop makes; the first call of a turn follows another function's (a 4096^2
            matmul evicts every cache) and runs a few percent slower.
        wait: blocks until a call's result is computed; TensorFlow's by default
            (`gpu_speed.py` passes its JAX or PyTorch one).

    Returns:
        dict name -> list of `rounds * calls_per_turn` durations in seconds.
    """
    for fn in functions.values():
        for _ in range(warmup):
            wait(fn())
    times = {name: [] for name in functions}
    for _ in range(rounds):
        for name, fn in functions.items():
            times[name].extend(time_call(fn, wait) for _ in range(calls_per_turn))
    return times


def median_ms(seconds):
    return 1e3 * statistics.median(seconds)


def peak_rss_mb():
    """Peak resident memory of this process so far, in MiB (Linux ru_maxrss is KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb():
    """Current resident memory of this process, in MiB."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def attention_pairs(length, span):
    """Number of (query, key) pairs of 1-D attention over `length` positions."""
    if span is None or span >= 2 * length - 1:
        return length * length
    radius = (span - 1) // 2
    return sum(min(length - 1, q + radius) - max(0, q - radius) + 1 for q in range(length))


def attention_2d_flops(shape, filters, num_heads=8, key_expansion=1, value_expansion=2, span=None):
    """Forward FLOPs (2 per multiply-add) of `AxialAttention2D` with stride 1.

    Counted per pass (height then width): the qkv projection, the three
    similarity products and the two retrievals, over the valid (query, key)
    pairs (for a local span: the window, not the padded blocks computed).
    Batch norm, softmax and the gathering of tables are not counted.
    """
    del num_heads  # the count does not depend on how channels split into heads
    batch, height, width, channels = shape
    key_depth = round(filters * key_expansion)
    value_depth = round(filters * value_expansion)
    total = 0
    for sequences, length, in_channels in ((batch * width, height, channels), (batch * height, width, value_depth)):
        pairs = attention_pairs(length, span)
        total += 2 * sequences * length * in_channels * (2 * key_depth + value_depth)
        total += 2 * sequences * pairs * (3 * key_depth + 2 * value_depth)
    return total


def source_at_commit(path, commit):
    """The text of the repository file `path` at `commit`."""
    return subprocess.check_output(["git", "-C", str(REPO_ROOT), "show", f"{commit}:{path}"], text=True)


def private_module(name, text, origin):
    """Executes `text` as a new module registered under `name` (not a package name).

    Args:
        name: Module name, e.g. "baseline_pipeline".
        text: Python source.
        origin: Where the source came from, for tracebacks (e.g. "c92d10d:name").

    Returns:
        The module.
    """
    module = types.ModuleType(name)
    # Registered as the source of `origin`, so that tracebacks and AutoGraph (which reads the
    # source of the functions it converts) find it.
    linecache.cache[origin] = (len(text), None, text.splitlines(keepends=True), origin)
    exec(compile(text, origin, "exec"), module.__dict__)  # noqa: S102 - our own git history
    sys.modules[name] = module
    return module


def load_baseline_attention_2d(commit=BASELINE_COMMIT):
    """`AxialAttention2D` as it was at `commit`, loaded from git into private modules.

    The original einsum implementation is benchmarked side by side with the
    current one without keeping an old code path in the package.
    """

    def baseline_source(path):
        # Registration would clash with the current classes of the same name; the baseline's
        # MaskedBatchNormalization now lives in the attention module.
        return source_at_commit(path, commit).replace(
            '@keras.saving.register_keras_serializable(package="axial_tf")\n', ""
        ).replace("from axial_tf.layers.masked_batch_norm import", "from axial_tf.layers.axial_attention import")

    one_d = "baseline_axial_attention"
    private_module(one_d, baseline_source("axial_tf/layers/axial_attention.py"), f"{commit}:{one_d}")
    two_d = baseline_source("axial_tf/layers/axial_attention_2d.py").replace(
        "from axial_tf.layers.axial_attention import", f"from {one_d} import"
    )
    name = "baseline_axial_attention_2d"
    return private_module(name, two_d, f"{commit}:{name}").AxialAttention2D


def cpu_model():
    """The processor's model name from /proc/cpuinfo ("unknown" elsewhere)."""
    try:
        with open("/proc/cpuinfo") as info:
            return next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown"


def versions():
    """Library versions and machine facts for the report header."""
    import keras
    import numpy
    import tensorflow as tf

    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": numpy.__version__,
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "memory_gb": round(memory_gb, 1),
        "onednn": _onednn_state(),
    }
