"""Fetches an archive into a file: resumable over HTTP, atomic, with progress and a timeout.

`fetch_archive` reads http(s):// URLs, file:// URLs and local paths. The bytes go to
`DESTINATION.partial` and only a complete file (whose SHA-256 matches, when one is expected) is
renamed to DESTINATION, so an interrupted fetch never leaves a file that a later call would trust.
An HTTP download that is cut continues where it stopped with a `Range` request: within the same
call (up to `retries` times, each after bytes arrived) and in a later call that finds the
`.partial` file. Proxies come from the usual `https_proxy`/`http_proxy` variables (urllib).

Every failure is one line: `DownloadError` names the URL, the cause and the path where a
hand-downloaded copy may be placed; `ChecksumError` names the source and both hashes.
"""

import hashlib
import http.client
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request

CHUNK_BYTES = 1 << 20
PARTIAL_SUFFIX = ".partial"
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
# What a cut or stalled connection raises while the body is read (socket.timeout is an OSError).
_CONNECTION_ERRORS = (OSError, http.client.HTTPException)


class DownloadError(OSError):
    """A source cannot be read: offline, unreachable, refused, or missing (an `OSError`, as the network's)."""


class ArchiveError(ValueError):
    """A fetched or placed archive is not what the preset needs (corrupt, truncated, wrong content)."""


class ChecksumError(ArchiveError):
    """A file's SHA-256 differs from the expected one."""


def file_sha256(path):
    """The hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_archive(source, destination, *, sha256=None, progress=True, timeout=60.0, retries=3):
    """Fetches `source` into the file `destination`, atomically.

    Args:
        source: A `Preset` (its `url` and `sha256` are used), an http(s):// or file:// URL, or a
            local path.
        destination: The file to write; its folder is created.
        sha256: The expected hex SHA-256 (default: the preset's, if any); on a mismatch the
            fetched bytes are discarded.
        progress: True prints a progress line to stderr, False prints nothing, and a callable
            is called as `progress(bytes_done, bytes_total_or_None)`.
        timeout: Seconds to wait for a connection or for the next bytes.
        retries: How many times a cut HTTP download is resumed within this call.

    Returns:
        The hex SHA-256 of the written file.

    Raises:
        DownloadError: The source cannot be read; the message names the URL and `destination`
            as the place for a copy downloaded by hand.
        ChecksumError: The bytes do not have the expected SHA-256 (nothing is kept).

    Example:
        fetch_archive("https://example.org/ckpt.tar.gz", "/tmp/ckpt.tar.gz", timeout=30)
    """
    url = getattr(source, "url", None) or os.fspath(source)
    expected = sha256 or getattr(source, "sha256", None)
    destination = os.fspath(destination)
    os.makedirs(os.path.dirname(os.path.abspath(destination)), exist_ok=True)
    partial = destination + PARTIAL_SUFFIX
    reporter = _Progress(progress, url)
    try:
        if urllib.parse.urlsplit(url).scheme in ("http", "https"):
            _download(url, partial, destination, timeout, retries, reporter)
        else:
            _copy(url, partial, destination, reporter)
    finally:
        reporter.close()
    digest = file_sha256(partial)
    if expected and digest != expected.lower():
        os.remove(partial)
        raise ChecksumError(f"{url} has SHA-256 {digest}, expected {expected.lower()}; the download "
                            "was discarded.")
    os.replace(partial, destination)
    return digest


def unreachable_message(url, reason, manual_path):
    """The one-line error for a source that cannot be read, with where to place a copy by hand."""
    return (f"Cannot download {url} ({reason}). Without network access, download it elsewhere and "
            f"place it at {manual_path}; a file there is used without downloading.")


def _download(url, partial, destination, timeout, retries, reporter):
    """Downloads into `partial`, continuing what it holds; resumes a cut transfer `retries` times."""
    resumes = 0
    while True:
        offset = os.path.getsize(partial) if os.path.exists(partial) else 0
        headers = {"User-Agent": "axial_tf", "Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        received = 0
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as response:
                start, total = _resume_point(response, offset)
                with open(partial, "ab" if start else "wb") as stream:
                    done = start
                    while chunk := response.read(CHUNK_BYTES):
                        stream.write(chunk)
                        received += len(chunk)
                        done += len(chunk)
                        reporter.update(done, total)
            if total is None or done == total:
                return
            reason = f"the connection closed after {done} of {total} bytes"
        except urllib.error.HTTPError as error:
            if error.code == 416 and offset:  # the .partial is not a prefix of this file: start over
                os.remove(partial)
                continue
            raise DownloadError(unreachable_message(url, f"HTTP {error.code} {error.reason}", destination)) from None
        except urllib.error.URLError as error:
            raise DownloadError(unreachable_message(url, _reason(error.reason), destination)) from None
        except _CONNECTION_ERRORS as error:
            if not received:
                raise DownloadError(unreachable_message(url, _reason(error), destination)) from None
            reason = _reason(error)
        resumes += 1
        if resumes > retries:
            raise DownloadError(unreachable_message(
                url, f"{reason}; gave up after {retries} resumes, {partial} is kept for the next try",
                destination))


def _resume_point(response, offset):
    """(first byte the response body holds, total size or None), from its status and headers."""
    length = response.headers.get("Content-Length")
    if response.status == 206:
        match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
        if match and int(match.group(1)) == offset:
            return offset, None if match.group(3) == "*" else int(match.group(3))
        raise DownloadError(f"Cannot resume {response.url}: the server answered the range request with "
                            f"Content-Range {response.headers.get('Content-Range')!r}.")
    return 0, int(length) if length is not None else None  # 200: the whole file from its start


def _copy(url, partial, destination, reporter):
    """Copies a file:// URL or a local path into `partial`."""
    path = _local_path(url)
    try:
        total = os.path.getsize(path)
        with open(path, "rb") as source, open(partial, "wb") as stream:
            done = 0
            while chunk := source.read(CHUNK_BYTES):
                stream.write(chunk)
                done += len(chunk)
                reporter.update(done, total)
    except OSError as error:
        raise DownloadError(unreachable_message(url, _reason(error), destination)) from None


def _local_path(url):
    """The local file a file:// URL or a path names."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise DownloadError(f"Cannot read {url}: file:// URLs must name a local file (no host).")
        return urllib.request.url2pathname(parts.path)
    if "://" in url:
        raise DownloadError(f"Cannot read {url}: only http://, https://, file:// and local paths are supported.")
    return os.path.expanduser(url)


def _reason(error):
    """A short cause: the OS's words for an OSError, else the exception's text or type."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__


class _Progress:
    """Reports download progress: a line on stderr redrawn at each new percent, or a callback."""

    def __init__(self, progress, url):
        self.callback = progress if callable(progress) else None
        self.stream = sys.stderr if progress is True else None
        self.url = url
        self.shown = None

    def update(self, done, total):
        if self.callback is not None:
            self.callback(done, total)
        if self.stream is None:
            return
        # A new line only at each percent (or each MiB when the size is unknown).
        step = (100 * done // total) if total else done >> 20
        if step == self.shown:
            return
        self.shown = step
        size = f"{done / 2**20:.1f} of {total / 2**20:.1f} MiB, {step}%" if total else f"{done / 2**20:.1f} MiB"
        self.stream.write(f"\rDownloading {self.url}: {size}")
        self.stream.flush()

    def close(self):
        if self.stream is not None and self.shown is not None:
            self.stream.write("\n")
            self.stream.flush()
