"""Writing and inspecting the exported SavedModel, and what may be written where.

Exports are atomic (`staged_export`): TF Serving polls a base folder of
numbered versions and must never see a half-written one, and a failed export
must leave the previous one intact. `--overwrite` replaces only an earlier
export, never a model directory, checkpoints or a folder of versions.

Besides the SavedModel itself, an export holds
`assets.extra/axial_tf_export.json` (the label space, the baked-in pre- and
post-processing and the signature contract) so that clients such as
`tools/predict.py` can colour and decode predictions without the experiment
config. TF Serving ignores the file.
"""

import contextlib
import json
import os

import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from axial_tf.experiment.checkpoints import CHECKPOINT_SUBDIR
from axial_tf.experiment.config import CONFIG_FILENAME
from axial_tf.layers.runtime import runtime_settings
from axial_tf.utils.errors import error_line

EXPORT_INFO_FILENAME = "axial_tf_export.json"
EXPORT_INFO_DIR = "assets.extra"
EXPORT_FORMAT_VERSION = 1
SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")
# Everything an export writes at the top of its folder; `--overwrite` deletes nothing else.
SAVED_MODEL_ENTRIES = frozenset({*SAVED_MODEL_FILES, "fingerprint.pb", "variables", "assets", EXPORT_INFO_DIR})
# What marks a training model directory: the saved config, checkpoints and their state file.
MODEL_DIR_ENTRIES = frozenset({CONFIG_FILENAME, CHECKPOINT_SUBDIR, "checkpoint"})


def export_info_path(saved_model_dir):
    """Where the export metadata of a SavedModel directory lives."""
    return os.path.join(os.fspath(saved_model_dir), EXPORT_INFO_DIR, EXPORT_INFO_FILENAME)


def is_saved_model(path):
    """Whether `path` is a SavedModel folder (holds `saved_model.pb` or `saved_model.pbtxt`)."""
    path = os.fspath(path)
    return any(tf.io.gfile.exists(os.path.join(path, name)) for name in SAVED_MODEL_FILES)


def holds_model_dir(path):
    """The entries of `path` that belong to training: `config.yaml`, `checkpoints/`, checkpoint files.

    Args:
        path: An existing folder.

    Returns:
        Sorted list of those entry names (empty when there are none).
    """
    return sorted(
        name.rstrip("/")
        for name in tf.io.gfile.listdir(os.fspath(path))
        if name.rstrip("/") in MODEL_DIR_ENTRIES or name.endswith(".index")
    )


def holds_versions(path):
    """The TF Serving versions in `path`: its sub-folders named by a number, as sorted ints.

    Args:
        path: An existing folder.
    """
    path = os.fspath(path)
    return sorted(
        int(name.rstrip("/"))
        for name in tf.io.gfile.listdir(path)
        if is_version_name(name.rstrip("/")) and tf.io.gfile.isdir(os.path.join(path, name))
    )


def is_version_name(name):
    """Whether a folder name is a TF Serving version number."""
    return name.isascii() and name.isdigit()


def resolve_export_dir(output_dir):
    """The SavedModel folder an export to `output_dir` writes.

    An existing SavedModel, or a folder named by a number (a TF Serving
    version), is written itself. Any other folder is a serving base folder: the
    export becomes its next version, `output_dir/<highest version + 1>`
    (`output_dir/1` for a new or empty one), which TF Serving then serves.

    Args:
        output_dir: The `--output` of an export.

    Returns:
        The SavedModel folder path.

    Raises:
        FileExistsError: If `output_dir` is a file, or a training model
            directory (exports never go among checkpoints).
    """
    output_dir = _without_trailing_slash(output_dir)
    if not tf.io.gfile.exists(output_dir):
        return output_dir if is_version_name(os.path.basename(output_dir)) else os.path.join(output_dir, "1")
    if not tf.io.gfile.isdir(output_dir):
        raise FileExistsError(f"Export target {output_dir} is a file, not a folder.")
    if is_saved_model(output_dir) or is_version_name(os.path.basename(output_dir)):
        return output_dir
    training_entries = holds_model_dir(output_dir)
    if training_entries:
        raise FileExistsError(
            f"{output_dir} is a training model_dir (it holds {', '.join(training_entries)}); export to a serving "
            "folder such as exports/NAME instead."
        )
    versions = holds_versions(output_dir)
    return os.path.join(output_dir, str(versions[-1] + 1 if versions else 1))


