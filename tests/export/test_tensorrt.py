"""The TensorRT path: engine planning and refusals everywhere; engines and the runner with TensorRT.

TensorRT cannot be installed in this project's CI (SPEC section 5): the ``tensorrt`` tests skip
with the reason there. Everything that decides *what* gets built (profiles, typing mode, file
names, which ONNX feeds which engine) is plain Python and runs here.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import torch

from sfc_deploy.errors import ArtifactError, BackendUnavailableError, ConfigError
from sfc_deploy.export import tensorrt as trt_export
from sfc_deploy.export.manifest import Artifact
from sfc_deploy.export.tensorrt import TensorRTOptions
from sfc_deploy.verify import TOLERANCES

try:
    import tensorrt as _trt  # noqa: F401

    HAVE_TRT, WHY_NO_TRT = True, ""
except (ImportError, OSError) as _exc:
    HAVE_TRT, WHY_NO_TRT = False, f"TensorRT not installed (`import tensorrt` fails: {_exc})"

FRAMES, SIZE = 8, (32, 40)


@pytest.fixture(scope="module")
def tiny():
    from sfc_deploy.models.factory import create_model

    torch.manual_seed(0)
    return create_model("slow8x8_tiny", num_classes=5)


@pytest.fixture(scope="module")
def onnx_artifacts(tiny) -> list[Artifact]:
    """The ONNX artifact records an export of the tiny model would write (no export needed)."""
    from sfc_deploy.export.parts import build_parts

    out = []
    for precision, dtype in (("fp32", torch.float32), ("fp16", torch.float16)):
        for static in (False, True):
            parts = build_parts(tiny, frames=FRAMES, size=SIZE, dtype=dtype, static_time=static)
            names = ["sfc"] if static else ["head", "sfc", "tail", "clip"]
            for name in names:
                p = parts[name]
                variant = "custom" if static else ("portable" if name == "sfc" else "default")
                stem = f"{name}.custom" if static else name
                out.append(Artifact(f"{stem}.{precision}.onnx", name, "onnx", precision, p.inputs, p.outputs, variant))
    return out


# --- typing mode and versions ----------------------------------------------------------------


@pytest.mark.parametrize(
    "version,requested,strong",
    [("10.13.3.9", None, False), ("10.13.3.9", False, False), ("10.13.3.9", True, True),
     ("11.0.0", None, True), ("11.4.1", True, True)],
)
def test_typing_mode_per_version(version, requested, strong) -> None:
    assert trt_export.use_strong_typing(version, requested) is strong


def test_weak_typing_on_11_is_refused_with_the_reason() -> None:
    with pytest.raises(ConfigError, match="11.x removed weak typing"):
        trt_export.use_strong_typing("11.1.0", False)


def test_tensorrt_older_than_10_is_refused() -> None:
    with pytest.raises(BackendUnavailableError, match=r"8\.6\.1 is too old.*>= 10\.0"):
        trt_export.tensorrt_major("8.6.1")


# --- profiles ------------------------------------------------------------------------------


def test_dim_ranges_follow_tau_and_options() -> None:
    from sfc_deploy.models.sfc import compressed_length

    ranges = trt_export.dim_ranges(frames=36, tau=2.0, settings=TensorRTOptions(max_batch=3, max_time=100))
    assert ranges["batch"] == (1, 1, 3)
    assert ranges["time"][1:] == (36, 100)
    assert ranges["k"] == tuple(compressed_length(t, 2.0) for t in ranges["time"]) == (2, 18, 50)
    default = trt_export.dim_ranges(frames=36, tau=4 / 3, settings=TensorRTOptions())
    assert default["time"][2] == 144 and default["k"][1] == 27


def test_dim_ranges_refuse_a_max_time_below_the_export() -> None:
    with pytest.raises(ConfigError, match="set max_time between 36"):
        trt_export.dim_ranges(frames=36, tau=2.0, settings=TensorRTOptions(max_time=20))


def test_profiles_resolve_every_symbolic_dim(onnx_artifacts) -> None:
    plans = trt_export.plan_engines(onnx_artifacts, ("fp32",), frames=FRAMES, tau=2.0, settings=TensorRTOptions())
    by_file = {p.file: p for p in plans}
    assert sorted(by_file) == sorted(
        ["head.fp32.engine", "sfc.fp32.engine", "sfc.custom.fp32.engine", "tail.fp32.engine", "clip.fp32.engine"]
    )
    lo, opt, hi = by_file["head.fp32.engine"].profiles["video"]
    assert lo[0] == 1 and opt[:3] == (1, 3, FRAMES) and hi[2] == 4 * FRAMES and lo[3:] == opt[3:] == hi[3:] == SIZE
    k_lo, k_opt, k_hi = (s[2] for s in by_file["tail.fp32.engine"].profiles["f_sfc"])
    assert (k_lo, k_opt, k_hi) == (2, FRAMES // 2, 2 * FRAMES)
    custom = by_file["sfc.custom.fp32.engine"]
    assert custom.needs_plugin and {s[2] for s in custom.profiles["f_head"]} == {FRAMES}  # static time
    clip = by_file["clip.fp32.engine"].profiles["clip"]
    assert [s[0] for s in clip] == [1, trt_export.DENSE_BATCH, trt_export.DENSE_BATCH]
    for plan in plans:  # min <= opt <= max on every axis
        for lo, opt, hi in plan.profiles.values():
            assert all(a <= b <= c for a, b, c in zip(lo, opt, hi)), plan.file


def test_sfc_streaming_pieces_get_no_engine(tiny, onnx_artifacts) -> None:
    """The pieces ONNX Runtime streams SFC with (export.parts.build_sfc_pieces) are not TensorRT's."""
    from sfc_deploy.export.parts import build_sfc_pieces

    pieces = [Artifact(f"{name}.fp32.onnx", name, "onnx", "fp32", p.inputs, p.outputs)
              for name, p in build_sfc_pieces(tiny, size=SIZE).items()]
    settings = TensorRTOptions()
    with_pieces = trt_export.plan_engines(onnx_artifacts + pieces, ("fp32",), frames=FRAMES, tau=2.0, settings=settings)
    without = trt_export.plan_engines(onnx_artifacts, ("fp32",), frames=FRAMES, tau=2.0, settings=settings)
    assert len(pieces) == 4 and [p.file for p in with_pieces] == [p.file for p in without]


