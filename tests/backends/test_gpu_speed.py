"""benchmarks/gpu_speed.py: its code runs on the CPU, and report.py renders its JSON.

The GPU benchmark itself runs on a GPU machine (benchmarks/gpu_device_run.sh). Here the same code
runs with `--device cpu --sizes small` (tiny shapes and widths) in a subprocess of this interpreter
and Keras backend, and every row must come out measured, with TensorFlow never imported.
"""

import json
import os
import subprocess
import sys

import keras
import pytest

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
import gpu_speed  # noqa: E402
import report  # noqa: E402

BACKEND = keras.backend.backend()
# XLA compile settings for the CPU run, where only the code path counts: no LLVM optimisation of
# the CPU code, and a compilation cache shared by the rows whose tiny programs are the same (three
# of the four small layer cases, the small S and L models): measured, about 3x less compile time on JAX.
FAST_COMPILE = {"XLA_FLAGS": "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true",
                "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}


# Every group on PyTorch; on JAX, whose compiles cost the most CPU time of the backend tier (the whole
# plan took 170 s there, under load), one layer case and the S model: the same code for every row.
SMALL_PLAN = gpu_speed.plan("small", ["float32", "bfloat16"], ["float32"])
JAX_GROUPS = (next(iter(SMALL_PLAN)), "model_axial_deeplab_s_inference", "model_axial_deeplab_s_training")
GROUPS = JAX_GROUPS if BACKEND == "jax" else tuple(SMALL_PLAN)


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory):
    """The JSON of a small CPU run (models at float32 only: a model's training step compiles for ~20 s on JAX)."""
    folder = tmp_path_factory.mktemp("gpu_speed")
    output = folder / f"gpu_{BACKEND}_cpu.json"
    command = [sys.executable, "benchmarks/gpu_speed.py", "--device", "cpu", "--sizes", "small",
               "--model_dtypes", "float32", "--only", ",".join(GROUPS), "--output", str(output)]
    environment = {**os.environ, **FAST_COMPILE, "KERAS_BACKEND": BACKEND,
                   "JAX_COMPILATION_CACHE_DIR": str(folder / "jax_cache")}
    result = subprocess.run(command, cwd=REPO_ROOT, env=environment, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    return output


@pytest.mark.full
def test_cpu_run_measures_every_row_without_tensorflow(cpu_run):
    run = json.loads(cpu_run.read_text())
    expected = {gpu_speed.row_key(row) for group in GROUPS for row in SMALL_PLAN[group]}
    assert {gpu_speed.row_key(row) for row in run["rows"]} == expected
    assert {(row["kind"], row["impl"]) for row in run["rows"]} == {("layer", "axial"), ("layer", "full"),
                                                                   ("model", "axial")}
    for row in run["rows"]:
        assert row["status"] == "ok", row
        assert row["images_per_second"] > 0, row
        # JAX reads XLA's analysis of the compiled step on any device; PyTorch has a peak on CUDA only.
        assert (row["peak_memory_bytes"] > 0) if BACKEND == "jax" else (row["peak_memory_bytes"] is None), row
    assert {row["batch"] for row in run["rows"] if row["mode"] == "training" and row["kind"] == "model"} == {2}
    assert run["tensorflow_loaded"] is False
    assert run["backend"] == BACKEND and run["device"] == "cpu" and run["environment"]["device_name"]


@pytest.mark.full
def test_report_renders_the_run_as_a_gpu_section(cpu_run):
    section = report.gpu_section([cpu_run])
    assert section.startswith("## GPU")
    assert "a smoke run of the code, not GPU numbers" in section
    measured = {row["case"] for group in GROUPS for row in SMALL_PLAN[group]}
    for case in measured & set(gpu_speed.LAYER_CASES):
        assert f"| {case} | forward | {BACKEND} | bfloat16 |" in section
        assert f"| {case} | training | {BACKEND} | float32 |" in section
    for model in measured & set(gpu_speed.MODELS):
        assert f"| {model} | inference | 33 x 33 | 1 | {BACKEND} | float32 |" in section
        assert f"| {model} | training | 33 x 33 | 2 | {BACKEND} | float32 |" in section


def test_report_says_pending_without_gpu_results():
    assert "Pending: no GPU result yet" in report.gpu_section([])


def test_training_batch_is_halved_until_it_fits():
    released = []

    def measure(batch):
        if batch > 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return {"median_ms": 1.0}

    result = gpu_speed.largest_fitting_batch(measure, 8, lambda: released.append(True))
    assert result == {"median_ms": 1.0, "batch": 2, "out_of_memory_batches": [8, 4]}
    assert len(released) == 2


def test_errors_other_than_out_of_memory_are_raised():
    def measure(batch):
        raise ValueError("shapes do not match")

    with pytest.raises(ValueError):
        gpu_speed.largest_fitting_batch(measure, 8, lambda: None)
    assert gpu_speed.is_out_of_memory(RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate"))
    assert not gpu_speed.is_out_of_memory(ValueError("shapes do not match"))
