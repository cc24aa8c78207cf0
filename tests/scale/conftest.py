"""Fixtures of the scale tests (classify engines, serve)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sfc_deploy.data.synth import write_counter_video


@pytest.fixture(scope="session")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four good videos of different lengths and sizes and one corrupt file, in a folder. Read-only."""
    root = tmp_path_factory.mktemp("videos")
    for i, frames in enumerate((40, 64, 90, 24)):
        write_counter_video(root / f"v{i}.mp4", frames, (32, 40 + 8 * (i % 2)))
    (root / "broken.mp4").write_bytes(b"\x00\x01not a video" * 50)
    return root