def test_plan_needs_the_onnx_of_each_precision(onnx_artifacts) -> None:
    fp32_only = [a for a in onnx_artifacts if a.precision == "fp32"]
    with pytest.raises(ConfigError, match=r"no fp16 ONNX; export with --format onnx,tensorrt --precision fp16"):
        trt_export.plan_engines(fp32_only, ("fp32", "fp16"), frames=FRAMES, tau=2.0, settings=TensorRTOptions())


def test_plugin_skip_drops_only_the_custom_graph(onnx_artifacts) -> None:
    plans = trt_export.plan_engines(
        onnx_artifacts, ("fp16",), frames=FRAMES, tau=2.0, settings=TensorRTOptions(plugin="skip")
    )
    assert sorted(p.file for p in plans) == ["clip.fp16.engine", "head.fp16.engine", "sfc.fp16.engine", "tail.fp16.engine"]


@pytest.mark.parametrize(
    "variant,part,precision,name",
    [("default", "head", "fp32", "head.fp32.engine"), ("portable", "sfc", "fp16", "sfc.fp16.engine"),
     ("custom", "sfc", "fp16", "sfc.custom.fp16.engine"), ("default", "clip", "fp32", "clip.fp32.engine")],
)
def test_engine_file_names_follow_the_onnx_names(variant, part, precision, name) -> None:
    art = Artifact(f"{part}.{precision}.onnx", part, "onnx", precision, (), (), variant)
    assert trt_export.engine_file_name(art) == name


def test_profiles_fit_the_shapes_the_pytorch_parts_produce(tiny, onnx_artifacts) -> None:
    """Run the real head -> SFC -> tail at each profile's min, opt and max shapes: what one part
    outputs must be exactly what the next part's engine profile expects at the same point."""
    from sfc_deploy.export.parts import build_parts

    plans = trt_export.plan_engines(onnx_artifacts, ("fp32",), frames=FRAMES, tau=2.0, settings=TensorRTOptions())
    by_file = {p.file: p.profiles for p in plans}
    head, tail = by_file["head.fp32.engine"]["video"], by_file["tail.fp32.engine"]["f_sfc"]
    parts = build_parts(tiny, frames=FRAMES, size=SIZE)
    for sfc_file in ("sfc.fp32.engine", "sfc.custom.fp32.engine"):
        sfc = by_file[sfc_file]["f_head"]
        for i, point in enumerate(("min", "opt", "max")):
            video = head[i]
            if sfc_file == "sfc.custom.fp32.engine":  # static time: only the exported length exists
                video = (video[0], video[1], FRAMES, *video[3:])
            with torch.no_grad():
                f_head = parts["head"].module(torch.randn(video))
                assert tuple(f_head.shape) == sfc[i], (sfc_file, point)
                f_sfc, attention = parts["sfc"].module(f_head)
                if sfc_file == "sfc.fp32.engine":
                    assert tuple(f_sfc.shape) == tail[i], (sfc_file, point)
                else:  # the custom graph's one k must lie inside the shared tail engine's profile
                    assert all(lo <= d <= hi for lo, d, hi in zip(tail[0], f_sfc.shape, tail[2])), (sfc_file, point)
                assert tuple(attention.shape) == (video[0], f_sfc.shape[2], video[2])
                assert tuple(parts["tail"].module(f_sfc).shape) == (video[0], 5)


