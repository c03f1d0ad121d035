"""CPU serving: one model through TF SavedModel, ONNX Runtime, OpenVINO and LiteRT, batch 1, 2 cores.

    python benchmarks/serving_speed.py                                  # both models, 513x513 and 1025x2049
    python benchmarks/serving_speed.py --models tiny --sizes 65x65 --rounds 1   # smoke run (seconds)

For each model and size, a subprocess builds the Cityscapes Panoptic-DeepLab of
`configs/cityscapes/panoptic_deeplab_base.yaml` with that backbone (19 classes, random
weights, randomised batch-norm statistics, `data.crop_size` = the measured size) and exports
it once per format with the project's export code (`write_saved_model`, `write_converted`
at batch 1; LiteRT fixed at the measured size). Each variant (a format, and a precision
where the runtime offers bfloat16 as an option) is then loaded with `load_exported` and
timed on full calls, uint8 image in and NumPy outputs out (pre-processing, network,
post-processing: what `tools/predict.py --model` runs), one process per variant and round,
the variants taking turns round after round. Each process loads its export, makes one
untimed warm-up call and `--calls` timed calls; its peak resident memory (ru_maxrss) is
therefore that of one runtime with one export, TensorFlow's import included
(`load_exported` imports it). Throughput is images/s at batch 1 (1 / median latency).

Threads: every process is pinned to `THREADS` (2) cores (`sched_setaffinity`), TensorFlow
gets 2 intra- and inter-op threads, and OMP_NUM_THREADS=2; ONNX Runtime, OpenVINO and LiteRT
get 2 threads from `load_exported(..., threads=2)`.
"cores busy" (CPU time / wall time of the timed calls) shows how many each really used.

bfloat16 rows: `load_exported(..., precision="bfloat16")`, i.e. OpenVINO with
INFERENCE_PRECISION_HINT=bf16 and TensorFlow with Grappler's
`auto_mixed_precision_onednn_bfloat16` on the SavedModel; their panoptic maps are compared
with the float32 row's on the benchmark image. ONNX Runtime's and LiteRT's CPU kernels have
no bfloat16 option. Writes benchmarks/results/serving_speed.json, which `report.py` renders.
"""

import argparse
import datetime
import json
import os
import pathlib
import statistics
import sys
import tempfile
import time

import numpy as np
from bench_utils import REPO_ROOT, THREADS, current_rss_mb, emit, peak_rss_mb, versions
from run_all import machine_load, run_script

RESULT = REPO_ROOT / "benchmarks" / "results" / "serving_speed.json"
MODELS = ("axial_deeplab_s", "max_deeplab_s_backbone")
SIZES = ("513x513", "1025x2049")
# A few-thousand-parameter Axial-DeepLab-S for smoke runs (the tests' tiny backbone and decoders).
TINY_OVERRIDES = [
    "model.backbone=axial_deeplab_s",
    "model.backbone_overrides={width_multiplier: 0.0625, stem_width_multiplier: 0.125, "
    "backbone_layer_multiplier: 0.34, attention: {num_heads: 2}}",
    "model.semantic_decoder={aspp_channels: 16, decoder_channels: 16, low_level_channels: [8, 8], head_channels: 16}",
    "model.instance_decoder={aspp_channels: 16, decoder_channels: 8, low_level_channels: [8, 8], head_channels: 8}",
]
# variant -> (export format, precision); bfloat16 only where the runtime offers it as an option.
VARIANTS = {
    "saved_model": ("saved_model", "float32"),
    "saved_model_bf16": ("saved_model", "bfloat16"),
    "onnx": ("onnx", "float32"),
    "openvino": ("openvino", "float32"),
    "openvino_bf16": ("openvino", "bfloat16"),
    "litert": ("litert", "float32"),
}
IMAGE_FILE = "image.npy"


