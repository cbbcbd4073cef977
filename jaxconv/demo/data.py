"""Data for the training demo: sklearn's digits, and MNIST / Fashion-MNIST from IDX files.

Downloads are verified by checksum *before* anything parses them; local files are validated
by their IDX headers. Plain numpy: nothing here needs JAX.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np


class Dataset(NamedTuple):
    """Images as float32 (N, 1, H, W) in [0, 1] (NCHW) and int32 labels (N,)."""

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    num_classes: int


class IdxFormatError(ValueError):
    """An IDX file is malformed, truncated, or not an IDX file at all."""


class ChecksumError(ValueError):
    """A downloaded file's checksum differs from the published one."""


class DownloadError(RuntimeError):
    """No mirror delivered a file."""


class Checksum(NamedTuple):
    """A published digest: `algorithm` is a `hashlib` name ("sha256", "md5")."""

    algorithm: str
    hexdigest: str


class RemoteFile(NamedTuple):
    """One file of a dataset: its name on the mirrors and its published checksum."""

    filename: str
    checksum: Checksum


class RemoteDataset(NamedTuple):
    """Where a dataset lives: mirrors tried in order, and its four files."""

    mirrors: tuple[str, ...]
    train_images: RemoteFile
    train_labels: RemoteFile
    test_images: RemoteFile
    test_labels: RemoteFile


def _sha256(filename: str, digest: str) -> RemoteFile:
    return RemoteFile(filename, Checksum("sha256", digest))


def _md5(filename: str, digest: str) -> RemoteFile:
    return RemoteFile(filename, Checksum("md5", digest))


