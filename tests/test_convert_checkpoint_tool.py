"""The convert_checkpoint tool: one-line errors, and it never overwrites or half-writes an output.

The tool runs in a subprocess on the DeepLab2 fixture (a small Axial-DeepLab checkpoint and
its experiment file), as a user would run it.
"""

import os
import subprocess
import sys

import keras
import pytest

from conftest import REPO_ROOT, fixture_cases
from training_helpers import run_tool
from axial_tf.experiment.config import load_config

CASE = [p.parent for p in fixture_cases("deeplab2/panoptic", "*/config.textproto")][0]


def _convert(experiment, output, *flags, checkpoint=CASE / "checkpoint"):
    return run_tool("convert_checkpoint", "--from", "deeplab2", "--checkpoint", checkpoint,
                    "--deeplab2_config", experiment, "--output", output, *flags)


def _error_lines(result):
    """The tool's own error lines (TensorFlow may log to stderr too)."""
    return [line for line in result.stderr.splitlines() if line.startswith("error: ")]


def _assert_failed_in_one_line(result, message):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert _error_lines(result) == [f"error: {message}"], result.stderr[-3000:]


@pytest.mark.full
def test_a_misspelled_field_is_a_one_line_error_and_nothing_is_written(tmp_path):
    experiment = tmp_path / "experiment.textproto"
    experiment.write_text((CASE / "config.textproto").read_text().replace("output_stride: 16", "output_strid: 16"))
    result = _convert(experiment, tmp_path / "model.keras")
    _assert_failed_in_one_line(result, f"{experiment}: model_options.backbone.output_strid: unknown field of "
                                       "DeepLab2's BackboneOptions; did you mean 'output_stride'?")
    assert os.listdir(tmp_path) == ["experiment.textproto"]


@pytest.mark.parametrize("existing", ["model.yaml", "model.keras"])
@pytest.mark.full
def test_an_existing_output_is_refused_without_overwrite(tmp_path, existing):
    (tmp_path / existing).write_text("my own file\n")
    result = _convert(CASE / "config.textproto", tmp_path / "model.keras")
    _assert_failed_in_one_line(result, f"{tmp_path / existing} already exists; pass --overwrite to replace it")
    assert os.listdir(tmp_path) == [existing]
    assert (tmp_path / existing).read_text() == "my own file\n"


@pytest.mark.full
def test_overwrite_replaces_both_outputs_but_a_failed_conversion_keeps_them(tmp_path):
    for name in ("model.yaml", "model.keras"):
        (tmp_path / name).write_text("my own file\n")
    failed = _convert(CASE / "config.textproto", tmp_path / "model.keras", "--overwrite",
                      checkpoint=tmp_path / "no_checkpoint")
    assert failed.returncode != 0 and len(_error_lines(failed)) == 1, failed.stderr[-3000:]
    assert sorted(os.listdir(tmp_path)) == ["model.keras", "model.yaml"]
    assert (tmp_path / "model.keras").read_text() == "my own file\n"

    result = _convert(CASE / "config.textproto", tmp_path / "model.keras", "--overwrite")
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(os.listdir(tmp_path)) == ["model.keras", "model.yaml"]  # no temporary file left
    assert load_config(tmp_path / "model.yaml").model.backbone == "axial_deeplab_s"
    keras.models.load_model(tmp_path / "model.keras", safe_mode=True)
    assert "note: " in result.stdout and "not used by axial_tf: experiment_name" in result.stdout


# Writes the config, then fails halfway through the model. It runs in its own process, as
# importing the tool defines its absl flags.
FAILING_WRITE = """
import sys
from axial_tf.tools.convert_checkpoint import _write_outputs

def write_config(path):
    with open(path, "w") as stream:
        stream.write("new config\\n")

def fail_halfway(path):
    with open(path, "w") as stream:
        stream.write("half a model")
    raise OSError("disk full")

folder = sys.argv[1]
try:
    _write_outputs({folder + "/model.yaml": write_config, folder + "/model.keras": fail_halfway}, overwrite=True)
except OSError as error:
    print(error)
"""


@pytest.mark.full
def test_a_failing_write_leaves_the_existing_outputs_and_no_partial_file(tmp_path):
    (tmp_path / "model.keras").write_text("old model\n")
    (tmp_path / "model.yaml").write_text("old config\n")
    result = subprocess.run([sys.executable, "-c", FAILING_WRITE, str(tmp_path)], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.stdout == "disk full\n", result.stderr[-3000:]
    assert sorted(os.listdir(tmp_path)) == ["model.keras", "model.yaml"]
    assert (tmp_path / "model.yaml").read_text() == "old config\n"  # not replaced before the model is complete
    assert (tmp_path / "model.keras").read_text() == "old model\n"


def _damaged_copy(tmp_path, damage):
    """A copy of the fixture checkpoint with its data file damaged by `damage(bytes) -> bytes`."""
    import shutil

    folder = tmp_path / "checkpoint"
    shutil.copytree(CASE / "checkpoint", folder)
    (data_file,) = folder.glob("*.data-*")
    data_file.write_bytes(damage(data_file.read_bytes()))
    return folder


@pytest.mark.parametrize("damage", [lambda data: data[: len(data) // 100], lambda data: b"\0" * len(data)],
                         ids=["truncated", "zeroed"])
def test_a_damaged_deeplab2_checkpoint_is_one_named_error(tmp_path, damage):
    from axial_tf.checkpoints.deeplab2_converter import read_deeplab2_checkpoint

    folder = _damaged_copy(tmp_path, damage)
    with pytest.raises(ValueError, match=r"ckpt-1000 is unreadable") as error:
        read_deeplab2_checkpoint(str(folder))
    assert "\n" not in str(error.value)
