"""Runs tools/train.py in a subprocess and reads the weights it checkpointed."""

import os
import subprocess
import sys

import numpy as np
import tensorflow as tf

from conftest import REPO_ROOT

TINY_PANOPTIC = REPO_ROOT / "tests" / "configs" / "tiny_panoptic.yaml"


def tool_command(tool, *args, overrides=()):
    """The command line of `tools/<tool>.py` with `args` and one `--override` flag per override."""
    command = [sys.executable, str(REPO_ROOT / "tools" / f"{tool}.py"), *map(str, args)]
    for override in overrides:
        command += ["--override", override]
    return command


def run_tool(tool, *args, overrides=(), env=None, timeout=600, preexec_fn=None):
    """Runs `tools/<tool>.py` with `args` and `--override` flags; returns the completed process.

    `preexec_fn` runs in the child before the tool starts (e.g. to set a resource limit).
    """
    return subprocess.run(tool_command(tool, *args, overrides=overrides), capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, preexec_fn=preexec_fn)


def train_command(config, model_dir, *overrides, extra=()):
    return tool_command("train", "--config", config, "--model_dir", model_dir, *extra, overrides=overrides)


def run_training(config, model_dir, *overrides, extra=(), env=None, check=True, timeout=600, preexec_fn=None):
    result = run_tool("train", "--config", config, "--model_dir", model_dir, *extra, overrides=overrides, env=env,
                      timeout=timeout, preexec_fn=preexec_fn)
    if check and result.returncode != 0:
        raise AssertionError(f"training failed ({result.returncode}):\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    return result


def assert_one_line_error(result, *fragments):
    """A tool failed with a non-zero exit and, as its last output, one `error:` line holding `fragments`."""
    assert result.returncode != 0, result.stdout[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-4000:]
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("error: "), result.stderr[-4000:]
    for fragment in fragments:
        assert fragment in last_line, (fragment, last_line)
    return last_line


def checkpoint_weights(model_dir, subdir="checkpoints", step=None):
    """`{key: array}` of the model variables in the latest checkpoint of a run (or the one of `step`)."""
    folder = os.path.join(model_dir, subdir)
    prefix = tf.train.latest_checkpoint(folder) if step is None else os.path.join(folder, f"ckpt-{step}")
    reader = tf.train.load_checkpoint(prefix)
    return {
        key: reader.get_tensor(key)
        for key in reader.get_variable_to_shape_map()
        if key.startswith("model_variables/") and key.endswith("VARIABLE_VALUE")
    }


def assert_same_weights(a, b, atol=0.0, rtol=0.0):
    assert sorted(a) == sorted(b)
    for key in a:
        np.testing.assert_allclose(a[key], b[key], atol=atol, rtol=rtol, err_msg=key)
