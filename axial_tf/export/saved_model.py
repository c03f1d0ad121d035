"""Writing and inspecting the exported SavedModel.

Besides the SavedModel itself, an export holds
`assets.extra/axial_tf_export.json` (the label space, the baked-in pre- and
post-processing and the signature contract) so that clients such as
`tools/predict.py` can colour and decode predictions without the experiment
config. TF Serving ignores the file.
"""

import json
import os

import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

EXPORT_INFO_FILENAME = "axial_tf_export.json"
EXPORT_INFO_DIR = "assets.extra"
EXPORT_FORMAT_VERSION = 1


def export_info_path(saved_model_dir):
    """Where the export metadata of a SavedModel directory lives."""
    return os.path.join(os.fspath(saved_model_dir), EXPORT_INFO_DIR, EXPORT_INFO_FILENAME)


def check_output_dir(output_dir, overwrite=False):
    """Fails early if `output_dir` holds files and may not be replaced.

    Raises:
        FileExistsError: If `output_dir` is not empty and `overwrite` is False.
    """
    output_dir = os.fspath(output_dir)
    if not overwrite and tf.io.gfile.exists(output_dir) and tf.io.gfile.listdir(output_dir):
        raise FileExistsError(f"Export directory {output_dir} is not empty; pass overwrite=True (--overwrite).")


def save_serving_module(module, output_dir, export_info, overwrite=False):
    """Writes `module`'s serving signatures and the export metadata.

    Args:
        module: A `PanopticServingModule` or `ClassificationServingModule`.
        output_dir: SavedModel directory (for TF Serving, a numbered version
            folder such as `models/axial_deeplab/1`).
        export_info: JSON-serialisable dict written to `assets.extra`.
        overwrite: Replace an existing non-empty `output_dir`.

    Returns:
        `output_dir`.

    Raises:
        FileExistsError: If `output_dir` is not empty and `overwrite` is False.
    """
    output_dir = os.fspath(output_dir)
    check_output_dir(output_dir, overwrite)
    if tf.io.gfile.exists(output_dir):
        tf.io.gfile.rmtree(output_dir)
    tf.saved_model.save(module, output_dir, signatures=module.signatures())
    info = {"format_version": EXPORT_FORMAT_VERSION, **export_info}
    tf.io.gfile.makedirs(os.path.dirname(export_info_path(output_dir)))
    with tf.io.gfile.GFile(export_info_path(output_dir), "w") as stream:
        json.dump(info, stream, indent=2, sort_keys=True)
    return output_dir


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
