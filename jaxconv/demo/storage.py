"""Files of a demo run: atomic writes, the run directory's lock, leftovers of killed runs.

Every file a run writes goes through `atomic_write`, so each is either its old or its new
version, whole, whatever moment the process dies at; a kill leaves at most a temporary file
`.<name>.<random>.tmp` beside it, which `remove_leftovers` deletes when the next run starts.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path


class RunDirBusyError(RuntimeError):
    """Another process holds the run directory's lock."""


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike[str], payload: bytes) -> None:
    """Replaces `path` with `payload` in one step: a temporary file in the same directory,
    written and fsynced, then `os.replace`d over `path`, then the directory fsynced.

    The temporary file is created with mode 0o666 less the umask, as `open` creates files,
    so everything a run writes has the same mode.

    Args:
      path: the file to write; its directory must exist.
      payload: the file's new contents.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # after os.replace there is nothing to remove
    _fsync_dir(path.parent)  # the rename itself survives a power cut


def remove_leftovers(directory: str | os.PathLike[str], names: Iterable[str]) -> list[Path]:
    """Deletes the temporary files that interrupted writes of `names` left in `directory`
    (`.<name>.*`, which also covers the `tempfile.mkstemp` names of earlier versions).

    Call it only while holding the directory's lock, so no live write is removed.

    Returns:
      The files deleted.
    """
    removed = []
    for name in names:
        for leftover in Path(directory).glob(f".{name}.*"):
            if leftover.is_file():
                leftover.unlink(missing_ok=True)
                removed.append(leftover)
    return removed


@contextlib.contextmanager
def locked_dir(directory: str | os.PathLike[str], *, create: bool = True) -> Iterator[Path]:
    """Holds an exclusive `flock` on `directory` itself (no lock file to leave behind).

    Args:
      directory: the directory; created (with its parents) if missing and `create`.
      create: whether to create it. A directory this call created is removed again if the
        block raises while it is still empty, so a failed start leaves nothing behind.

    Raises:
      RunDirBusyError: another process (or another open of it in this one) holds the lock.
    """
    directory = Path(directory)
    created = create and not directory.exists()
    if create:
        directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunDirBusyError(
                f"{directory} is in use by another run (it holds the directory's lock); "
                "wait for that run to end, or choose another --out."
            ) from None
        try:
            yield directory
        except BaseException:
            if created:
                with contextlib.suppress(OSError):
                    directory.rmdir()  # only succeeds while empty
            raise
    finally:
        os.close(fd)
