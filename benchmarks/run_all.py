"""Runs the whole benchmark suite and writes BENCHMARKS.md.

    python benchmarks/run_all.py                # full suite (about 20 minutes on 2 cores)
    python benchmarks/run_all.py --quick        # smoke run: small sizes, one round
    python benchmarks/run_all.py --report_only  # rewrite BENCHMARKS.md from the last run's raw results
    python benchmarks/run_all.py --sections resume_cost  # measure one section again, keep the rest

Run separately and folded in by the report (`--report_only` after them): `demo_run.py`
(the offline demo), `gpu_speed.py` (GPU machines) and `serving_speed.py` (CPU serving through
SavedModel, ONNX Runtime, OpenVINO and LiteRT; about an hour on 2 cores, writes
results/serving_speed.json).

Each measurement runs in its own process (TensorFlow on 2 threads) under a
memory and time limit enforced from here; a case that exceeds them is reported
as such, not dropped. Comparisons (baseline vs current layer, execution modes,
dtype policies, attention vs conv block, resume methods) are timed interleaved in one process.
"""

import argparse
import datetime
import json
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import time

BENCH_DIR = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from bench_utils import BASELINE_COMMIT, LAYER_CASES, RECORD_PREFIX, REPO_ROOT  # noqa: E402

# Numbers quoted from issue 8 (DeepLab2 AxialAttention2D with tf-keras and the PyTorch
# reference, measured on this machine class); not re-measured here.
QUOTED_DEEPLAB2_MS = {
    ("ds_stage4", "training"): 942, ("cityscapes_os16", "training"): 13600, ("resnet_s_stage2", "training"): 4800,
    ("ds_stage4", "forward"): 152, ("cityscapes_os16", "forward"): 3300, ("resnet_s_stage2", "forward"): 1070,
}
QUOTED_PYTORCH_MS = {("ds_stage4", "training"): 496, ("cityscapes_os16", "training"): 7800,
                     ("resnet_s_stage2", "training"): 2700}
MEMORY_LIMIT_MB = 14 * 1024  # the machine has 24 GB, shared
RAW_RESULTS = BENCH_DIR / "results" / "run_all.json"


def _rss_mb(pid):
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def run_script(script, args=(), timeout=600, memory_limit_mb=MEMORY_LIMIT_MB, env=None):
    """Runs a benchmark script; returns (records, status, seconds).

    status is "ok", or says why the process did not finish (time or memory limit,
    exit code with the last error line).
    """
    command = [sys.executable, str(BENCH_DIR / script), *args]
    print("  $", " ".join(command[1:]), flush=True)
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO_ROOT), **(env or {})}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=err, cwd=REPO_ROOT, env=environment, text=True)
        status, peak_mb = "ok", 0.0
        while process.poll() is None:
            peak_mb = max(peak_mb, _rss_mb(process.pid))
            if peak_mb > memory_limit_mb:
                status = f"stopped: resident memory passed {memory_limit_mb / 1024:.0f} GB"
            elif time.perf_counter() - start > timeout:
                status = f"stopped: did not finish in {timeout} s"
            if status != "ok":
                process.kill()
                process.wait()
                break
            time.sleep(0.2)
        seconds = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        lines = out.read().splitlines()
        records = [json.loads(line[len(RECORD_PREFIX):]) for line in lines if line.startswith(RECORD_PREFIX)]
        if script == "input_pipeline.py":  # prints one plain JSON line
            records = [dict(json.loads(line), benchmark="input_pipeline") for line in lines if line.startswith("{")]
        if status == "ok" and process.returncode < 0:
            name = signal.Signals(-process.returncode).name
            status = f"crashed: {name} after {seconds:.0f} s (peak resident memory {peak_mb / 1024:.1f} GB)"
        elif status == "ok" and process.returncode != 0:
            error_lines = [line for line in err.read().splitlines() if line.strip() and "cuda" not in line.lower()]
            status = f"failed (exit {process.returncode}): {error_lines[-1][:200] if error_lines else ''}"
    print(f"    {status}, {seconds:.0f} s, {len(records)} record(s)", flush=True)
    return records, status, seconds


