"""Fixtures shared by the whole test suite. Append new fixtures below; keep each one small and fast."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from sfc_deploy.data.synth import write_counter_video


@pytest.fixture
def make_video(tmp_path: Path) -> Callable[..., Path]:
    """Factory writing a short real video whose frames encode their own index.

    ``make_video("clip.mp4", frames=40, size=(48, 64), fps=25, gop=None, codec=None) -> Path``;
    a relative path lands in the test's ``tmp_path``, the suffix picks the container
    (.mp4/.mkv/.avi/.webm). Decode it and call :func:`sfc_deploy.data.synth.read_counter` to get
    the index of every returned frame. Outside fixtures, use ``write_counter_video`` directly.
    """

    def _make(
        path: str | Path = "clip.mp4",
        frames: int = 40,
        size: tuple[int, int] = (48, 64),
        fps: int = 25,
        *,
        gop: int | None = None,
        codec: str | None = None,
    ) -> Path:
        path = Path(path)
        path = path if path.is_absolute() else tmp_path / path
        return write_counter_video(path, frames, size, fps, gop=gop, codec=codec)

    return _make