def benchmark_image(height, width, seed=0):
    """A deterministic street-like test image: uint8 [1, H, W, 3] of coloured blocks over a gradient."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (8, 16, 3))
    rows = np.arange(height) * 8 // height
    cols = np.arange(width) * 16 // width
    gradient = np.linspace(0, 60, height)[:, None, None]
    return np.clip(blocks[rows][:, cols] * 0.75 + gradient, 0, 255).astype(np.uint8)[None]


def export_all(model_name, size, directory, formats):
    """Builds the model and writes one export per format into `directory` (runs in its own process)."""
    from bench_utils import setup_tensorflow

    setup_tensorflow()
    from model_speed import randomize_batch_norms

    from axial_tf.experiment.config import load_config, shipped_config
    from axial_tf.experiment.tasks import build_model, task_for_config
    from axial_tf.export import export_info, write_converted, write_saved_model

    height, width = size
    overrides = TINY_OVERRIDES if model_name == "tiny" else [f"model.backbone={model_name}"]
    config = load_config(shipped_config("cityscapes/panoptic_deeplab_base.yaml"),
                         [*overrides, f"data.crop_size=[{height}, {width}]"])
    model = build_model(config, sync_batch_norm=False)
    randomize_batch_norms(model)
    task = task_for_config(config)
    module = task.serving_module(model)
    np.save(os.path.join(directory, IMAGE_FILE), benchmark_image(height, width))
    export_seconds = {}
    for export_format in formats:
        start = time.perf_counter()
        target = os.path.join(directory, export_format)
        if export_format == "saved_model":
            write_saved_model(module, target, export_info(module, task.info, source="random weights"))
        else:
            write_converted(module, target, export_format, info=task.info, batch_size=1, input_size=size,
                            source="random weights")
        export_seconds[export_format] = time.perf_counter() - start
    emit(kind="export", params_m=model.count_params() / 1e6, export_seconds=export_seconds,
         versions={**versions(), **runtime_versions()})


def runtime_versions():
    """Versions of the serving runtimes that are installed."""
    from importlib import metadata

    found = {}
    for package in ("onnxruntime", "tf2onnx", "openvino", "ai-edge-litert"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def serve(variant, directory, calls, panoptic_file=None):
    """Loads one variant's export, warms it up, times `calls` full calls and emits them (own process)."""
    cores = sorted(os.sched_getaffinity(0))[:THREADS]
    os.sched_setaffinity(0, cores)
    from bench_utils import setup_tensorflow

    setup_tensorflow()
    export_format, precision = VARIANTS[variant]
    from axial_tf.export import load_exported

    image = np.load(os.path.join(directory, IMAGE_FILE))
    resident_after_imports = current_rss_mb()
    start = time.perf_counter()
    model = load_exported(os.path.join(directory, export_format), threads=THREADS, precision=precision)
    load_seconds = time.perf_counter() - start
    start = time.perf_counter()
    outputs = model(image)
    first_call_seconds = time.perf_counter() - start
    if panoptic_file:
        np.save(panoptic_file, outputs["panoptic_pred"])
    seconds, cpu_seconds = [], []
    for _ in range(calls):
        wall, cpu = time.perf_counter(), time.process_time()
        model(image)
        seconds.append(time.perf_counter() - wall)
        cpu_seconds.append(time.process_time() - cpu)
    emit(kind="serve", variant=variant, precision_used=model.precision, cores=cores, seconds=seconds,
         cpu_seconds=cpu_seconds, load_seconds=load_seconds, first_call_seconds=first_call_seconds,
         rss_after_imports_mb=resident_after_imports, peak_rss_mb=peak_rss_mb())


def measure_case(model_name, size, variants, rounds, calls, work_dir):
    """Exports one model at one size, runs the variants in turns; returns (rows, export record, failures)."""
    height, width = size
    directory = pathlib.Path(work_dir) / f"{model_name}_{height}x{width}"
    directory.mkdir(parents=True)
    formats = list(dict.fromkeys(VARIANTS[variant][0] for variant in variants))
    records, status, _ = run_script("serving_speed.py", ["--export", model_name, f"{height}x{width}", str(directory),
                                                         ",".join(formats)], timeout=3600)
    if status != "ok":
        return [], None, [f"{model_name} {height}x{width} export: {status}"]
    runs = {variant: [] for variant in variants}
    failures = []
    for round_index in range(rounds):
        for variant in variants:
            arguments = ["--serve", variant, str(directory), "--calls", str(calls)]
            if round_index == 0:
                arguments += ["--panoptic_file", str(directory / f"panoptic_{variant}.npy")]
            records_, status, _ = run_script("serving_speed.py", arguments, timeout=3600,
                                             env={"OMP_NUM_THREADS": str(THREADS)})
            if status == "ok":
                runs[variant].extend(records_)
            else:
                failures.append(f"{model_name} {height}x{width} {variant} round {round_index + 1}: {status}")
    rows = [summarize(model_name, size, variant, runs[variant], directory) for variant in variants if runs[variant]]
    return rows, records[0], failures