def check_output_dir(output_dir, overwrite=False):
    """Fails early unless `output_dir` may receive a SavedModel.

    A missing or empty folder may. An existing export may be replaced with
    `overwrite`, and nothing else: a folder that holds a training model_dir,
    checkpoints, SavedModel versions or files an export does not write is
    never deleted.

    Args:
        output_dir: The SavedModel folder (see `resolve_export_dir`).
        overwrite: Whether an existing SavedModel there may be replaced.

    Raises:
        FileExistsError: If `output_dir` holds files and may not be replaced.
    """
    output_dir = os.fspath(output_dir)
    if not tf.io.gfile.exists(output_dir):
        return
    if not tf.io.gfile.isdir(output_dir):
        raise FileExistsError(f"Export target {output_dir} is a file, not a folder.")
    if not tf.io.gfile.listdir(output_dir):
        return
    if not overwrite:
        raise FileExistsError(f"Export directory {output_dir} is not empty; pass overwrite=True (--overwrite).")
    refusal = _replace_refusal(output_dir)
    if refusal:
        raise FileExistsError(f"Refusing to overwrite {output_dir}: {refusal}.")


def _replace_refusal(output_dir):
    """Why `overwrite` may not delete `output_dir`, or None when it is a replaceable export."""
    training_entries = holds_model_dir(output_dir)
    if training_entries:
        return f"it holds a training model_dir or checkpoints ({', '.join(training_entries)})"
    versions = holds_versions(output_dir)
    if versions:
        return f"it holds SavedModel versions {', '.join(map(str, versions))}; name the version to replace"
    if not is_saved_model(output_dir):
        return "it is not a SavedModel (no saved_model.pb); --overwrite only replaces an earlier export"
    foreign = sorted(
        name.rstrip("/") for name in tf.io.gfile.listdir(output_dir) if name.rstrip("/") not in SAVED_MODEL_ENTRIES
    )
    if foreign:
        return f"it holds files an export does not write ({', '.join(foreign)}); move them away first"
    return None


@contextlib.contextmanager
def staged_export(output_dir, overwrite=False):
    """Yields a temporary sibling folder to write an export into, then moves it to `output_dir`.

    TF Serving and readers only ever see a complete SavedModel: the export is
    written to `.tmp-<name>-<pid>` next to `output_dir` and renamed into place
    when the block succeeds. An existing export (allowed by
    `check_output_dir`, checked again before the move) is renamed aside first
    and deleted only once the new one is in place. On failure the temporary
    folder is deleted and `output_dir` is left as it was; a killed process
    leaves its `.tmp-*` folder, which TF Serving ignores (not a number).

    Args:
        output_dir: The SavedModel folder to create or replace.
        overwrite: Whether an existing SavedModel there may be replaced.

    Yields:
        The temporary folder (created, empty).

    Raises:
        OSError: If the parent folder cannot be written (names the folder).
        FileExistsError: If `output_dir` may not be replaced.
    """
    output_dir = _without_trailing_slash(output_dir)
    check_output_dir(output_dir, overwrite)
    parent, name = os.path.split(output_dir)
    staging = os.path.join(parent, f".tmp-{name}-{os.getpid()}")
    _make_empty_dir(staging)
    try:
        yield staging
        check_output_dir(output_dir, overwrite)  # another process may have written it meanwhile
        _move_into_place(staging, output_dir)
    except BaseException:
        if tf.io.gfile.exists(staging):
            tf.io.gfile.rmtree(staging)
        raise


def _without_trailing_slash(path):
    """`path` as a string without a trailing "/" (not `normpath`, which breaks "gs://" URLs)."""
    return os.fspath(path).rstrip("/") or "/"


def _make_empty_dir(path):
    """Creates the empty folder `path` (and its parents); a clear OSError if that is not allowed."""
    try:
        if tf.io.gfile.exists(path):  # left by an earlier process with the same pid
            tf.io.gfile.rmtree(path)
        tf.io.gfile.makedirs(path)
    except (OSError, tf.errors.OpError) as error:
        raise OSError(f"Cannot write the export next to {path}: {error_line(error)}") from None


def _move_into_place(staging, output_dir):
    """Renames `staging` to `output_dir`, replacing an existing `output_dir` only once the rename worked."""
    if not tf.io.gfile.exists(output_dir):
        tf.io.gfile.rename(staging, output_dir)
        return
    parent, name = os.path.split(output_dir)
    aside = os.path.join(parent, f".old-{name}-{os.getpid()}")
    tf.io.gfile.rename(output_dir, aside)
    try:
        tf.io.gfile.rename(staging, output_dir)
    except BaseException:
        tf.io.gfile.rename(aside, output_dir)
        raise
    tf.io.gfile.rmtree(aside)


