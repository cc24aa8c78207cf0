"""The one prefetcher: input order, the depth bound (by instrumentation, never by timing), an error per
item, and a clean shutdown when the consumer fails.

Waits in these tests only ever end a test that would otherwise hang (generous timeouts); no assertion
depends on how long anything took.
"""

from __future__ import annotations

import math
import threading

import pytest

from sfc_deploy.data.prefetch import Prefetcher
from sfc_deploy.errors import ConfigError, VideoError

WAIT = 30.0  # seconds before a wait that should succeed at once is called a hang


def _square(i: int) -> int:
    if i == 3:
        raise VideoError(f"video {i}: cannot be decoded")
    return i * i


def _alive(prefix: str) -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(prefix)]


def test_results_come_in_input_order_even_when_later_items_finish_first() -> None:
    second_done = threading.Event()

    def fn(i: int) -> int:
        if i == 0:  # the first item finishes only after the second has
            assert second_done.wait(WAIT)
        if i == 1:
            second_done.set()
        return i * 10

    with Prefetcher(fn, range(8), depth=3, workers=3) as stream:
        got = [(g.item, g.value, g.error) for g in stream]
    assert got == [(i, i * 10, None) for i in range(8)]


@pytest.mark.parametrize(("depth", "workers"), [(1, 1), (3, 2), (4, 4)])
def test_the_queue_never_holds_more_than_depth_items(depth: int, workers: int) -> None:
    """Counted, not timed: while the consumer holds an item, fn has been called on exactly ``depth`` items
    it has not received (fewer at the end of the list): it looks ahead that far and no further. Between
    two items, the one being handed over adds one (checked in fn)."""
    n = 12
    lock = threading.Condition()
    state = {"received": 0, "started": set(), "violations": []}

    def fn(i: int) -> int:
        with lock:
            state["started"].add(i)
            if len(state["started"]) - state["received"] > depth + 1:
                state["violations"].append((i, state["received"]))
            lock.notify_all()
        return i

    with Prefetcher(fn, range(n), depth=depth, workers=workers, name="sfc-test-bound") as stream:
        for got in stream:
            with lock:
                state["received"] += 1
                last = min(got.item + depth, n - 1)
                assert lock.wait_for(lambda: set(range(last + 1)) <= state["started"], timeout=WAIT), "no look-ahead"
                assert len(state["started"]) - state["received"] == min(depth, n - state["received"])
    assert state["violations"] == []
    assert state["started"] == set(range(n))


def test_a_failing_item_is_that_items_error_and_the_stream_carries_on() -> None:
    with Prefetcher(_square, range(6), depth=2, workers=2) as stream:
        got = list(stream)
    assert [g.item for g in got] == list(range(6))
    assert [g.value for g in got if g.item != 3] == [0, 1, 4, 16, 25]
    bad = got[3]
    assert isinstance(bad.error, VideoError) and bad.value is None and "video 3" in str(bad.error)
    with pytest.raises(VideoError, match="video 3"):
        bad.result()
    assert got[2].result() == 4 and got[2].seconds >= 0.0


@pytest.mark.slow  # spawning the worker costs seconds (it imports the test runner's main module)
def test_processes_give_the_same_stream() -> None:
    # fn and items must pickle for a process pool: a library function, not one defined in a test module
    with Prefetcher(math.sqrt, [4, 9, -1, 16], depth=2, workers=1, kind="process") as stream:
        got = list(stream)
    assert [g.value for g in got] == [2.0, 3.0, None, 4.0]
    assert isinstance(got[2].error, ValueError)


def test_an_exception_in_the_consumer_stops_the_workers_and_propagates() -> None:
    depth, started = 3, []
    release = threading.Event()

    def fn(i: int) -> int:
        started.append(i)
        if i >= 2:  # items being decoded while the consumer fails: shutdown must wait for them
            release.wait(WAIT)
        return i

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with Prefetcher(fn, range(100), depth=depth, workers=2, name="sfc-test-boom") as stream:
            for got in stream:
                if got.item == 1:
                    release.set()
                    raise Boom
    assert _alive("sfc-test-boom") == []  # every worker joined
    assert len(started) <= 2 + depth  # the items received (0, 1) plus at most depth ahead, not the 100


def test_leaving_a_plain_loop_early_shuts_the_workers_down() -> None:
    for got in Prefetcher(lambda i: i, range(50), depth=2, workers=2, name="sfc-test-break"):
        if got.item == 1:
            break
    assert _alive("sfc-test-break") == []


@pytest.mark.parametrize(("options", "message"), [
    ({"depth": 0}, "--prefetch must be >= 1"), ({"workers": 0}, "--workers must be >= 1"),
    ({"kind": "fiber"}, "unknown prefetch kind 'fiber'"),
])
def test_bad_settings_are_one_line_errors(options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Prefetcher(lambda i: i, [1], **options)
