"""Data for the training demo: sklearn's digits, and MNIST / Fashion-MNIST from IDX files.

Downloads are verified by checksum *before* anything parses them, and bounded in time and
size; files from a local directory are validated by their IDX headers and counts. Plain numpy:
nothing here imports JAX, and scikit-learn is imported only by `load_digits_dataset`.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import http.client
import math
import os
import struct
import tempfile
import time
import urllib.request
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, NamedTuple, cast

import numpy as np


class Dataset(NamedTuple):
    """A classification dataset, split into train and test.

    Attributes:
      train_images: float32 (N, 1, H, W) in [0, 1] (NCHW).
      train_labels: int32 (N,), in [0, num_classes).
      test_images: float32 (M, 1, H, W) in [0, 1].
      test_labels: int32 (M,).
      num_classes: number of classes.
      name: "digits", "mnist" or "fashion-mnist".
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    num_classes: int
    name: str


class IdxFormatError(ValueError):
    """An IDX file is malformed, truncated, or not an IDX file at all."""


class ChecksumError(ValueError):
    """A downloaded file's checksum differs from the published one."""


class DownloadError(RuntimeError):
    """No mirror delivered a file."""


class DataDirError(ValueError):
    """A given data directory does not exist, or lacks some of the dataset's files."""


class Checksum(NamedTuple):
    """A published digest: `algorithm` is a `hashlib` name ("sha256", "md5")."""

    algorithm: str
    hexdigest: str


class RemoteFile(NamedTuple):
    """One file of a dataset: its name on the mirrors and its published checksum."""

    filename: str
    checksum: Checksum


class IdxDatasetSpec(NamedTuple):
    """Where an IDX dataset lives and what it must contain.

    Attributes:
      mirrors: base URLs, tried in order.
      train_images, train_labels, test_images, test_labels: the four files.
      train_count, test_count: images each split must have; None skips the check (tests
        serve tiny files through their own spec).
      image_shape: (H, W) every image must have.
      local_dirs: system directories looked at before the cache (when no `data_dir` is
        given), such as Debian's package directory.
    """

    mirrors: tuple[str, ...]
    train_images: RemoteFile
    train_labels: RemoteFile
    test_images: RemoteFile
    test_labels: RemoteFile
    train_count: int | None = 60_000
    test_count: int | None = 10_000
    image_shape: tuple[int, int] = (28, 28)
    local_dirs: tuple[Path, ...] = ()


# Debian's `dataset-fashion-mnist` package installs the four publisher .gz files here.
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def _sha256(filename: str, digest: str) -> RemoteFile:
    return RemoteFile(filename, Checksum("sha256", digest))


def _md5(filename: str, digest: str) -> RemoteFile:
    return RemoteFile(filename, Checksum("md5", digest))


