"""Output paths checked before any work starts, and an exclusive lock while a folder is written.

Every command that writes calls :func:`check_output_file` or :func:`check_output_dir` on each output
before it decodes, trains or exports anything, so a path that cannot be written fails in one line
at once instead of after minutes of work. :func:`output_lock` makes a second writer to the same
output fail at once, naming the process that holds it, instead of both "succeeding".
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from sfc_deploy.errors import ConfigError


def _existing_ancestor(path: Path) -> Path:
    parent = path.parent if str(path.parent) else Path(".")
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    return parent


def _check_parent(path: Path, option: str) -> None:
    ancestor = _existing_ancestor(path.absolute())
    if not ancestor.is_dir():
        raise ConfigError(f"{option} {path}: {ancestor} is a file, not a folder; choose another {option}")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ConfigError(f"{option} {path}: {ancestor} is not writable; choose another {option}")


def check_output_file(path: str | Path, *, option: str, force: bool = True, suffix: str | None = None) -> Path:
    """A file path a command may write: not a folder, in a writable folder; an existing file only with ``force``."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{option} {path} is a folder; {option} takes a file path")
    if suffix is not None and path.suffix != suffix:
        raise ConfigError(f"{option} must end in {suffix}, got {path.name!r}")
    if path.exists() and not force:
        raise ConfigError(f"{path} already exists; pass --force to overwrite it or choose another {option}")
    _check_parent(path, option)
    return path


def check_output_dir(path: str | Path, *, option: str, force: bool = False, existing_ok: bool = False) -> Path:
    """A folder a command may create (or replace with ``force``, or add to with ``existing_ok``)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{option} {path} is an existing file, not a folder; remove it or choose another {option}")
    if path.is_dir() and not (force or existing_ok):
        raise ConfigError(f"{path} already exists; pass --force to replace it or choose another {option}")
    _check_parent(path, option)
    return path


def lock_path(path: Path) -> Path:
    return path.parent / f".{path.name}.lock"


@contextlib.contextmanager
def output_lock(path: str | Path) -> Iterator[Path]:
    """Hold an exclusive lock on writing ``path`` (a file or folder) for the block.

    The lock is ``flock`` on ``.NAME.lock`` beside the output: the kernel releases it when the holder
    exits however it ends, so a crash never leaves a stale lock; the file is removed on release.
    A second writer fails at once with the holder's pid and command line.
    """
    import fcntl

    path = Path(path)
    lock = lock_path(path)
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "another process"
            raise ConfigError(
                f"{path} is being written by {holder}; wait for it to finish or choose another output"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} ({' '.join(sys.argv[:3])})".encode(), 0)
        try:
            yield path
        finally:
            lock.unlink(missing_ok=True)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextlib.contextmanager
def run_folder(path: str | Path, *, keep_if) -> Iterator[Path]:
    """A folder a long job writes into as it goes (checkpoints per epoch, resumable), locked for the job.

    If the job fails before ``keep_if()`` is true (nothing worth keeping, e.g. no checkpoint yet),
    the folders the job created are removed again: a failed first epoch leaves nothing behind.
    """
    import shutil

    path = Path(path)
    created = None
    probe = path.absolute()
    while not probe.exists():
        created, probe = probe, probe.parent
    with output_lock(path):
        path.mkdir(parents=True, exist_ok=True)
        try:
            yield path
        except BaseException:
            if created is not None and not keep_if():
                shutil.rmtree(created, ignore_errors=True)
            raise
