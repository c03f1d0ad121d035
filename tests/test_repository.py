"""The README stays true: its test command is what CI runs, and its layer example runs."""

import re

import numpy as np
import pytest

from conftest import REPO_ROOT

README = (REPO_ROOT / "README.md").read_text()


def test_ci_runs_the_readme_test_command():
    quick_start = README.split("## Quick start", 1)[1].split("##", 1)[0]
    command = re.search(r"^(\./run tests)\b", quick_start, re.MULTILINE).group(1)
    ci_lines = [line.strip() for line in (REPO_ROOT / ".ci" / "run").read_text().splitlines()]
    assert command in ci_lines


@pytest.mark.full
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


def test_cityscapes_configs_follow_deeplab2():
    from axial_tf.models import backbone_config
    from axial_tf.experiment.config import load_config

    config = load_config(REPO_ROOT / "configs" / "cityscapes" / "axial_swidernet_1_1_3_os16.yaml")
    assert config.model.num_classes == 19 and config.data.crop_size == [1025, 2049]
    assert config.evaluation.postprocessing.merge_style == "tf_merge"
    settings = backbone_config(config.model.backbone, **config.model.backbone_overrides)
    assert config.model.backbone == "axial_swidernet_1_1_3" and settings["backbone_layer_multiplier"] == 3
    assert settings["drop_path_schedule"] == "linear" and settings["drop_path_keep_prob"] == 0.8


def test_coco_configs_follow_deeplab2():
    from axial_tf.experiment.config import load_config

    folder = REPO_ROOT / "configs" / "coco"
    for name, backbone in (("axial_deeplab_s_os16", "axial_deeplab_s"), ("axial_deeplab_l_os16", "axial_deeplab_l"),
                           ("resnet50_os16", "resnet50")):
        config = load_config(folder / f"{name}.yaml")
        assert config.model.backbone == backbone
        assert config.model.num_classes == 133 and config.data.dataset == "coco2017_panoptic"
        assert config.data.crop_size == [641, 641] and config.training.batch_size == 64
        assert config.training.steps == 200000 and config.optimizer.learning_rate == 5e-4
        post = config.evaluation.postprocessing
        assert (post.nms_kernel, post.stuff_area_limit, post.keep_k_centers) == (41, 4096, 400)
    resnet = load_config(folder / "resnet50_os16.yaml").model
    assert not resnet.semantic_decoder.aspp_use_only_1x1_proj and resnet.instance_decoder.decoder_channels == 128


def _pins():
    """requirements.txt as {normalised name: version}."""
    from packaging.utils import canonicalize_name

    lines = [line.split("#")[0].strip() for line in (REPO_ROOT / "requirements.txt").read_text().splitlines()]
    return {canonicalize_name(line.split("==")[0]): line.split("==")[1] for line in lines if line}


def test_tested_pins_lie_in_the_declared_ranges():
    """The package metadata declares ranges; requirements.txt's exact pins must satisfy each of them."""
    import importlib.metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins = _pins()
    declared = set()
    for text in importlib.metadata.requires("axial_tf"):
        requirement = Requirement(text)
        # The core set and the `[tensorflow]` extra are the run-time stack CI tests; other extras
        # are optional.
        runtime_extra = requirement.marker is not None and requirement.marker.evaluate({"extra": "tensorflow"})
        if (requirement.marker is not None and not runtime_extra) or requirement.url:
            continue
        name = canonicalize_name(requirement.name)
        declared.add(name)
        assert name in pins, f"{requirement} is not pinned in requirements.txt"
        assert requirement.specifier.contains(pins[name]), f"pin {name}=={pins[name]} lies outside {requirement}"
        assert "==" not in str(requirement.specifier), f"{requirement}: the metadata must declare a range"
    # Every pin past the test-only block is something the package needs at run time.
    runtime = (REPO_ROOT / "requirements.txt").read_text().split("# Test-only", 1)[0]
    needed = {name for name in _pins() if f"\n{name}==" in "\n" + runtime.lower().replace("_", "-")}
    assert needed - declared == set(), f"pinned for run time but not declared in setup.py: {needed - declared}"


def test_every_tool_is_an_installed_command_and_a_checkout_script():
    import ast
    import importlib.metadata

    commands = {entry.name: entry.value for entry in importlib.metadata.entry_points(group="console_scripts")
                if entry.value.startswith("axial_tf.")}
    tools = sorted(path.stem for path in (REPO_ROOT / "axial_tf" / "tools").glob("*.py") if path.stem != "__init__")
    assert sorted(commands) == sorted(f"axial-tf-{tool.replace('_', '-')}" for tool in tools)
    for tool in tools:
        # Parsed, not imported: each tool defines its absl flags at import, and several names are shared.
        source = ast.parse((REPO_ROOT / "axial_tf" / "tools" / f"{tool}.py").read_text())
        assert "console_main" in {node.name for node in source.body if isinstance(node, ast.FunctionDef)}, tool
        assert f"from axial_tf.tools.{tool} import console_main" in (REPO_ROOT / "tools" / f"{tool}.py").read_text()


@pytest.mark.parametrize("tool", ["convert_checkpoint", "demo", "evaluate", "export", "model_summary", "predict", "train"])
@pytest.mark.full
def test_every_tool_help_lists_its_flags_and_exits_0(tool):
    import ast
    import subprocess
    import sys

    result = subprocess.run([sys.executable, str(REPO_ROOT / "tools" / f"{tool}.py"), "--help"], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    summary = ast.get_docstring(ast.parse((REPO_ROOT / "axial_tf" / "tools" / f"{tool}.py").read_text())).split("\n")[0]
    assert summary in result.stdout
    assert "--" in result.stdout.split(summary, 1)[1]  # its own flags follow
