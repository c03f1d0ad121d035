"""A model directory is never silently mixed up: one writer at a time, resumed configs are checked
against the saved one, and damaged checkpoints, failed writes and wrong paths end in one line."""

import contextlib
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys

import keras
import pytest
import tensorflow as tf
import yaml

from axial_tf.experiment.checkpoints import load_keras_model, load_model, resolve_checkpoint
from axial_tf.experiment.checkpoints import UnreadableCheckpointError, try_restore
from axial_tf.experiment.config import CONFIG_HISTORY_FILENAME, ConfigError, load_config, save_config
from axial_tf.training.config_changes import ConfigChangeError, check_resume_config, config_changes
from axial_tf.training.model_dir import ModelDirLock
from axial_tf.utils.files import ModelDirError
from conftest import REPO_ROOT
from training_helpers import (
    TINY_PANOPTIC,
    assert_one_line_error,
    assert_same_weights,
    checkpoint_weights,
    run_tool,
    run_training,
)

HOLD_LOCK = """
import sys
from axial_tf.training.model_dir import ModelDirLock
ModelDirLock(sys.argv[1]).acquire()
print("locked", flush=True)
sys.stdin.read()  # holds the lock until the test kills this process
"""


@contextlib.contextmanager
def lock_held_by_another_process(model_dir):
    """Yields a process that holds `model_dir`'s lock; it is killed on exit."""
    process = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(model_dir)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT)
    try:
        assert process.stdout.readline().strip() == "locked"
        yield process
    finally:
        process.kill()
        process.wait()


def limit_file_size(limit):
    """A `preexec_fn` after which writing a file past `limit` bytes fails with EFBIG ("File too large").

    This is a full disk for one file, without the privileges a small filesystem would need.
    """
    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an error from write() instead of the signal

    return apply


