"""Where an export is written and what it may replace: serving versions, atomic writes, refusals, tool errors.

The folder logic does not depend on what is served, so most tests save a
one-variable module (a second each) instead of a model.
"""

import os
import sys
import textwrap

import pytest
import tensorflow as tf

from test_export import run_command, tiny_panoptic_config
from training_helpers import tool_command

from axial_tf.export import (
    check_output_dir,
    export_model,
    holds_model_dir,
    holds_versions,
    is_saved_model,
    read_export_info,
    resolve_export_dir,
    resolve_saved_model,
    save_serving_module,
)
from axial_tf.experiment.config import save_config


class ScaleModule(tf.Module):
    """The smallest servable module: y = value * x."""

    def __init__(self, value):
        super().__init__()
        self.value = tf.Variable(float(value))

    def signatures(self):
        serve = tf.function(lambda x: {"y": x * self.value}, input_signature=[tf.TensorSpec([None], tf.float32)])
        return {"serving_default": serve.get_concrete_function()}


def export(path, value, overwrite=False):
    return save_serving_module(ScaleModule(value), path, {"value": value}, overwrite=overwrite)


def served_value(path):
    """What the SavedModel at `path` serves, and what its metadata says (they must agree)."""
    loaded = tf.saved_model.load(str(path))
    value = float(loaded.signatures["serving_default"](x=tf.constant([1.0]))["y"][0])
    assert read_export_info(path)["value"] == value
    return value


def tree(path):
    """Every file under `path` with its bytes."""
    return {
        os.path.relpath(os.path.join(folder, name), path): open(os.path.join(folder, name), "rb").read()
        for folder, _, names in os.walk(path)
        for name in names
    }


# ------------------------------------------------------------------ versions


def test_a_serving_base_folder_gets_the_next_version(tmp_path):
    base = tmp_path / "exports" / "model"
    assert resolve_export_dir(base) == str(base / "1")
    export(resolve_export_dir(base), 1.0)
    (base / "README.txt").write_text("TF Serving ignores what is not a number")
    assert resolve_export_dir(base) == str(base / "2")
    export(resolve_export_dir(base), 2.0)
    assert holds_versions(base) == [1, 2]
    assert [served_value(base / "1"), served_value(base / "2")] == [1.0, 2.0]
    assert resolve_saved_model(base) == str(base / "2")  # as TF Serving, the highest version
    assert resolve_export_dir(base / "2") == str(base / "2")  # a version folder is the target itself
    assert resolve_export_dir(base / "7") == str(base / "7")
    export(tmp_path / "single", 3.0)  # an existing SavedModel, whatever its name, is the target itself
    assert resolve_export_dir(tmp_path / "single") == str(tmp_path / "single")


def test_a_model_dir_is_never_a_serving_base_folder(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("model: {}\n")
    with pytest.raises(FileExistsError, match="is a training model_dir .*config.yaml"):
        resolve_export_dir(run)
    # Before the model is loaded (its source does not even exist here).
    with pytest.raises(FileExistsError, match="is a training model_dir"):
        export_model(run, keras_model=tmp_path / "missing.keras", overwrite=True)
    assert sorted(os.listdir(run)) == ["checkpoints", "config.yaml"]


# ------------------------------------------------------------------ atomic writes


def assert_no_leftovers(folder):
    assert not [name for name in os.listdir(folder) if name.startswith((".tmp-", ".old-"))]


def test_overwrite_replaces_an_earlier_export(tmp_path):
    version = tmp_path / "model" / "1"
    export(version, 1.0)
    with pytest.raises(FileExistsError, match="not empty"):
        export(version, 2.0)
    assert served_value(version) == 1.0
    export(version, 2.0, overwrite=True)  # what re-running the demo does to MODEL_DIR/export/1
    assert served_value(version) == 2.0
    assert_no_leftovers(version.parent)


def test_a_failed_export_leaves_the_previous_version_intact(tmp_path):
    version = tmp_path / "model" / "1"
    export(version, 1.0)
    before = tree(version)
    with pytest.raises(TypeError):  # the metadata cannot be written after the SavedModel was
        save_serving_module(ScaleModule(2.0), version, {"value": object()}, overwrite=True)
    assert tree(version) == before
    assert served_value(version) == 1.0
    assert_no_leftovers(version.parent)


@pytest.mark.full
def test_a_killed_export_leaves_the_previous_version_intact(tmp_path):
    version = tmp_path / "model" / "1"
    export(version, 1.0)
    before = tree(version)
    # The process dies half way through writing the new SavedModel (variables/ started, nothing else).
    code = textwrap.dedent(
        f"""
        import os, signal, sys
        import tensorflow as tf
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_export_target import ScaleModule
        from axial_tf.export import save_serving_module

        def dying_save(module, path, signatures):
            os.makedirs(os.path.join(path, "variables"))
            os.kill(os.getpid(), signal.SIGKILL)

        tf.saved_model.save = dying_save
        save_serving_module(ScaleModule(2.0), {str(version)!r}, {{"value": 2.0}}, overwrite=True)
        """
    )
    result = run_command([sys.executable, "-c", code])
    assert result.returncode == -9, result.stderr[-3000:]
    assert tree(version) == before
    assert served_value(version) == 1.0
    assert holds_versions(version.parent) == [1]  # the temporary folder is not a version TF Serving would load
    leftovers = [name for name in os.listdir(version.parent) if name != "1"]
    assert len(leftovers) == 1 and leftovers[0].startswith(".tmp-1-")


# ------------------------------------------------------------------ what --overwrite refuses


def make_files(root, names):
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"work")


