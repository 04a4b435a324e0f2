"""Atomic writes: a reader sees the old content or the new, never a half-written file or directory.

Everything is written under a hidden temporary sibling (:data:`TMP_PREFIX`), flushed to disk, and
renamed into place; the parent directory is then flushed too, so that after a power cut a name that
exists points at complete content. This module knows nothing of what is written: callers say which
entries an existing directory may hold before it is replaced.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
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
    "check_output_path",
    "check_unlocked",
    "resolve_output",
    "exclusive_lock",
]

#: Prefix of every temporary entry; readers of a directory skip hidden entries, so an interrupted
#: write is never mistaken for a finished one.
TMP_PREFIX = ".tmp-"
CANNOT_WRITE = "{path}: cannot write there ({reason})"
NOT_A_DIRECTORY = "{path}: not a directory"
ALREADY_EXISTS = "{path}: already exists; refusing to overwrite it"
LOCKED = (
    "{path}: another pie-audit process is writing here (lock {lock} is held); wait for it to "
    "finish, or choose another output"
)
NOT_REPLACEABLE = (
    "{path}: exists and holds {entry!r}, which is not part of a pie-audit {what}; refusing to replace it"
)
#: An output path naming something a rename would destroy (a device, a FIFO, a socket).
NOT_A_FILE = "{path}: is {kind}, not a regular file; refusing to write over it (give a file path)"
#: An output path that is a symbolic link: a rename replaces the link, not what it points to.
IS_A_LINK = (
    "{path}: is a symbolic link; writing there would replace the link, not what it points to "
    "(give the path it points to, or another one)"
)
IS_A_DIRECTORY = "{path}: is a directory; expected a file path"
#: A path that cannot be followed to its end (a loop of symbolic links, a component that is a file).
CANNOT_RESOLVE = "{path}: cannot be followed ({reason})"
OUTPUT_IN_INPUT = "{path}: lies inside the input {input}; refusing to write into an input (choose a path outside it)"
OUTPUT_IN_OUTPUT = (
    "{path}: lies inside {output}, which this command replaces whole, so the same command run "
    "again would refuse it; choose a path outside it"
)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _kind(mode: int) -> str | None:
    """What a non-regular file is, in words; ``None`` for a regular file."""
    if stat.S_ISREG(mode):
        return None
    for test, kind in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISLNK, "a symbolic link"),
    ):
        if test(mode):
            return kind
    return "not a regular file"


def resolve_output(path: str | Path) -> Path:
    """``path`` made absolute with every symbolic link followed, as far as it exists.

    Raises
    ------
    OutputError
        :data:`CANNOT_RESOLVE`: a loop of symbolic links, or a component that cannot be entered.
    """
    path = Path(path)
    try:
        return path.resolve()
    except (OSError, RuntimeError) as e:  # Python 3.11 says RuntimeError for a loop, 3.13 OSError
        loop = isinstance(e, RuntimeError) or getattr(e, "errno", None) == errno.ELOOP
        reason = "a loop of symbolic links" if loop else (e.strerror or str(e))
        raise OutputError(CANNOT_RESOLVE.format(path=path, reason=reason)) from e


def _lstat(path: Path) -> os.stat_result | None:
    """``path``'s own status (a link's, not its target's); ``None`` when nothing is there."""
    try:
        return os.lstat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:  # a loop on the way
            raise OutputError(CANNOT_RESOLVE.format(path=path, reason="a loop of symbolic links")) from e
        return None  # missing, or a parent that is a file or not searchable: the write will say


def _check_replaceable(path: Path) -> None:
    """Refuse a ``path`` that a rename must not replace: anything there but a regular file."""
    status = _lstat(path)
    if status is None:
        return
    if stat.S_ISLNK(status.st_mode):
        raise OutputError(IS_A_LINK.format(path=path))
    if stat.S_ISDIR(status.st_mode):
        raise OutputError(IS_A_DIRECTORY.format(path=path))
    kind = _kind(status.st_mode)
    if kind is not None:
        raise OutputError(NOT_A_FILE.format(path=path, kind=kind))


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
    # lexists: a rename would replace a dangling symbolic link as readily as a directory.
    if os.path.lexists(final):
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
        The parent cannot be written, or ``final`` is something a rename must not replace: a
        directory, a symbolic link, a device, a FIFO or a socket (:func:`check_output_path`).
    """
    final = Path(final)
    _check_replaceable(final)
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
    if final.is_symlink():
        # Renaming over it would replace the link (and a loop cannot be entered at all).
        raise OutputError(IS_A_LINK.format(path=final))
    if final.exists():
        if not final.is_dir():
            raise OutputError(NOT_A_DIRECTORY.format(path=final))
        for entry in final.iterdir():
            if not accept(entry):
                raise OutputError(NOT_REPLACEABLE.format(path=final, entry=entry.name, what=what))
    # Left by an earlier write of this directory that was killed: never a finished output.
    for stale in final.parent.glob(f"{TMP_PREFIX}{final.name}-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = _temporary_directory(final)
    try:
        yield tmp
        _fsync_tree(tmp)
        if not final.exists():
            os.rename(tmp, final)
            _fsync_path(final.parent)
            return
        if _exchange(tmp, final):
            # One atomic step: ``final`` always names a complete directory, the old or the new.
            _fsync_path(final.parent)
            shutil.rmtree(tmp, ignore_errors=True)
            return
        # No atomic swap here: park the old directory beside it, move the new one in, and put
        # the old one back if that fails. A kill between the two renames leaves ``final``
        # missing for an instant, with the old directory under a hidden name.
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

    :func:`check_output_path` without inputs or outputs to keep apart from.
    """
    check_output_path(path)


