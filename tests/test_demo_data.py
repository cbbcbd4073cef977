"""Demo data: IDX parsing, checksum-verified downloads from a local server, digits split."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import struct
import threading
from pathlib import Path

import numpy as np
import pytest

from jaxconv.demo import data as dd


def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    """IDX encoding written from the format's definition."""
    header = struct.pack(">BBBB", 0, 0, type_code, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(">u1" if type_code == 0x08 else array.dtype).tobytes()


IMAGES = np.arange(5 * 28 * 28, dtype=np.int64).reshape(5, 28, 28) % 256
LABELS = np.array([3, 1, 4, 1, 5])


@pytest.mark.parametrize("compress", [False, True])
def test_parse_round_trip(compress):
    raw = idx_bytes(IMAGES)
    parsed = dd.parse_idx(gzip.compress(raw) if compress else raw, "f")
    np.testing.assert_array_equal(parsed, IMAGES)
    assert parsed.dtype == np.uint8
    np.testing.assert_array_equal(dd.parse_idx(idx_bytes(LABELS), "l"), LABELS)


def test_parse_other_type_codes():
    floats = np.array([[1.5, -2.0]], ">f4")
    header = struct.pack(">BBBBII", 0, 0, 0x0D, 2, 1, 2)
    np.testing.assert_array_equal(dd.parse_idx(header + floats.tobytes()), floats)


@pytest.mark.parametrize(
    "payload, message",
    [
        (b"\x01\x00\x08\x01" + struct.pack(">I", 1) + b"\x00", "not an IDX file"),
        (b"\x00\x00\x07\x01" + struct.pack(">I", 1) + b"\x00", "unknown IDX type code 0x07"),
        (idx_bytes(IMAGES)[:-10], "payload has 3910 bytes, header says 3920 (5×28×28"),
        (idx_bytes(IMAGES) + b"xx", "payload has 3922 bytes, header says 3920"),
        (b"<!DOCTYPE html><html>Not Found</html>", "an HTML error page saved in place"),
        (b"\x1f\x8b\x08\x00garbage-not-deflate", "corrupt gzip stream"),
        (gzip.compress(b"<html>oops</html>"), "not an IDX file"),
        (b"\x00\x00\x08\x03\x00\x00", "header declares 3 dims but is truncated"),
    ],
)
def test_malformed_files_name_the_file(tmp_path, payload, message):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(payload)
    with pytest.raises(dd.IdxFormatError, match=r"train-images-idx3-ubyte\.gz") as info:
        dd.read_idx(path)
    assert message in str(info.value)


def test_pair_count_mismatch_names_both_files(tmp_path):
    (tmp_path / "img").write_bytes(idx_bytes(IMAGES))
    (tmp_path / "lab").write_bytes(idx_bytes(LABELS[:4]))
    with pytest.raises(dd.IdxFormatError, match=r"img has 5 images but .*lab has 4 labels"):
        dd.load_idx_pair(tmp_path / "img", tmp_path / "lab")


# --- Downloads, against a server on 127.0.0.1. -----------------------------------------------


class _Server:
    def __init__(self, root: Path):
        self.requests: list[str] = []
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(root), **kwargs)

            def do_GET(self):
                server.requests.append(self.path)
                super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    s = _Server(root)
    s.root = root
    yield s
    s.close()


def _remote_file(name: str, content: bytes) -> dd.RemoteFile:
    return dd.RemoteFile(name, dd.Checksum("sha256", hashlib.sha256(content).hexdigest()))


def _tiny_dataset(server, mirror="a"):
    """Tiny IDX files served by `server`, and the matching RemoteDataset."""
    files = {
        "train-images-idx3-ubyte.gz": gzip.compress(idx_bytes(IMAGES)),
        "train-labels-idx1-ubyte.gz": gzip.compress(idx_bytes(LABELS)),
        "t10k-images-idx3-ubyte.gz": gzip.compress(idx_bytes(IMAGES[:2])),
        "t10k-labels-idx1-ubyte.gz": gzip.compress(idx_bytes(LABELS[:2])),
    }
    for name, content in files.items():
        (server.root / mirror / name).write_bytes(content)
    remotes = [_remote_file(name, content) for name, content in files.items()]
    mirrors = (f"{server.url}/missing/", f"{server.url}/{mirror}/")
    return dd.RemoteDataset(mirrors, *remotes)