def test_unknown_symbolic_dim_is_named() -> None:
    from sfc_deploy.export.manifest import TensorSpec

    art = Artifact("x.onnx", "head", "onnx", "fp32", (TensorSpec("video", ("batch", 3, "frames_x", 8, 8), "float32"),), ())
    with pytest.raises(ConfigError, match="'frames_x' with no profile"):
        trt_export.profile_for(art, {"batch": (1, 1, 2)})


@pytest.mark.parametrize("kwargs,match", [({"plugin": "maybe"}, "auto, require or skip"),
                                          ({"max_batch": 0}, "max_batch=0"),
                                          ({"workspace_gib": 0}, "workspace_gib=0")])
def test_options_are_validated(kwargs, match) -> None:
    with pytest.raises(ConfigError, match=match):
        TensorRTOptions(**kwargs)


def test_max_batch_beyond_the_exported_limit_is_refused() -> None:
    from sfc_deploy.export.parts import MAX_BATCH

    assert trt_export.dim_ranges(frames=8, tau=2.0, settings=TensorRTOptions(max_batch=MAX_BATCH))["batch"][2] == MAX_BATCH
    with pytest.raises(ConfigError, match=f"max_batch={MAX_BATCH + 1} exceeds the exported limit {MAX_BATCH}"):
        trt_export.dim_ranges(frames=8, tau=2.0, settings=TensorRTOptions(max_batch=MAX_BATCH + 1))


def test_unreadable_tensorrt_version_is_refused() -> None:
    assert trt_export.tensorrt_major("10.13.3.9") == 10 and trt_export.tensorrt_major("11.0") == 11
    with pytest.raises(BackendUnavailableError, match="cannot read the TensorRT version 'dev'"):
        trt_export.tensorrt_major("dev")


def test_tau_is_read_from_the_onnx_metadata(tmp_path: Path) -> None:
    graph = onnx.helper.make_graph([], "g", [], [])
    model = onnx.helper.make_model(graph)
    model.metadata_props.add(key="sfc_deploy.sfc", value=json.dumps({"tau": 1.3333333, "channels": 64}))
    onnx.save(model, tmp_path / "sfc.onnx")
    assert trt_export.read_tau(tmp_path / "sfc.onnx") == pytest.approx(4 / 3, rel=1e-6)
    del model.metadata_props[:]
    onnx.save(model, tmp_path / "bare.onnx")
    with pytest.raises(ConfigError, match="no usable sfc_deploy.sfc metadata"):
        trt_export.read_tau(tmp_path / "bare.onnx")


