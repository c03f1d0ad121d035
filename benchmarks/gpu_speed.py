"""Speed and peak memory on a GPU with the JAX and PyTorch Keras backends (no TensorFlow).

Measures on the backend of KERAS_BACKEND (jax or torch), at float32 and bfloat16 (the Keras
policy mixed_bfloat16):

- the layer cases of `layer_speed.py` (`bench_utils.LAYER_CASES`): `AxialAttention2D` forward and
  training (forward + gradients w.r.t. the input and every weight for a fixed random gradient of
  the output, as `layer_speed.py`), beside full 2-D self-attention over all H*W positions with the
  same widths (`FullSelfAttention2D`, which materialises the [B, heads, HW, HW] logits);
- Axial-DeepLab-S and -L (19 classes): inference on one 1025x2049 image, and a training step on
  DeepLab2's Cityscapes crop, 1025x2049 at batch 8, halved after each out-of-memory error until
  it fits (the batch used is recorded).

A training step is forward, loss, gradients and an Adam update: one jitted `stateless_call` +
`optimizer.stateless_apply` on JAX (the state donated, as a training loop does), eager autograd
on PyTorch. The loss (`LOSS`) gives every head a gradient. Times are the median over timed steps
after warm-up, each step waited for (`jax.block_until_ready`, `torch.cuda.synchronize`).
Peak memory of a row: on PyTorch the CUDA allocator's peak over the row's warm-up and timed
steps, weights and inputs included (null on the CPU, where PyTorch keeps no peak); on JAX,
XLA's peak memory of the compiled step (arguments such as weights, optimizer state and inputs,
outputs and temporaries, less donated buffers): JAX cannot reset its process-wide peak, and
XLA's figure belongs to the row whatever ran before it in the process.

Rows run in worker processes (this script with --worker). On a GPU each layer case, and each
model's inference and training, has its own, with a time cap (--case_timeout_s) inside the run's
--budget_s, so a crash or a slow case costs only its own rows; on the CPU one process runs
everything (JAX compiles each eager op once per process: 10-30 s of a tiny model's first build on
2 cores). A row that runs out of device memory is recorded as "OOM". The JSON (--output, rewritten
after every worker) is what `report.py` renders as the GPU section of BENCHMARKS.md;
`gpu_device_run.sh` runs both backends on a GPU machine.

    KERAS_BACKEND=jax python benchmarks/gpu_speed.py --device gpu
    KERAS_BACKEND=torch python benchmarks/gpu_speed.py --device gpu --only model_axial_deeplab_l_training
    KERAS_BACKEND=jax python benchmarks/gpu_speed.py --device cpu --sizes small --output /tmp/gpu_jax_cpu.json
"""

import argparse
import datetime
import gc
import json
import math
import os
import pathlib
import platform
import subprocess
import sys
import time
import traceback

from bench_utils import LAYER_CASES, REPO_ROOT, cpu_model, emit, interleaved_seconds, median_ms
from run_all import run_script

# As layer_speed.py: 8 heads, key_expansion 1, value_expansion 2.
HEADS, KEY_EXPANSION, VALUE_EXPANSION = 8, 1, 2
DTYPE_POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16"}
MODELS = ("axial_deeplab_s", "axial_deeplab_l")
NUM_CLASSES = 19
LOSS = ("softmax cross-entropy of semantic_logits against uniformly random labels "
        "+ mean(center_heatmap^2) + mean(offset_map^2)")
LEARNING_RATE = 1e-4
# A tiny Axial-DeepLab (stage widths 4..32, a third of the blocks, 2 heads) for the CPU smoke run.
TINY_BACKBONE = dict(width_multiplier=0.0625, stem_width_multiplier=0.125, backbone_layer_multiplier=0.34,
                     attention={"num_heads": 2})
TINY_DECODER = dict(aspp_channels=16, decoder_channels=16, low_level_channels=(8, 8), head_channels=8)
SIZES = {
    # The issue's: the layer cases as layer_speed.py; 1025x2049 is a whole Cityscapes image and
    # DeepLab2's training crop. inference / training: (batch, height, width); training's batch is
    # the one asked for, halved on out-of-memory.
    "full": dict(layer_cases=LAYER_CASES, model_arguments={}, inference=(1, 1025, 2049),
                 training=(8, 1025, 2049), warmup=2, steps=10, model_steps=5),
    # The same rows on a few positions and channels: runs the code on a CPU in seconds per row.
    "small": dict(
        layer_cases={name: dict(shape=(1, 6, 9, 16), filters=8, span=None if case["span"] is None else 5)
                     for name, case in LAYER_CASES.items()},
        model_arguments=dict(backbone_overrides=TINY_BACKBONE, semantic_decoder=TINY_DECODER,
                             instance_decoder=TINY_DECODER),
        inference=(1, 33, 33), training=(2, 33, 33), warmup=1, steps=2, model_steps=2),
}
# A worker is not started with less time left in the budget than this.
MIN_WORKER_SECONDS = 30


