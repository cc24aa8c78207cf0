"""Decode ahead of the model, in order, with bounded memory: the one prefetcher of every command.

Decoding the next videos while the model serves the current one hides the decode time behind the
model's (on a CPU that runs the model on all cores, only partly: both want the same cores).
:class:`Prefetcher` runs ``fn(item)`` on a pool of ``workers`` and hands the results back in input
order, never more than ``depth`` items ahead of the consumer: the queue holds at most ``depth``
items (waiting, being made or made), and a new one is submitted only as the consumer takes one, so
while it works on an item at most ``depth`` others exist, whatever the length of the list. Memory is
bounded by the depth, not the dataset.

A failure of ``fn`` is that item's :attr:`Prefetched.error`; the stream carries on with the next
item (a batch job records the error for that video and continues; a command that must stop raises
it with :meth:`Prefetched.result`). Leaving the ``with`` block (or the loop), normally or by an
exception in the consumer, cancels what has not started and waits for what is running, so no
worker outlives the prefetcher.

Threads are the default (``kind="thread"``): PyAV decodes and swscale converts with the GIL
released, torch's resize and ONNX Runtime's ``run`` release it too, and a thread hands its tensor
over without a copy. ``kind="process"`` runs ``fn`` in spawned processes (``fn`` and the items must
pickle, and each result is copied back through a pipe); ``benchmarks/e2e`` measures both.
"""

from __future__ import annotations

import multiprocessing
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

from sfc_deploy.errors import ConfigError

T = TypeVar("T")
R = TypeVar("R")

#: Decoding workers and items decoded ahead by default (``--workers`` / ``--prefetch``).
DEFAULT_WORKERS = 2
DEFAULT_DEPTH = 4
KINDS = ("thread", "process")
_END = object()


@dataclass(frozen=True)
class Prefetched(Generic[T, R]):
    """One item's outcome.

    Attributes:
        item: what was passed to ``fn``.
        value: ``fn(item)``, or None when it raised.
        error: the exception ``fn`` raised, or None.
        seconds: wall seconds ``fn`` took on its worker (0.0 when it raised).
    """

    item: T
    value: R | None
    error: BaseException | None
    seconds: float

    def result(self) -> R:
        """The value, or the item's exception raised here."""
        if self.error is not None:
            raise self.error
        return self.value  # type: ignore[return-value]


def _timed(fn: Callable[[T], R], item: T) -> tuple[R, float]:
    t0 = time.perf_counter()
    value = fn(item)
    return value, time.perf_counter() - t0


def check_prefetch(workers: int, depth: int, kind: str = "thread") -> None:
    """Refuse worker counts and depths below 1 and unknown kinds, naming the CLI options."""
    for option, value in (("--workers", workers), ("--prefetch", depth)):
        if value < 1:
            raise ConfigError(f"{option} must be >= 1, got {value}")
    if kind not in KINDS:
        raise ConfigError(f"unknown prefetch kind {kind!r}; expected one of {', '.join(KINDS)}")


class Prefetcher(Generic[T, R]):
    """``fn`` over ``items`` on ``workers`` threads (or processes), at most ``depth`` ahead, in order.

    Use it as a context manager and iterate it once::

        with Prefetcher(decode, paths, depth=4, workers=2) as stream:
            for got in stream:
                if got.error is not None: ...     # that item failed; the others go on
                else: model(got.value)
    """

    def __init__(self, fn: Callable[[T], R], items: Iterable[T], *, depth: int = DEFAULT_DEPTH,
                 workers: int = DEFAULT_WORKERS, kind: str = "thread", name: str = "sfc-prefetch") -> None:
        check_prefetch(workers, depth, kind)
        self._fn, self._items = fn, iter(items)
        self.depth, self.workers, self.kind, self.name = depth, workers, kind, name
        self._pool: Executor | None = None
        self._pending: deque[tuple[T, Future]] = deque()

    def _executor(self) -> Executor:
        if self.kind == "process":  # spawn: forking a process that runs ONNX Runtime / torch threads can deadlock
            return ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
        return ThreadPoolExecutor(self.workers, thread_name_prefix=self.name)

    def _fill(self) -> None:
        while len(self._pending) < self.depth:
            item = next(self._items, _END)
            if item is _END:
                return
            self._pending.append((item, self._pool.submit(_timed, self._fn, item)))  # type: ignore[union-attr]

    def __iter__(self) -> Iterator[Prefetched[T, R]]:
        if self._pool is not None:
            raise RuntimeError("a Prefetcher is iterated once")
        self._pool = self._executor()
        try:
            self._fill()
            while self._pending:
                item, future = self._pending.popleft()
                self._fill()  # the workers start on the next item while this one is waited for and consumed
                try:
                    value, seconds = future.result()
                except Exception as exc:  # noqa: BLE001 - the item's error, handed to the consumer
                    yield Prefetched(item, None, exc, 0.0)
                else:
                    yield Prefetched(item, value, None, seconds)
        finally:
            self.close()

    def close(self) -> None:
        """Cancel what has not started, wait for what is running (idempotent)."""
        for _, future in self._pending:
            future.cancel()
        self._pending.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Prefetcher[T, R]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

__all__ = ["DEFAULT_DEPTH", "DEFAULT_WORKERS", "KINDS", "Prefetched", "Prefetcher", "check_prefetch"]
