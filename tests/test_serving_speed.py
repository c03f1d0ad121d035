"""benchmarks/serving_speed.py: its JSON rows and the report's "CPU serving" section (no timing asserted)."""

import json
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

import report  # noqa: E402

ROW_KEYS = {"model", "size", "variant", "format", "precision", "median_ms", "min_ms", "max_ms", "images_per_second",
            "cores_busy", "load_seconds", "peak_rss_mb"}


def _row(variant, export_format, precision, median_ms, **extra):
    return {"model": "axial_deeplab_s", "size": [513, 513], "variant": variant, "format": export_format,
            "precision": precision, "processes": 1, "times_ms": [median_ms], "median_ms": median_ms,
            "min_ms": median_ms, "max_ms": median_ms, "images_per_second": 1e3 / median_ms, "cores_busy": 2.0,
            "load_seconds": 1.0, "first_call_seconds": 2.0, "rss_after_imports_mb": 600.0, "peak_rss_mb": 2048.0,
            **extra}


def test_report_renders_ratios_against_the_saved_model(tmp_path):
    path = tmp_path / "serving_speed.json"
    path.write_text(json.dumps({
        "started": "2026-01-02T03:04:05", "elapsed_seconds": 600.0, "load": ["1.00", "1.10"],
        "command": "python benchmarks/serving_speed.py", "settings": {"rounds": 3, "calls": 2, "threads": 2, "batch": 1},
        "versions": {"cpu": "Test CPU", "tensorflow": "2.21.0", "openvino": "2026.4.1"}, "exports": [],
        "rows": [_row("saved_model", "saved_model", "float32", 2000.0),
                 _row("openvino", "openvino", "float32", 500.0),
                 _row("openvino_bf16", "openvino", "bfloat16", 250.0, panoptic_pixels_differing_from_float32=12,
                      pixels=263169)],
        "failures": ["axial_deeplab_s 513x513 litert round 1: stopped: did not finish in 3600 s"],
    }))
    section = report.serving_section(path)
    assert "| axial_deeplab_s | 513 x 513 | openvino | float32 | 500 ms |" in section
    assert "| 4.00x |" in section and "| 8.00x |" in section and "| 1.00x |" in section
    assert "12 of 263,169" in section
    # The recommendation compares float32 paths only.
    assert "fastest float32 path **openvino** (500 ms, 4.00x the SavedModel's speed)" in section
    assert "Did not complete: axial_deeplab_s 513x513 litert" in section


def test_report_says_not_measured_without_results(tmp_path):
    assert "Not measured yet" in report.serving_section(tmp_path / "missing.json")
    assert "Not measured yet" in report.bfloat16_accuracy_section(tmp_path / "missing.json")


def test_an_update_replaces_only_the_cases_measured_again():
    import serving_speed

    settings = {"rounds": 3, "calls": 2, "threads": 2, "batch": 1}
    run = {"started": "2026-01-02T03:04:05", "elapsed_seconds": 60.0, "load": ["1", "1"], "command": "first",
           "settings": settings}

    def case(model, size, median_ms):
        return {"model": model, "size": size, "median_ms": median_ms}

    earlier = {**run, "rows": [case("s", [513, 513], 1.0), case("s", [1025, 2049], 2.0)],
               "exports": [case("s", [513, 513], 0)], "failures": ["s 1025x2049 export: stopped", "s 513x513 x: y"]}
    later = {**run, "started": "2026-01-03T00:00:00", "command": "second", "rows": [case("s", [1025, 2049], 3.0)],
             "exports": [case("s", [1025, 2049], 0)], "failures": []}
    merged = serving_speed.updated(earlier, later, ["s 1025x2049"])
    assert [row["median_ms"] for row in merged["rows"]] == [1.0, 3.0]
    assert [export["size"] for export in merged["exports"]] == [[513, 513], [1025, 2049]]
    assert merged["failures"] == ["s 513x513 x: y"] and merged["command"] == "first"
    assert merged["updates"][0]["command"] == "second" and merged["updates"][0]["cases"] == ["s 1025x2049"]


def test_report_renders_bfloat16_accuracy(tmp_path):
    path = tmp_path / "bfloat16_accuracy.json"
    row = {"format": "openvino", "pq": 0.75, "sq": 0.8, "rq": 0.9, "miou": 0.7, "pixels": 4096}
    path.write_text(json.dumps({
        "started": "2026-01-02T03:04:05", "model_dir": "runs/demo", "command": "python benchmarks/bfloat16_accuracy.py",
        "dataset": "panoptic_shapes/small", "split": "validation", "images": 2, "versions": {"cpu": "Test CPU"},
        "rows": [{**row, "precision": "float32", "precision_used": "float32", "pixels_differing_from_float32": 0},
                 {**row, "precision": "bfloat16", "precision_used": "bfloat16", "pq": 0.74,
                  "pixels_differing_from_float32": 12}]}))
    section = report.bfloat16_accuracy_section(path)
    assert "| openvino | bfloat16 | bfloat16 | 0.7400 | 0.8000 | 0.9000 | 0.7000 | 12 of 4,096 |" in section


# A benchmark's own run (exports in four formats, six timed processes: ~80 s of CPU): the slow tier,
# like the benchmarks; the fast tests above cover the report, tests/test_export_formats.py the exports.
@pytest.mark.slow
def test_tiny_run_writes_every_variant(tmp_path):
    output = tmp_path / "serving_speed.json"
    subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "serving_speed.py"), "--models", "tiny",
                    "--sizes", "65x65", "--rounds", "1", "--calls", "1", "--output", str(output),
                    "--work_dir", str(tmp_path)], check=True, cwd=REPO_ROOT, capture_output=True, timeout=900)
    run = json.loads(output.read_text())
    assert run["failures"] == []
    rows = {row["variant"]: row for row in run["rows"]}
    assert set(rows) == {"saved_model", "saved_model_bf16", "onnx", "openvino", "openvino_bf16", "litert"}
    for row in rows.values():
        assert ROW_KEYS <= set(row) and row["size"] == [65, 65] and len(row["times_ms"]) == 1
    for variant in ("saved_model_bf16", "openvino_bf16"):
        assert 0 <= rows[variant]["panoptic_pixels_differing_from_float32"] <= rows[variant]["pixels"] == 65 * 65
    section = report.serving_section(output)
    assert "| tiny | 65 x 65 | litert | float32 |" in section and "fastest float32 path" in section


@pytest.mark.slow
def test_bfloat16_accuracy_scores_every_format_and_precision(tmp_path):
    from test_export import tiny_panoptic_config, write_training_run

    write_training_run(tmp_path / "run", tiny_panoptic_config(tmp_path / "tfds"))
    output = tmp_path / "bfloat16_accuracy.json"
    subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "bfloat16_accuracy.py"), "--model_dir",
                    str(tmp_path / "run"), "--output", str(output)], check=True, cwd=REPO_ROOT, capture_output=True,
                   timeout=900)
    run = json.loads(output.read_text())
    assert [(row["format"], row["precision"]) for row in run["rows"]] == [
        (export_format, precision) for export_format in ("saved_model", "openvino") for precision in ("float32", "bfloat16")]
    float32 = [row for row in run["rows"] if row["precision"] == "float32"]
    assert all(row["pixels_differing_from_float32"] == 0 for row in float32)
    assert float32[0]["pq"] == float32[1]["pq"]  # OpenVINO's float32 maps are TensorFlow's
    assert "| openvino | bfloat16 |" in report.bfloat16_accuracy_section(output)