IDX_DATASETS: dict[str, IdxDatasetSpec] = {
    "mnist": IdxDatasetSpec(
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
    # The publisher (zalandoresearch/fashion-mnist README) lists MD5 digests only.
    "fashion-mnist": IdxDatasetSpec(
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        train_images=_md5("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
        train_labels=_md5("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
        test_images=_md5("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
        test_labels=_md5("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
        # Debian recompresses the .gz files, so they differ from the publisher's MD5s: the
        # directory is validated by IDX header and counts, like any local directory.
        local_dirs=(DEBIAN_FASHION_MNIST,),
    ),
}

_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


# --- IDX files. ------------------------------------------------------------------------------


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Parses IDX bytes, gzip-compressed or raw, into an array.

    Gzip is recognised by its magic bytes (1f 8b), not by a file name.

    Args:
      data: the file's contents.
      source: the file's name, for error messages.

    Returns:
      A writable array in native byte order, with the shape and dtype the header gives
      (type codes 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64).

    Raises:
      IdxFormatError: a corrupt gzip stream, a wrong magic number, an unknown type code, a
        truncated header, or a payload whose size differs from what the header promises.
    """
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as error:
            raise IdxFormatError(f"{source}: corrupt gzip stream ({error}).") from error
    if len(data) < 4 or data[:2] != b"\x00\x00":
        hint = (
            "an HTML error page saved in place of the data?"
            if data.lstrip()[:1] == b"<"
            else "the first two bytes of an IDX file are zero."
        )
        raise IdxFormatError(f"{source}: not an IDX file (starts with {data[:5]!r}); {hint}")
    type_code, ndim = data[2], data[3]
    if type_code not in _IDX_DTYPES:
        known = ", ".join(f"0x{code:02X}" for code in _IDX_DTYPES)
        raise IdxFormatError(f"{source}: unknown IDX type code 0x{type_code:02X} (known: {known}).")
    if ndim == 0:
        raise IdxFormatError(f"{source}: header declares 0 dimensions.")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IdxFormatError(
            f"{source}: header declares {ndim} dims but is truncated ({len(data)} bytes)."
        )
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = _IDX_DTYPES[type_code]
    expected = math.prod(dims) * dtype.itemsize
    if len(data) - header != expected:
        raise IdxFormatError(
            f"{source}: payload has {len(data) - header} bytes, header says {expected} "
            f"({'×'.join(map(str, dims))} of {dtype.name})."
        )
    array = np.frombuffer(data, dtype, offset=header).reshape(dims)
    return array.astype(dtype.newbyteorder("="))  # a writable, native-order copy


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Reads an IDX file, gzip-compressed or raw.

    Args:
      path: the file.

    Returns:
      The array its header describes; see `parse_idx`.

    Raises:
      IdxFormatError: the file is not a well-formed IDX file; the message names the file.
    """
    return parse_idx(Path(path).read_bytes(), str(path))


def load_idx_pair(
    images_path: str | os.PathLike[str], labels_path: str | os.PathLike[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Reads matching image and label IDX files.

    Args:
      images_path: an IDX file of uint8 images (N, H, W).
      labels_path: an IDX file of integer labels (N,) in 0..9.

    Returns:
      images uint8 (N, H, W) and labels int32 (N,).

    Raises:
      IdxFormatError: bad files, wrong ranks or dtypes, labels outside 0..9, or counts that
        differ; the message names the file(s) at fault.
    """
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise IdxFormatError(
            f"{images_path}: expected 3-D ubyte images (N, H, W), "
            f"got shape {images.shape} of {images.dtype}."
        )
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise IdxFormatError(
            f"{labels_path}: expected 1-D integer labels (N,), "
            f"got shape {labels.shape} of {labels.dtype}."
        )
    if len(images) != len(labels):
        raise IdxFormatError(
            f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels."
        )
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        bad = labels[(labels < 0) | (labels > 9)][0]
        raise IdxFormatError(f"{labels_path}: label {bad} is not a class 0..9.")
    return images, labels.astype(np.int32)


# --- Downloads. ------------------------------------------------------------------------------


def file_digest(path: str | os.PathLike[str], algorithm: str) -> str:
    """Hex digest of a file, read in 1 MiB chunks (MD5 allowed on FIPS systems too).

    Args:
      path: the file.
      algorithm: a `hashlib` name, such as "sha256" or "md5".

    Returns:
      The lowercase hex digest.
    """
    digest = hashlib.new(algorithm, usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _expected_digest(filename: str, checksum: Checksum) -> str:
    """The expected digest, lowercased, after checking it can be a digest of `algorithm`."""
    algorithm, expected = checksum
    # An unknown algorithm raises ValueError here, before any network access.
    size = hashlib.new(algorithm, usedforsecurity=False).digest_size
    expected = expected.lower()
    if len(expected) != 2 * size or any(c not in "0123456789abcdef" for c in expected):
        raise ValueError(
            f"{filename}: checksum {expected!r} is not a {algorithm} hex digest "
            f"({2 * size} hex digits)."
        )
    return expected


# A cap well above the largest published file (Fashion-MNIST's 26 MB training images).
DEFAULT_MAX_BYTES = 256 * 2**20


class _LimitError(OSError):
    """A download passed its deadline or its size cap."""


def _download(
    url: str, out: IO[bytes], algorithm: str, timeout: float, end: float, max_bytes: int
) -> str:
    """Streams `url` into the open file `out`, until `time.monotonic()` reaches `end` or
    more than `max_bytes` arrive; returns the hex digest of what came."""
    digest = hashlib.new(algorithm, usedforsecurity=False)
    received = 0
    with urllib.request.urlopen(url, timeout=timeout) as response:
        declared = response.headers.get("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > max_bytes:
            raise _LimitError(f"declares {declared} bytes, over the {max_bytes}-byte cap")
        # read1 returns what one socket read gives, so a server that trickles bytes cannot
        # hold a read past the deadline by more than one socket timeout.
        while chunk := response.read1(1 << 20):
            received += len(chunk)
            if received > max_bytes:
                raise _LimitError(f"sent more than the {max_bytes}-byte cap")
            if time.monotonic() > end:
                raise _LimitError(f"deadline passed after {received} bytes")
            digest.update(chunk)
            out.write(chunk)
    # read(n) returns b"" at a premature EOF instead of raising, so compare lengths here.
    if declared is not None and declared.isdigit() and received != int(declared):
        raise ConnectionError(f"connection closed after {received} of {declared} bytes")
    return digest.hexdigest()


@contextlib.contextmanager
def _locked_cache(cache: Path, end: float, deadline: float) -> Iterator[None]:
    """Holds an exclusive `flock` on the cache directory, waiting for it until `end`."""
    fd = os.open(cache, os.O_RDONLY | os.O_DIRECTORY)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= end:
                    raise DownloadError(
                        f"{cache} stayed locked by another download past the {deadline:g} s "
                        "deadline."
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)


def _positive(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"`{name}` must be a number, got {type(value).__name__}.")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"`{name}` must be a finite number > 0, got {value}.")


def fetch_file(
    filename: str,
    *,
    urls: Sequence[str],
    checksum: Checksum,
    cache_dir: str | os.PathLike[str],
    timeout: float = 30.0,
    deadline: float = 600.0,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Path:
    """Returns `cache_dir/filename`, verified by checksum, downloading it if needed.

    A cached file is used, without any network access, only if its checksum matches; a
    cached file that does not match is deleted (never parsed) and downloaded again. Each
    download streams into a temporary file `.<filename>.*.part` in `cache_dir`, hashing as it
    goes, and is renamed into place only if its checksum matches. The call holds a lock on
    `cache_dir`, so concurrent calls download a file once; under it, the `.*.part` files that
    killed processes left behind are deleted first.

    Args:
      filename: the file's name, appended to each base URL and used in `cache_dir`.
      urls: base URLs, tried in order; on any error (HTTP, network, a transfer cut short of
        its Content-Length, checksum mismatch) the next is tried.
      checksum: the published digest of the file.
      cache_dir: where the file is kept; created if missing.
      timeout: seconds any one socket operation may block.
      deadline: seconds the whole call may take, waiting for the lock and every mirror
        included; a transfer still running then is abandoned (overshooting by at most one
        socket timeout) and the mirrors not yet tried are skipped.
      max_bytes: the most bytes one transfer may bring; a larger declared Content-Length is
        refused before reading, a transfer that goes past it is abandoned.

    Returns:
      The path of the verified file.

    Raises:
      ChecksumError: at least one mirror delivered the file but none with the expected
        checksum; the message names the file, each URL, the expected and the actual digests.
      DownloadError: no mirror delivered the file (errors, the deadline, the size cap); the
        message lists each URL and what went wrong.
      ValueError: `filename` is not a plain file name, `checksum` is malformed, or
        `timeout`, `deadline` or `max_bytes` is not positive.
    """
    if filename in ("", ".", "..") or Path(filename).name != filename:
        raise ValueError(f"filename {filename!r} must be a plain file name.")
    expected = _expected_digest(filename, checksum)
    _positive("timeout", timeout)
    _positive("deadline", deadline)
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
        raise ValueError(f"`max_bytes` must be an integer >= 1, got {max_bytes!r}.")
    end = time.monotonic() + deadline
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    with _locked_cache(cache, end, deadline):
        for leftover in cache.glob(".*.part"):  # no live download's: we hold the lock
            with contextlib.suppress(OSError):
                leftover.unlink()
        return _fetch_locked(
            filename, urls, checksum.algorithm, expected, cache, timeout, end, deadline, max_bytes
        )


def _fetch_locked(
    filename: str,
    urls: Sequence[str],
    algorithm: str,
    expected: str,
    cache: Path,
    timeout: float,
    end: float,
    deadline: float,
    max_bytes: int,
) -> Path:
    target = cache / filename
    if target.exists():
        if file_digest(target, algorithm) == expected:
            return target
        target.unlink()  # stale or corrupt: never parse it

    failures: list[str] = []
    mismatched = False
    for base in urls:
        url = base if base.endswith("/") else base + "/"
        url += filename
        remaining = end - time.monotonic()
        if remaining <= 0:
            failures.append(f"{url}: not tried, the {deadline:g} s deadline had passed")
            continue
        tmp: Path | None = None
        try:
            with tempfile.NamedTemporaryFile(
                dir=cache, prefix=f".{filename}.", suffix=".part", delete=False
            ) as out:
                tmp = Path(out.name)
                actual = _download(url, out, algorithm, min(timeout, remaining), end, max_bytes)
            if actual == expected:
                os.replace(tmp, target)
                return target
            mismatched = True
            failures.append(f"{url}: {algorithm} {actual}")
        # URLError, timeouts and resets are OSErrors; a garbled response is an HTTPException;
        # an unknown URL type is a URLError, a malformed URL a ValueError.
        except (OSError, http.client.HTTPException, ValueError) as error:
            failures.append(f"{url}: {str(error) or type(error).__name__}")
        finally:
            if tmp is not None:
                tmp.unlink(missing_ok=True)  # after os.replace there is nothing to remove
    attempts = "; ".join(failures) if failures else "no URLs given"
    if mismatched:
        raise ChecksumError(
            f"{filename}: expected {algorithm} {expected}, but the mirrors gave: {attempts}."
        )
    raise DownloadError(f"could not download {filename}: {attempts}.")


# --- Datasets. -------------------------------------------------------------------------------


def default_cache_dir(name: str) -> Path:
    """The download cache of dataset `name`.

    One directory per dataset because MNIST and Fashion-MNIST use the same file names.

    Args:
      name: the dataset's name.

    Returns:
      `$JAXCONV_DATA/<name>` if `JAXCONV_DATA` is set, else `~/.cache/jaxconv/<name>`.
    """
    root = os.environ.get("JAXCONV_DATA")
    return Path(root) / name if root else Path.home() / ".cache" / "jaxconv" / name


def _local_file(directory: Path, filename: str) -> Path | None:
    """`filename` in `directory`, accepting it with or without its `.gz`."""
    for candidate in (filename, filename.removesuffix(".gz")):
        if (directory / candidate).is_file():
            return directory / candidate
    return None


def _load_split(
    images_path: Path, labels_path: Path, count: int | None, image_shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """`load_idx_pair`, then the split's image count and size; images as float32 NCHW."""
    images, labels = load_idx_pair(images_path, labels_path)
    if images.shape[1:] != tuple(image_shape) or (count is not None and len(images) != count):
        want = "×".join(map(str, image_shape))
        raise IdxFormatError(
            f"{images_path}: {len(images)} images of {'×'.join(map(str, images.shape[1:]))}, "
            f"expected {count if count is not None else 'N'} of {want}."
        )
    scaled = images.astype(np.float32)[:, None]
    scaled /= 255.0
    return scaled, labels


def load_idx_dataset(
    name: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    urls: Sequence[str] | None = None,
    spec: IdxDatasetSpec | None = None,
) -> Dataset:
    """MNIST or Fashion-MNIST as a `Dataset`.

    A given `data_dir` is the only place read: it must hold all four files (each as `X.gz`
    or un-gzipped `X`), or the call fails naming the missing ones; nothing is downloaded.
    Without it: the spec's system directories (Debian's `/usr/share/datasets/fashion-mnist`
    for Fashion-MNIST), each used only if it holds all four files, then the cache,
    downloading into it whatever it lacks. Files from a directory are validated by their
    IDX headers and counts (60,000 train and 10,000 test images of 28×28), not by checksum:
    Debian recompresses its copies. Files in the cache are verified by their published
    checksums before anything parses them.

    Args:
      name: "mnist" or "fashion-mnist".
      data_dir: a directory holding the four IDX files.
      cache_dir: the download cache; default `default_cache_dir(name)`.
      urls: base URLs overriding the spec's mirrors, tried in order.
      spec: overrides the registry entry `IDX_DATASETS[name]` (files, checksums, counts);
        tests use it to serve tiny files from a local server.

    Returns:
      A `Dataset` of float32 (N, 1, 28, 28) images in [0, 1] and int32 labels, 10 classes.

    Raises:
      ValueError: unknown `name`.
      DataDirError: `data_dir` is not a directory, or lacks some of the four files.
      IdxFormatError: a file is malformed, or a split has the wrong count or image size.
      ChecksumError: a download did not match its published checksum.
      DownloadError: no mirror delivered a file.
    """
    if name not in IDX_DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(IDX_DATASETS)}.")
    spec = spec or IDX_DATASETS[name]
    parts = (spec.train_images, spec.train_labels, spec.test_images, spec.test_labels)
    paths: list[Path] | None = None
    if data_dir is not None:
        directory = Path(data_dir)
        if not directory.is_dir():
            raise DataDirError(f"data_dir {directory} is not a directory.")
        found = [_local_file(directory, part.filename) for part in parts]
        missing = [part.filename for part, path in zip(parts, found) if path is None]
        if missing:
            names = ", ".join(f"{m} (or {m.removesuffix('.gz')})" for m in missing)
            raise DataDirError(
                f"data_dir {directory} lacks {names}; it must hold all four {name} files."
            )
        paths = cast(list[Path], found)  # none is missing: checked above
    else:
        for directory in spec.local_dirs:
            found = [_local_file(directory, part.filename) for part in parts]
            if all(found):
                paths = cast(list[Path], found)
                break
    if paths is None:
        cache = Path(cache_dir) if cache_dir is not None else default_cache_dir(name)
        mirrors = tuple(urls) if urls is not None else spec.mirrors
        paths = [
            fetch_file(part.filename, urls=mirrors, checksum=part.checksum, cache_dir=cache)
            for part in parts
        ]
    x_train, y_train = _load_split(paths[0], paths[1], spec.train_count, spec.image_shape)
    x_test, y_test = _load_split(paths[2], paths[3], spec.test_count, spec.image_shape)
    return Dataset(x_train, y_train, x_test, y_test, num_classes=10, name=name)


def load_digits_dataset(seed: int = 0, test_fraction: float = 0.2) -> Dataset:
    """scikit-learn's 1,797 8×8 handwritten digits, split stratified and seeded.

    Args:
      seed: `random_state` of the split; the same seed gives the same split.
      test_fraction: share of the images held out for testing, in (0, 1).

    Returns:
      A `Dataset` of float32 (N, 1, 8, 8) images in [0, 1] (pixel values 0..16 divided by
      16) and int32 labels; each class's share of the test split matches its share overall.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images.astype(np.float32) / 16.0)[:, None]
    labels = digits.target.astype(np.int32)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=test_fraction, stratify=labels, random_state=seed
    )
    return Dataset(x_train, y_train, x_test, y_test, num_classes=10, name="digits")


def load_dataset(
    name: str, *, seed: int = 0, data_dir: str | os.PathLike[str] | None = None
) -> Dataset:
    """The demo's datasets by name.

    Args:
      name: "digits", "mnist" or "fashion-mnist".
      seed: seed of the digits split (the IDX datasets come split).
      data_dir: a directory holding the IDX files, then the only place read; see
        `load_idx_dataset`. Not for "digits".

    Returns:
      The `Dataset`.

    Raises:
      ValueError: `data_dir` given for "digits"; see also `load_idx_dataset`.
    """
    if name == "digits":
        if data_dir is not None:
            raise ValueError("data_dir is for the IDX datasets (mnist, fashion-mnist), not digits.")
        return load_digits_dataset(seed)
    return load_idx_dataset(name, data_dir=data_dir)
