"""Restoring and saving training checkpoints with errors that name the checkpoint.

TensorFlow reports a damaged checkpoint from deep inside its reader, with a different error for
each kind of damage (measured on TF 2.21): a truncated `.data-*` file gives an `IndexError` ("Read
less bytes than requested"), flipped bytes a `DataLossError` (checksum), a damaged `.index` an
`OpError` ("not an sstable"), a missing file a `NotFoundError`. Every restore in axial_tf goes
through `try_restore`, which reads the files back first and turns all of them into one
`UnreadableCheckpointError` naming `ckpt-N`, and a model/checkpoint mismatch into a `ValueError`
naming the first missing variables.
A failed save (full disk, read-only folder) becomes a `ModelDirError`; the manager records a
checkpoint only after its files are complete, so the earlier checkpoints stay the resumable state.
"""

import os
import re

import tensorflow as tf
from google.protobuf import text_format

from axial_tf.training.model_dir import ModelDirError, failure_reason, write_text_atomically

UNREADABLE_SUBDIR = "unreadable"
STATE_FILENAME = "checkpoint"  # CheckpointManager's list of checkpoints in a directory
# What TensorFlow's checkpoint reader raises for truncated, corrupt or missing files.
READ_ERRORS = (tf.errors.OpError, IndexError)


class UnreadableCheckpointError(ValueError):
    """A checkpoint's files are truncated, corrupt or missing.

    Attributes:
        prefix: The checkpoint prefix, e.g. ".../checkpoints/ckpt-4".
        reason: TensorFlow's one-line description of the damage.
    """

    def __init__(self, prefix, reason, advice=""):
        self.prefix, self.reason = prefix, reason
        super().__init__(f"Checkpoint {prefix} is unreadable (truncated or corrupt: {reason})"
                         + (f"; {advice}" if advice else "") + ".")


def try_restore(checkpoint, prefix, partial=False, described=""):
    """Restores `checkpoint` from `prefix` and checks that every object of it found its values.

    The files are read back completely first, so a damaged checkpoint fails before anything is
    restored (a restore that fails half-way leaves TensorFlow's restore state behind, which printed
    warnings, or at interpreter exit tracebacks, after the caller's error message).

    Args:
        checkpoint: A `tf.train.Checkpoint`.
        prefix: The checkpoint prefix to read.
        partial: Allow values in the file that `checkpoint` does not use (e.g. the optimizer
            of a training checkpoint read for its weights).
        described: Words about the model for the mismatch error, e.g. " (backbone 'x')".

    Returns:
        None on success, else the error to raise: an `UnreadableCheckpointError`, or a
        `ValueError` when the checkpoint lacks variables of the model or has other shapes.
        It is returned, not raised, so that callers can try another checkpoint and raise
        their own error outside TensorFlow's.
    """
    damage = checkpoint_damage(prefix)
    if damage is not None:
        return UnreadableCheckpointError(prefix, damage)
    # A value whose variable does not exist yet is restored later, and that pending restore keeps
    # TF's restore state alive until exit, where it warns after the caller's error. The save
    # counter is the one variable a Checkpoint creates lazily: create it now.
    _ = checkpoint.save_counter
    status = None
    try:
        status = checkpoint.restore(prefix)
        (status.expect_partial() if partial else status).assert_existing_objects_matched()
    except (AssertionError, ValueError) as error:  # missing variables / shape mismatches
        if status is not None:
            status.expect_partial()  # the error says it all; TF would repeat it at exit
        return ValueError(f"Checkpoint {prefix} does not hold every variable of the model the config "
                          f"describes{described}: {short_restore_error(error)}")
    return None


def checkpoint_damage(prefix):
    """TF's one-line description of what is wrong with a checkpoint's files, or None if every tensor reads back.

    Args:
        prefix: The checkpoint prefix.

    Returns:
        e.g. "Read less bytes than requested" for a truncated `.data-*` file, or None.
    """
    try:
        reader = tf.train.load_checkpoint(prefix)
        for key in reader.get_variable_to_shape_map():
            reader.get_tensor(key)  # checks the tensor's checksum
    except READ_ERRORS as error:
        return failure_reason(error)
    return None


def restore_checkpoint(checkpoint, prefix, partial=False, described=""):
    """`try_restore` that raises its error (see there for the arguments)."""
    error = try_restore(checkpoint, prefix, partial=partial, described=described)
    if error is not None:
        raise error


def short_restore_error(error):
    """TF's restore error without the variable values it prints: the count and a few variable paths."""
    text = str(error)
    paths = re.findall(r"<Variable path=([^,]+),", text)
    if not paths:
        return text.splitlines()[0] if text else type(error).__name__
    return text.split(" Showing")[0] + " First missing: " + ", ".join(paths[:5]) + "."


def save_checkpoint(manager, step):
    """Saves `manager`'s checkpoint as `ckpt-{step}`; a failed write leaves the directory as it was.

    Args:
        manager: The run's `tf.train.CheckpointManager`.
        step: The checkpoint number.

    Raises:
        ModelDirError: The write failed (e.g. disk full); the message names the checkpoint and
            the last complete one, which a rerun resumes from.
    """
    try:
        manager.save(checkpoint_number=step)
        return
    except (tf.errors.OpError, OSError) as error:
        reason = failure_reason(error)
    # TF writes into ckpt-N_temp/ and renames it only when complete; drop the partial folder.
    for partial in tf.io.gfile.glob(os.path.join(manager.directory, f"ckpt-{step}_temp*")):
        tf.io.gfile.rmtree(partial)
    kept = manager.latest_checkpoint
    raise ModelDirError(
        f"Cannot write checkpoint {os.path.join(manager.directory, f'ckpt-{step}')}: {reason}. The model "
        f"directory is unchanged: {'its last checkpoint ' + os.path.basename(kept) if kept else 'it has no checkpoint'}"
        " is kept, and rerunning resumes from there."
    )


def set_aside_newer_than(directory, intact):
    """Moves the checkpoints newer than `intact` into `directory/unreadable/` and makes `intact` the latest.

    The files are kept (not deleted) for inspection; the manager's state file then lists only
    `intact` and the checkpoints before it, so a new `CheckpointManager` resumes from `intact`.

    Args:
        directory: The checkpoint directory.
        intact: The prefix of the checkpoint to resume from, as the state file lists it.

    Returns:
        The basenames of the checkpoints set aside.
    """
    state = tf.train.get_checkpoint_state(directory)  # paths made absolute
    paths = list(state.all_model_checkpoint_paths)
    position = paths.index(intact) + 1
    target = os.path.join(directory, UNREADABLE_SUBDIR)
    tf.io.gfile.makedirs(target)
    for prefix in paths[position:]:
        for path in tf.io.gfile.glob(prefix + ".*"):
            tf.io.gfile.rename(path, os.path.join(target, os.path.basename(path)), overwrite=True)
    # The state file as CheckpointManager writes it (paths relative to the directory), without
    # the checkpoints set aside; TF's function for this is deprecated.
    state.model_checkpoint_path = os.path.basename(intact)
    del state.all_model_checkpoint_paths[:]
    state.all_model_checkpoint_paths.extend(os.path.basename(path) for path in paths[:position])
    del state.all_model_checkpoint_timestamps[position:]
    write_text_atomically(os.path.join(directory, STATE_FILENAME), text_format.MessageToString(state))
    return [os.path.basename(prefix) for prefix in paths[position:]]
