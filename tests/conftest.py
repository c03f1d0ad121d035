"""Shared test set-up: quiet TF, CPU only, and the reference fixture roots."""

import functools
import glob
import hashlib
import os
import pathlib
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
# Datasets the tests build (and subprocesses they start) go to a scratch folder, not ~/tensorflow_datasets.
os.environ.setdefault("TFDS_DATA_DIR", tempfile.mkdtemp(prefix="axial_tf_tfds_"))

import pytest  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
# The reference fixtures ship with the tests (tests/fixtures/reference, see its README). More roots
# of the same layout are read from AXIAL_TF_FIXTURES (os.pathsep-separated) and from the team's
# ../shared/fixtures when it exists: later reference runs add cases there.
IN_REPO_FIXTURES = REPO_ROOT / "tests" / "fixtures" / "reference"
SHARED_FIXTURES = REPO_ROOT.parent / "shared" / "fixtures"
FIXTURES_ENV = "AXIAL_TF_FIXTURES"
# tests/backends/ runs on the JAX and PyTorch backends in a TensorFlow-free environment
# (`./run backend-tests jax|torch`); the TensorFlow suite does not collect it.
KERAS_BACKEND = os.environ.get("KERAS_BACKEND", "tensorflow")
collect_ignore = ["backends"] if KERAS_BACKEND == "tensorflow" else []


def _listed_roots():
    """The extra roots named in AXIAL_TF_FIXTURES, as given (empty entries skipped)."""
    return [entry for entry in os.environ.get(FIXTURES_ENV, "").split(os.pathsep) if entry.strip()]


@functools.cache
def fixture_roots():
    """Every fixture root, the in-repo one first, each once."""
    roots = [IN_REPO_FIXTURES]
    roots += [pathlib.Path(entry).expanduser() for entry in _listed_roots()]
    if SHARED_FIXTURES.is_dir():
        roots.append(SHARED_FIXTURES)
    unique = {}
    for root in roots:
        unique.setdefault(root.resolve(), root)
    return list(unique.values())


def pytest_configure(config):
    """A root named in AXIAL_TF_FIXTURES that does not exist stops the run with one line."""
    for entry in _listed_roots():
        if not pathlib.Path(entry).expanduser().is_dir():
            raise pytest.UsageError(f"{FIXTURES_ENV} lists {entry!r}, which is not a folder.")
    if not IN_REPO_FIXTURES.is_dir():
        raise pytest.UsageError(f"The in-repo reference fixtures are missing: {IN_REPO_FIXTURES}.")


def fixture_root(case):
    """The fixture root a case path (file or folder) comes from."""
    resolved = pathlib.Path(case).resolve()
    return next(root for root in fixture_roots() if resolved.is_relative_to(root.resolve()))


def case_id(case):
    """Test id of a case: its name, prefixed by its root's folder for cases outside the repository."""
    root = fixture_root(case)
    if root == IN_REPO_FIXTURES:
        return case.stem
    return f"{root.parent.name}/{root.name}:{case.stem}"


def _case_files(case, case_is_folder):
    """The files that make up one case: its folder, or the files sharing its stem."""
    if case_is_folder:
        return sorted(path for path in case.parent.rglob("*") if path.is_file())
    return sorted(case.parent.glob(glob.escape(case.stem) + ".*"))


def _fingerprint(case, root, case_is_folder):
    """Relative paths and contents of a case: equal fingerprints are the same case."""
    digest = hashlib.sha256()
    for path in _case_files(case, case_is_folder):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def fixture_cases(subdir, pattern):
    """Lists every fixture case matching `pattern` under `subdir` of every fixture root.

    Tests parametrize over the result (ids from `case_id`), so a case added to any root later
    is tested without a code change. A case that another root already holds byte for byte
    (the in-repo copy of a shared case) is listed once. Every root need not hold every family,
    but the in-repo root must: a family missing there is a hard error, not a skip.

    Args:
        subdir: The family's folder inside a root, e.g. "deeplab2/layers".
        pattern: A glob under it; "*/name" patterns make folder cases, others file cases.
    """
    case_is_folder = "/" in pattern
    if not (IN_REPO_FIXTURES / subdir).is_dir():
        raise FileNotFoundError(f"Reference fixtures not found at {IN_REPO_FIXTURES / subdir}.")
    cases, seen = [], set()
    for root in fixture_roots():
        for case in sorted((root / subdir).glob(pattern)):
            fingerprint = _fingerprint(case, root, case_is_folder)
            if fingerprint not in seen:
                seen.add(fingerprint)
                cases.append(case)
    if not cases:
        raise FileNotFoundError(f"No fixture matching {pattern!r} in {IN_REPO_FIXTURES / subdir}.")
    return cases


def fixture_files(relative_path):
    """The file at `relative_path` in every fixture root that has it (in-repo first)."""
    return [root / relative_path for root in fixture_roots() if (root / relative_path).is_file()]


@pytest.fixture(autouse=True)
def _reset_keras_state():
    """Each test starts from float32 and a clean Keras session."""
    import keras

    keras.mixed_precision.set_global_policy("float32")
    yield
    keras.mixed_precision.set_global_policy("float32")
    # Without the forced gc.collect(): it was 40% of the fast tier (156 of 373 s summed over tests);
    # Python's own collector still frees the old models.
    keras.backend.clear_session(free_memory=False)


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items):
    """Tiers: the first case of a `sweep`-marked parametrized test stays fast, its other cases are `full`."""
    first_cases = set()
    for item in items:
        if item.get_closest_marker("sweep") is None:
            continue
        test = item.nodeid.split("[", 1)[0]
        if test in first_cases:
            item.add_marker(pytest.mark.full)
        first_cases.add(test)


def randomize_batch_norms(layer, seed=0, scale_range=(0.5, 1.5), shift_std=0.1):
    """Gives every batch norm of `layer` random gammas and variances (uniform in `scale_range`) and
    betas and means (normal, `shift_std`), so that its statistics matter (in place)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    for variable in layer.weights:
        if variable.path.endswith(("gamma", "moving_variance")):
            variable.assign(rng.uniform(*scale_range, variable.shape).astype("float32"))
        elif variable.path.endswith(("beta", "moving_mean")):
            variable.assign(rng.normal(0.0, shift_std, variable.shape).astype("float32"))
