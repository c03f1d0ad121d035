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
