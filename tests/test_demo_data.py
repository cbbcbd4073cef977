"""Demo data: IDX parsing, checksum-verified downloads from a local server, digits split.

IDX bytes are built here with `struct` from the format's definition, and digests with
`hashlib`, so the expected values do not come from the code under test.
"""

import fcntl
import gzip
import hashlib
import http.server
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from jaxconv.demo import data as dd

_FORMATS = {0x08: "B", 0x09: "b", 0x0B: "h", 0x0C: "i", 0x0D: "f", 0x0E: "d"}


def idx_bytes(shape: tuple[int, ...], values, type_code: int = 0x08) -> bytes:
    """An IDX file: zero, zero, type code, rank, big-endian uint32 dims, big-endian values."""
    header = struct.pack(">BBBB", 0, 0, type_code, len(shape))
    header += struct.pack(f">{len(shape)}I", *shape)
    values = [v.item() if hasattr(v, "item") else v for v in np.ravel(values)]
    return header + struct.pack(f">{len(values)}{_FORMATS[type_code]}", *values)


def images_idx(n: int, size: int = 28) -> bytes:
    return idx_bytes((n, size, size), (np.arange(n * size * size) * 7) % 256)


def labels_idx(n: int) -> bytes:
    return idx_bytes((n,), np.arange(n) % 10)


def sha256(content: bytes) -> dd.Checksum:
    return dd.Checksum("sha256", hashlib.sha256(content).hexdigest())


# --- IDX parsing. ----------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize(
    "type_code, values, dtype",
    [
        (0x08, [0, 1, 127, 128, 254, 255], np.uint8),
        (0x09, [-128, -1, 0, 1, 2, 127], np.int8),
        (0x0B, [-32768, -2, 0, 1, 300, 32767], np.int16),
        (0x0C, [-(2**31), -70000, 0, 1, 70000, 2**31 - 1], np.int32),
        (0x0D, [-1.5, 0.0, 0.25, 1.0, 3.0, 1e30], np.float32),
        (0x0E, [-1.5, 0.0, 0.1, 1.0, 3.0, 1e300], np.float64),
    ],
)
def test_read_idx_round_trip(tmp_path, type_code, values, dtype, compress):
    raw = idx_bytes((2, 3), values, type_code)
    # Gzip is detected by its magic bytes, so the names here deliberately lie.
    path = tmp_path / ("plain" if compress else "looks-compressed.gz")
    path.write_bytes(gzip.compress(raw) if compress else raw)
    parsed = dd.read_idx(path)
    assert parsed.dtype == np.dtype(dtype)  # native byte order
    assert parsed.flags.writeable
    np.testing.assert_array_equal(parsed, np.array(values, dtype).reshape(2, 3))


@pytest.mark.parametrize("compress", [False, True])
def test_load_idx_pair_round_trip(tmp_path, compress):
    pixels = (np.arange(3 * 28 * 28) * 7) % 256
    wrap = gzip.compress if compress else bytes
    (tmp_path / "images").write_bytes(wrap(idx_bytes((3, 28, 28), pixels)))
    (tmp_path / "labels").write_bytes(wrap(idx_bytes((3,), [7, 0, 9])))
    images, labels = dd.load_idx_pair(tmp_path / "images", tmp_path / "labels")
    assert images.dtype == np.uint8 and images.shape == (3, 28, 28)
    assert images[1, 0, 0] == (784 * 7) % 256 and images[2, 27, 27] == (2351 * 7) % 256
    assert labels.dtype == np.int32
    np.testing.assert_array_equal(labels, [7, 0, 9])


_FIVE = images_idx(5)  # 5×28×28 = 3920 payload bytes after a 16-byte header