def test_download_verifies_then_parses(server, tmp_path):
    remote = _tiny_dataset(server)
    ds = dd.load_idx_dataset("mnist", cache_dir=tmp_path / "cache", remote=remote)
    assert ds.train_images.shape == (5, 1, 28, 28) and ds.test_images.shape == (2, 1, 28, 28)
    np.testing.assert_allclose(ds.train_images[:, 0], IMAGES / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(ds.train_labels, LABELS)
    # The first mirror 404s; each file then came from the second.
    assert sum(r.startswith("/missing/") for r in server.requests) == 4
    assert sum(r.startswith("/a/") for r in server.requests) == 4
    # A second load uses the verified cache: no request at all.
    before = len(server.requests)
    dd.load_idx_dataset("mnist", cache_dir=tmp_path / "cache", remote=remote)
    assert len(server.requests) == before


def test_wrong_checksum_leaves_nothing_behind(server, tmp_path):
    content = gzip.compress(idx_bytes(LABELS))
    (server.root / "a" / "f.gz").write_bytes(content)
    wrong = dd.RemoteFile("f.gz", dd.Checksum("sha256", "0" * 64))
    cache = tmp_path / "cache"
    with pytest.raises(dd.ChecksumError) as info:
        dd.fetch_file(wrong, [f"{server.url}/a/"], cache)
    message = str(info.value)
    assert "f.gz" in message and "0" * 64 in message
    assert hashlib.sha256(content).hexdigest() in message
    assert list(cache.iterdir()) == []


def test_html_page_instead_of_gzip(server, tmp_path):
    html = b"<!DOCTYPE html><html><body>Access denied</body></html>"
    (server.root / "a" / "train-images-idx3-ubyte.gz").write_bytes(html)
    remote = _remote_file("train-images-idx3-ubyte.gz", gzip.compress(idx_bytes(IMAGES)))
    with pytest.raises(dd.ChecksumError):
        dd.fetch_file(remote, [f"{server.url}/a/"], tmp_path / "cache")
    # The same page in a local data directory is caught by the IDX check.
    with pytest.raises(dd.IdxFormatError, match="HTML error page"):
        dd.read_idx(server.root / "a" / "train-images-idx3-ubyte.gz")


def test_truncated_download_is_rejected(server, tmp_path):
    content = gzip.compress(idx_bytes(IMAGES))
    (server.root / "a" / "x.gz").write_bytes(content[: len(content) // 2])
    with pytest.raises(dd.ChecksumError):
        dd.fetch_file(_remote_file("x.gz", content), [f"{server.url}/a/"], tmp_path / "c")


def test_corrupt_cache_is_downloaded_again(server, tmp_path):
    content = gzip.compress(idx_bytes(LABELS))
    (server.root / "a" / "l.gz").write_bytes(content)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "l.gz").write_bytes(b"corrupt")
    path = dd.fetch_file(_remote_file("l.gz", content), [f"{server.url}/a/"], cache)
    assert path.read_bytes() == content
    assert server.requests == ["/a/l.gz"]


def test_all_mirrors_failing_lists_each(server, tmp_path):
    remote = _remote_file("nope.gz", b"")
    mirrors = [f"{server.url}/missing/", f"{server.url}/gone/"]
    with pytest.raises(dd.DownloadError, match=r"missing/nope.gz: HTTP Error 404.*gone/nope.gz"):
        dd.fetch_file(remote, mirrors, tmp_path / "cache")


def test_local_directory_is_validated_not_checksummed(tmp_path):
    for name, array in [
        ("train-images-idx3-ubyte", IMAGES),
        ("train-labels-idx1-ubyte", LABELS),
        ("t10k-images-idx3-ubyte", IMAGES[:3]),
        ("t10k-labels-idx1-ubyte", LABELS[:2]),
    ]:
        (tmp_path / name).write_bytes(idx_bytes(array))
    with pytest.raises(dd.IdxFormatError, match=r"has 3 images but .* has 2 labels"):
        dd.load_idx_dataset("mnist", data_dir=tmp_path)


def test_digits_split_is_stratified_and_seeded():
    ds = dd.load_digits_dataset(seed=0)
    assert ds.train_images.shape == (1437, 1, 8, 8) and ds.test_images.shape == (360, 1, 8, 8)
    assert ds.train_images.dtype == np.float32 and ds.train_labels.dtype == np.int32
    assert ds.train_images.min() >= 0.0 and ds.train_images.max() == 1.0
    all_labels = np.concatenate([ds.train_labels, ds.test_labels])
    for digit in range(10):
        expected = np.sum(all_labels == digit) * 0.2
        assert abs(np.sum(ds.test_labels == digit) - expected) <= 1
    again = dd.load_digits_dataset(seed=0)
    np.testing.assert_array_equal(again.test_labels, ds.test_labels)
    other = dd.load_digits_dataset(seed=1)
    assert not np.array_equal(other.test_labels, ds.test_labels)


@pytest.mark.skipif(not dd.DEBIAN_FASHION_MNIST.exists(), reason="dataset-fashion-mnist absent")
def test_debian_fashion_mnist():
    ds = dd.load_idx_dataset("fashion-mnist")
    assert ds.train_images.shape == (60000, 1, 28, 28)
    assert ds.test_images.shape == (10000, 1, 28, 28)
    assert set(np.unique(ds.test_labels)) == set(range(10))
