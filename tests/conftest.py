"""Shared test set-up: quiet TF, CPU only, and the reference fixture folder."""

import os
import pathlib
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
# Datasets the tests build (and subprocesses they start) go to a scratch folder, not ~/tensorflow_datasets.
os.environ.setdefault("TFDS_DATA_DIR", tempfile.mkdtemp(prefix="axial_tf_tfds_"))

import pytest  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
# The fixtures live beside the repository (../shared/fixtures); AXIAL_TF_FIXTURES overrides.
FIXTURES_DIR = pathlib.Path(
    os.environ.get("AXIAL_TF_FIXTURES", REPO_ROOT.parent / "shared" / "fixtures")
)


def fixture_cases(subdir, pattern):
    """Lists every fixture case matching `pattern` under FIXTURES_DIR/subdir.

    Tests parametrize over the result, so a case added to the folder later is
    tested without a code change. A missing folder is a hard error, not a skip:
    CI always has the fixtures and a silent skip would hide a broken checkout.
    """
    folder = FIXTURES_DIR / subdir
    if not folder.is_dir():
        raise FileNotFoundError(
            f"Reference fixtures not found at {folder}; set AXIAL_TF_FIXTURES to the "
            "shared/fixtures folder."
        )
    cases = sorted(folder.glob(pattern))
    if not cases:
        raise FileNotFoundError(f"No fixture matching {pattern!r} in {folder}.")
    return cases


@pytest.fixture(autouse=True)
def _reset_keras_state():
    """Each test starts from float32 and a clean Keras session."""
    import keras

    keras.mixed_precision.set_global_policy("float32")
    yield
    keras.mixed_precision.set_global_policy("float32")
    keras.backend.clear_session()