def check_output_path(
    path: str | Path,
    *,
    inputs: Sequence[str | Path] = (),
    outputs: Sequence[str | Path] = (),
    allowed: Sequence[str | Path] = (),
) -> None:
    """Refuse, before anything runs, a file output that would destroy something or break a re-run.

    A file is written by renaming a temporary over its path (:func:`atomic_file`): whatever is
    there is replaced. So ``path`` may be missing or an existing regular file (the user named it:
    replacing it is what was asked), nothing else.

    Parameters
    ----------
    path : str or Path
        The file the command will write (``--junit``).
    inputs : sequence of str or Path
        What the command reads (population directories, files): ``path`` must be none of them
        and lie inside none.
    outputs : sequence of str or Path
        Directories the same command replaces whole (``--out``): ``path`` must not lie inside
        one, or the identical command run again would find a file it did not write there.
    allowed : sequence of str or Path
        Paths inside ``outputs`` the command writes itself (``OUT/junit.xml``), and so accepts.

    Raises
    ------
    OutputError
        ``path`` is a directory (:data:`IS_A_DIRECTORY`), a symbolic link (:data:`IS_A_LINK`,
        ``/dev/stdout`` among them), a device, FIFO or socket (:data:`NOT_A_FILE`), cannot be
        followed (:data:`CANNOT_RESOLVE`), lies in an input (:data:`OUTPUT_IN_INPUT`) or in an
        output (:data:`OUTPUT_IN_OUTPUT`), or its nearest existing directory is not writable.
    """
    path = Path(path)
    _check_replaceable(path)
    target = resolve_output(path)
    for given in inputs:
        source = resolve_output(given)
        if target == source or source in target.parents:
            raise OutputError(OUTPUT_IN_INPUT.format(path=path, input=given))
    accepted = {resolve_output(a) for a in allowed}
    for given in outputs:
        output = resolve_output(given)
        if (target == output or output in target.parents) and target not in accepted:
            raise OutputError(OUTPUT_IN_OUTPUT.format(path=path, output=given))
    parent = next((p for p in target.parents if os.path.lexists(p)), None)
    if parent is None or not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(CANNOT_WRITE.format(path=path.parent, reason=f"{parent} is not a writable directory"))


def check_unlocked(target: str | Path) -> None:
    """Refuse now, cheaply, a ``target`` whose :func:`exclusive_lock` another process holds.

    For a writer that takes the lock only when it writes, after slow work: it is told at once,
    not after the work. Nothing is created (a missing lock file is a free lock); the lock is taken
    again when writing, which settles a race.

    Raises
    ------
    OutputError
        :data:`LOCKED`.
    """
    import fcntl

    target = Path(target)
    lock = _lock_path(target)
    try:
        fd = os.open(lock, os.O_RDWR)
    except OSError:
        return  # no lock file (or none we may open): exclusive_lock will say
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            raise OutputError(LOCKED.format(path=target, lock=lock)) from e
    finally:
        os.close(fd)


def _lock_path(target: Path) -> Path:
    return target.parent / f".{target.name}.pie-audit.lock"


@contextlib.contextmanager
def exclusive_lock(target: str | Path, *, wait: bool = False) -> Iterator[Path]:
    """Hold an exclusive lock on ``target`` (a directory written by one process at a time).

    The lock is ``flock`` on a hidden sibling file ``.<name>.pie-audit.lock`` (a sibling, so that replacing
    ``target`` whole does not replace its lock); it is released when the block ends or the
    process dies, so a killed writer never leaves it stuck.

    Parameters
    ----------
    target : str or Path
    wait : bool, default=False
        Block until the lock is free instead of refusing.

    Raises
    ------
    OutputError
        Another process holds the lock and ``wait`` is False, or the lock file cannot be made.
    """
    import fcntl

    target = Path(target)
    lock = _lock_path(target)
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
    except OSError as e:
        raise OutputError(CANNOT_WRITE.format(path=lock.parent, reason=e.strerror)) from e
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError as e:
            raise OutputError(LOCKED.format(path=target, lock=lock)) from e
        yield lock
    finally:
        os.close(fd)  # releases the lock


def _exchange(a: Path, b: Path) -> bool:
    """Swap two directory entries atomically (Linux ``renameat2(RENAME_EXCHANGE)``).

    Returns False where the system or the filesystem cannot, so the caller falls back.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):  # no glibc 2.28+, or no libc to load
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    error = ctypes.get_errno()
    if error in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(error, os.strerror(error), str(b))


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