REFUSALS = {
    "model_dir": (["config.yaml", "checkpoints/checkpoint", "checkpoints/ckpt-1.index", "train/events"],
                  "training model_dir or checkpoints \\(checkpoints, config.yaml\\)"),
    "checkpoint files": (["ckpt-3.index", "ckpt-3.data-00000-of-00001"], "checkpoints \\(ckpt-3.index\\)"),
    "versions": (["1/saved_model.pb", "2/saved_model.pb"], "SavedModel versions 1, 2"),
    "not a SavedModel": (["notes.txt"], "not a SavedModel"),
    "SavedModel with other files": (["saved_model.pb", "variables/variables.index", "notes.txt"],
                                    "files an export does not write \\(notes.txt\\)"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_overwrite_only_replaces_an_earlier_export(tmp_path, case):
    names, message = REFUSALS[case]
    target = tmp_path / "3"
    make_files(target, names)
    before = tree(target)
    with pytest.raises(FileExistsError, match=message):
        check_output_dir(target, overwrite=True)
    with pytest.raises(FileExistsError, match=message):
        save_serving_module(ScaleModule(1.0), target, {"value": 1.0}, overwrite=True)
    assert tree(target) == before
    assert_no_leftovers(tmp_path)


def test_folder_predicates(tmp_path):
    make_files(tmp_path / "run", ["config.yaml", "checkpoints/checkpoint"])
    make_files(tmp_path / "base", ["1/saved_model.pb", "12/saved_model.pb", "latest/saved_model.pb", "7.txt"])
    assert holds_model_dir(tmp_path / "run") == ["checkpoints", "config.yaml"]
    assert holds_model_dir(tmp_path / "base") == []
    assert holds_versions(tmp_path / "base") == [1, 12]
    assert is_saved_model(tmp_path / "base" / "latest") and not is_saved_model(tmp_path / "base")


# ------------------------------------------------------------------ tools: one line, non-zero exit


@pytest.fixture(scope="module")
def model_dir_without_checkpoints(tmp_path_factory):
    """A training directory with its config.yaml (export fails only when it reads the weights)."""
    run = tmp_path_factory.mktemp("tool") / "run"
    save_config(tiny_panoptic_config(run.parent / "tfds"), run)
    (run / "checkpoints").mkdir()
    return run


def assert_one_line_error(result, *fragments):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), result.stderr[-3000:]
    for fragment in fragments:
        assert fragment in last, last


@pytest.mark.full
def test_export_tool_refuses_to_overwrite_a_model_dir(model_dir_without_checkpoints):
    run = model_dir_without_checkpoints
    before = tree(run)
    result = run_command(tool_command("export", "--model_dir", run, "--output", run, "--overwrite"))
    assert_one_line_error(result, str(run), "training model_dir")
    assert tree(run) == before


@pytest.mark.full
def test_export_tool_names_a_missing_model_dir(tmp_path):
    result = run_command(tool_command("export", "--model_dir", tmp_path / "no_such_run", "--output", tmp_path / "e"))
    assert_one_line_error(result, "--model_dir", "no_such_run", "does not exist")
    assert not (tmp_path / "e").exists()


@pytest.mark.full
def test_export_tool_names_an_output_folder_it_cannot_write(model_dir_without_checkpoints, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    result = run_command(tool_command(
        "export", "--model_dir", model_dir_without_checkpoints, "--output", blocker / "exports" / "model"))
    assert_one_line_error(result, "Cannot write the export", str(blocker))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders")
@pytest.mark.full
def test_export_tool_names_a_read_only_output_folder(model_dir_without_checkpoints, tmp_path):
    read_only = tmp_path / "exports"
    read_only.mkdir()
    read_only.chmod(0o555)
    try:
        result = run_command(tool_command(
            "export", "--model_dir", model_dir_without_checkpoints, "--output", read_only / "model"))
    finally:
        read_only.chmod(0o755)
    assert_one_line_error(result, "Cannot write the export", str(read_only))
    assert os.listdir(read_only) == []