@pytest.mark.parametrize(
    "content, message",
    [
        pytest.param(
            b"\x01\x00\x08\x01" + struct.pack(">I", 1) + b"\x00",
            "not an IDX file",
            id="wrong-magic",
        ),
        pytest.param(
            b"\x00\x00\x07\x01" + struct.pack(">I", 1) + b"\x00",
            "unknown IDX type code 0x07",
            id="unknown-type-code",
        ),
        pytest.param(
            _FIVE[:-10], "payload has 3910 bytes, header says 3920 (5×28×28", id="truncated-payload"
        ),
        pytest.param(
            _FIVE + b"xx", "payload has 3922 bytes, header says 3920 (5×28×28", id="trailing-bytes"
        ),
        pytest.param(gzip.compress(_FIVE[:-1]), "payload has 3919 bytes", id="truncated-in-gz"),
        pytest.param(
            b"\x00\x00\x08\x03\x00\x00\x00\x05",
            "declares 3 dims but is truncated",
            id="truncated-header",
        ),
        pytest.param(b"\x00\x00\x08\x00", "0 dimensions", id="zero-dims"),
        pytest.param(b"", "not an IDX file", id="empty"),
        pytest.param(
            b"<!DOCTYPE html><html>Not Found</html>",
            "not an IDX file (starts with b'<!DOC'); an HTML error page",
            id="html",
        ),
        pytest.param(gzip.compress(b"<html>oops</html>"), "HTML error page", id="gzipped-html"),
        pytest.param(
            b"\x1f\x8b\x08\x00garbage-not-deflate", "corrupt gzip stream", id="corrupt-gzip"
        ),
        pytest.param(gzip.compress(_FIVE)[:-20], "corrupt gzip stream", id="cut-gzip"),
    ],
)
def test_malformed_files_name_the_file(tmp_path, content, message):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(content)
    with pytest.raises(dd.IdxFormatError) as info:
        dd.read_idx(path)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)


def test_pair_count_mismatch_names_both_files_and_counts(tmp_path):
    (tmp_path / "img.gz").write_bytes(images_idx(5))
    (tmp_path / "lab.gz").write_bytes(labels_idx(4))
    with pytest.raises(dd.IdxFormatError) as info:
        dd.load_idx_pair(tmp_path / "img.gz", tmp_path / "lab.gz")
    assert str(info.value) == (
        f"{tmp_path / 'img.gz'} has 5 images but {tmp_path / 'lab.gz'} has 4 labels."
    )


@pytest.mark.parametrize(
    "images, labels, culprit, message",
    [
        (labels_idx(5), labels_idx(5), "img", "expected 3-D ubyte images"),
        (idx_bytes((1, 2, 2), [1, 2, 3, 4], 0x0C), labels_idx(1), "img", "of int32"),
        (images_idx(2), idx_bytes((2, 1), [1, 2]), "lab", "expected 1-D integer labels"),
        (images_idx(2), idx_bytes((2,), [1.0, 2.0], 0x0D), "lab", "of float32"),
        (images_idx(2), idx_bytes((2,), [3, 10]), "lab", "label 10 is not a class 0..9"),
        (images_idx(2), idx_bytes((2,), [-1, 3], 0x09), "lab", "label -1 is not a class"),
    ],
)
def test_pair_rejects_wrong_ranks_types_and_labels(tmp_path, images, labels, culprit, message):
    (tmp_path / "img").write_bytes(images)
    (tmp_path / "lab").write_bytes(labels)
    with pytest.raises(dd.IdxFormatError) as info:
        dd.load_idx_pair(tmp_path / "img", tmp_path / "lab")
    assert str(info.value).startswith(f"{tmp_path / culprit}: ")
    assert message in str(info.value)


# --- Downloads, from a server on 127.0.0.1. --------------------------------------------------