REMOTE_DATASETS: dict[str, RemoteDataset] = {
    "mnist": RemoteDataset(
        mirrors=(
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
        ),
        train_images=_sha256(
            "train-images-idx3-ubyte.gz",
            "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        ),
        train_labels=_sha256(
            "train-labels-idx1-ubyte.gz",
            "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        ),
        test_images=_sha256(
            "t10k-images-idx3-ubyte.gz",
            "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        ),
        test_labels=_sha256(
            "t10k-labels-idx1-ubyte.gz",
            "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        ),
    ),
    # The publisher (zalandoresearch/fashion-mnist) lists MD5 digests, so those are checked.
    "fashion-mnist": RemoteDataset(
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        train_images=_md5("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
        train_labels=_md5("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
        test_images=_md5("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
        test_labels=_md5("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
    ),
}

# Debian's `dataset-fashion-mnist` package.
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Parses IDX bytes (gzip-compressed or raw) into an array.

    Args:
      data: the file's contents.
      source: the file's name, for error messages.

    Returns:
      The array, with the shape its header gives.

    Raises:
      IdxFormatError: a corrupt gzip stream, a wrong magic number, an unknown type code, or a
        payload whose size differs from what the header promises.
    """
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as error:
            raise IdxFormatError(f"{source}: corrupt gzip stream ({error}).") from error
    if len(data) < 4 or data[:2] != b"\x00\x00":
        raise IdxFormatError(
            f"{source}: not an IDX file (starts with {data[:5]!r}); "
            "an HTML error page saved in place of the data?"
        )
    type_code, ndim = data[2], data[3]
    if type_code not in _IDX_DTYPES:
        raise IdxFormatError(f"{source}: unknown IDX type code 0x{type_code:02X}.")
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise IdxFormatError(f"{source}: header declares {ndim} dims but is truncated.")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = _IDX_DTYPES[type_code]
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(data) - header != expected:
        raise IdxFormatError(
            f"{source}: payload has {len(data) - header} bytes, header says {expected} "
            f"({'×'.join(map(str, dims))} of {dtype.name})."
        )
    return np.frombuffer(data, dtype, offset=header).reshape(dims)


def read_idx(path: Path) -> np.ndarray:
    """`parse_idx` of a file; errors name the file."""
    return parse_idx(Path(path).read_bytes(), str(path))


def load_idx_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Reads matching image and label IDX files.

    Returns:
      images uint8 (N, H, W) and labels int32 (N,).

    Raises:
      IdxFormatError: bad files, wrong ranks or dtypes, or counts that differ.
    """
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise IdxFormatError(f"{images_path}: expected 3-D ubyte images, got {images.shape}.")
    if labels.ndim != 1:
        raise IdxFormatError(f"{labels_path}: expected 1-D labels, got shape {labels.shape}.")
    if len(images) != len(labels):
        raise IdxFormatError(
            f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels."
        )
    if len(labels) and labels.max() > 9:
        raise IdxFormatError(f"{labels_path}: label {labels.max()} is not a digit class 0–9.")
    return images, labels.astype(np.int32)


def file_digest(path: Path, algorithm: str) -> str:
    """Hex digest of a file, read in chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_file(
    remote: RemoteFile, mirrors: Sequence[str], cache_dir: Path, timeout: float = 30.0
) -> Path:
    """Returns `cache_dir/remote.filename`, downloading it if absent or corrupt.

    A cached file is used only if its checksum matches; otherwise it is deleted and
    downloaded again. A download goes to a temporary file in `cache_dir` and is renamed into
    place only after its checksum matches, so a partial or wrong file is never left behind.

    Args:
      remote: the file's name and published checksum.
      mirrors: base URLs, tried in order; the next is tried on any error.
      cache_dir: where the file is kept.
      timeout: seconds per connection attempt.

    Raises:
      ChecksumError: every mirror answered, and the last answer had the wrong checksum.
      DownloadError: no mirror answered.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / remote.filename
    algorithm, expected = remote.checksum
    if target.exists():
        if file_digest(target, algorithm) == expected:
            return target
        target.unlink()  # corrupt or stale: never parse it

    failures: list[str] = []
    for mirror in mirrors:
        url = mirror + remote.filename
        fd, tmp_name = tempfile.mkstemp(dir=cache_dir, prefix=f".{remote.filename}.")
        tmp = Path(tmp_name)
        try:
            digest = hashlib.new(algorithm)
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as r:
                for chunk in iter(lambda r=r: r.read(1 << 20), b""):
                    digest.update(chunk)
                    out.write(chunk)
            if digest.hexdigest() != expected:
                failures.append(f"{url}: {algorithm} {digest.hexdigest()} != expected {expected}")
                continue
            os.replace(tmp, target)
            return target
        except (urllib.error.URLError, OSError, TimeoutError) as error:
            failures.append(f"{url}: {error}")
        finally:
            tmp.unlink(missing_ok=True)
    if failures and all(" != expected " in f for f in failures):
        raise ChecksumError(f"{remote.filename}: checksum mismatch: " + "; ".join(failures))
    raise DownloadError(f"could not download {remote.filename}: " + "; ".join(failures))


def default_cache_dir(name: str) -> Path:
    """`$JAXCONV_DATA/<name>` if set, else `~/.cache/jaxconv/<name>`."""
    root = os.environ.get("JAXCONV_DATA")
    return Path(root) / name if root else Path.home() / ".cache" / "jaxconv" / name


def _local_file(directory: Path, filename: str) -> Path | None:
    """`filename` in `directory`, accepting it with or without its `.gz`."""
    for candidate in (filename, filename.removesuffix(".gz")):
        if (directory / candidate).exists():
            return directory / candidate
    return None


def _to_dataset(name: str, train: tuple, test: tuple) -> Dataset:
    def images(a: np.ndarray) -> np.ndarray:
        return (a.astype(np.float32) / 255.0)[:, None]

    return Dataset(name, images(train[0]), train[1], images(test[0]), test[1], num_classes=10)


def load_idx_dataset(
    name: str,
    *,
    data_dir: Path | None = None,
    cache_dir: Path | None = None,
    remote: RemoteDataset | None = None,
    search_debian: bool = True,
) -> Dataset:
    """MNIST or Fashion-MNIST as a `Dataset`.

    Looks in order at: Debian's `/usr/share/datasets/fashion-mnist` (Fashion-MNIST only),
    `data_dir`, then the cache (`default_cache_dir`), downloading into it what is missing.
    Files from a local directory are validated by their IDX headers and counts; files in
    the cache by their published checksums first.

    Args:
      name: "mnist" or "fashion-mnist".
      data_dir: a directory holding the four IDX files (gzipped or not).
      cache_dir: overrides the download cache.
      remote: overrides the mirrors and checksums (tests serve their own files).
      search_debian: whether to look at Debian's package directory.

    Raises:
      ValueError: unknown name. IdxFormatError, ChecksumError, DownloadError: see above.
    """
    if name not in REMOTE_DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(REMOTE_DATASETS)}.")
    remote = remote or REMOTE_DATASETS[name]
    parts = (remote.train_images, remote.train_labels, remote.test_images, remote.test_labels)
    local_dirs = []
    if name == "fashion-mnist" and search_debian:
        local_dirs.append(DEBIAN_FASHION_MNIST)
    if data_dir is not None:
        local_dirs.append(Path(data_dir))
    for directory in local_dirs:
        paths = [_local_file(directory, part.filename) for part in parts]
        if all(paths):
            return _to_dataset(name, load_idx_pair(*paths[:2]), load_idx_pair(*paths[2:]))
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir(name)
    paths = [fetch_file(part, remote.mirrors, cache) for part in parts]
    return _to_dataset(name, load_idx_pair(*paths[:2]), load_idx_pair(*paths[2:]))


def load_digits_dataset(seed: int = 0, test_fraction: float = 0.2) -> Dataset:
    """sklearn's 1,797 8×8 handwritten digits, split stratified and seeded.

    Args:
      seed: seed of the split.
      test_fraction: share of the images held out for testing.

    Returns:
      A `Dataset` of (N, 1, 8, 8) float32 images in [0, 1].
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images.astype(np.float32) / 16.0)[:, None]
    labels = digits.target.astype(np.int32)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=test_fraction, stratify=labels, random_state=seed
    )
    return Dataset("digits", x_train, y_train, x_test, y_test, num_classes=10)


def load_dataset(name: str, *, seed: int = 0, data_dir: Path | None = None) -> Dataset:
    """The demo's datasets by name: "digits", "mnist" or "fashion-mnist"."""
    if name == "digits":
        return load_digits_dataset(seed)
    return load_idx_dataset(name, data_dir=data_dir)