def copy_run(run, tmp_path):
    """A copy of a finished run that a test may change."""
    target = tmp_path / "run"
    shutil.copytree(run, target)
    return target


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A finished 2-step tiny run with ckpt-1 and ckpt-2; tests change only copies of it."""
    model_dir = tmp_path_factory.mktemp("trained") / "run"
    run_training(TINY_PANOPTIC, model_dir)
    return model_dir


# ----------------------------------------------------------------------------------- the lock


@pytest.mark.full
def test_a_second_writer_is_refused_with_the_holder_named_until_the_holder_is_killed(tmp_path):
    with lock_held_by_another_process(tmp_path) as holder:
        with pytest.raises(ModelDirError) as refusal:
            ModelDirLock(tmp_path).acquire()
        message = str(refusal.value)
        assert f"{tmp_path} is in use by another training run (pid {holder.pid} on {socket.gethostname()}" in message
        assert f"-c {tmp_path}" in message  # the holder's command line
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        with ModelDirLock(tmp_path):  # the kernel released the killed holder's lock
            pass


def test_the_lock_is_exclusive_within_a_process_and_released_on_exit(tmp_path):
    with ModelDirLock(tmp_path):
        with pytest.raises(ModelDirError, match=f"pid {os.getpid()} "):
            ModelDirLock(tmp_path).acquire()
    with ModelDirLock(tmp_path):
        pass
    assert (tmp_path / ".lock").read_text() == ""  # the holder record goes with the lock


def test_an_unusable_model_dir_is_refused_by_the_lock(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(ModelDirError, match=r"Cannot write to model_dir .*/file/run: .*Not a directory"):
        ModelDirLock(tmp_path / "file" / "run").acquire()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a chmod 0o555 folder; the path-under-a-file "
                                             "test covers the same refusal")
def test_a_read_only_model_dir_is_refused_by_the_lock(tmp_path):
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(ModelDirError, match="Permission denied"):
            ModelDirLock(tmp_path).acquire()
    finally:
        tmp_path.chmod(0o755)


def test_a_non_local_model_dir_is_not_locked_and_says_so():
    notes = []
    with ModelDirLock("gs://bucket/run", log=notes.append):
        pass
    assert notes == ["note: gs://bucket/run is not on a local filesystem, which has no locks: make sure no other "
                     "run writes there."]


# ------------------------------------------------------------------------------- config changes


def test_config_changes_are_refused_or_accepted_by_section():
    saved = load_config(TINY_PANOPTIC)
    new = load_config(TINY_PANOPTIC, [
        "model.output_stride=8", "data.shuffle_buffer_size=4", "losses.center_weight=1.0",
        "optimizer.learning_rate=0.5", "training.seed=4", "training.batch_size=8",
        "training.steps=9", "training.summary_interval=5", "data.data_dir=/elsewhere", "evaluation.steps=2",
    ])
    refused = {change.key: change.changes_the_run for change in config_changes(saved, new)}
    assert refused == {
        "model.output_stride": True, "data.data_dir": False, "data.shuffle_buffer_size": True,
        "losses.center_weight": True, "optimizer.learning_rate": True, "training.steps": False,
        "training.batch_size": True, "training.summary_interval": False, "training.seed": True,
        "evaluation.steps": False,
    }


def test_a_run_changing_config_is_refused_on_resume_unless_allowed(tmp_path):
    saved_path = save_config(load_config(TINY_PANOPTIC), str(tmp_path))
    changed = load_config(TINY_PANOPTIC, ["model.output_stride=8", "training.steps=9"])
    with pytest.raises(ConfigChangeError, match=r"config.yaml: the resumed run's config changes the run "
                                                r"\(model.output_stride: 16 -> 8\)"):
        check_resume_config(changed, saved_path)
    allowed = check_resume_config(changed, saved_path, allow_config_change=True)
    assert [str(change) for change in allowed] == ["model.output_stride: 16 -> 8", "training.steps: 2 -> 9"]
    longer = check_resume_config(load_config(TINY_PANOPTIC, ["training.steps=9"]), saved_path)
    assert [str(change) for change in longer] == ["training.steps: 2 -> 9"]


def test_save_config_keeps_every_replaced_config_in_the_history(tmp_path):
    first, second = load_config(TINY_PANOPTIC), load_config(TINY_PANOPTIC, ["model.output_stride=8"])
    save_config(first, str(tmp_path))
    save_config(first, str(tmp_path))
    assert not (tmp_path / CONFIG_HISTORY_FILENAME).exists()  # nothing was replaced
    save_config(second, str(tmp_path))
    save_config(first, str(tmp_path))
    history = list(yaml.safe_load_all((tmp_path / CONFIG_HISTORY_FILENAME).read_text()))
    assert [entry["model"]["output_stride"] for entry in history] == [16, 8]
    assert load_config(tmp_path / "config.yaml") == first


@pytest.mark.full
def test_a_failed_config_write_leaves_the_saved_config_whole(tmp_path):
    save_config(load_config(TINY_PANOPTIC), str(tmp_path))
    saved = (tmp_path / "config.yaml").read_text()
    # The new config is ~2 kB longer (a long manual_dir): the history entry fits, the new config does not.
    script = (f"from axial_tf.experiment.config import load_config, save_config\n"
              f"config = load_config({str(TINY_PANOPTIC)!r}, ['data.manual_dir=/{'x' * 2000}'])\n"
              f"save_config(config, {str(tmp_path)!r})\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO_ROOT,
                            preexec_fn=limit_file_size(len(saved) + 1000), timeout=300)
    assert result.returncode != 0
    assert f"ModelDirError: Cannot write the config {tmp_path / 'config.yaml'}: File too large." in result.stderr
    assert (tmp_path / "config.yaml").read_text() == saved
    assert sorted(os.listdir(tmp_path)) == ["config.yaml", CONFIG_HISTORY_FILENAME]  # no temporary file left


def test_a_directory_given_as_config_file_is_named(tmp_path):
    (tmp_path / "experiment.yaml").mkdir()
    with pytest.raises(ConfigError, match="experiment.yaml: is a directory, not a config file"):
        load_config(tmp_path / "experiment.yaml")
    with pytest.raises(ConfigError, match="configs/demo: is a directory, not a config file; give one of the files "
                                          "in it, e.g. panoptic_shapes.gin, panoptic_shapes.yaml"):
        load_config(REPO_ROOT / "configs" / "demo")


# ----------------------------------------------------------------------- checkpoints and models


def _truncate(path):
    with open(path, "r+b") as stream:
        stream.truncate(os.path.getsize(path) // 2)


def _flip_a_byte(path):
    with open(path, "r+b") as stream:
        stream.seek(100)
        value = stream.read(1)[0]
        stream.seek(100)
        stream.write(bytes([value ^ 0xFF]))


DAMAGES = {  # how each kind of damage reaches the user (TF raises a different error type for each)
    "truncated data": (".data-00000-of-00001", _truncate, "Read less bytes than requested"),
    "flipped data byte": (".data-00000-of-00001", _flip_a_byte, "Checksum does not match"),
    "truncated index": (".index", _truncate, "not an sstable"),
    "missing data": (".data-00000-of-00001", os.remove, "No such file or directory"),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_every_kind_of_checkpoint_damage_is_one_unreadable_checkpoint_error(tmp_path, damage):
    suffix, apply, reason = DAMAGES[damage]
    prefix = tf.train.Checkpoint(weights=tf.Variable(tf.range(5000.0)), bias=tf.Variable([1.0, 2.0])).write(
        str(tmp_path / "ckpt-7"))
    apply(prefix + suffix)
    target = tf.train.Checkpoint(weights=tf.Variable(tf.zeros([5000])), bias=tf.Variable([0.0, 0.0]))
    error = try_restore(target, prefix)
    assert isinstance(error, UnreadableCheckpointError) and error.prefix == prefix
    assert str(error).startswith(f"Checkpoint {prefix} is unreadable (truncated or corrupt: ") and reason in str(error)
    assert "\n" not in str(error)
    assert target.bias.numpy().tolist() == [0.0, 0.0]  # nothing was restored


def test_a_missing_model_dir_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'typo'} does not exist: it is neither a model "
                                                "directory nor a checkpoint prefix"):
        resolve_checkpoint(tmp_path / "typo")


def _save_lambda_model(path):
    inputs = keras.Input((4,))
    keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs)).save(path)


def test_keras_files_that_need_code_are_refused_in_one_line(tmp_path):
    _save_lambda_model(tmp_path / "lambda.keras")
    with pytest.raises(ValueError, match="lambda.keras safely: it holds a Lambda layer with a Python lambda") as error:
        load_keras_model(tmp_path / "lambda.keras")
    assert "\n" not in str(error.value)

    def triple(x):
        return x * 3

    keras.saving.register_keras_serializable(package="axial_tf_test")(triple)
    inputs = keras.Input((4,))
    try:  # saved while registered, loaded after: as a model whose code was not imported
        keras.Model(inputs, keras.layers.Activation(triple)(inputs)).save(tmp_path / "function.keras")
    finally:
        keras.saving.get_custom_objects().pop("axial_tf_test>triple", None)
    with pytest.raises(ValueError, match="function.keras safely: it refers to the function 'axial_tf_test>triple'") \
            as error:
        load_keras_model(tmp_path / "function.keras")
    assert "\n" not in str(error.value)

    (tmp_path / "truncated.keras").write_bytes((tmp_path / "function.keras").read_bytes()[:500])
    with pytest.raises(ValueError, match="truncated.keras is not a .keras archive"):
        load_keras_model(tmp_path / "truncated.keras")


@pytest.mark.full
def test_a_truncated_latest_checkpoint_is_named_and_resume_can_take_the_newest_intact_one(trained_run, tmp_path):
    model_dir = copy_run(trained_run, tmp_path)
    checkpoints = model_dir / "checkpoints"
    _truncate(checkpoints / "ckpt-2.data-00000-of-00001")

    evaluation = run_tool("evaluate", "--config", TINY_PANOPTIC, "--model_dir", model_dir)
    assert_one_line_error(evaluation, f"Checkpoint {checkpoints / 'ckpt-2'} is unreadable (truncated or corrupt: ")
    with pytest.raises(UnreadableCheckpointError, match="ckpt-2 is unreadable"):  # how export and predict load
        load_model(load_config(TINY_PANOPTIC), model_dir=model_dir)

    refused = run_training(TINY_PANOPTIC, model_dir, check=False)
    assert_one_line_error(refused, f"{checkpoints / 'ckpt-2'} is unreadable", "the newest intact checkpoint is "
                          "ckpt-1: pass --resume_from_intact")
    resumed = run_training(TINY_PANOPTIC, model_dir, extra=["--resume_from_intact"])
    assert f"Resumed from {checkpoints / 'ckpt-1'} (step 1)" in resumed.stdout
    assert (checkpoints / "unreadable" / "ckpt-2.index").exists()  # set aside, not deleted
    # Step 2 again from ckpt-1 gives the weights the damaged ckpt-2 had held.
    assert_same_weights(checkpoint_weights(model_dir), checkpoint_weights(trained_run))


@pytest.mark.full
def test_damaged_or_mismatched_checkpoints_end_the_tools_with_their_error(trained_run, tmp_path):
    # A restore that failed half-way printed TF's warnings after the error line.
    model_dir = copy_run(trained_run, tmp_path)
    _flip_a_byte(model_dir / "checkpoints" / "ckpt-2.data-00000-of-00001")
    evaluation = run_tool("evaluate", "--config", TINY_PANOPTIC, "--model_dir", model_dir)
    assert_one_line_error(evaluation, "ckpt-2 is unreadable (truncated or corrupt: ", "Checksum does not match")
    wider = run_tool("evaluate", "--config", TINY_PANOPTIC, "--model_dir", trained_run,
                     overrides=["model.semantic_decoder.head_channels=24"])
    assert_one_line_error(wider, "ckpt-2 does not hold every variable of the model the config describes")


# ------------------------------------------------------------------------------ the tools


@pytest.mark.full
def test_training_on_a_model_dir_in_use_is_refused_and_evaluating_it_is_not(trained_run, tmp_path):
    model_dir = copy_run(trained_run, tmp_path)
    checkpoints_before = sorted(os.listdir(model_dir / "checkpoints"))
    with lock_held_by_another_process(model_dir) as holder:
        second = run_training(TINY_PANOPTIC, model_dir, "training.steps=3", check=False)
        assert_one_line_error(second, f"{model_dir} is in use by another training run (pid {holder.pid} ")
        evaluation = run_tool("evaluate", "--config", TINY_PANOPTIC, "--model_dir", model_dir,
                              "--output_dir", tmp_path / "eval")
        assert evaluation.returncode == 0, evaluation.stderr[-3000:]
    assert sorted(os.listdir(model_dir / "checkpoints")) == checkpoints_before


@pytest.mark.full
def test_resuming_with_another_architecture_is_refused_and_harmless_changes_are_logged(trained_run, tmp_path):
    model_dir = copy_run(trained_run, tmp_path)
    saved = (model_dir / "config.yaml").read_text()
    refused = run_training(TINY_PANOPTIC, model_dir, "model.output_stride=8", "training.steps=3", check=False)
    assert_one_line_error(refused, f"{model_dir / 'config.yaml'}: ", "model.output_stride: 16 -> 8",
                          "--allow_config_change")
    assert (model_dir / "config.yaml").read_text() == saved
    assert not (model_dir / CONFIG_HISTORY_FILENAME).exists()
    assert tf.train.latest_checkpoint(str(model_dir / "checkpoints")).endswith("ckpt-2")

    longer = run_training(TINY_PANOPTIC, model_dir, "training.steps=3")
    assert "Config change on resume: training.steps: 2 -> 3 (accepted: it keeps the model" in longer.stdout
    allowed = run_training(TINY_PANOPTIC, model_dir, "training.steps=4", "losses.center_weight=100.0",
                           extra=["--allow_config_change"])
    assert "Config change on resume: losses.center_weight: 200.0 -> 100.0 (accepted: allow_config_change)" \
        in allowed.stdout
    history = list(yaml.safe_load_all((model_dir / CONFIG_HISTORY_FILENAME).read_text()))
    assert [entry["training"]["steps"] for entry in history] == [2, 3]
    assert load_config(model_dir / "config.yaml").losses.center_weight == 100.0


@pytest.mark.full
def test_a_failed_checkpoint_write_keeps_the_model_dir_resumable(trained_run, tmp_path):
    model_dir = copy_run(trained_run, tmp_path)
    checkpoints = model_dir / "checkpoints"
    before = sorted(os.listdir(checkpoints))
    checkpoint_size = (checkpoints / "ckpt-2.data-00000-of-00001").stat().st_size
    full = run_training(TINY_PANOPTIC, model_dir, "training.steps=3", check=False,
                        preexec_fn=limit_file_size(checkpoint_size // 2))
    assert_one_line_error(full, f"Cannot write checkpoint {checkpoints / 'ckpt-3'}: File too large.",
                          "its last checkpoint ckpt-2 is kept")
    assert sorted(os.listdir(checkpoints)) == before  # no partial ckpt-3 left behind
    resumed = run_training(TINY_PANOPTIC, model_dir, "training.steps=3")
    assert f"Resumed from {checkpoints / 'ckpt-2'} (step 2)" in resumed.stdout
    assert tf.train.latest_checkpoint(str(checkpoints)).endswith("ckpt-3")


@pytest.mark.full
def test_eval_mode_without_a_checkpoint_fails_like_the_evaluate_tool(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_training(TINY_PANOPTIC, empty, extra=["--mode", "eval"], check=False)
    assert_one_line_error(result, f"No checkpoint in {empty}")
    assert not (empty / "eval").exists()  # no metrics of random weights
    typo = run_tool("evaluate", "--config", TINY_PANOPTIC, "--model_dir", tmp_path / "typo")
    assert_one_line_error(typo, f"{tmp_path / 'typo'} does not exist")


@pytest.mark.full
def test_unwritable_paths_directory_configs_and_unsafe_models_fail_in_one_line(trained_run, tmp_path):
    (tmp_path / "file").write_text("")
    training = run_training(TINY_PANOPTIC, tmp_path / "file" / "run", check=False)
    assert_one_line_error(training, f"Cannot write to model_dir {tmp_path / 'file' / 'run'}")
    evaluation = run_tool("evaluate", "--config", TINY_PANOPTIC, "--model_dir", trained_run,
                          "--output_dir", tmp_path / "file" / "eval")
    assert_one_line_error(evaluation, f"Cannot write metrics {tmp_path / 'file' / 'eval' / 'metrics.json'}")

    directory = run_training(REPO_ROOT / "configs" / "demo", tmp_path / "run", check=False)
    assert_one_line_error(directory, "configs/demo: is a directory, not a config file")

    _save_lambda_model(tmp_path / "lambda.keras")
    unsafe = run_tool("evaluate", "--config", TINY_PANOPTIC, "--checkpoint", tmp_path / "lambda.keras")
    assert_one_line_error(unsafe, f"Cannot load {tmp_path / 'lambda.keras'} safely: it holds a Lambda layer")


def test_prediction_pngs_keep_sub_folders_and_stay_inside_the_output():
    from axial_tf.experiment.tasks.base import prediction_png_path

    assert prediction_png_path("out", "day/frame.jpg") == os.path.join("out", "day", "frame.png")
    assert prediction_png_path("out", "night/frame.jpg") == os.path.join("out", "night", "frame.png")
    assert prediction_png_path("out", "frame.jpeg") == os.path.join("out", "frame.png")
    assert prediction_png_path("out", "../../etc/x.png") == os.path.join("out", "etc", "x.png")
    assert prediction_png_path("out", "/abs/y.png") == os.path.join("out", "abs", "y.png")