class _Server:
    """Serves `root`; records each request path. Under /cut/ it sends the first half of a
    file under the whole file's Content-Length, then closes: a transfer cut short. Under
    /nolength/ it sends a file without a Content-Length; under /slow/ one byte every 20 ms."""

    def __init__(self, root: Path):
        self.root = root
        self.requests: list[str] = []
        requests = self.requests

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(root), **kwargs)

            def do_GET(self):
                requests.append(self.path)
                if self.path.startswith("/cut/"):
                    body = (root / self.path.removeprefix("/cut/")).read_bytes()
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body[: len(body) // 2])
                    return
                if self.path.startswith("/nolength/"):
                    body = (root / self.path.removeprefix("/nolength/")).read_bytes()
                    self.send_response(200)
                    self.end_headers()  # HTTP/1.0: the body ends when the connection does
                    self.wfile.write(body)
                    return
                if self.path.startswith("/slow/"):
                    body = (root / self.path.removeprefix("/slow/")).read_bytes()
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    try:
                        for i in range(min(len(body), 250)):  # 5 s at most
                            self.wfile.write(body[i : i + 1])
                            self.wfile.flush()
                            time.sleep(0.02)
                    except OSError:  # the client gave up
                        pass
                    return
                super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self.thread.start()

    def put(self, path: str, content: bytes) -> str:
        """Serves `content` at `path`; returns the base URL of its directory."""
        (self.root / path).parent.mkdir(parents=True, exist_ok=True)
        (self.root / path).write_bytes(content)
        return f"{self.url}/{Path(path).parent}/"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def server(tmp_path):
    s = _Server(tmp_path / "www")
    s.root.mkdir()
    yield s
    s.close()


@pytest.fixture
def dead_url():
    """A base URL on a port nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


@pytest.mark.parametrize("algorithm", ["sha256", "md5"])
def test_good_download_lands_in_cache(server, tmp_path, algorithm):
    content = gzip.compress(labels_idx(7))
    url = server.put("a/l.gz", content)
    checksum = dd.Checksum(algorithm, hashlib.new(algorithm, content).hexdigest())
    cache = tmp_path / "cache"
    path = dd.fetch_file("l.gz", urls=[url], checksum=checksum, cache_dir=cache)
    assert path == cache / "l.gz" and path.read_bytes() == content
    assert list(cache.iterdir()) == [path]
    assert server.requests == ["/a/l.gz"]
    np.testing.assert_array_equal(dd.read_idx(path), np.arange(7) % 10)


def test_wrong_checksum_raises_and_leaves_nothing(server, tmp_path):
    content = gzip.compress(labels_idx(3))
    url = server.put("a/f.gz", content)
    cache = tmp_path / "cache"
    with pytest.raises(dd.ChecksumError) as info:
        dd.fetch_file("f.gz", urls=[url], checksum=dd.Checksum("sha256", "0" * 64), cache_dir=cache)
    message = str(info.value)
    assert message.startswith("f.gz: expected sha256 " + "0" * 64)
    assert f"{url}f.gz: sha256 {hashlib.sha256(content).hexdigest()}" in message
    assert list(cache.iterdir()) == []  # neither the file nor a temporary


def test_truncated_file_fails_checksum(server, tmp_path):
    content = gzip.compress(images_idx(5))
    url = server.put("a/x.gz", content[: len(content) // 2])
    cache = tmp_path / "cache"
    with pytest.raises(dd.ChecksumError):
        dd.fetch_file("x.gz", urls=[url], checksum=sha256(content), cache_dir=cache)
    assert list(cache.iterdir()) == []


def test_transfer_cut_short_falls_back_then_fails(server, tmp_path):
    content = gzip.compress(images_idx(5))
    server.put("x.gz", content)
    cut = f"{server.url}/cut/"
    cache = tmp_path / "cache"
    declared = f"{len(content) // 2} of {len(content)} bytes"
    with pytest.raises(dd.DownloadError, match=rf"cut/x\.gz: connection closed after {declared}"):
        dd.fetch_file("x.gz", urls=[cut], checksum=sha256(content), cache_dir=cache)
    assert list(cache.iterdir()) == []
    path = dd.fetch_file(
        "x.gz", urls=[cut, f"{server.url}/"], checksum=sha256(content), cache_dir=cache
    )
    assert path.read_bytes() == content and list(cache.iterdir()) == [path]


def test_html_page_instead_of_gzip(server, tmp_path):
    html = b"<!DOCTYPE html><html><body>Access denied</body></html>"
    url = server.put("a/train-images-idx3-ubyte.gz", html)
    real = sha256(gzip.compress(images_idx(5)))
    # Downloaded: the checksum catches it before any parsing.
    with pytest.raises(dd.ChecksumError, match=hashlib.sha256(html).hexdigest()):
        dd.fetch_file(
            "train-images-idx3-ubyte.gz", urls=[url], checksum=real, cache_dir=tmp_path / "c"
        )
    # The same page in a local data directory: the IDX check catches it.
    local = tmp_path / "local"
    local.mkdir()
    (local / "train-images-idx3-ubyte.gz").write_bytes(html)
    (local / "train-labels-idx1-ubyte.gz").write_bytes(labels_idx(5))
    (local / "t10k-images-idx3-ubyte.gz").write_bytes(images_idx(2))
    (local / "t10k-labels-idx1-ubyte.gz").write_bytes(labels_idx(2))
    with pytest.raises(dd.IdxFormatError, match=r"train-images-idx3-ubyte\.gz: not an IDX .*HTML"):
        dd.load_idx_dataset("mnist", data_dir=local, cache_dir=tmp_path / "unused")
    assert not (tmp_path / "unused").exists()


def test_first_mirror_404_falls_back_to_second(server, tmp_path):
    content = gzip.compress(labels_idx(4))
    good = server.put("b/f.gz", content)
    path = dd.fetch_file(
        "f.gz",
        urls=[f"{server.url}/missing", good],  # no trailing slash: one is added
        checksum=sha256(content),
        cache_dir=tmp_path / "cache",
    )
    assert path.read_bytes() == content
    assert server.requests == ["/missing/f.gz", "/b/f.gz"]


def test_mismatching_mirror_falls_back_to_good_one(server, tmp_path):
    content = gzip.compress(labels_idx(4))
    bad = server.put("a/f.gz", b"<html>mirror maintenance</html>")
    good = server.put("b/f.gz", content)
    path = dd.fetch_file(
        "f.gz", urls=[bad, good], checksum=sha256(content), cache_dir=tmp_path / "cache"
    )
    assert path.read_bytes() == content


def test_all_mirrors_failing_lists_each(server, tmp_path, dead_url):
    mirrors = [f"{server.url}/missing/", dead_url, "nonsense://x/"]
    with pytest.raises(dd.DownloadError) as info:
        dd.fetch_file("nope.gz", urls=mirrors, checksum=sha256(b""), cache_dir=tmp_path / "cache")
    message = str(info.value)
    assert message.startswith("could not download nope.gz: ")
    assert f"{server.url}/missing/nope.gz: HTTP Error 404" in message
    assert f"{dead_url}nope.gz: <urlopen error" in message
    assert "nonsense://x/nope.gz: <urlopen error unknown url type" in message
    assert list((tmp_path / "cache").iterdir()) == []
    with pytest.raises(dd.DownloadError, match="no URLs given"):
        dd.fetch_file("nope.gz", urls=[], checksum=sha256(b""), cache_dir=tmp_path / "cache")


def test_corrupt_cache_is_downloaded_again(server, tmp_path):
    content = gzip.compress(labels_idx(6))
    url = server.put("a/l.gz", content)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "l.gz").write_bytes(b"corrupt")
    path = dd.fetch_file("l.gz", urls=[url], checksum=sha256(content), cache_dir=cache)
    assert path.read_bytes() == content
    assert server.requests == ["/a/l.gz"]


def test_good_cache_is_used_without_a_request(server, tmp_path, dead_url):
    content = gzip.compress(labels_idx(6))
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "l.gz").write_bytes(content)
    urls = [f"{server.url}/a/", dead_url]
    path = dd.fetch_file("l.gz", urls=urls, checksum=sha256(content), cache_dir=cache)
    assert path == cache / "l.gz"
    assert server.requests == []


@pytest.mark.parametrize(
    "filename, checksum, message",
    [
        ("f.gz", dd.Checksum("sha256", "abc"), r"'abc' is not a sha256 hex digest \(64 hex"),
        ("f.gz", dd.Checksum("md5", "z" * 32), "not a md5 hex digest"),
        ("f.gz", dd.Checksum("nohash", "00"), "nohash"),
        ("../f.gz", dd.Checksum("md5", "0" * 32), "must be a plain file name"),
    ],
)
def test_fetch_rejects_bad_arguments_before_any_request(
    server, tmp_path, filename, checksum, message
):
    with pytest.raises(ValueError, match=message):
        dd.fetch_file(filename, urls=[server.url], checksum=checksum, cache_dir=tmp_path)
    assert server.requests == []


def test_leftover_parts_of_killed_downloads_are_removed(server, tmp_path):
    content = gzip.compress(labels_idx(6))
    url = server.put("a/l.gz", content)
    cache = tmp_path / "cache"
    cache.mkdir()
    for leftover in (".l.gz.k3j2h1.part", ".t10k-images-idx3-ubyte.gz.zz.part"):
        (cache / leftover).write_bytes(b"half a download")
    path = dd.fetch_file("l.gz", urls=[url], checksum=sha256(content), cache_dir=cache)
    assert list(cache.iterdir()) == [path]


@pytest.mark.parametrize("route", ["", "nolength/"])
def test_a_file_over_the_size_cap_is_abandoned(server, tmp_path, route):
    content = gzip.compress(images_idx(5))
    server.put("x.gz", content)
    cache = tmp_path / "cache"
    with pytest.raises(dd.DownloadError) as info:
        dd.fetch_file(
            "x.gz",
            urls=[f"{server.url}/{route}"],
            checksum=sha256(content),
            cache_dir=cache,
            max_bytes=len(content) - 1,
        )
    cap = f"{len(content) - 1}-byte cap"
    reason = "sent more than the" if route else f"declares {len(content)} bytes, over the"
    assert f"{server.url}/{route}x.gz: {reason} {cap}" in str(info.value)
    assert list(cache.iterdir()) == []


def test_a_trickling_download_stops_at_the_deadline(server, tmp_path):
    content = gzip.compress(images_idx(5))
    server.put("x.gz", content)
    cache = tmp_path / "cache"
    start = time.monotonic()
    with pytest.raises(dd.DownloadError) as info:
        dd.fetch_file(
            "x.gz",
            urls=[f"{server.url}/slow/", f"{server.url}/"],
            checksum=sha256(content),
            cache_dir=cache,
            deadline=0.5,
        )
    assert time.monotonic() - start < 2.0  # the trickle alone would take 5 s
    message = str(info.value)
    assert f"{server.url}/slow/x.gz: deadline passed after " in message
    assert f"{server.url}/x.gz: not tried, the 0.5 s deadline had passed" in message
    assert list(cache.iterdir()) == []


def test_a_download_waits_for_another_on_the_same_cache_until_its_deadline(server, tmp_path):
    content = gzip.compress(labels_idx(6))
    url = server.put("a/l.gz", content)
    cache = tmp_path / "cache"
    cache.mkdir()
    fd = os.open(cache, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as another process's download would
        with pytest.raises(dd.DownloadError, match=r"stayed locked by another download past"):
            dd.fetch_file(
                "l.gz", urls=[url], checksum=sha256(content), cache_dir=cache, deadline=0.2
            )
    finally:
        os.close(fd)
    assert server.requests == []
    assert dd.fetch_file("l.gz", urls=[url], checksum=sha256(content), cache_dir=cache).is_file()


@pytest.mark.parametrize(
    "limits, message",
    [
        (dict(deadline=0), r"`deadline` must be a finite number > 0, got 0"),
        (dict(deadline=float("nan")), r"`deadline` must be a finite number > 0, got nan"),
        (dict(timeout=-1.0), r"`timeout` must be a finite number > 0, got -1.0"),
        (dict(max_bytes=0), r"`max_bytes` must be an integer >= 1, got 0"),
        (dict(max_bytes=1.5), r"`max_bytes` must be an integer >= 1, got 1.5"),
    ],
)
def test_fetch_rejects_bad_limits_before_any_request(server, tmp_path, limits, message):
    with pytest.raises(ValueError, match=message):
        dd.fetch_file("f.gz", urls=[server.url], checksum=sha256(b""), cache_dir=tmp_path, **limits)
    assert server.requests == []


# --- Whole datasets. -------------------------------------------------------------------------

_NAMES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def _tiny_files(n_train: int = 20, n_test: int = 10) -> dict[str, bytes]:
    raw = [images_idx(n_train), labels_idx(n_train), images_idx(n_test), labels_idx(n_test)]
    return {name: gzip.compress(content) for name, content in zip(_NAMES, raw)}


def _tiny_spec(files: dict[str, bytes], mirrors: tuple[str, ...]) -> dd.IdxDatasetSpec:
    remote = [dd.RemoteFile(name, sha256(content)) for name, content in files.items()]
    return dd.IdxDatasetSpec(mirrors, *remote, train_count=20, test_count=10)


def _check_tiny(ds: dd.Dataset, name: str = "mnist"):
    assert ds.name == name and ds.num_classes == 10
    assert ds.train_images.shape == (20, 1, 28, 28) and ds.test_images.shape == (10, 1, 28, 28)
    assert ds.train_images.dtype == np.float32 and ds.train_labels.dtype == np.int32
    expected = ((np.arange(20 * 784) * 7) % 256).reshape(20, 1, 28, 28) / 255
    np.testing.assert_allclose(ds.train_images, expected, rtol=1e-6)
    np.testing.assert_array_equal(ds.test_labels, np.arange(10))


def test_dataset_download_verifies_then_parses(server, tmp_path):
    files = _tiny_files()
    for name, content in files.items():
        server.put(f"b/{name}", content)
    spec = _tiny_spec(files, (f"{server.url}/missing/", f"{server.url}/b/"))
    cache = tmp_path / "cache"
    _check_tiny(dd.load_idx_dataset("mnist", cache_dir=cache, spec=spec))
    assert sorted(p.name for p in cache.iterdir()) == sorted(_NAMES)
    assert sorted(server.requests) == sorted(
        f"/{mirror}/{name}" for mirror in ("missing", "b") for name in _NAMES
    )
    server.requests.clear()
    _check_tiny(dd.load_idx_dataset("mnist", cache_dir=cache, spec=spec))
    assert server.requests == []  # the verified cache, no network


def test_urls_override_the_spec_mirrors(server, tmp_path, dead_url):
    files = _tiny_files()
    for name, content in files.items():
        server.put(f"b/{name}", content)
    spec = _tiny_spec(files, (dead_url,))
    ds = dd.load_idx_dataset("mnist", cache_dir=tmp_path, urls=[f"{server.url}/b/"], spec=spec)
    _check_tiny(ds)


@pytest.mark.parametrize("gzipped", [True, False])
def test_data_dir_accepts_gz_and_plain_names(tmp_path, gzipped):
    files = _tiny_files()
    for name, content in files.items():
        target = tmp_path / (name if gzipped else name.removesuffix(".gz"))
        target.write_bytes(content if gzipped else gzip.decompress(content))
    spec = _tiny_spec(files, ())  # no mirrors: any download attempt would fail
    ds = dd.load_idx_dataset("fashion-mnist", data_dir=tmp_path, spec=spec)
    _check_tiny(ds, name="fashion-mnist")


def test_data_dir_is_validated_by_counts_and_size(tmp_path):
    for name, content in _tiny_files().items():
        (tmp_path / name).write_bytes(content)
    # The real registry entry expects 60,000 training images of 28×28.
    with pytest.raises(dd.IdxFormatError) as info:
        dd.load_idx_dataset("mnist", data_dir=tmp_path, cache_dir=tmp_path / "unused")
    assert str(info.value) == (
        f"{tmp_path / _NAMES[0]}: 20 images of 28×28, expected 60000 of 28×28."
    )
    (tmp_path / _NAMES[2]).write_bytes(images_idx(10, size=8))
    spec = _tiny_spec(_tiny_files(), ())
    with pytest.raises(dd.IdxFormatError, match=r"10 images of 8×8, expected 10 of 28×28"):
        dd.load_idx_dataset("mnist", data_dir=tmp_path, spec=spec)


def test_a_given_data_dir_is_the_only_place_read(server, tmp_path):
    files = _tiny_files()
    for name, content in files.items():
        server.put(f"b/{name}", content)
    # A system directory (as Debian's) holding another complete copy, read first before.
    system = tmp_path / "system"
    system.mkdir()
    for name, content in _tiny_files(n_train=20, n_test=10).items():
        (system / name).write_bytes(content)
    (system / _NAMES[3]).write_bytes(gzip.compress(idx_bytes((10,), [9] * 10)))
    user = tmp_path / "user"
    user.mkdir()
    for name, content in files.items():
        (user / name).write_bytes(content)
    spec = _tiny_spec(files, (f"{server.url}/b/",))._replace(local_dirs=(system,))
    cache = tmp_path / "cache"
    _check_tiny(
        dd.load_idx_dataset("fashion-mnist", data_dir=user, cache_dir=cache, spec=spec),
        "fashion-mnist",
    )
    (user / _NAMES[1]).unlink()
    (user / _NAMES[3]).unlink()
    with pytest.raises(dd.DataDirError) as info:
        dd.load_idx_dataset("fashion-mnist", data_dir=user, cache_dir=cache, spec=spec)
    assert str(info.value) == (
        f"data_dir {user} lacks train-labels-idx1-ubyte.gz (or train-labels-idx1-ubyte), "
        "t10k-labels-idx1-ubyte.gz (or t10k-labels-idx1-ubyte); it must hold all four "
        "fashion-mnist files."
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(dd.DataDirError, match=r"lacks train-images-idx3-ubyte\.gz .*, t10k-labels"):
        dd.load_idx_dataset("fashion-mnist", data_dir=empty, cache_dir=cache, spec=spec)
    with pytest.raises(dd.DataDirError, match=rf"data_dir {tmp_path / 'nowhere'} is not a dir"):
        dd.load_idx_dataset("fashion-mnist", data_dir=tmp_path / "nowhere", spec=spec)
    # Neither the system directory, nor the cache, nor the mirrors were touched.
    assert server.requests == [] and not cache.exists()
    # Without data_dir the system directory is used, as before.
    ds = dd.load_idx_dataset("fashion-mnist", cache_dir=cache, spec=spec)
    np.testing.assert_array_equal(ds.test_labels, [9] * 10)


def test_data_dir_is_not_for_digits(tmp_path):
    with pytest.raises(ValueError, match="data_dir is for the IDX datasets"):
        dd.load_dataset("digits", data_dir=tmp_path)


def test_unknown_dataset_name():
    with pytest.raises(ValueError, match=r"unknown dataset 'cifar'.*'fashion-mnist', 'mnist'"):
        dd.load_idx_dataset("cifar")


def test_registry_holds_the_published_checksums():
    mnist, fashion = dd.IDX_DATASETS["mnist"], dd.IDX_DATASETS["fashion-mnist"]
    assert mnist.mirrors[0] == "https://storage.googleapis.com/cvdf-datasets/mnist/"
    assert mnist.train_images.checksum == dd.Checksum(
        "sha256", "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"
    )
    assert fashion.test_labels.checksum == dd.Checksum("md5", "bb300cfdad3c16e7a12a480ee83cd310")
    assert fashion.local_dirs == (Path("/usr/share/datasets/fashion-mnist"),)
    for spec in (mnist, fashion):
        for part in (spec.train_images, spec.train_labels, spec.test_images, spec.test_labels):
            size = hashlib.new(part.checksum.algorithm).digest_size
            assert len(part.checksum.hexdigest) == 2 * size
            int(part.checksum.hexdigest, 16)


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("JAXCONV_DATA", str(tmp_path))
    assert dd.default_cache_dir("mnist") == tmp_path / "mnist"
    monkeypatch.delenv("JAXCONV_DATA")
    assert dd.default_cache_dir("mnist") == Path.home() / ".cache" / "jaxconv" / "mnist"


# --- sklearn digits. -------------------------------------------------------------------------


@pytest.mark.parametrize("test_fraction", [0.2, 0.3])
def test_digits_split_is_stratified_and_seeded(test_fraction):
    from sklearn.datasets import load_digits

    target = load_digits().target
    ds = dd.load_digits_dataset(seed=0, test_fraction=test_fraction)
    n_test = int(np.ceil(1797 * test_fraction))
    assert ds.name == "digits" and ds.num_classes == 10
    assert ds.train_images.shape == (1797 - n_test, 1, 8, 8)
    assert ds.test_images.shape == (n_test, 1, 8, 8)
    assert ds.train_images.dtype == ds.test_images.dtype == np.float32
    assert ds.train_labels.dtype == ds.test_labels.dtype == np.int32
    for images in (ds.train_images, ds.test_images):
        assert images.min() == 0.0 and images.max() == 1.0
    for digit in range(10):
        expected = round(np.sum(target == digit) * test_fraction)
        assert abs(np.sum(ds.test_labels == digit) - expected) <= 1
    np.testing.assert_array_equal(
        np.bincount(np.concatenate([ds.train_labels, ds.test_labels])), np.bincount(target)
    )
    again = dd.load_digits_dataset(seed=0, test_fraction=test_fraction)
    np.testing.assert_array_equal(again.test_images, ds.test_images)
    other = dd.load_digits_dataset(seed=1, test_fraction=test_fraction)
    assert not np.array_equal(other.test_images, ds.test_images)


# --- The real thing, where Debian's package provides it. -------------------------------------


@pytest.mark.skipif(
    not dd.DEBIAN_FASHION_MNIST.is_dir(), reason="Debian's dataset-fashion-mnist not installed"
)
def test_debian_fashion_mnist(tmp_path):
    ds = dd.load_idx_dataset("fashion-mnist", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()  # read in place, nothing downloaded
    assert ds.train_images.shape == (60000, 1, 28, 28)
    assert ds.test_images.shape == (10000, 1, 28, 28)
    assert ds.train_images.dtype == np.float32
    assert ds.test_images.min() >= 0.0 and ds.test_images.max() <= 1.0
    # Fashion-MNIST is balanced: 6,000 training and 1,000 test images per class.
    np.testing.assert_array_equal(np.bincount(ds.train_labels), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(ds.test_labels), [1000] * 10)


def test_module_imports_neither_jax_nor_sklearn():
    # Load the file on its own: the jaxconv package itself imports JAX.
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('demo_data', {dd.__file__!r})\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "print(sorted(m for m in ('jax', 'sklearn') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
