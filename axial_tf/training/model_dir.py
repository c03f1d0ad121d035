"""What a training run owns in its model directory: the single-writer lock and safe writes.

Two trainings writing one model directory would resume each other's checkpoints and overwrite
each other's numbered checkpoints, and both would report success. A run that trains therefore
holds `ModelDirLock` while it writes there; a second writer is refused with one line naming the
holder. Evaluation only reads checkpoints and takes no lock.

Writes that fail raise `ModelDirError` (see `axial_tf.utils.files`).
"""

import datetime
import fcntl
import json
import os
import shlex
import socket
import sys


from axial_tf.utils.files import ModelDirError, failure_reason, is_local_path

LOCK_FILENAME = ".lock"


class ModelDirLock:
    """An exclusive lock on a model directory, held by the one run that writes there.

    The lock is `fcntl.flock` on `model_dir/.lock`: the kernel releases it when the holder's
    process ends in any way, SIGKILL included, so a killed run never leaves a stale lock. The file
    records the holder (pid, host, start time, command line) for the refusal message; it stays in
    place after release (removing it would let two runs lock two different files of one name).

    Non-local filesystems (`gs://` and other `scheme://` paths) have no advisory locks, so no lock
    is taken there: `acquire` logs that the directory is unprotected and the caller must make sure
    only one run writes it. A local or NFS path is locked (Linux emulates flock with NFS locks).

    Args:
        model_dir: The directory to lock (created if missing).
        log: Print function for the note about unlocked non-local directories.

    Example:
        >>> with ModelDirLock("runs/demo"):
        ...     train()  # a second run on runs/demo now fails with ModelDirError
    """

    def __init__(self, model_dir, log=print):
        self.model_dir = os.fspath(model_dir)
        self.path = os.path.join(self.model_dir, LOCK_FILENAME)
        self.log = log or (lambda *args, **kwargs: None)
        self._descriptor = None

    def acquire(self):
        """Takes the lock.

        Raises:
            ModelDirError: Another process holds it (the message names the holder), or the
                directory cannot be created or written.
        """
        if not is_local_path(self.model_dir):
            self.log(f"note: {self.model_dir} is not on a local filesystem, which has no locks: "
                     "make sure no other run writes there.")
            return
        descriptor = self._open_lock_file()
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe_holder(os.pread(descriptor, 4096, 0))
            os.close(descriptor)
            raise ModelDirError(
                f"{self.model_dir} is in use by another training run ({holder}); wait for it to end or use "
                "another model_dir (evaluating it needs no lock)."
            ) from None
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, json.dumps(_holder_record()).encode(), 0)
        self._descriptor = descriptor

    def release(self):
        """Clears the holder record and releases the lock (nothing to do if none was taken)."""
        if self._descriptor is None:
            return
        os.ftruncate(self._descriptor, 0)
        fcntl.flock(self._descriptor, fcntl.LOCK_UN)
        os.close(self._descriptor)
        self._descriptor = None

    def _open_lock_file(self):
        """Opens (creating it if needed) the lock file without truncating another holder's record."""
        try:
            os.makedirs(self.model_dir, exist_ok=True)
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise ModelDirError(
                f"Cannot write to model_dir {self.model_dir}: creating {self.path} failed: "
                f"{failure_reason(error)}."
            ) from None

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc_info):
        self.release()


def _holder_record():
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": shlex.join(sys.argv),
    }


def _describe_holder(raw):
    """One line about the lock holder from its record (which may not be written yet)."""
    try:
        record = json.loads(raw.decode())
        return f"pid {record['pid']} on {record['host']}, started {record['started']}: {record['command']}"
    except (ValueError, KeyError, TypeError):
        return "a process that has not recorded itself yet"