def summarize(model_name, size, variant, runs, directory):
    """One result row from a variant's processes: latency, throughput, cores, memory, panoptic agreement."""
    export_format, precision = VARIANTS[variant]
    seconds = [s for run in runs for s in run["seconds"]]
    median = statistics.median(seconds)
    row = {
        "model": model_name, "size": list(size), "variant": variant, "format": export_format,
        "precision": precision, "precision_used": runs[0]["precision_used"], "processes": len(runs),
        "times_ms": [1e3 * s for s in seconds],
        "median_ms": 1e3 * median, "min_ms": 1e3 * min(seconds), "max_ms": 1e3 * max(seconds),
        "images_per_second": 1 / median,
        "cores_busy": statistics.median(c / s for run in runs for c, s in zip(run["cpu_seconds"], run["seconds"])),
        "load_seconds": statistics.median(run["load_seconds"] for run in runs),
        "first_call_seconds": statistics.median(run["first_call_seconds"] for run in runs),
        "rss_after_imports_mb": max(run["rss_after_imports_mb"] for run in runs),
        "peak_rss_mb": max(run["peak_rss_mb"] for run in runs),
    }
    float32 = directory / f"panoptic_{export_format}.npy"
    if precision != "float32" and float32.exists():
        ours = np.load(directory / f"panoptic_{variant}.npy")
        row["panoptic_pixels_differing_from_float32"] = int(np.sum(ours != np.load(float32)))
        row["pixels"] = int(ours.size)
    return row


def updated(earlier, later, cases):
    """`earlier`'s result with the `cases` ("model HxW") replaced by `later`'s; `later`'s run noted in "updates"."""
    def other_case(entry):
        return f"{entry['model']} {entry['size'][0]}x{entry['size'][1]}" not in cases

    if later["settings"] != earlier["settings"]:
        sys.exit(f"--update: settings {later['settings']} differ from the earlier run's {earlier['settings']}.")
    note = {key: later[key] for key in ("started", "elapsed_seconds", "load", "command")}
    return {
        **earlier,
        "rows": [row for row in earlier["rows"] if other_case(row)] + later["rows"],
        "exports": [export for export in earlier["exports"] if other_case(export)] + later["exports"],
        "failures": [failure for failure in earlier["failures"] if not failure.startswith(tuple(cases))]
        + later["failures"],
        "updates": [*earlier.get("updates", []), {**note, "cases": cases}],
    }


def parse_size(text):
    height, width = (int(side) for side in text.lower().split("x"))
    return height, width


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help="Backbones, comma-separated; 'tiny' for smoke runs.")
    parser.add_argument("--sizes", default=",".join(SIZES), help="HxW sizes, comma-separated.")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"Among {', '.join(VARIANTS)}.")
    parser.add_argument("--rounds", type=int, default=3, help="Processes per variant, taking turns.")
    parser.add_argument("--calls", type=int, default=2, help="Timed calls per process, after one warm-up call.")
    parser.add_argument("--output", default=str(RESULT))
    parser.add_argument("--work_dir", default=None, help="Where the exports go (default: a temporary folder).")
    parser.add_argument("--update", action="store_true",
                        help="Keep --output's other cases; replace only those measured now (listed in its 'updates').")
    parser.add_argument("--export", nargs=4, metavar=("MODEL", "SIZE", "DIR", "FORMATS"), help=argparse.SUPPRESS)
    parser.add_argument("--serve", nargs=2, metavar=("VARIANT", "DIR"), help=argparse.SUPPRESS)
    parser.add_argument("--panoptic_file", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.export:
        model_name, size, directory, formats = args.export
        return export_all(model_name, parse_size(size), directory, formats.split(","))
    if args.serve:
        return serve(*args.serve, args.calls, args.panoptic_file)
    variants = args.variants.split(",")
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    started, load_before = datetime.datetime.now(), machine_load()
    rows, exports, failures = [], [], []
    with tempfile.TemporaryDirectory(dir=args.work_dir) as work_dir:
        for model_name in args.models.split(","):
            for size in args.sizes.split(","):
                case_rows, export, case_failures = measure_case(
                    model_name, parse_size(size), variants, args.rounds, args.calls, work_dir)
                rows += case_rows
                failures += case_failures
                if export:
                    exports.append({"model": model_name, "size": list(parse_size(size)),
                                    "params_m": export["params_m"], "export_seconds": export["export_seconds"]})
                    machine = export["versions"]
    result = {
        "started": started.isoformat(), "elapsed_seconds": (datetime.datetime.now() - started).total_seconds(),
        "load": [load_before, machine_load()], "command": " ".join(["python", "benchmarks/serving_speed.py", *sys.argv[1:]]),
        "settings": {"rounds": args.rounds, "calls": args.calls, "threads": THREADS, "batch": 1},
        "versions": machine if exports else {}, "exports": exports, "rows": rows, "failures": failures,
    }
    output = pathlib.Path(args.output)
    if args.update and output.exists():
        cases = [f"{model_name} {size}" for model_name in args.models.split(",") for size in args.sizes.split(",")]
        result = updated(json.loads(output.read_text()), result, cases)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
