"""The preset cache: one folder per preset under AXIAL_TF_HOME, filled once and checked on each use.

Layout (AXIAL_TF_HOME defaults to ~/.cache/axial_tf):

    AXIAL_TF_HOME/presets/NAME/
        ARCHIVE            the archive as published, named as its URL names it; a copy downloaded
                           by hand is placed here and is then used without network
        ARCHIVE.partial    an unfinished download, continued by the next call
        checkpoint/        the extracted checkpoint, ckpt-N.index and ckpt-N.data-* (tar.gz presets)
        converted.keras    the converted Keras model (`store_converted`)
        manifest.json      size and SHA-256 of each file above
        .lock              held (fcntl.flock) while a process fills or reads the folder

Trust: a file is used only when the manifest records it and the file still has the recorded size
and SHA-256. Every file is written under a temporary name (`*.tmp-*`, `*.partial`) and renamed
when complete, and the manifest (itself written the same way) is updated after the file it
describes, so a process killed at any point leaves either a complete file or one the manifest
does not vouch for. The archive's SHA-256 is the catalogue's when the authors publish one, else
the one recorded when it was first fetched (trust on first use), and is checked whenever the
archive is read again; the extracted checkpoint and the converted model are checked on every use.
Two processes (or threads) working on the same preset take turns on `.lock`, so the second finds
the first one's complete files instead of writing them again.

Example:
    prefix = ensure_checkpoint("axial_swidernet_1_1_1_os16_cityscapes")  # .../checkpoint/ckpt-N
"""

import contextlib
import fcntl
import gzip
import json
import os
import posixpath
import re
import shutil
import tarfile
import tempfile
import zipfile
import zlib

from axial_tf.presets.catalogue import DEEPLAB2_TAR_GZ, PYTORCH_PTH, lookup
from axial_tf.presets.download import (
    CHUNK_BYTES,
    ArchiveError,
    ChecksumError,
    fetch_archive,
    file_sha256,
)

HOME_ENV = "AXIAL_TF_HOME"
DEFAULT_HOME = "~/.cache/axial_tf"
MANIFEST = "manifest.json"
LOCK = ".lock"
CHECKPOINT_DIR = "checkpoint"
CONVERTED = "converted.keras"
_TEMPORARY = ".tmp-"  # every temporary name holds it; a process holding the lock removes leftovers
_CHECKPOINT_FILE = re.compile(r"ckpt-(\d+)\.(index|data-(\d{5})-of-(\d{5}))")
# What reading a damaged .tar.gz raises: gzip's CRC/length check and early EOF, tar header errors.
_ARCHIVE_ERRORS = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile)


def home():
    """The cache root: $AXIAL_TF_HOME, else ~/.cache/axial_tf."""
    return os.path.expanduser(os.environ.get(HOME_ENV) or DEFAULT_HOME)


def preset_dir(preset):
    """The cache folder of a preset (a `Preset` or its name)."""
    return os.path.join(home(), "presets", _resolve(preset).name)


def archive_path(preset):
    """Where the preset's archive is kept, and where a copy downloaded by hand may be placed."""
    preset = _resolve(preset)
    return os.path.join(preset_dir(preset), preset.archive_filename)


def ensure_checkpoint(preset, *, progress=True, timeout=60.0):
    """The preset's checkpoint, fetched, verified and extracted once.

    Args:
        preset: A `Preset` or a catalogue name.
        progress: As in `fetch_archive`: True prints a progress line, False nothing, or a callable.
        timeout: Seconds to wait for the server.

    Returns:
        The checkpoint: the prefix `.../checkpoint/ckpt-N` of a tar.gz preset, the `.pth` file
        of a PyTorch preset.

    Raises:
        DownloadError: The archive is neither cached nor reachable; the message names the URL and
            `archive_path(preset)`, where a copy downloaded by hand is used without network.
        ArchiveError: The archive is corrupt, truncated, has another SHA-256, or does not hold
            exactly one checkpoint; it is removed and nothing is cached.

    Example:
        prefix = ensure_checkpoint("max_deeplab_s_backbone_imagenet1k", timeout=30)
    """
    preset = _resolve(preset)
    folder = preset_dir(preset)
    os.makedirs(folder, exist_ok=True)
    with _locked(folder):
        manifest = _read_manifest(folder)
        cached = manifest.get("checkpoint")
        if cached and all(_matches(folder, path, record) for path, record in cached["files"].items()):
            return os.path.join(folder, cached["path"])
        archive = archive_path(preset)
        recorded = manifest.get("archive", {}).get("sha256")
        if os.path.exists(archive):
            digest = file_sha256(archive)
        else:
            digest = fetch_archive(preset.url, archive, progress=progress, timeout=timeout)
        try:
            expected = preset.sha256 or recorded
            if expected and digest != expected.lower():
                raise ChecksumError(f"it has SHA-256 {digest}, expected {expected.lower()}")
            checkpoint = _unpack(preset, archive, folder)
        except ArchiveError as error:
            os.remove(archive)
            raise type(error)(f"Preset archive {archive} is unusable: {error}. It was removed; the next "
                              "call fetches it again.") from None
        kept = {"converted": manifest["converted"]} if "converted" in manifest and digest == recorded else {}
        _write_manifest(folder, {
            "preset": preset.name,
            "url": preset.url,
            "archive": {"path": preset.archive_filename, "size": os.path.getsize(archive), "sha256": digest},
            "checkpoint": checkpoint,
            **kept,
        })
        return os.path.join(folder, checkpoint["path"])


