"""Fingerprints of a dataset's source files, to notice sources edited after preparing.

A builder that reads a source folder stores, in its prepared dataset's metadata
(`records.SOURCE_FINGERPRINT_KEY`), a fingerprint of its sources taken when the
preparation started. A fingerprint has one entry per source (say "train
annotations" or "train images"), each with the path it was read from and a
digest:

- an annotation file: the sha256 of its content (these files are small, and a
  renamed class or a dropped annotation only shows in their content);
- a folder of images: the sha256 of its sorted (relative path, size, mtime_ns)
  list, from `stat` alone, so the 118k images of COCO cost a directory walk and
  no reads;
- a list of values (such as class names read from folder names): the sha256 of
  its JSON.

`prepare` compares the stored fingerprint with the sources as they are now: a
source whose path is gone is not compared (the prepared records are then all
there is), any other difference is a change. Contents rewritten with the same
size and modification time go unnoticed; that is the price of not reading the
images.
"""

import datetime
import hashlib
import json
import os
import pathlib

import PIL.Image


class SourceChangedError(ValueError):
    """A prepared dataset's sources changed after it was prepared."""


class SourceTrackingBuilder:
    """Mixin of the builders that store a fingerprint of their source files.

    Such a builder stores `fingerprint_sources(manual_dir)` in its metadata
    under `records.SOURCE_FINGERPRINT_KEY` when it prepares the dataset, and
    `builders.prepare` compares it with the sources when they are found.

    Attributes:
        rebuild_on_change: What `prepare` does when the sources changed since
            the dataset was prepared: rebuild it (True), or stop with a
            `SourceChangedError` naming what changed (False, the default). Set
            through `get_builder(..., rebuild_on_change=True)`; it is no
            config field, so it changes neither the config's name nor the
            folder of the records.
    """

    rebuild_on_change = False


def annotation_file_entry(path):
    """The fingerprint entry of an annotation file: the sha256 of its content.

    Args:
        path: The file.

    Returns:
        A dict with `path` and `digest` (None when the file does not exist).
    """
    path = pathlib.Path(path)
    digest = None
    if path.is_file():
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return {"path": str(path), "digest": digest}


def image_folder_entry(folder, relative_paths=None):
    """The fingerprint entry of a folder of images, from `stat` only.

    Args:
        folder: The folder.
        relative_paths: The files of the folder that the builder reads
            (relative paths); None means every image file under the folder
            (recursively, hidden files and folders left out).

    Returns:
        A dict with `path`, `digest` (None when the folder does not exist) and
        `files` (how many files the digest covers).
    """
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        return {"path": str(folder), "digest": None, "files": 0}
    if relative_paths is None:
        relative_paths = _image_files_under(folder)
    digest = hashlib.sha256()
    names = sorted(pathlib.PurePath(name).as_posix() for name in relative_paths)
    for name in names:
        stat = (folder / name).stat()
        digest.update(f"{name}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return {"path": str(folder), "digest": digest.hexdigest(), "files": len(names)}


def values_entry(description, values):
    """The fingerprint entry of a list of JSON values (e.g. class names).

    Args:
        description: Where the values come from, for messages (e.g. a folder).
        values: A JSON-serialisable list.

    Returns:
        A dict with `path` (the description) and `digest`.
    """
    encoded = json.dumps(list(values), sort_keys=True).encode()
    return {"path": str(description), "digest": hashlib.sha256(encoded).hexdigest()}


def _image_files_under(folder):
    """Relative paths of the files PIL can read under `folder`, recursively."""
    suffixes = set(PIL.Image.registered_extensions())
    found = []
    for directory, subdirectories, file_names in os.walk(folder):
        subdirectories[:] = [name for name in subdirectories if not name.startswith(".")]
        relative_directory = pathlib.Path(directory).relative_to(folder)
        found.extend(
            relative_directory / name
            for name in file_names
            if not name.startswith(".") and pathlib.Path(name).suffix.lower() in suffixes
        )
    return found


def fingerprint(entries):
    """A fingerprint of sources taken now.

    Args:
        entries: Dict source description (e.g. "train images") -> entry from
            `annotation_file_entry`, `image_folder_entry` or `values_entry`.

    Returns:
        A JSON-serialisable dict with `taken_at` (UTC, ISO 8601) and `sources`.
    """
    taken_at = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return {"taken_at": taken_at, "sources": dict(entries)}


def describe_changes(stored, current):
    """The differences between a stored fingerprint and the sources now.

    Args:
        stored: The fingerprint stored when the dataset was prepared.
        current: A fingerprint of the sources now.

    Returns:
        A list of one-phrase descriptions, empty when nothing that still exists
        changed.
    """
    old_sources, new_sources = stored["sources"], current["sources"]
    changes = []
    for name in sorted(set(old_sources) | set(new_sources)):
        old, new = old_sources.get(name), new_sources.get(name)
        if old is None:
            changes.append(f"{name} {new['path']} is new")
        elif new is None:
            changes.append(f"{name} {old['path']} is no longer a source")
        elif new["digest"] is not None and new["digest"] != old["digest"]:
            changes.append(f"{name} {new['path']} {_what_changed(old, new)}")
    return changes


def _what_changed(old, new):
    """How one source entry changed, for the message."""
    if "files" in new and new["files"] != old.get("files"):
        return f"has {new['files']} files instead of {old.get('files')}"
    if "files" in new:
        return "has files with another size or modification time"
    return "has another content"
