"""Importing axial_tf before TensorFlow turns TensorFlow's oneDNN kernels on, unless the user said no.

`runtime.onednn_enabled()` (which decides whether `ConvBN` may use row bands) reports it.
"""

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.full  # every test starts a fresh Python

PROBE = "import axial_tf\nfrom axial_tf.layers.runtime import onednn_enabled\nprint(onednn_enabled())"


def _onednn_enabled(setting):
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    if setting is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = setting
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    result = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return result.stdout.strip().splitlines()[-1] == "True"


@pytest.mark.parametrize("setting, expected", [(None, True), ("1", True), ("0", False)])
def test_onednn_follows_the_environment_and_defaults_on(setting, expected):
    assert _onednn_enabled(setting) is expected