def converted_path(preset):
    """The cached converted model of a preset if the manifest vouches for it, else None."""
    folder = preset_dir(preset)
    if not os.path.isdir(folder):
        return None
    with _locked(folder):
        record = _read_manifest(folder).get("converted")
        return os.path.join(folder, CONVERTED) if record and _matches(folder, CONVERTED, record) else None


def store_converted(preset, writer):
    """Stores the preset's converted model once, atomically.

    Args:
        preset: A `Preset` or a catalogue name.
        writer: Called as `writer(path)`; writes the model there (e.g. `model.save`). The path is a
            temporary `.keras` name in the preset's folder, renamed to `converted.keras` when the
            writer returns.

    Returns:
        The path of `converted.keras`. When a verified one already exists (another process
        converted while this one waited for the lock), it is returned and `writer` is not called.

    Example:
        path = store_converted(name, lambda path: model.save(path))
    """
    folder = preset_dir(preset)
    os.makedirs(folder, exist_ok=True)
    final = os.path.join(folder, CONVERTED)
    with _locked(folder):
        manifest = _read_manifest(folder)
        if "converted" in manifest and _matches(folder, CONVERTED, manifest["converted"]):
            return final
        handle, temporary = tempfile.mkstemp(prefix=CONVERTED + _TEMPORARY, suffix=".keras", dir=folder)
        os.close(handle)
        try:
            writer(temporary)
            if not os.path.getsize(temporary):
                raise ValueError(f"The converter wrote nothing to {temporary}; {final} was not stored.")
            os.replace(temporary, final)
        finally:
            if os.path.exists(temporary):
                os.remove(temporary)
        manifest["converted"] = _record(final)
        _write_manifest(folder, manifest)
        return final


def _resolve(preset):
    return lookup(preset) if isinstance(preset, str) else preset


