"""Fixtures shared by the whole test suite. Append new fixtures below; keep each one small and fast."""

from __future__ import annotations

import contextlib
import fcntl
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from sfc_deploy.data.synth import write_counter_video

#: ``make test`` runs the suite on 2 processes (``pytest -n 2 --dist loadfile``, pytest-xdist): each
#: module stays on one worker, so its module fixtures are built once. What modules share beyond their
#: temporary folders is taken in turns through a lock file: a local Ray (:func:`ray_exclusive`), the
#: CMake build folder of csrc/ (tests/csrc/conftest.py).
LOCKS = Path(tempfile.gettempdir())


@contextlib.contextmanager
def exclusive(name: str):
    """Hold the lock file ``sfc-deploy-tests-NAME.lock`` (other pytest processes wait for it)."""
    with (LOCKS / f"sfc-deploy-tests-{name}.lock").open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def exclusive_lock():
    """:func:`exclusive`, for conftests and test modules (this file is not importable under importlib mode)."""
    return exclusive


@pytest.fixture(scope="module")
def ray_exclusive():
    """Held for the whole module by every module that starts a local Ray: its default ports would
    collide with another worker's Ray, so the two take turns."""
    with exclusive("ray"):
        yield


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


@pytest.fixture(scope="session")
def tiny_trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny synthetic dataset and a slow8x8_tiny backbone trained one epoch on it (short side 32).

    Keys: ``data`` (dataset dir), ``train``/``test`` (CSV files), ``backbone`` (the weights, loadable
    with ``checkpoint=``). Session-scoped: training and evaluation tests share it; do not modify it.
    """
    from sfc_deploy.data.datasets import read_csv_list
    from sfc_deploy.data.synth import SynthOptions, write_synth_dataset
    from sfc_deploy.train.backbone import BackboneTrainOptions, train_backbone

    root = tmp_path_factory.mktemp("tiny_trained")
    options = SynthOptions(classes=3, train_per_class=2, test_per_class=1, frames=48, size=(32, 40), seed=5)
    write_synth_dataset(root / "data", options)
    train = root / "data" / "train.csv"
    run = train_backbone(read_csv_list(train), root / "backbone",
                         BackboneTrainOptions(short_side=32, epochs=1, batch_size=6, lr=0.01))
    return {"data": root / "data", "train": train, "test": root / "data" / "test.csv", "backbone": Path(run["weights"])}


# --- export / runtime fixtures (issue 3) -------------------------------------------------------
# The dynamo ONNX exporter costs ~10 s per graph and AOTInductor ~1 min per part on 2 cores, so
# the shared exports are as small as the tests allow: TorchScript (seconds) for everything that
# is runtime-agnostic, ONNX for the SFC part only (its two graphs), AOTInductor in `slow` tests.
SFC_TINY_SIZE = (32, 40)  # HxW of the frames SFC reads in tests
SFC_TINY_RAW_FRAMES = 64  # -> 8 sampled frames at stride 8


def sfc_tiny_model():
    """slow8x8_tiny with 10 classes and 32x32 dense crops, seeded, in eval mode."""
    import dataclasses

    import torch

    from sfc_deploy.models import create_model, get_config

    config = get_config("slow8x8_tiny", num_classes=10)
    config = config.replace(preprocess=dataclasses.replace(config.preprocess, short_side=32, crop=32))
    torch.manual_seed(0)
    return create_model(config, tau=2.0)


def sfc_tiny_export(out: Path, formats: tuple[str, ...], precisions=("fp32",), parts=None, *,
                    sfc_pieces: bool = True) -> Path:
    """Export :func:`sfc_tiny_model` (unverified: the tests check parity themselves). ``sfc_pieces=False``
    leaves SFC's streaming pieces out (AOTInductor compiles them: ~30 s a fast fixture need not pay)."""
    from sfc_deploy.export.exporter import ExportOptions, export_model
    from sfc_deploy.export.parts import PARTS

    options = ExportOptions(
        formats=formats, precisions=tuple(precisions), parts=tuple(parts or PARTS), frames=SFC_TINY_RAW_FRAMES // 8,
        size=SFC_TINY_SIZE, raw_frames=SFC_TINY_RAW_FRAMES, sfc_pieces=sfc_pieces,
    )
    with _torch_threads(1):
        export_model(sfc_tiny_model(), out, options)
    return out


@contextlib.contextmanager
def _torch_threads(n: int):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def sfc_one_thread():
    """One torch thread for a module of tiny-model tests: with other work on a 2-core machine, two
    OpenMP threads per process oversubscribe it (verify of the tiny export: 6 s vs 29 s measured)."""
    with _torch_threads(1):
        yield


@pytest.fixture(scope="session")
def sfc_tiny():
    """The helpers above, for test modules (conftest is not importable under importlib mode):
    ``sfc_tiny.model()``, ``sfc_tiny.export(out, formats, precisions, parts, sfc_pieces=...)``, ``.size``,
    ``.raw_frames``."""
    from types import SimpleNamespace

    return SimpleNamespace(model=sfc_tiny_model, export=sfc_tiny_export, size=SFC_TINY_SIZE, raw_frames=SFC_TINY_RAW_FRAMES)


@pytest.fixture(scope="session")
def sfc_export_ts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """TorchScript fp32 + fp16 of all four parts. Read-only: copy it before changing anything."""
    return sfc_tiny_export(tmp_path_factory.mktemp("sfc_ts") / "export", ("torchscript",), ("fp32", "fp16"))


@pytest.fixture(scope="session")
def sfc_export_aoti(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """AOTInductor fp32 of all four parts with SFC's pieces (compiled: minutes on 2 cores; for ``slow``
    tests only). Read-only."""
    return sfc_tiny_export(tmp_path_factory.mktemp("sfc_aoti") / "export", ("aoti",))


@pytest.fixture(scope="session")
def sfc_export_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ONNX fp32 of the SFC part (portable and custom-op graphs). Read-only."""
    return sfc_tiny_export(tmp_path_factory.mktemp("sfc_onnx") / "export", ("onnx",), parts=("sfc",))


# --- CLI errors ---------------------------------------------------------------------------------
def assert_one_line_error(result, *fragments: str) -> str:
    """A typer CliRunner result that failed as every command should on bad input: exit 2 and exactly
    one line on stderr, ``error: ...``, containing each fragment. Returns that line."""
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def one_line_error():
    """:func:`assert_one_line_error`, for test modules (they cannot import conftest under importlib mode)."""
    return assert_one_line_error
