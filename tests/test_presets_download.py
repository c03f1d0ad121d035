"""Fetching and caching presets offline: archives in the release layout, served by file:// and a local HTTP server.

The server (127.0.0.1, a thread) answers `Range` requests, counts requests, and can cut the
connection after a number of body bytes, the way a dropped download ends.
"""

import dataclasses
import hashlib
import http.server
import io
import json
import os
import pathlib
import re
import socket
import tarfile
import threading
import zipfile

import numpy as np
import pytest
import tensorflow as tf
from conftest import IN_REPO_FIXTURES

from axial_tf import presets
from axial_tf.presets import ArchiveError, ChecksumError, DownloadError, fetch_archive

DEEPLAB2_CHECKPOINT = IN_REPO_FIXTURES / "deeplab2" / "panoptic" / "axial_deeplab_s_65x65" / "checkpoint"


def tar_gz(files):
    """A .tar.gz archive holding `files` ({member path: bytes})."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def folder_files(folder, prefix):
    """{prefix/name: bytes} of every file in `folder`."""
    return {f"{prefix}/{path.name}": path.read_bytes() for path in sorted(pathlib.Path(folder).iterdir())}


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """(files of a one-variable checkpoint ckpt-7 in a release folder, the variable's value)."""
    folder = tmp_path_factory.mktemp("tiny")
    value = np.arange(6, dtype=np.float32).reshape(2, 3)
    tf.train.Checkpoint(v=tf.Variable(value)).write(str(folder / "ckpt-7"))
    return folder_files(folder, "tiny_checkpoint"), value


@pytest.fixture(scope="module")
def tiny_archive(tiny_checkpoint):
    return tar_gz(tiny_checkpoint[0])


class _Server(http.server.ThreadingHTTPServer):
    def __init__(self):
        super().__init__(("127.0.0.1", 0), _RangeHandler)
        self.files = {}  # URL path -> bytes
        self.requests = []  # (path, Range header) of every request
        self.cut_after = None  # body bytes sent before the next response is cut
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.server.requests.append((self.path, self.headers.get("Range")))
        body = self.server.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        start = 0
        requested = self.headers.get("Range")
        if requested:
            start = int(re.fullmatch(r"bytes=(\d+)-", requested).group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        payload = body[start:]
        if self.server.cut_after is not None:
            payload, self.server.cut_after = payload[: self.server.cut_after], None
            self.close_connection = True
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = _Server()
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def cache_home(tmp_path, monkeypatch):
    home = tmp_path / "axial_tf_home"
    monkeypatch.setenv("AXIAL_TF_HOME", str(home))
    return home


def preset_at(url, name="test_preset", **changes):
    """A catalogue entry (DeepLab2 .tar.gz layout) served from `url`."""
    return dataclasses.replace(presets.lookup("axial_swidernet_1_1_1_os16_cityscapes"), name=name, url=url,
                               **changes)


def closed_port_url(filename="archive.tar.gz"):
    """A URL on 127.0.0.1 where nothing listens."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/{filename}"


def test_http_download_reports_progress_and_writes_atomically(server, tmp_path, capsys):
    data = os.urandom(3 * 2**20 + 5)
    server.files["/a.tar.gz"] = data
    destination = tmp_path / "a.tar.gz"
    seen = []

    digest = fetch_archive(server.url + "/a.tar.gz", destination, progress=lambda done, total: seen.append((done, total)))
    assert destination.read_bytes() == data and digest == hashlib.sha256(data).hexdigest()
    assert seen[-1] == (len(data), len(data)) and len(seen) >= 4
    assert not (tmp_path / "a.tar.gz.partial").exists()

    fetch_archive(server.url + "/a.tar.gz", tmp_path / "b.tar.gz")  # progress=True: a line on stderr
    printed = capsys.readouterr().err
    assert f"Downloading {server.url}/a.tar.gz:" in printed and "3.0 of 3.0 MiB, 100%" in printed


def test_cut_download_resumes_with_a_range_request(server, tmp_path):
    data = os.urandom(2**20 + 17)
    server.files["/a.tar.gz"] = data
    server.cut_after = 300_000

    fetch_archive(server.url + "/a.tar.gz", tmp_path / "a.tar.gz", progress=False)
    assert (tmp_path / "a.tar.gz").read_bytes() == data
    assert server.requests == [("/a.tar.gz", None), ("/a.tar.gz", "bytes=300000-")]


def test_cut_download_is_continued_by_the_next_call(server, tmp_path):
    data = os.urandom(2**20)
    server.files["/a.tar.gz"] = data
    server.cut_after = 100_000
    destination = tmp_path / "a.tar.gz"

    with pytest.raises(DownloadError, match="closed after 100000 of 1048576 bytes.*is kept for the next try"):
        fetch_archive(server.url + "/a.tar.gz", destination, progress=False, retries=0)
    assert not destination.exists() and (tmp_path / "a.tar.gz.partial").stat().st_size == 100_000

    fetch_archive(server.url + "/a.tar.gz", destination, progress=False, retries=0)
    assert destination.read_bytes() == data and server.requests[-1] == ("/a.tar.gz", "bytes=100000-")


def test_checksum_mismatch_keeps_nothing(server, tmp_path, cache_home, tiny_archive):
    server.files["/a.tar.gz"] = tiny_archive
    with pytest.raises(ChecksumError, match=f"has SHA-256 {hashlib.sha256(tiny_archive).hexdigest()}, expected 0+;"):
        fetch_archive(server.url + "/a.tar.gz", tmp_path / "fetched" / "a.tar.gz", sha256="0" * 64, progress=False)
    assert os.listdir(tmp_path / "fetched") == []

    preset = preset_at(server.url + "/a.tar.gz", sha256="1" * 64)
    with pytest.raises(ChecksumError, match=rf"Preset archive {re.escape(presets.archive_path(preset))} is unusable: "
                                            "it has SHA-256 .* expected 1+. It was removed"):
        presets.ensure_checkpoint(preset, progress=False)
    assert sorted(os.listdir(presets.preset_dir(preset))) == [".lock"]


def _archives(tiny_checkpoint, tiny_archive):
    """Damaged archives and archives that do not hold exactly one checkpoint, with the expected cause."""
    files = tiny_checkpoint[0]
    index = next(name for name in files if name.endswith(".index"))
    data = next(name for name in files if ".data-" in name)
    flipped = bytearray(tiny_archive)
    flipped[len(flipped) // 2] ^= 0xFF
    return {
        "truncated": (tiny_archive[: len(tiny_archive) // 2], "not a readable .tar.gz archive"),
        "flipped byte": (bytes(flipped), "not a readable .tar.gz archive"),
        "not gzip": (b"<html>proxy login page</html>", "not a readable .tar.gz archive"),
        "no checkpoint": (tar_gz({"readme.txt": b"x"}), "holds no checkpoint"),
        "no index": (tar_gz({data: files[data]}), r"ckpt-7.index is missing"),
        "missing shard": (tar_gz({index: files[index], "x/ckpt-7.data-00001-of-00002": b"1"}),
                          "data shards of ckpt-7 are incomplete"),
        "two checkpoints": (tar_gz({**files, **{name.replace("ckpt-7", "ckpt-8"): value for name, value in files.items()}}),
                            r"holds 2 checkpoints \(ckpt-7, ckpt-8\)"),
        "same checkpoint twice": (tar_gz({**files, **{"copy/" + name: value for name, value in files.items()}}),
                                  "holds more than one checkpoint"),
    }


@pytest.mark.parametrize("case", ["truncated", "flipped byte", "not gzip", "no checkpoint", "no index",
                                  "missing shard", "two checkpoints", "same checkpoint twice"])
def test_bad_archive_is_named_and_not_cached(case, tmp_path, cache_home, tiny_checkpoint, tiny_archive):
    data, cause = _archives(tiny_checkpoint, tiny_archive)[case]
    source = tmp_path / "served.tar.gz"
    source.write_bytes(data)
    preset = preset_at(source.as_uri())

    with pytest.raises(ArchiveError, match=rf"{re.escape(presets.archive_path(preset))} is unusable: .*{cause}") as raised:
        presets.ensure_checkpoint(preset, progress=False)
    assert "\n" not in str(raised.value)
    assert sorted(os.listdir(presets.preset_dir(preset))) == [".lock"]


def test_cache_hit_needs_no_download_and_damage_is_repaired_from_the_archive(server, cache_home, tiny_checkpoint,
                                                                             tiny_archive):
    server.files["/tiny.tar.gz"] = tiny_archive
    preset = preset_at(server.url + "/tiny.tar.gz")

    prefix = presets.ensure_checkpoint(preset, progress=False)
    assert prefix == os.path.join(presets.preset_dir(preset), "checkpoint", "ckpt-7")
    np.testing.assert_array_equal(tf.train.load_checkpoint(prefix).get_tensor("v/.ATTRIBUTES/VARIABLE_VALUE"),
                                  tiny_checkpoint[1])
    manifest = json.loads((pathlib.Path(presets.preset_dir(preset)) / "manifest.json").read_text())
    assert manifest["archive"]["sha256"] == hashlib.sha256(tiny_archive).hexdigest()

    assert presets.ensure_checkpoint(preset, progress=False) == prefix
    assert len(server.requests) == 1

    data_file = next(pathlib.Path(prefix).parent.glob("ckpt-7.data-*"))
    data_file.write_bytes(b"damaged")  # the extracted copy no longer matches the manifest
    assert presets.ensure_checkpoint(preset, progress=False) == prefix
    assert len(server.requests) == 1 and data_file.read_bytes() == tiny_checkpoint[0][f"tiny_checkpoint/{data_file.name}"]

    # The archive is checked against the SHA-256 recorded at its first use whenever it is read again.
    data_file.write_bytes(b"damaged")
    pathlib.Path(presets.archive_path(preset)).write_bytes(tar_gz({"other/ckpt-7.index": b"i"}))
    with pytest.raises(ChecksumError, match="unusable: it has SHA-256 .*, expected " + manifest["archive"]["sha256"]):
        presets.ensure_checkpoint(preset, progress=False)


def test_concurrent_loads_download_once_into_one_intact_cache(server, cache_home):
    archive = tar_gz(folder_files(DEEPLAB2_CHECKPOINT, "axial_deeplab_s_65x65"))  # DeepLab2's release layout
    server.files["/deeplab2.tar.gz"] = archive
    preset = preset_at(server.url + "/deeplab2.tar.gz")
    start = threading.Barrier(4)
    results = []

    def load():
        start.wait()
        results.append(presets.ensure_checkpoint(preset, progress=False))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4 and len(set(results)) == 1 and len(server.requests) == 1
    assert results[0].endswith(os.path.join("checkpoint", "ckpt-1000"))
    extracted = pathlib.Path(results[0]).parent
    assert sorted(path.name for path in extracted.iterdir()) == ["ckpt-1000.data-00000-of-00001", "ckpt-1000.index"]
    for path in extracted.iterdir():
        assert path.read_bytes() == (DEEPLAB2_CHECKPOINT / path.name).read_bytes()


def test_offline_error_names_the_url_and_the_manual_path(cache_home):
    preset = preset_at(closed_port_url())
    with pytest.raises(DownloadError) as raised:
        presets.ensure_checkpoint(preset, progress=False, timeout=5)
    message = str(raised.value)
    assert "\n" not in message and f"Cannot download {preset.url} (Connection refused)" in message
    assert f"place it at {presets.archive_path(preset)};" in message


def test_a_stalled_server_times_out(tmp_path):
    with socket.socket() as listener:  # accepts connections (backlog) and never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/a.tar.gz"
        with pytest.raises(DownloadError, match=f"Cannot download {re.escape(url)} .*timed out"):
            fetch_archive(url, tmp_path / "a.tar.gz", progress=False, timeout=0.2)


def test_archive_placed_by_hand_is_used_without_network(cache_home, tiny_archive):
    preset = preset_at(closed_port_url())
    manual = pathlib.Path(presets.archive_path(preset))
    manual.parent.mkdir(parents=True)
    manual.write_bytes(tiny_archive)

    prefix = presets.ensure_checkpoint(preset, progress=False)
    assert os.path.exists(prefix + ".index") and manual.exists()


def test_file_urls_and_local_paths_are_sources(tmp_path, cache_home, tiny_archive):
    source = tmp_path / "served.tar.gz"
    source.write_bytes(tiny_archive)
    assert presets.ensure_checkpoint(preset_at(source.as_uri(), name="by_url"), progress=False).endswith("ckpt-7")
    assert presets.ensure_checkpoint(preset_at(str(source), name="by_path"), progress=False).endswith("ckpt-7")
    with pytest.raises(DownloadError, match=f"Cannot download {re.escape(str(tmp_path))}/missing.tar.gz "
                                            r"\(No such file or directory\)"):
        fetch_archive(str(tmp_path / "missing.tar.gz"), tmp_path / "x.tar.gz", progress=False)


def test_pytorch_file_is_checked_and_used_in_place(tmp_path, cache_home):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:  # the layout torch.save writes
        archive.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
    source = tmp_path / "axial26s.pth"
    source.write_bytes(buffer.getvalue())
    preset = dataclasses.replace(presets.lookup("axial_resnet_26_s_imagenet"), name="test_pth", url=source.as_uri())
    assert presets.ensure_checkpoint(preset, progress=False) == presets.archive_path(preset)

    source.write_bytes(b"<html>not found</html>")
    other = dataclasses.replace(preset, name="test_pth_bad")
    with pytest.raises(ArchiveError, match="unusable: it is neither a PyTorch zip file nor a pickle"):
        presets.ensure_checkpoint(other, progress=False)


def test_converted_model_is_stored_once_and_atomically(cache_home):
    name = preset_at(closed_port_url(), name="test_converted")
    assert presets.converted_path(name) is None
    calls = []

    def failing_writer(path):
        pathlib.Path(path).write_bytes(b"half")
        raise RuntimeError("conversion failed")

    os.makedirs(presets.preset_dir(name))
    with pytest.raises(RuntimeError, match="conversion failed"):
        presets.store_converted(name, failing_writer)
    assert presets.converted_path(name) is None
    assert sorted(os.listdir(presets.preset_dir(name))) == [".lock"]

    def writer(path):
        calls.append(path)
        pathlib.Path(path).write_bytes(b"keras zip")

    stored = presets.store_converted(name, writer)
    assert presets.store_converted(name, writer) == stored == presets.converted_path(name)
    assert len(calls) == 1 and calls[0].endswith(".keras") and pathlib.Path(stored).read_bytes() == b"keras zip"
    pathlib.Path(stored).write_bytes(b"changed")
    assert presets.converted_path(name) is None