@contextlib.contextmanager
def _locked(folder):
    """Holds the folder's lock file and, once held, removes what interrupted writers left."""
    with open(os.path.join(folder, LOCK), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            for name in os.listdir(folder):
                if _TEMPORARY in name:
                    path = os.path.join(folder, name)
                    shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _record(path):
    return {"size": os.path.getsize(path), "sha256": file_sha256(path)}


def _matches(folder, relative_path, record):
    """Whether the file still has the size and SHA-256 the manifest recorded."""
    path = os.path.join(folder, relative_path)
    return (os.path.isfile(path) and os.path.getsize(path) == record["size"]
            and file_sha256(path) == record["sha256"])


def _read_manifest(folder):
    """The folder's manifest, or {} when there is none or it is unreadable (then nothing is trusted)."""
    try:
        with open(os.path.join(folder, MANIFEST)) as stream:
            manifest = json.load(stream)
    except (OSError, ValueError):
        return {}
    return manifest if isinstance(manifest, dict) else {}


def _write_manifest(folder, manifest):
    handle, temporary = tempfile.mkstemp(prefix=MANIFEST + _TEMPORARY, dir=folder)
    try:
        with os.fdopen(handle, "w") as stream:
            json.dump(manifest, stream, indent=2, sort_keys=True)
        os.replace(temporary, os.path.join(folder, MANIFEST))
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def _unpack(preset, archive, folder):
    """Checks the archive and returns the manifest's "checkpoint" record (extracting tar.gz files).

    Raises:
        ArchiveError: With the cause (the caller adds the file name).
    """
    if preset.archive == PYTORCH_PTH:
        _check_pth(archive)
        return {"path": preset.archive_filename, "files": {preset.archive_filename: _record(archive)}}
    if preset.archive != DEEPLAB2_TAR_GZ:
        raise ValueError(f"Preset {preset.name} has unknown archive layout {preset.archive!r}.")
    staging = tempfile.mkdtemp(prefix=CHECKPOINT_DIR + _TEMPORARY, dir=folder)
    try:
        members = _extract_checkpoint_files(archive, staging)
        prefix = _single_checkpoint(members)
        target = os.path.join(folder, CHECKPOINT_DIR)
        if os.path.exists(target):
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        if os.path.exists(staging):
            shutil.rmtree(staging)
    files = {posixpath.join(CHECKPOINT_DIR, name): _record(os.path.join(target, name))
             for name in sorted(members.values())}
    return {"path": posixpath.join(CHECKPOINT_DIR, prefix), "files": files}


def _extract_checkpoint_files(archive, staging):
    """Writes the archive's ckpt-N.* files into `staging`; {member path: file name}.

    Only file names are kept from the archive (never its paths), so no member can write outside
    `staging`. The whole gzip stream is read, so its CRC and length check catch truncation and
    corruption anywhere in the file.
    """
    members = {}
    try:
        with gzip.open(archive) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                name = posixpath.basename(member.name)
                if not _CHECKPOINT_FILE.fullmatch(name):
                    continue
                if not member.isfile():
                    raise ArchiveError(f"{member.name} is not a regular file")
                if name in members.values():
                    twice = [path for path, known in members.items() if known == name] + [member.name]
                    raise ArchiveError(f"it holds more than one checkpoint ({', '.join(twice)})")
                with tar.extractfile(member) as source, open(os.path.join(staging, name), "wb") as target:
                    shutil.copyfileobj(source, target, CHUNK_BYTES)
                members[member.name] = name
            # tar stops at its end marker (or, silently, at a damaged header): read the gzip
            # stream to its end so that its CRC and length are checked.
            while stream.read(CHUNK_BYTES):
                pass
    except _ARCHIVE_ERRORS as error:
        raise ArchiveError(f"it is not a readable .tar.gz archive ({str(error) or type(error).__name__})") from None
    return members


def _single_checkpoint(members):
    """The prefix "ckpt-N" of the one complete checkpoint among `members` ({path: file name})."""
    steps = {}
    for path, name in members.items():
        steps.setdefault(_CHECKPOINT_FILE.fullmatch(name).group(1), []).append(path)
    if not steps:
        raise ArchiveError("it holds no checkpoint (no ckpt-N.index and ckpt-N.data-* files)")
    if len(steps) > 1:
        raise ArchiveError(f"it holds {len(steps)} checkpoints ({', '.join(f'ckpt-{s}' for s in sorted(steps))}); "
                           "a preset archive holds one")
    (step, paths), = steps.items()
    names = [members[path] for path in paths]
    if f"ckpt-{step}.index" not in names:
        raise ArchiveError(f"ckpt-{step}.index is missing")
    shards = [_CHECKPOINT_FILE.fullmatch(name) for name in names if ".data-" in name]
    counts = {int(match.group(4)) for match in shards}
    present = sorted(int(match.group(3)) for match in shards)
    if len(counts) != 1 or present != list(range(counts.pop())):
        raise ArchiveError(f"the data shards of ckpt-{step} are incomplete or inconsistent "
                           f"({', '.join(sorted(n for n in names if '.data-' in n)) or 'none'})")
    return f"ckpt-{step}"


def _check_pth(path):
    """A PyTorch file is a zip (torch.save since PyTorch 1.6, checked member by member) or a pickle."""
    with open(path, "rb") as stream:
        head = stream.read(4)
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as archive:
                damaged = archive.testzip()
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as error:
            raise ArchiveError(f"it is not a readable PyTorch zip file ({error})") from None
        if damaged is not None:
            raise ArchiveError(f"its member {damaged} is corrupt (CRC mismatch)")
    elif len(head) < 2 or head[0] != 0x80 or not 2 <= head[1] <= 5:  # pickle protocols 2 to 5
        raise ArchiveError("it is neither a PyTorch zip file nor a pickle")
