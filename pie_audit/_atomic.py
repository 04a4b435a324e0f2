"""Atomic writes: a reader sees the old content or the new, never a half-written file or directory.

Everything is written under a hidden temporary sibling (:data:`TMP_PREFIX`), flushed to disk, and
renamed into place; the parent directory is then flushed too, so that after a power cut a name that
exists points at complete content. This module knows nothing of what is written: callers say which
entries an existing directory may hold before it is replaced.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .errors import OutputError

__all__ = [
    "TMP_PREFIX",
    "atomic_directory",
    "atomic_file",
    "replace_directory",
    "write_json",
    "remove_stale_temporaries",
    "check_file_target",
]

#: Prefix of every temporary entry; readers of a directory skip hidden entries, so an interrupted
#: write is never mistaken for a finished one.
TMP_PREFIX = ".tmp-"
CANNOT_WRITE = "{path}: cannot write there ({reason})"
NOT_A_DIRECTORY = "{path}: not a directory"
ALREADY_EXISTS = "{path}: already exists; refusing to overwrite it"
NOT_REPLACEABLE = (
    "{path}: exists and holds {entry!r}, which is not part of a pie-audit {what}; refusing to replace it"
)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_path(path: Path) -> None:
    """Flush a file's or a directory's content (its entries) to disk."""
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if path.is_dir() else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for directory, _, files in os.walk(root):
        for name in files:
            _fsync_path(Path(directory) / name)
        _fsync_path(Path(directory))


def _temporary_directory(final: Path) -> Path:
    """A fresh hidden sibling of ``final`` with the permissions of an ordinary new directory."""
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{final.name}-", dir=final.parent))
        # mkdtemp creates 0700; the finished directory gets the usual permissions.
        os.chmod(tmp, 0o777 & ~_umask())
    except OSError as e:
        raise OutputError(CANNOT_WRITE.format(path=final.parent, reason=e.strerror)) from e
    return tmp


@contextlib.contextmanager
def atomic_directory(final: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling directory that is renamed to ``final`` on success.

    An interrupted write leaves only a hidden ``.tmp-*`` directory, never a directory at ``final``
    that looks finished.

    Parameters
    ----------
    final : str or Path
        Where the directory ends up; must not exist yet.

    Raises
    ------
    OutputError
        ``final`` exists, or its parent cannot be written.
    """
    final = Path(final)
    if final.exists():
        raise OutputError(ALREADY_EXISTS.format(path=final))
    tmp = _temporary_directory(final)
    try:
        yield tmp
        _fsync_tree(tmp)
        os.rename(tmp, final)
        _fsync_path(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def atomic_file(final: str | Path, mode: str = "w") -> Iterator[Any]:
    """Open a temporary sibling of ``final`` for writing; it replaces ``final`` on success.

    Parameters
    ----------
    final : str or Path
    mode : {"w", "wb"}
        Text (UTF-8) or binary.

    Raises
    ------
    OutputError
        The parent cannot be written, or ``final`` is a directory.
    """
    final = Path(final)
    if final.is_dir():
        raise OutputError(f"{final}: is a directory; expected a file path")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{final.name}-", dir=final.parent)
        os.chmod(name, 0o666 & ~_umask())
    except OSError as e:
        raise OutputError(CANNOT_WRITE.format(path=final.parent, reason=e.strerror)) from e
    try:
        encoding = None if "b" in mode else "utf-8"
        with os.fdopen(fd, mode, encoding=encoding) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(name, final)
        _fsync_path(final.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)
        raise


@contextlib.contextmanager
def replace_directory(
    final: str | Path, *, accept: Callable[[Path], bool], what: str
) -> Iterator[Path]:
    """Yield a temporary sibling directory that replaces ``final`` on success.

    ``final`` may be missing, or hold only entries for which ``accept`` is true (a previous
    output of the same kind); anything else raises :class:`OutputError` before anything is
    written, so a user's own files are never replaced. Readers see the old directory or the new
    one, never a mix; on error the old one is left untouched.

    Parameters
    ----------
    final : str or Path
    accept : callable(Path) -> bool
        Whether an entry of an existing ``final`` may be replaced.
    what : str
        What the directory is ("report", "sweep"), for the error message.
    """
    final = Path(final)
    if final.exists():
        if not final.is_dir():
            raise OutputError(NOT_A_DIRECTORY.format(path=final))
        for entry in final.iterdir():
            if not accept(entry):
                raise OutputError(NOT_REPLACEABLE.format(path=final, entry=entry.name, what=what))
    tmp = _temporary_directory(final)
    try:
        yield tmp
        _fsync_tree(tmp)
        if not final.exists():
            os.rename(tmp, final)
            _fsync_path(final.parent)
            return
        # POSIX has no portable directory swap: park the old directory beside it, move the new
        # one in, and put the old one back if that fails.
        old = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{final.name}-old-", dir=final.parent))
        os.rename(final, old / final.name)
        try:
            os.rename(tmp, final)
        except BaseException:
            os.rename(old / final.name, final)
            raise
        finally:
            shutil.rmtree(old, ignore_errors=True)
        _fsync_path(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_file_target(path: str | Path) -> None:
    """Refuse, before anything is written, a file path that :func:`atomic_file` could not write.

    Raises
    ------
    OutputError
        ``path`` is a directory, or the nearest existing directory above it is not writable.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path}: is a directory; expected a file path")
    parent = next((p for p in path.absolute().parents if p.exists()), None)
    if parent is None or not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(CANNOT_WRITE.format(path=path.parent, reason=f"{parent} is not a writable directory"))


def write_json(path: str | Path, obj: Mapping[str, Any]) -> None:
    """Write ``obj`` as indented JSON, atomically; numpy scalars and arrays and paths are converted."""
    with atomic_file(Path(path)) as fh:
        json.dump(obj, fh, indent=2, sort_keys=False, default=_json_default)
        fh.write("\n")


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def remove_stale_temporaries(directory: str | Path) -> int:
    """Delete the ``.tmp-*`` entries of ``directory`` left by writes that were killed.

    Returns
    -------
    int
        How many entries were removed.
    """
    removed = 0
    for stale in Path(directory).glob(f"{TMP_PREFIX}*"):
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
        removed += 1
    return removed