def plan(quick):
    """The suite: (section, script, args, timeout) in run order."""
    rounds = "1" if quick else "3"
    cases = ["ds_stage4", "resnet_s_stage2"] if quick else list(LAYER_CASES)
    steps = [("peak", "peak_flops.py", ["--size", "2048" if quick else "4096"], 300)]
    for case in cases:
        # Turns of 3 consecutive calls: the median is over repeated calls, as in a loop.
        case_rounds = "1" if quick else "2" if case == "local_span65" else "3"
        steps.append(("layer", "layer_speed.py", ["--case", case, "--impls", "current,baseline",
                                                  "--rounds", case_rounds, "--calls_per_turn", "3"], 900))
    for case in ["ds_stage4"] if quick else ["ds_stage4", "resnet_s_stage2"]:
        steps.append(("execution", "layer_speed.py",
                      ["--case", case, "--executions", "graph,eager,xla", "--rounds", rounds], 900))
        steps.append(("precision", "layer_speed.py",
                      ["--case", case, "--policies", "float32,mixed_float16,mixed_bfloat16", "--rounds", rounds], 900))
    steps.append(("onednn_off", "layer_speed.py", ["--case", "ds_stage4", "--rounds", rounds], 600))
    steps.append(("block", "block_speed.py", ["--rounds", rounds], 600))
    sides = {"global": [16, 32, 64], "local": [16, 32, 64], "full": [16, 32]} if quick else {
        "global": [16, 32, 64, 128], "local": [16, 32, 64, 128, 256], "full": [16, 32, 64, 128]}
    for method, method_sides in sides.items():
        for side in method_sides:
            steps.append(("scaling", "scaling.py", ["--method", method, "--side", str(side), "--rounds", rounds], 300))
    sizes = ["513,513"] if quick else ["513,513", "1025,2049"]
    for size in sizes:
        large = size == "1025,2049"  # about a minute per call: one timed call after the warm-up
        for backbone in ["axial_deeplab_s"] if quick else ["axial_deeplab_s", "axial_deeplab_l"]:
            steps.append(("model", "model_speed.py", ["--backbone", backbone, "--size", size,
                                                      "--rounds", "1" if quick or large else "2"],
                          900 if large else 300))
    steps.append(("train_step", "train_step.py", ["--steps", "3" if quick else "10"], 600))
    steps.append(("input_pipeline", "input_pipeline.py",
                  ["--batches", "20" if quick else "100", "--warmup_batches", "5" if quick else "10"], 600))
    steps.append(("resume_cost", "resume_cost.py",
                  ["--positions", "0,10000" if quick else "0,10000,100000,1000000", "--rounds", "1" if quick else "2"],
                  900))
    steps.append(steps[0])  # the peak again: the report uses the better of the two
    return steps


def machine_load():
    return " / ".join(f"{value:.2f}" for value in os.getloadavg())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Short smoke run (small sizes, one round).")
    parser.add_argument("--output", default=str(REPO_ROOT / "BENCHMARKS.md"))
    parser.add_argument("--report_only", action="store_true",
                        help=f"Rewrite the report from the last run's {RAW_RESULTS.name} (e.g. after demo_run.py).")
    parser.add_argument("--sections", default=None,
                        help=f"Comma-separated sections to measure again (e.g. resume_cost); their results "
                             f"replace those in {RAW_RESULTS.name}, the rest is kept, and the report says so.")
    args = parser.parse_args()
    if args.report_only and args.sections:
        parser.error("--report_only measures nothing; leave out --sections")
    sections = _requested_sections(parser, args.sections, args.quick)
    if args.report_only:
        run = json.loads(RAW_RESULTS.read_text())
    else:
        run = measure(args.quick, sections)
        if sections:
            run = merge_sections(json.loads(RAW_RESULTS.read_text()), run)
        RAW_RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RAW_RESULTS.write_text(json.dumps(run, indent=1) + "\n")
    from report import write_report  # noqa: E402 - keeps this driver importable without TF

    write_report(
        args.output, [tuple(result) for result in run["results"]], run["versions"], quick=run["quick"],
        started=datetime.datetime.fromisoformat(run["started"]), elapsed_seconds=run["elapsed_seconds"],
        load=tuple(run["load"]), quoted=(QUOTED_DEEPLAB2_MS, QUOTED_PYTORCH_MS), baseline_commit=BASELINE_COMMIT,
        remeasured=run.get("remeasured", []),
    )
    print(f"wrote {args.output}")


def _requested_sections(parser, sections, quick):
    """The `--sections` names as a set (None when not given); exits with a message for unknown names."""
    if sections is None:
        return None
    requested = {name.strip() for name in sections.split(",") if name.strip()}
    known = {section for section, *_ in plan(quick)}
    if not requested or requested - known:
        parser.error(f"--sections {sections!r}: unknown or no section names; known: {', '.join(sorted(known))}")
    if not RAW_RESULTS.exists():
        parser.error(f"--sections needs the stored results of a full run, {RAW_RESULTS}, which do not exist")
    return requested


def merge_sections(stored, partial):
    """The stored run with the sections that `partial` measured replaced by its results.

    Args:
        stored: The raw results of a whole run (`measure`), possibly merged before.
        partial: The raw results of a run of some sections only.

    Returns:
        The merged raw results; `remeasured` lists each replaced section with the date,
        load and machine of the run that measured it.
    """
    sections = sorted({section for section, *_ in partial["results"]})
    results = [result for result in stored["results"] if result[0] not in sections] + partial["results"]
    remeasured = [entry for entry in stored.get("remeasured", []) if entry["section"] not in sections]
    remeasured += [{"section": section, "started": partial["started"], "load": partial["load"],
                    "quick": partial["quick"], "cpu": partial["versions"].get("cpu", "?")} for section in sections]
    return {**stored, "results": results, "remeasured": remeasured}


def measure(quick, sections=None):
    """Runs the steps of the plan (those of `sections` only, if given); returns the raw results as a JSON-able dict."""
    started = datetime.datetime.now()
    load_before = machine_load()
    results = []  # [section, args, records, status]
    for section, script, script_args, timeout in plan(quick):
        if sections is not None and section not in sections:
            continue
        print(f"[{section}]", flush=True)
        env = {"TF_ENABLE_ONEDNN_OPTS": "0"} if section == "onednn_off" else None
        records, status, _ = run_script(script, script_args, timeout=timeout, env=env)
        results.append([section, script_args, records, status])
    versions, _, _ = run_script("versions.py")
    return {
        "quick": quick, "started": started.isoformat(), "load": [load_before, machine_load()],
        "elapsed_seconds": (datetime.datetime.now() - started).total_seconds(),
        "versions": versions[0] if versions else {}, "results": results,
    }


if __name__ == "__main__":
    main()
