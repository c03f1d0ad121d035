"""Source fingerprints: what a folder's digest covers and how two fingerprints differ."""

import os

from axial_tf.data import source_fingerprint


def _folder(tmp_path):
    """images/{a.png, sub/b.JPG} plus files the digest must ignore."""
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.png").write_bytes(b"a")
    (folder / "sub" / "b.JPG").write_bytes(b"bb")
    return folder


def test_folder_digest_covers_image_files_only(tmp_path):
    folder = _folder(tmp_path)
    entry = source_fingerprint.image_folder_entry(folder)
    assert entry["files"] == 2
    (folder / "notes.txt").write_text("not an image")
    (folder / ".DS_Store").write_bytes(b"x")
    (folder / ".cache").mkdir()
    (folder / ".cache" / "c.png").write_bytes(b"c")
    assert source_fingerprint.image_folder_entry(folder) == entry
    stat = os.stat(folder / "sub" / "b.JPG")
    os.utime(folder / "sub" / "b.JPG", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    assert source_fingerprint.image_folder_entry(folder)["digest"] != entry["digest"]


def test_folder_digest_does_not_depend_on_where_the_folder_is(tmp_path):
    folder = _folder(tmp_path)
    before = source_fingerprint.image_folder_entry(folder)
    folder.rename(tmp_path / "moved")
    after = source_fingerprint.image_folder_entry(tmp_path / "moved")
    assert after["digest"] == before["digest"] and after["path"] != before["path"]


def test_changes_name_added_removed_and_edited_sources_but_not_vanished_ones(tmp_path):
    json_path = tmp_path / "train.json"
    json_path.write_text("{}")
    folder = _folder(tmp_path)
    stored = source_fingerprint.fingerprint(
        {
            "train annotations": source_fingerprint.annotation_file_entry(json_path),
            "train images": source_fingerprint.image_folder_entry(folder),
            "test images": source_fingerprint.image_folder_entry(folder),
        }
    )
    json_path.write_text('{"annotations": []}')
    (folder / "c.png").write_bytes(b"c")
    gone = tmp_path / "gone"
    current = source_fingerprint.fingerprint(
        {
            "train annotations": source_fingerprint.annotation_file_entry(json_path),
            "train images": source_fingerprint.image_folder_entry(gone),
            "validation images": source_fingerprint.image_folder_entry(folder),
        }
    )
    assert source_fingerprint.describe_changes(stored, current) == [
        f"test images {folder} is no longer a source",
        f"train annotations {json_path} has another content",
        f"validation images {folder} is new",
    ]
    assert source_fingerprint.describe_changes(stored, stored) == []
