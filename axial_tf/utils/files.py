"""Writes that fail with one line: the path and the reason, never a deep traceback.

A write that fails (a read-only directory, a full disk) raises `ModelDirError` naming the path and
the reason, instead of TensorFlow's or the OS's traceback; `write_text_atomically` leaves the old
file whole when it fails.
"""

import contextlib
import os
import re

from axial_tf.utils.errors import error_line
from axial_tf.utils.optional_imports import require_tensorflow

tf = require_tensorflow("axial_tf.utils.files (model-directory files through tf.io.gfile)")


class ModelDirError(RuntimeError):
    """A model (or output) directory cannot be written: another run holds it, or a write failed."""


def is_local_path(path):
    """Whether `path` is on a filesystem of this machine (no `scheme://` prefix such as gs://)."""
    return "://" not in os.fspath(path)


def failure_reason(error):
    """The first line of an OS or TensorFlow error, without TF's op-name decorations.

    Args:
        error: An `OSError`, a `tf.errors.OpError` or any exception.

    Returns:
        e.g. "File too large" or "Permission denied".
    """
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    first_line = error_line(error)
    # TensorFlow's file errors read "PATH; REASON"; the callers name the path themselves.
    file_error = re.fullmatch(r"\S+; (.+)", first_line)
    return file_error.group(1) if file_error else first_line


@contextlib.contextmanager
def writing(path, what):
    """Turns an OS or TensorFlow error of the writes in its block into a one-line `ModelDirError`.

    Args:
        path: The file or folder being written, named in the error.
        what: What it is, e.g. "config" or "metrics".

    Raises:
        ModelDirError: "cannot write {what} {path}: {reason}".
    """
    try:
        yield
    except (OSError, tf.errors.OpError) as error:
        raise ModelDirError(f"Cannot write {what} {path}: {failure_reason(error)}.") from None


def write_text_atomically(path, text):
    """Writes `path` through a temporary sibling and a rename, so a failed write leaves the old file.

    Args:
        path: Destination (any tf.io.gfile path).
        text: The whole new content, `str` or `bytes` (e.g. an encoded PNG).
    """
    temporary = path + ".tmp"
    try:
        with tf.io.gfile.GFile(temporary, "w") as stream:
            stream.write(text)
        tf.io.gfile.rename(temporary, path, overwrite=True)
    finally:
        if tf.io.gfile.exists(temporary):
            tf.io.gfile.remove(temporary)