def plan(sizes, dtypes, model_dtypes):
    """The rows to measure, by worker group in run order: {group name: [row, ...]}."""
    groups = {}
    for case in SIZES[sizes]["layer_cases"]:
        # Axial rows first: a full-attention row that takes its process down costs only those after it.
        groups[f"layer_{case}"] = [dict(kind="layer", case=case, impl=impl, mode=mode, dtype=dtype)
                                   for impl in ("axial", "full") for dtype in dtypes
                                   for mode in ("forward", "training")]
    # Training last: its out-of-memory retries make it the slowest, the first cut by the time budget.
    for mode in ("inference", "training"):
        for model in MODELS:
            groups[f"model_{model}_{mode}"] = [
                dict(kind="model", case=model, impl="axial", mode=mode, dtype=dtype) for dtype in model_dtypes]
    return groups


def row_key(row):
    return tuple(row[key] for key in ("kind", "case", "impl", "mode", "dtype"))


def device_environment(backend, device):
    """Environment variables that put the worker's Keras backend on `device` (read when Keras loads)."""
    if backend == "jax":
        # JAX takes 75% of the GPU's memory by default; PyTorch's allocator may use all of it.
        return {"JAX_PLATFORMS": "cuda" if device == "gpu" else "cpu",
                "XLA_PYTHON_CLIENT_MEM_FRACTION": os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.9")}
    return {"KERAS_TORCH_DEVICE": "cuda" if device == "gpu" else "cpu"}


def is_out_of_memory(error):
    """Whether `error` says the device ran out of memory (XLA's RESOURCE_EXHAUSTED, PyTorch's OutOfMemoryError)."""
    text = f"{type(error).__name__}: {error}"
    return "RESOURCE_EXHAUSTED" in text or "OutOfMemoryError" in text or "out of memory" in text.lower()


def largest_fitting_batch(measure, batch, release):
    """`measure(batch)`, the batch halved after each out-of-memory error down to 1.

    Args:
        measure: function of the batch size returning a dict of results.
        batch: the batch size asked for.
        release: frees what a failed attempt left on the device.

    Returns:
        The results of the first batch that fits, with `batch` (the one used) and
        `out_of_memory_batches` (the larger ones that did not fit).
    """
    too_large = []
    while True:
        try:
            return {**measure(batch), "batch": batch, "out_of_memory_batches": too_large}
        except Exception as error:  # noqa: BLE001 - which errors mean out-of-memory differs per backend
            if batch == 1 or not is_out_of_memory(error):
                raise
        # Released once the exception (and the frames holding the failed step's tensors) is gone.
        release()
        too_large.append(batch)
        batch //= 2


class JaxBackend:
    """Steps as jitted `stateless_call`s; peak memory from XLA's analysis of the compiled step."""

    memory_measure = ("XLA's peak memory of the compiled step (memory_analysis().peak_memory_in_bytes: "
                      "arguments such as weights, optimizer state and inputs, outputs and temporaries, "
                      "less donated buffers)")

    def __init__(self, device):
        del device  # chosen by JAX_PLATFORMS (`device_environment`)
        import jax

        self.jax = jax
        self.device = jax.devices()[0]
        self.peak = None

    def environment(self):
        import jaxlib

        return {"device_name": self.device.device_kind, "platform": self.device.platform,
                "jax": self.jax.__version__, "jaxlib": jaxlib.__version__,
                "float32_matmul": f"jax_default_matmul_precision={self.jax.config.jax_default_matmul_precision}"}

    def wait(self, result):
        self.jax.block_until_ready(result)

    def reset_peak(self):
        self.peak = None

    def peak_bytes(self):
        return self.peak

    def release(self):
        gc.collect()

    def _compile(self, function, arguments, donate=()):
        compiled = self.jax.jit(function, donate_argnums=donate).lower(*arguments).compile()
        self.peak = getattr(compiled.memory_analysis(), "peak_memory_in_bytes", None)
        return compiled

    def forward(self, model, inputs):
        def call(trainable, non_trainable, x):
            return model.stateless_call(trainable, non_trainable, x, training=False)[0]

        arguments = (_values(model.trainable_variables), _values(model.non_trainable_variables), inputs)
        compiled = self._compile(call, arguments)
        return lambda: compiled(*arguments)

    def gradients(self, model, inputs, upstream):
        def call(trainable, non_trainable, x, output_gradient):
            def outputs(trainable, x):
                return model.stateless_call(trainable, non_trainable, x, training=True)[0]

            _, backward = self.jax.vjp(outputs, trainable, x)
            return backward(output_gradient)  # (d/d weights, d/d input)

        arguments = (_values(model.trainable_variables), _values(model.non_trainable_variables), inputs, upstream)
        compiled = self._compile(call, arguments)
        return lambda: compiled(*arguments)

    def train(self, model, optimizer, images, labels):
        import keras

        def loss_and_statistics(trainable, non_trainable, images, labels):
            outputs, non_trainable = model.stateless_call(trainable, non_trainable, images, training=True)
            return proxy_loss(outputs, labels), non_trainable

        def step(state, images, labels):
            trainable, non_trainable, optimizer_variables = state
            (loss, non_trainable), gradients = self.jax.value_and_grad(loss_and_statistics, has_aux=True)(
                trainable, non_trainable, images, labels)
            trainable, optimizer_variables = optimizer.stateless_apply(optimizer_variables, gradients, trainable)
            return loss, (trainable, non_trainable, optimizer_variables)

        # The step donates its state; a copy leaves the model's own variables for a retry at a smaller batch.
        state = self.jax.tree.map(keras.ops.copy, (_values(model.trainable_variables),
                                                   _values(model.non_trainable_variables),
                                                   _values(optimizer.variables)))
        compiled = self._compile(step, (state, images, labels), donate=(0,))

        def run():
            nonlocal state
            loss, state = compiled(state, images, labels)
            return loss, state  # waited for as a whole: the step is done when its updates are

        return run


class TorchBackend:
    """Eager steps with autograd; peak memory from the CUDA caching allocator (none on the CPU)."""

    memory_measure = ("the CUDA caching allocator's peak allocated bytes over the row's warm-up and timed "
                      "steps (torch.cuda.max_memory_allocated after a reset; weights and inputs included)")

    def __init__(self, device):
        import torch

        self.torch = torch
        self.cuda = device == "gpu"

    def environment(self):
        torch = self.torch
        return {"device_name": torch.cuda.get_device_name() if self.cuda else cpu_model(),
                "torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
                "float32_matmul": f"matmul allow_tf32={torch.backends.cuda.matmul.allow_tf32}, "
                                  f"cudnn allow_tf32={torch.backends.cudnn.allow_tf32}"}

    def wait(self, result):
        del result  # eager: the step's kernels are queued on the device's stream
        if self.cuda:
            self.torch.cuda.synchronize()

    def reset_peak(self):
        if self.cuda:
            self.torch.cuda.synchronize()
            self.torch.cuda.reset_peak_memory_stats()

    def peak_bytes(self):
        return self.torch.cuda.max_memory_allocated() if self.cuda else None

    def release(self):
        gc.collect()
        if self.cuda:
            self.torch.cuda.empty_cache()

    def forward(self, model, inputs):
        def step():
            with self.torch.no_grad():
                return model(inputs, training=False)

        return step

    def gradients(self, model, inputs, upstream):
        x = inputs.detach().requires_grad_()
        weights = [v.value for v in model.trainable_variables]

        def step():
            return self.torch.autograd.grad(model(x, training=True), [x, *weights], grad_outputs=upstream,
                                            allow_unused=True)

        return step

    def train(self, model, optimizer, images, labels):
        def step():
            loss = proxy_loss(model(images, training=True), labels)
            model.zero_grad()
            loss.backward()
            with self.torch.no_grad():
                optimizer.apply([v.value.grad for v in model.trainable_variables], model.trainable_variables)
            return loss

        return step


BACKENDS = {"jax": JaxBackend, "torch": TorchBackend}


def _values(variables):
    return [v.value for v in variables]


def proxy_loss(outputs, labels):
    """`LOSS`: a stand-in for the panoptic loss that reaches every head, in keras.ops."""
    from keras import ops

    semantic = ops.mean(ops.sparse_categorical_crossentropy(labels, outputs["semantic_logits"], from_logits=True))
    return semantic + ops.mean(ops.square(outputs["center_heatmap"])) + ops.mean(ops.square(outputs["offset_map"]))


def full_self_attention_2d(filters):
    """The baseline: multi-head self-attention over all H*W positions, widths as the axial layer's.

    One bias-free projection of the input to `filters` query and key channels and
    2 * `filters` value channels, `HEADS` heads, softmax over all positions (scaled by
    1/sqrt(head depth)); output [B, H, W, 2 * filters]. No kernel that avoids the
    [B, heads, HW, HW] logits (flash attention): this is the O((HW)^2) memory of plain attention.
    """
    import keras
    from keras import ops

    class FullSelfAttention2D(keras.layers.Layer):
        def build(self, input_shape):
            self.key_depth, self.value_depth = filters * KEY_EXPANSION, filters * VALUE_EXPANSION
            self.qkv_kernel = self.add_weight(
                name="qkv_kernel", shape=(input_shape[-1], 2 * self.key_depth + self.value_depth))

        def call(self, inputs):
            batch, height, width, channels = inputs.shape
            positions = height * width
            qkv = ops.matmul(ops.reshape(inputs, (batch, positions, channels)), self.qkv_kernel)  # [B, N, 2K + V]
            query, key, value = (
                ops.reshape(part, (batch, positions, HEADS, -1))  # [B, N, heads, depth]
                for part in ops.split(qkv, [self.key_depth, 2 * self.key_depth], axis=-1)
            )
            logits = ops.einsum("bqhd,bkhd->bhqk", query, key) / math.sqrt(self.key_depth // HEADS)  # [B, h, N, N]
            outputs = ops.einsum("bhqk,bkhd->bqhd", ops.softmax(logits, axis=-1), value)  # [B, N, heads, V / heads]
            return ops.reshape(outputs, (batch, height, width, self.value_depth))

        def compute_output_shape(self, input_shape):
            return (*input_shape[:3], filters * VALUE_EXPANSION)

    return FullSelfAttention2D(name="full_self_attention_2d")


def timed(backend, step, steps, warmup, batch):
    """Times `steps` calls of `step` after `warmup` calls; the results of one row."""
    seconds = interleaved_seconds({"step": step}, steps, warmup=warmup, wait=backend.wait)["step"]
    median = median_ms(seconds)
    return dict(median_ms=median, times_ms=[1e3 * s for s in seconds], images_per_second=1e3 * batch / median,
                peak_memory_bytes=backend.peak_bytes())


def measure_layer(backend, row, case, args):
    """A layer row: the axial layer or the full-attention baseline, in a functional model."""
    import keras

    from axial_tf.layers import AxialAttention2D

    if row["impl"] == "axial":
        layer = AxialAttention2D(case["filters"], num_heads=HEADS, key_expansion=KEY_EXPANSION,
                                 value_expansion=VALUE_EXPANSION, span=case["span"])
    else:
        layer = full_self_attention_2d(case["filters"])
    # Called through a model: Keras casts inputs and weights to the policy's compute dtype in
    # `Layer.__call__`, which `stateless_call` of the layer itself would skip.
    symbolic = keras.Input(batch_shape=case["shape"])
    model = keras.Model(symbolic, layer(symbolic))
    inputs = keras.random.normal(case["shape"], seed=0)  # [B, H, W, C]
    backend.reset_peak()
    if row["mode"] == "forward":
        step = backend.forward(model, inputs)
    else:
        upstream = keras.random.normal(model.output.shape, seed=3, dtype=model.output.dtype)
        step = backend.gradients(model, inputs, upstream)
    return dict(timed(backend, step, args.steps, args.warmup, batch=case["shape"][0]),
                shape=list(case["shape"]), filters=case["filters"], span=case["span"])


def measure_model(backend, row, size, args):
    """A model row: inference on `size["inference"]`, or training at the largest batch that fits."""
    import keras

    from axial_tf.models import AxialDeepLab

    model = AxialDeepLab(row["case"], num_classes=NUM_CLASSES, **size["model_arguments"])
    if row["mode"] == "inference":
        batch, height, width = size["inference"]
        images = keras.random.uniform((batch, height, width, 3), maxval=255.0, seed=0)
        backend.reset_peak()
        step = backend.forward(model, images)
        return dict(timed(backend, step, args.model_steps, args.warmup, batch), image=[height, width], batch=batch,
                    weights=model.count_params())

    requested, height, width = size["training"]

    def train(batch):
        images = keras.random.uniform((batch, height, width, 3), maxval=255.0, seed=0)
        labels = keras.random.randint((batch, height, width), 0, NUM_CLASSES, seed=1)
        optimizer = keras.optimizers.Adam(LEARNING_RATE)
        optimizer.build(model.trainable_variables)
        backend.reset_peak()
        step = backend.train(model, optimizer, images, labels)
        return timed(backend, step, args.model_steps, args.warmup, batch)

    return dict(largest_fitting_batch(train, requested, backend.release), image=[height, width],
                requested_batch=requested, weights=model.count_params())


def measure_row(backend, row, args):
    import keras

    size = SIZES[args.sizes]
    # Layers keep the policy they are built under.
    keras.mixed_precision.set_global_policy(DTYPE_POLICIES[row["dtype"]])
    try:
        if row["kind"] == "layer":
            return measure_layer(backend, row, size["layer_cases"][row["case"]], args)
        return measure_model(backend, row, size, args)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def work(args):
    """The worker: measures the rows of the groups in `args.worker`, one record per row."""
    try:
        measure_groups(args)
    except Exception:
        # Recorded in the JSON (with its traceback): a device run's stderr does not come back.
        emit(record="worker_error", traceback=traceback.format_exc())
        raise


def measure_groups(args):
    import keras
    import numpy

    backend = BACKENDS[args.backend](args.device)
    emit(record="environment", **backend.environment(), python=platform.python_version(), keras=keras.__version__,
         numpy=numpy.__version__, host_cpu=cpu_model(), memory_measure=backend.memory_measure)
    groups = plan(args.sizes, args.dtypes.split(","), args.model_dtypes.split(","))
    for group in args.worker.split(","):
        for row in groups[group]:
            start = time.perf_counter()
            try:
                result = {"status": "ok", **measure_row(backend, row, args)}
            except Exception as error:  # noqa: BLE001 - a failed row is recorded, the others still run
                if is_out_of_memory(error):
                    result = {"status": "OOM"}
                else:
                    message = str(error).strip().split("\n")[0][:200]
                    result = {"status": f"failed: {type(error).__name__}: {message}",
                              "traceback": traceback.format_exc()}
            if result["status"] != "ok":
                backend.release()
            policy = DTYPE_POLICIES[row["dtype"]]
            emit(record="row", group=group, **row, policy=policy, **result,
                 row_seconds=time.perf_counter() - start)
    emit(record="worker_end", tensorflow_loaded="tensorflow" in sys.modules)


def _commit():
    """The checkout's commit, or None where the working tree came without its git folder."""
    found = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                           text=True)
    return found.stdout.strip() if found.returncode == 0 else None


def drive(args):
    """Runs the workers and writes the JSON results after each."""
    groups = plan(args.sizes, args.dtypes.split(","), args.model_dtypes.split(","))
    selected = args.only.split(",") if args.only else list(groups)
    unknown = sorted(set(selected) - set(groups))
    if unknown:
        sys.exit(f"--only: unknown group(s) {unknown}; known: {', '.join(groups)}")
    default_output = REPO_ROOT / "benchmarks" / "results" / f"gpu_{args.backend}_{args.device}.json"
    output = pathlib.Path(args.output or default_output)
    # --only measures some groups again: the other groups' rows are kept from the earlier run.
    kept = [row for row in json.loads(output.read_text())["rows"] if row["group"] not in selected] \
        if args.only and output.exists() else []
    size = SIZES[args.sizes]
    run = {
        "benchmark": "gpu_speed", "backend": args.backend, "device": args.device, "sizes": args.sizes,
        "started": datetime.datetime.now().isoformat(timespec="seconds"), "commit": _commit(),
        "command": f"KERAS_BACKEND={args.backend} python benchmarks/gpu_speed.py {' '.join(sys.argv[1:])}",
        "settings": dict(warmup=args.warmup, steps=args.steps, model_steps=args.model_steps, budget_s=args.budget_s,
                         case_timeout_s=args.case_timeout_s, inference=size["inference"], training=size["training"],
                         loss=LOSS, optimizer=f"Adam, learning rate {LEARNING_RATE}"),
        "environment": {}, "tensorflow_loaded": False, "worker_errors": [], "rows": kept,
    }
    worker_args = ["--backend", args.backend, "--device", args.device, "--sizes", args.sizes, "--dtypes", args.dtypes,
                   "--model_dtypes", args.model_dtypes,
                   "--warmup", str(args.warmup), "--steps", str(args.steps), "--model_steps", str(args.model_steps)]
    # On the CPU, one worker for all groups: JAX would compile its eager ops again in every process.
    workers = [[name] for name in selected] if args.device == "gpu" else [selected]
    host_memory_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20
    start = time.perf_counter()
    for names in workers:
        left = None if args.budget_s is None else args.budget_s - (time.perf_counter() - start)
        if left is not None and left < MIN_WORKER_SECONDS:
            records, status = [], f"not run: the time budget of {args.budget_s} s was spent"
        else:
            records, status, _ = run_script(
                pathlib.Path(__file__).name, [*worker_args, "--worker", ",".join(names)],
                timeout=args.case_timeout_s if left is None else min(args.case_timeout_s, left),
                memory_limit_mb=0.9 * host_memory_mb,
                env={"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))})
        measured = {row_key(record): record for record in records if record["record"] == "row"}
        errors = [record["traceback"] for record in records if record["record"] == "worker_error"]
        run["worker_errors"] += [dict(groups=names, traceback=error) for error in errors]
        if errors:
            status = f"failed: {errors[0].strip().splitlines()[-1][:200]}"
        elif status == "ok":  # a worker that ended normally without a row's record
            status = "not measured: missing from the worker's output"
        for record in records:
            if record["record"] == "environment" and not run["environment"]:
                run["environment"] = {key: value for key, value in record.items() if key != "record"}
            if record["record"] == "worker_end":
                run["tensorflow_loaded"] |= record["tensorflow_loaded"]
        for name in names:
            for row in groups[name]:
                found = measured.get(row_key(row))
                run["rows"].append({key: value for key, value in found.items() if key != "record"} if found
                                   else dict(row, group=name, policy=DTYPE_POLICIES[row["dtype"]], status=status))
        run["elapsed_seconds"] = round(time.perf_counter() - start, 1)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(run, indent=1) + "\n")
    print(f"wrote {output}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default=os.environ.get("KERAS_BACKEND"), choices=sorted(BACKENDS),
                        help="Keras backend (default: KERAS_BACKEND).")
    parser.add_argument("--device", default="gpu", choices=["gpu", "cpu"])
    parser.add_argument("--sizes", default="full", choices=sorted(SIZES),
                        help="full: the issue's sizes; small: tiny shapes and widths (a CPU test of the code).")
    parser.add_argument("--dtypes", default="float32,bfloat16", help=f"Comma list of {', '.join(DTYPE_POLICIES)}.")
    parser.add_argument("--model_dtypes", default=None, help="The models' dtypes (default: --dtypes).")
    parser.add_argument("--output", default=None,
                        help="JSON results (default benchmarks/results/gpu_<backend>_<device>.json).")
    parser.add_argument("--only", default=None, help="Comma list of groups to run (layer_<case>, "
                        "model_<name>_<inference|training>); the other groups' rows in --output are kept.")
    parser.add_argument("--warmup", type=int, default=None, help="Untimed calls per row (after JAX's compile).")
    parser.add_argument("--steps", type=int, default=None, help="Timed calls per layer row.")
    parser.add_argument("--model_steps", type=int, default=None, help="Timed calls per model row.")
    parser.add_argument("--case_timeout_s", type=float, default=600, help="Time cap of one worker process.")
    parser.add_argument("--budget_s", type=float, default=None,
                        help="Time for the whole run: workers that would start later are recorded as not run.")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.backend is None:
        parser.error("set KERAS_BACKEND (jax or torch) or --backend")
    for name in ("warmup", "steps", "model_steps"):
        if getattr(args, name) is None:
            setattr(args, name, SIZES[args.sizes][name])
    args.model_dtypes = args.model_dtypes or args.dtypes
    # Read once, when Keras loads (in the workers): the backend and the device it computes on.
    os.environ.update(KERAS_BACKEND=args.backend, **device_environment(args.backend, args.device))
    if args.worker:
        work(args)
    else:
        drive(args)


if __name__ == "__main__":
    main()