def test_timing_cache_is_per_version_and_gpu(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    path = trt_export.default_timing_cache("10.13.3.9", "NVIDIA H100 80GB HBM3")
    assert path.parent == tmp_path / "sfc-deploy" / "tensorrt"
    assert path.name == "10.13.3.9-NVIDIA_H100_80GB_HBM3.timing"


# --- refusals where TensorRT is missing -------------------------------------------------------


@pytest.mark.skipif(HAVE_TRT, reason="TensorRT is installed; the missing-TensorRT message is unreachable")
def test_export_refuses_tensorrt_up_front_in_one_line(tiny, tmp_path) -> None:
    from sfc_deploy.export.exporter import ExportOptions, export_model

    with pytest.raises(BackendUnavailableError) as info:
        export_model(tiny, tmp_path / "out", ExportOptions(formats=("onnx", "tensorrt"), frames=FRAMES, size=SIZE))
    message = str(info.value)
    assert "\n" not in message and "import tensorrt" in message and "--format onnx,tensorrt" in message
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.partial-*"))


@pytest.mark.skipif(HAVE_TRT, reason="TensorRT is installed; the missing-TensorRT message is unreachable")
def test_runner_refuses_without_tensorrt(onnx_artifacts, tmp_path) -> None:
    from sfc_deploy.runtime.tensorrt_runner import TensorRTRunner

    runner = TensorRTRunner(onnx_artifacts[0], tmp_path / "head.fp32.engine")
    with pytest.raises(BackendUnavailableError, match="import tensorrt"):
        runner.__enter__()
    assert not runner.active


def test_runner_profile_check_names_the_range() -> None:
    from sfc_deploy.runtime.tensorrt_runner import check_in_profile

    profile = ((1, 3, 3, 32, 40), (1, 3, 8, 32, 40), (4, 3, 32, 32, 40))
    check_in_profile("video", (2, 3, 16, 32, 40), profile, "head")
    with pytest.raises(ArtifactError, match=r"outside the engine's profile min \(1, 3, 3, 32, 40\) \.\. max \(4, 3, 32"):
        check_in_profile("video", (1, 3, 64, 32, 40), profile, "head")


def test_runner_dtype_table() -> None:
    """Every TensorRT DataType the runner allocates buffers for maps to its own torch dtype; a
    module without the optional ones (bfloat16 here) must not map them to anything."""
    from sfc_deploy.runtime.tensorrt_runner import torch_dtype

    # Only the attribute names come from TensorRT's API; the values are opaque keys.
    trt_types = SimpleNamespace(float32="f32", float16="f16", int32="i32", int8="i8", bool="b", int64="i64")
    expected = {"f32": torch.float32, "f16": torch.float16, "i32": torch.int32, "i8": torch.int8,
                "b": torch.bool, "i64": torch.int64}
    assert {key: torch_dtype(trt_types, key) for key in expected} == expected
    for unknown in ("fp8", "bf16"):
        with pytest.raises(ArtifactError, match="no torch equivalent"):
            torch_dtype(trt_types, unknown)


# --- with TensorRT and a GPU: engines vs PyTorch -----------------------------------------------


@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device (torch.cuda.is_available() is False)")
@pytest.mark.skipif(not HAVE_TRT, reason=WHY_NO_TRT or "TensorRT installed")
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_engines_match_pytorch(tiny, tmp_path, precision) -> None:
    from sfc_deploy.export.exporter import ExportOptions, export_model
    from sfc_deploy.export.manifest import load_manifest
    from sfc_deploy.export.tensorrt_plugin import default_plugin_library_path
    from sfc_deploy.runtime.tensorrt_runner import TensorRTRunner

    options = ExportOptions(formats=("onnx", "tensorrt"), precisions=(precision,), frames=FRAMES, size=SIZE)
    export_model(tiny, tmp_path / "out", options)
    manifest = load_manifest(tmp_path / "out")
    dtype = torch.float32 if precision == "fp32" else torch.float16
    video = torch.randn(1, 3, FRAMES, *SIZE)
    with torch.no_grad():
        want = tiny(video).numpy()
    feed = video.to(dtype).cuda()
    for sfc_variant in ("portable", "custom"):
        try:
            sfc_art = manifest.find("sfc", "tensorrt", precision, variant=sfc_variant)
        except ArtifactError:
            assert sfc_variant == "custom", "the portable SFC engine must always be built"
            assert not default_plugin_library_path().is_file(), "the plugin library exists: the custom engine must be built"
            continue
        arts = [manifest.find("head", "tensorrt", precision), sfc_art, manifest.find("tail", "tensorrt", precision)]
        for art in arts:
            assert art.extra["tensorrt"] == _trt.__version__ and art.extra["compute_capability"]
        with TensorRTRunner(arts[0], manifest.path_of(arts[0])) as head, \
                TensorRTRunner(arts[1], manifest.path_of(arts[1])) as sfc, \
                TensorRTRunner(arts[2], manifest.path_of(arts[2])) as tail:
            f = head.infer({"video": feed})["f_head"]
            out = sfc.infer({"f_head": f})
            assert out["attention"].dtype == torch.float32  # the softmax stays fp32
            logits = tail.infer({"f_sfc": out["f_sfc"]})["logits"]
        torch.cuda.synchronize()
        rtol, atol_scaled = TOLERANCES[precision]  # verify's rule: atol is relative to the largest logit
        np.testing.assert_allclose(logits.float().cpu().numpy(), want, rtol=rtol, atol=atol_scaled * np.abs(want).max())
