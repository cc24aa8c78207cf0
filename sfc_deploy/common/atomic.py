"""One way to write an output: to a temporary sibling, then renamed into place.

Readers see the old file or the new one, never half of one; a crash, an exception or a signal
leaves no partial output behind (the temporary is removed); names come from ``mkstemp``/``mkdtemp``,
so two processes writing the same path never share a temporary. Finished outputs get the umask's
permissions like any other file (``mkstemp``'s 0600 would hide them from other users and services).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from sfc_deploy.common.outputs import output_lock


def current_umask() -> int:
    """The process umask (read by setting and restoring it: there is no getter)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | Path, *, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on failure it is removed.

    ``suffix`` matters to writers that pick a format from the file name (``.png``, ``.onnx``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if tmp.is_file():
            tmp.chmod(0o666 & ~current_umask())
        os.replace(tmp, path)
    finally:
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


def atomic_write(path: str | Path, write: Callable[[Path], object], *, suffix: str = ".tmp") -> Path:
    """``write(tmp)`` then rename ``tmp`` to ``path``; returns ``path``."""
    with atomic_path(path, suffix=suffix) as tmp:
        write(tmp)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write a text file (UTF-8) atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write a binary file atomically."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


@contextlib.contextmanager
def atomic_dir(path: str | Path, *, replace: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary folder beside ``path``; on success it becomes ``path``.

    With ``replace`` an existing ``path`` (a folder) is swapped out only once the new one is
    complete, and removed afterwards; without it an existing ``path`` is an error at the rename
    (``FileExistsError``). The destination is locked while it is written (:func:`output_lock`), so
    a second writer fails at once, ``replace`` or not: two writers never both succeed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with output_lock(path):
        work = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.partial-"))
        try:
            yield work
            _normal_permissions(work)
            _move_into_place(work, path, replace=replace)
        finally:
            if work.exists():
                shutil.rmtree(work, ignore_errors=True)


def _normal_permissions(work: Path) -> None:
    mask = current_umask()
    work.chmod(0o777 & ~mask)
    for entry in work.rglob("*"):
        if entry.is_file() and not entry.is_symlink():
            entry.chmod(0o666 & ~mask)
        elif entry.is_dir() and not entry.is_symlink():
            entry.chmod(0o777 & ~mask)


def _move_into_place(work: Path, path: Path, *, replace: bool) -> None:
    """Rename ``work`` to ``path``; an old folder is removed only after the new one is in place."""
    if not os.path.lexists(path):
        try:
            os.rename(work, path)  # fails on a non-empty folder or a file that appeared meanwhile
        except OSError as exc:
            raise FileExistsError(f"{path} already exists") from exc
        return
    if not replace:  # rename would silently swallow an empty folder: refuse any existing path
        raise FileExistsError(f"{path} already exists")
    backup = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.old-"))
    try:
        os.rename(path, backup / "old")
    except BaseException:
        backup.rmdir()
        raise
    try:
        os.rename(work, path)
    except BaseException:
        os.rename(backup / "old", path)  # if this fails too, the old folder stays in the backup: never lost
        backup.rmdir()
        raise
    shutil.rmtree(backup, ignore_errors=True)


@contextlib.contextmanager
def terminate_as_exit() -> Iterator[None]:
    """Turn SIGTERM into ``SystemExit`` for the block, so ``finally`` clauses (the temporary of
    :func:`atomic_path`, the folder of :func:`atomic_dir`) run: the default action kills the process
    on the spot and leaves the partial output behind. Only the main thread can install handlers;
    elsewhere this is a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum, _frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
