"""Measures the offline demo: PQ / SQ / RQ / mIoU reached and wall time on this machine.

    python benchmarks/demo_run.py [--model_dir /tmp/demo_bench] [--override training.steps=...]

Runs `tools/demo.py` from scratch in a subprocess (dataset generation, training,
evaluation and export; this is the timed part), then evaluates the same weights
once more single-scale without flipping (`tools/evaluate.py`, not timed), and
writes benchmarks/results/demo.json, which `benchmarks/run_all.py` folds into
BENCHMARKS.md. No assertion on time: this is a measurement.
"""

import argparse
import json
import os
import pathlib
import platform
import shutil
import subprocess
import sys
import time

from bench_utils import cpu_model

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "demo.json"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_dir", default="/tmp/axial_tf_demo_benchmark")
    parser.add_argument("--override", action="append", default=[])
    args = parser.parse_args()
    shutil.rmtree(args.model_dir, ignore_errors=True)
    # A dataset folder of its own, so that generating the dataset is timed as on a fresh machine
    # (TFDS's default folder may already hold it).
    overrides = [f"data.data_dir={pathlib.Path(args.model_dir) / 'tensorflow_datasets'}", *args.override]
    command = [sys.executable, str(ROOT / "tools" / "demo.py"), "--model_dir", args.model_dir]
    for override in overrides:
        command += ["--override", override]
    started = time.time()
    subprocess.run(command, check=True)
    wall = time.time() - started
    summary = json.loads((pathlib.Path(args.model_dir) / "demo_summary.json").read_text())
    single_dir = pathlib.Path(args.model_dir) / "eval_single_scale"
    evaluate = [sys.executable, str(ROOT / "tools" / "evaluate.py"), "--config", str(ROOT / "configs/demo/panoptic_shapes.yaml"),
                "--model_dir", args.model_dir, "--output_dir", str(single_dir),
                "--override", "evaluation.eval_scales=[1.0]", "--override", "evaluation.flip=false"]
    for override in overrides:
        evaluate += ["--override", override]
    subprocess.run(evaluate, check=True)
    single = json.loads((single_dir / "metrics.json").read_text())
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{cpu_model()} ({platform.machine()}), {os.cpu_count()} cores",
        "config": "configs/demo/panoptic_shapes.yaml",
        "overrides": args.override,
        "wall_seconds_end_to_end": round(wall),
        **summary,
        "single_scale_no_flip": {key: single[key] for key in ("pq", "sq", "rq", "pq_things", "pq_stuff", "miou")},
    }
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
