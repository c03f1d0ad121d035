"""The reference fixtures ship with the repository, and more roots add cases (conftest.fixture_cases).

A copy of the checkout with nothing beside it collects every fixture case; extra roots named in
AXIAL_TF_FIXTURES add their cases under their own test ids; a root that does not exist is a
one-line error; the shipped files are the ones the reference runs produced (manifest SHA-256).
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import FIXTURES_ENV, IN_REPO_FIXTURES, REPO_ROOT

VERIFICATION = "axial_reference_verification.json"  # per-case reference errors at a root's top


def _checkout_files():
    """The repository's files as a fresh clone has them (tracked, plus new files not ignored)."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO_ROOT,
                            capture_output=True, text=True, check=True).stdout.splitlines()
    return [name for name in listed if (REPO_ROOT / name).is_file()]


def _collect(cwd, *args, extra_roots=None):
    """`pytest --collect-only` in `cwd` with axial_tf imported from there; returns the process."""
    env = {key: value for key, value in os.environ.items() if key != FIXTURES_ENV}
    env["PYTHONPATH"] = str(cwd)
    if extra_roots is not None:
        env[FIXTURES_ENV] = os.pathsep.join(map(str, extra_roots))
    command = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def _in_repo_case_ids():
    """One expected test id per shipped case of each family, as the parity tests name them."""
    reference = IN_REPO_FIXTURES
    return {
        *(f"test_outputs_match_deeplab2[{p.stem}]" for p in (reference / "deeplab2/layers").glob("*.json")),
        *(f"test_converted_checkpoint_reproduces_deeplab2[{p.name}]" for p in (reference / "deeplab2/panoptic").iterdir()),
        *(f"[{p.stem}]" for p in (reference / "pytorch_axial").glob("*.json")),
        *(f"[logits-{p.parent.name}]" for p in (reference / "panoptic_postprocess").glob("*/options.json")),
        *(f"[{p.parent.name}]" for p in (reference / "panoptic_eval").glob("*/expected.json")),
    }


@pytest.mark.full
def test_a_copy_with_nothing_beside_it_collects_every_fixture_case(tmp_path):
    checkout = tmp_path / "checkout"
    for name in _checkout_files():
        (checkout / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / name, checkout / name)
    assert not (tmp_path / "shared").exists()
    result = _collect(checkout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    missing = [case for case in _in_repo_case_ids() if case not in result.stdout]
    assert not missing, f"cases not collected from the copy: {missing}"
    assert "test_parameter_counts_equal_deeplab2[axial_deeplab_s_x1]" in result.stdout


def _copy_case(source_stem, root, new_stem):
    """Copies a shipped PyTorch case (json + npz, and its verification entry) into `root` as `new_stem`."""
    folder = root / "pytorch_axial"
    folder.mkdir(parents=True, exist_ok=True)
    for suffix in (".json", ".npz"):
        shutil.copy2(IN_REPO_FIXTURES / "pytorch_axial" / f"{source_stem}{suffix}", folder / f"{new_stem}{suffix}")
    shipped = json.loads((IN_REPO_FIXTURES / VERIFICATION).read_text())
    verification = json.loads((root / VERIFICATION).read_text()) if (root / VERIFICATION).is_file() else {"torch": {}}
    verification["torch"][new_stem] = shipped["torch"][source_stem]
    (root / VERIFICATION).write_text(json.dumps(verification))


@pytest.mark.full
def test_extra_roots_add_their_cases_under_their_own_ids(tmp_path):
    root = tmp_path / "more" / "fixtures"
    _copy_case("axial_attention_w_s2", root, "another_w_s2")
    _copy_case("axial_attention_h_s1", root, "axial_attention_h_s1")  # byte-identical: listed once
    result = _collect(REPO_ROOT, "tests/test_pytorch_parity.py", extra_roots=[root])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "test_axial_attention_module_matches_reference[more/fixtures:another_w_s2]" in result.stdout
    assert "more/fixtures:axial_attention_h_s1" not in result.stdout
    assert result.stdout.count("test_axial_attention_module_matches_reference[axial_attention_h_s1]") == 1


@pytest.mark.full
def test_a_case_from_an_extra_root_runs(tmp_path):
    root = tmp_path / "more" / "fixtures"
    _copy_case("axial_attention_h_s2", root, "renamed_h_s2")
    env = {**os.environ, FIXTURES_ENV: str(root)}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_pytorch_parity.py",
               "-k", "renamed_h_s2"]
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and "\n1 passed" in "\n" + result.stdout, result.stdout[-3000:] + result.stderr[-3000:]


def test_a_missing_extra_root_is_a_one_line_error(tmp_path):
    missing = tmp_path / "no_such_root"
    result = _collect(REPO_ROOT, "tests/test_fixture_roots.py", extra_roots=[missing])
    assert result.returncode != 0
    assert f"{FIXTURES_ENV} lists {str(missing)!r}, which is not a folder." in result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_shipped_fixtures_are_the_reference_runs_files():
    manifest = json.loads((IN_REPO_FIXTURES / "axial_reference_manifest.json").read_text())
    for entry in manifest["files"]:
        if entry["path"] == "README.md":  # the repository ships its own README for the fixtures
            continue
        data = (IN_REPO_FIXTURES / entry["path"]).read_bytes()
        assert len(data) == entry["bytes"] and hashlib.sha256(data).hexdigest() == entry["sha256"], entry["path"]
