"""Set-up of the backend tier: the TensorFlow interpreter, and scripts run under a chosen backend.

This tier runs on the JAX or PyTorch backend in an environment without TensorFlow. Numbers
from TensorFlow come from a second interpreter: AXIAL_TF_TENSORFLOW_PYTHON, by default the
repository's `.venv/bin/python` (which `./run setup` creates).
"""

import os
import pathlib
import subprocess
import sys

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
TENSORFLOW_PYTHON_ENV = "AXIAL_TF_TENSORFLOW_PYTHON"

# XLA's CPU code generation at optimisation level 0: JAX compiles this tier's models in about
# half the time, and their tiny shapes need no optimised code (measured: loading, predicting and
# differentiating the tiny AxialDeepLab took 33 CPU seconds instead of 59). Only without a GPU,
# and never over a user's own XLA_FLAGS.
if os.environ.get("CUDA_VISIBLE_DEVICES") == "":
    os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")


def tensorflow_interpreter():
    """The Python with TensorFlow; fails the test with one line when it is missing."""
    python = os.environ.get(TENSORFLOW_PYTHON_ENV) or str(REPO_ROOT / ".venv" / "bin" / "python")
    if not os.access(python, os.X_OK):
        pytest.fail(
            f"No TensorFlow interpreter at {python}: run `./run setup` or set {TENSORFLOW_PYTHON_ENV}.",
            pytrace=False,
        )
    return python


@pytest.fixture(scope="session")
def tensorflow_python():
    """Path of the interpreter with TensorFlow (AXIAL_TF_TENSORFLOW_PYTHON or `<repo>/.venv/bin/python`)."""
    return tensorflow_interpreter()


def _run_script(script, *args, backend="tensorflow", timeout=600):
    """Runs `script *args` from the repository root with KERAS_BACKEND=`backend`.

    "tensorflow" runs under the TensorFlow interpreter, any other backend under this one.
    A non-zero exit fails the calling test with the script's output.
    """
    python = tensorflow_interpreter() if backend == "tensorflow" else sys.executable
    command = [python, str(script), *map(str, args)]
    result = subprocess.run(
        command, cwd=REPO_ROOT, env={**os.environ, "KERAS_BACKEND": backend},
        capture_output=True, text=True, timeout=timeout,
    )
    if result.returncode:
        pytest.fail(
            f"{' '.join(command)} (KERAS_BACKEND={backend}) exited with {result.returncode}:\n"
            f"{result.stdout[-4000:]}\n{result.stderr[-8000:]}",
            pytrace=False,
        )
    return result


@pytest.fixture(scope="session")
def run_script():
    """`run_script(script, *args, backend="tensorflow")`: runs a script under that Keras backend."""
    return _run_script
