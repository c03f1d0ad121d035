"""The README stays true: its test command is what CI runs, and its layer example runs."""

import re

import numpy as np

from conftest import REPO_ROOT

README = (REPO_ROOT / "README.md").read_text()


def test_ci_runs_the_readme_test_command():
    quick_start = README.split("## Quick start", 1)[1].split("##", 1)[0]
    command = re.search(r"^(\./run tests)\b", quick_start, re.MULTILINE).group(1)
    ci_lines = [line.strip() for line in (REPO_ROOT / ".ci" / "run").read_text().splitlines()]
    assert command in ci_lines


def test_readme_layer_example_builds_trains_and_saves(tmp_path):
    block = README.split("## Using the layers in your own Keras model", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    namespace = {}
    exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - our own documentation
    model = namespace["model"]
    x = np.random.default_rng(0).normal(size=(4, 37, 29, 3)).astype("float32")
    model.fit(x, np.arange(4) % 10, epochs=1, verbose=0)
    model.save(tmp_path / "readme.keras")
    import keras

    reloaded = keras.models.load_model(tmp_path / "readme.keras", safe_mode=True)
    np.testing.assert_allclose(np.asarray(reloaded(x)), np.asarray(model(x)), atol=1e-5)
