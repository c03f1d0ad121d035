"""Hostile or careless YAML experiment files fail with one line naming the file and line."""

import resource
import textwrap

import pytest

from axial_tf.experiment.config import ConfigError, load_config
from axial_tf.experiment.config_sources import MAX_EXPANDED_YAML_NODES


def _write(tmp_path, text, name="exp.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def _alias_bomb(levels, fan_out=9):
    """A YAML file whose last alias expands to fan_out**levels values in a few hundred bytes."""
    lines = ['l0: &l0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for level in range(1, levels):
        lines.append(f"l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * fan_out) + "]")
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_is_refused_quickly_and_without_memory(tmp_path):
    path = _write(tmp_path, _alias_bomb(levels=9))  # 9**9 = 387M values from ~600 bytes
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ConfigError, match=r"exp\.yaml:\d+: YAML aliases expand this document past") as error:
        load_config(path)
    assert "\n" not in str(error.value)
    grown_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kb < 200_000, f"the refusal itself took {grown_kb} KB"


def test_aliases_within_the_bound_still_load(tmp_path):
    path = _write(tmp_path, """\
        model: &model {backbone: axial_deeplab_s, num_classes: 3}
        training: {steps: 7}
    """)
    config = load_config(path)
    assert config.model.num_classes == 3 and config.training.steps == 7
    assert MAX_EXPANDED_YAML_NODES >= 10_000  # far above any real experiment file


@pytest.mark.parametrize("text,line,first", [
    ("training:\n  steps: 5\n  steps: 6\n", 3, 2),
    ("training: {steps: 5}\nmodel: {num_classes: 3}\ntraining: {steps: 6}\n", 3, 1),
])
def test_a_duplicate_key_names_both_lines(tmp_path, text, line, first):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError, match=rf"exp\.yaml:{line}: duplicate key .* \(first given at line {first}\)"):
        load_config(path)


def test_deep_nesting_is_a_config_error(tmp_path):
    path = _write(tmp_path, "training: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match="exp.yaml: invalid YAML"):
        load_config(path)