def write_saved_model(module, saved_model_dir, export_info):
    """Writes `module`'s serving signatures and the export metadata into an empty folder.

    The graphs are traced without CPU row-band convolutions (`runtime_settings(max_im2col_elements=None)`),
    so an export holds only the model's math, whatever machine exports it.

    Args:
        module: A task's serving module.
        saved_model_dir: The folder to write (e.g. from `staged_export`).
        export_info: JSON-serialisable dict written to `assets.extra`.
    """
    saved_model_dir = os.fspath(saved_model_dir)
    with runtime_settings(max_im2col_elements=None):
        tf.saved_model.save(module, saved_model_dir, signatures=module.signatures())
    info = {"format_version": EXPORT_FORMAT_VERSION, **export_info}
    tf.io.gfile.makedirs(os.path.dirname(export_info_path(saved_model_dir)))
    with tf.io.gfile.GFile(export_info_path(saved_model_dir), "w") as stream:
        json.dump(info, stream, indent=2, sort_keys=True)


def save_serving_module(module, output_dir, export_info, overwrite=False):
    """Writes `module` as the SavedModel `output_dir`, atomically (see `staged_export`).

    Args:
        module: A `PanopticServingModule` or `ClassificationServingModule`.
        output_dir: SavedModel directory (for TF Serving, a numbered version
            folder such as `models/axial_deeplab/1`).
        export_info: JSON-serialisable dict written to `assets.extra`.
        overwrite: Replace an earlier export at `output_dir`.

    Returns:
        `output_dir`.

    Raises:
        FileExistsError: If `output_dir` holds files and may not be replaced.
        OSError: If the parent folder cannot be written.
    """
    with staged_export(output_dir, overwrite) as staging:
        write_saved_model(module, staging, export_info)
    return os.fspath(output_dir)


def resolve_saved_model(path):
    """The SavedModel `path` names: `path` itself, or the highest version of a serving base folder.

    Args:
        path: A SavedModel folder or a folder of numbered versions.

    Returns:
        The SavedModel folder path.

    Raises:
        FileNotFoundError: If `path` is neither.
    """
    path = os.fspath(path)
    if is_saved_model(path):
        return path
    if not tf.io.gfile.isdir(path):
        raise FileNotFoundError(f"SavedModel {path} does not exist.")
    versions = [version for version in holds_versions(path) if is_saved_model(os.path.join(path, str(version)))]
    if not versions:
        raise FileNotFoundError(f"{path} is not a SavedModel (no saved_model.pb) and holds no numbered versions.")
    return os.path.join(path, str(versions[-1]))


def read_export_info(saved_model_dir):
    """The `axial_tf_export.json` metadata of an exported SavedModel.

    Args:
        saved_model_dir: An export directory written by `save_serving_module`.

    Returns:
        The metadata dict.

    Raises:
        FileNotFoundError: If the directory has no axial_tf export metadata.
    """
    path = export_info_path(saved_model_dir)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(
            f"{saved_model_dir} has no {EXPORT_INFO_DIR}/{EXPORT_INFO_FILENAME}; was it written by tools/export.py?"
        )
    with tf.io.gfile.GFile(path) as stream:
        return json.load(stream)


def saved_model_op_types(saved_model_dir):
    """Every op type a SavedModel's graphs use, including inside its function library.

    Calls of library functions by name (a node whose op is a function of the
    library) are not op types and are left out.

    Args:
        saved_model_dir: A SavedModel directory.

    Returns:
        Sorted list of op type names, e.g. ["Add", "Conv2D", ...].
    """
    saved_model = saved_model_pb2.SavedModel()
    with tf.io.gfile.GFile(os.path.join(os.fspath(saved_model_dir), "saved_model.pb"), "rb") as stream:
        saved_model.ParseFromString(stream.read())
    op_types = set()
    for meta_graph in saved_model.meta_graphs:
        library = meta_graph.graph_def.library
        function_names = {function.signature.name for function in library.function}
        op_types.update(node.op for node in meta_graph.graph_def.node)
        for function in library.function:
            op_types.update(node.op for node in function.node_def)
        op_types -= function_names
    return sorted(op_types)
