"""Our own bad-input suite: every command, fed what a new user (or a broken pipeline) feeds it.

Each case asserts the README's promise: the documented exit code, exactly one line on stderr
(``error: ...`` naming the problem), no traceback, and nothing new in the output folder or beside
it. The fixtures are generated here: broken videos of every kind, malformed CSVs and manifests,
wrong and unsafe checkpoints, damaged artifacts, absurd options, outputs that are files or folders.
Signals and concurrent writers are in ``test_signals.py``.
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from typer.testing import CliRunner

from sfc_deploy.cli import app
from sfc_deploy.data.synth import write_counter_video

runner = CliRunner()
TINY = ["--backbone", "slow8x8_tiny"]
EXPORT_TINY = [*TINY, "--frames", "64", "--size", "32x40", "--num-classes", "5"]

pytestmark = pytest.mark.usefixtures("sfc_one_thread")


# ------------------------------------------------------------------------------------------ fixtures


def _csv(path: Path, rows: list[tuple[str, str]], header: str = "path,label") -> Path:
    path.write_text(header + "\n" + "".join(f"{a},{b}\n" for a, b in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def bad(tmp_path_factory: pytest.TempPathFactory, sfc_export_ts: Path) -> SimpleNamespace:
    """Every bad input, generated once. Read-only: cases write only under their own ``out``."""
    from safetensors.torch import save_file

    from sfc_deploy.models import create_model, get_config
    from sfc_deploy.models.resnet3d import ResNet3d
    from sfc_deploy.models.sfc_model import save_sfc_checkpoint

    root = tmp_path_factory.mktemp("bad")
    b = SimpleNamespace(root=root, export=sfc_export_ts)
    # videos
    b.good = write_counter_video(root / "good.mp4", 24, (32, 40))
    b.good2 = write_counter_video(root / "good2.mp4", 24, (32, 40))
    b.missing = root / "missing.mp4"
    b.empty = root / "empty.mp4"
    b.empty.write_bytes(b"")
    b.garbage = root / "garbage.mp4"
    b.garbage.write_bytes(bytes(range(256)) * 40)
    b.truncated = root / "truncated.mp4"
    b.truncated.write_bytes(b.good.read_bytes()[:600])
    b.text_video = root / "notes.mp4"
    b.text_video.write_text("this is not a video\n")
    b.dir_video = root / "folder.mp4"
    b.dir_video.mkdir()
    # datasets
    b.csv_latin1 = root / "latin1.csv"
    b.csv_latin1.write_bytes("path,label\ngood.mp4,caf\xe9\n".encode("latin-1"))
    b.csv_header = _csv(root / "header.csv", [("good.mp4", "a")], header="file,class")
    b.csv_missing = _csv(root / "missing.csv", [("good.mp4", "a"), ("gone.mp4", "b")])
    b.csv_empty = _csv(root / "empty.csv", [])
    b.csv_dir = root / "folder.csv"
    b.csv_dir.mkdir()
    b.csv_corrupt = _csv(root / "corrupt.csv", [("good.mp4", "a"), ("garbage.mp4", "b")])
    labelled = root / "labelled"
    labelled.mkdir()
    shutil.copy(b.good, labelled / "good.mp4")
    (labelled / "classes.txt").write_text("a\nb\n")
    b.csv_unknown_label = _csv(labelled / "list.csv", [("good.mp4", "zebra")])
    classes_latin1 = root / "classes_latin1"
    classes_latin1.mkdir()
    shutil.copy(b.good, classes_latin1 / "good.mp4")
    (classes_latin1 / "classes.txt").write_bytes("caf\xe9\nb\n".encode("latin-1"))
    b.csv_bad_classes = _csv(classes_latin1 / "list.csv", [("good.mp4", "b")])
    b.tree_empty_class = root / "tree"
    (b.tree_empty_class / "walk").mkdir(parents=True)
    (b.tree_empty_class / "run").mkdir()
    shutil.copy(b.good, b.tree_empty_class / "walk" / "v.mp4")
    b.tree_no_videos = root / "novideos"
    (b.tree_no_videos / "walk").mkdir(parents=True)
    (b.tree_no_videos / "walk" / "readme.txt").write_text("no videos here")
    b.ucf = root / "ucf"
    b.ucf.mkdir()
    (b.ucf / "classInd.txt").write_text("one Walk\n2 Run\n")
    (b.ucf / "trainlist01.txt").write_text("Walk/v.avi 1\n")
    # checkpoints
    torch.manual_seed(0)
    tiny = ResNet3d(get_config("slow8x8_tiny", num_classes=5))
    b.ckpt_missing = root / "nothing.pt"
    b.ckpt_garbage = root / "garbage.pt"
    b.ckpt_garbage.write_bytes(b"\x80\x04not a checkpoint at all" * 10)
    b.ckpt_empty = root / "empty.pt"
    b.ckpt_empty.write_bytes(b"")
    b.ckpt_dir = root / "ckpt_folder.pt"
    b.ckpt_dir.mkdir()
    b.ckpt_unsafe = root / "unsafe.pt"
    torch.save({"state_dict": tiny.state_dict(), "args": argparse.Namespace(lr=0.1)}, b.ckpt_unsafe)
    state = dict(tiny.state_dict())
    state["res2.0.conv_x.weight"] = state.pop("res2.0.conv_a.weight")
    b.ckpt_wrong_keys = root / "wrong_keys.pt"
    torch.save(state, b.ckpt_wrong_keys)
    b.ckpt_tiny = root / "tiny.pt"
    torch.save(tiny.state_dict(), b.ckpt_tiny)
    model = create_model("slow8x8_tiny", num_classes=5)
    b.sfc_ckpt = save_sfc_checkpoint(model, root / "sfc.safetensors")
    from safetensors import safe_open

    with safe_open(str(b.sfc_ckpt), framework="pt") as f:
        meta = f.metadata()
        sfc_state = {k: f.get_tensor(k) for k in f.keys()}
    first = next(iter(sfc_state))
    sfc_state[first] = torch.zeros(3, 3)  # a tensor of the wrong shape, metadata intact
    b.sfc_wrong_shapes = root / "sfc_wrong.safetensors"
    save_file(sfc_state, str(b.sfc_wrong_shapes), metadata=meta)
    # manifests and artifacts
    def copy_export(name: str) -> Path:
        return Path(shutil.copytree(sfc_export_ts, root / name))

    b.no_manifest = root / "no_manifest"
    b.no_manifest.mkdir()
    manifest = json.loads((sfc_export_ts / "manifest.json").read_text())
    b.m_not_json = copy_export("m_not_json")
    (b.m_not_json / "manifest.json").write_text("{not json")
    b.m_list = copy_export("m_list")
    (b.m_list / "manifest.json").write_text("[1, 2, 3]")
    b.m_missing_key = copy_export("m_missing_key")
    (b.m_missing_key / "manifest.json").write_text(json.dumps({k: v for k, v in manifest.items() if k != "backbone"}))
    b.m_newer = copy_export("m_newer")
    (b.m_newer / "manifest.json").write_text(json.dumps({**manifest, "manifest_version": 99}))
    b.m_older = copy_export("m_older")
    (b.m_older / "manifest.json").write_text(json.dumps({**manifest, "manifest_version": 1}))
    b.m_latin1 = copy_export("m_latin1")
    (b.m_latin1 / "manifest.json").write_bytes(b'{"manifest_version": "caf\xe9"}')
    b.m_bad_types = copy_export("m_bad_types")
    (b.m_bad_types / "manifest.json").write_text(json.dumps({**manifest, "artifacts": "all of them"}))
    b.art_missing = copy_export("art_missing")
    (b.art_missing / "tail.fp32.ts").unlink()
    b.art_tampered = copy_export("art_tampered")
    with open(b.art_tampered / "sfc.fp32.ts", "ab") as f:
        f.write(b"\0")
    b.export_file = root / "export_file"
    b.export_file.write_text("a file, not an export folder")
    return b


@pytest.fixture
def out(tmp_path: Path) -> Path:
    """Where a case's outputs go; it must hold exactly what it held before the command."""
    folder = tmp_path / "outs"
    folder.mkdir()
    (folder / "a_file").write_text("existing file")
    (folder / "a_dir").mkdir()
    (folder / "a_dir" / "keep.txt").write_text("existing folder")
    return folder


def _snapshot(folder: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


# --------------------------------------------------------------------------------------------- cases

Args = Callable[[SimpleNamespace, Path], list[str]]
CASES: list[tuple[str, Args, tuple[str, ...]]] = [
    # videos (predict probes every video before the model loads)
    ("video missing", lambda b, o: ["predict", str(b.missing), "--export", str(b.export), "--runtime", "torchscript"], ("missing.mp4", "not found")),
    ("video 0 bytes", lambda b, o: ["predict", str(b.empty), "--export", str(b.export), "--runtime", "torchscript"], ("empty.mp4", "empty")),
    ("video garbage bytes", lambda b, o: ["predict", str(b.garbage), "--export", str(b.export), "--runtime", "torchscript"], ("garbage.mp4",)),
    ("video truncated", lambda b, o: ["predict", str(b.truncated), "--export", str(b.export), "--runtime", "torchscript"], ("truncated.mp4",)),
    ("video is text", lambda b, o: ["predict", str(b.text_video), "--export", str(b.export), "--runtime", "torchscript"], ("notes.mp4",)),
    ("video is a folder", lambda b, o: ["predict", str(b.dir_video), "--export", str(b.export), "--runtime", "torchscript"], ("folder.mp4", "directory")),
    ("bad video among good", lambda b, o: ["predict", str(b.good), str(b.garbage), "--export", str(b.export), "--runtime", "torchscript", "--json", str(o / "p.json")], ("garbage.mp4",)),
    ("bench --video missing", lambda b, o: ["bench", str(b.export), "-r", "torchscript", "--video", str(b.missing)], ("missing.mp4", "does not exist")),
    # datasets
    ("csv not UTF-8", lambda b, o: ["train-backbone", str(b.csv_latin1), "--out", str(o / "run")], ("latin1.csv", "not UTF-8")),
    ("csv wrong header", lambda b, o: ["train-backbone", str(b.csv_header), "--out", str(o / "run")], ("header row",)),
    ("csv lists missing files", lambda b, o: ["train-backbone", str(b.csv_missing), "--out", str(o / "run")], ("missing", "--skip-missing")),
    ("csv header only", lambda b, o: ["train-backbone", str(b.csv_empty), "--out", str(o / "run")], ("empty",)),
    ("csv is a folder", lambda b, o: ["eval", str(b.csv_dir), "--out", str(o / "ev"), *TINY, "--strategies", "single"], ("folder.csv", "is a folder")),
    ("csv unknown label", lambda b, o: ["train-backbone", str(b.csv_unknown_label), "--out", str(o / "run")], ("zebra",)),
    ("classes.txt not UTF-8", lambda b, o: ["train-backbone", str(b.csv_bad_classes), "--out", str(o / "run")], ("classes.txt", "not UTF-8")),
    ("class folder without videos", lambda b, o: ["train-backbone", str(b.tree_empty_class), "--out", str(o / "run")], ("'run'", "holds no videos")),
    ("class tree without videos", lambda b, o: ["train-backbone", str(b.tree_no_videos), "--out", str(o / "run")], ("no videos",)),
    ("data path missing", lambda b, o: ["train", str(b.root / "nowhere"), "--out", str(o / "run"), *TINY], ("nowhere", "not a CSV file or a directory")),
    ("ucf classInd malformed", lambda b, o: ["train-backbone", str(b.ucf), "--out", str(o / "run")], ("classInd.txt", "INDEX NAME")),
    ("csv lists a corrupt video", lambda b, o: ["train-backbone", str(b.csv_corrupt), "--out", str(o / "run"), "--epochs", "1"], ("garbage.mp4",)),
    ("eval csv lists a corrupt video", lambda b, o: ["eval", str(b.csv_corrupt), "--out", str(o / "ev"), *TINY, "--strategies", "single"], ("garbage.mp4",)),
    # checkpoints
    ("checkpoint missing", lambda b, o: ["convert", str(b.ckpt_missing), *TINY, "--out", str(o / "w.safetensors")], ("nothing.pt", "not found")),
    ("checkpoint garbage", lambda b, o: ["convert", str(b.ckpt_garbage), *TINY, "--out", str(o / "w.safetensors")], ("garbage.pt",)),
    ("checkpoint 0 bytes", lambda b, o: ["convert", str(b.ckpt_empty), *TINY, "--out", str(o / "w.safetensors")], ("empty.pt",)),
    ("checkpoint is a folder", lambda b, o: ["convert", str(b.ckpt_dir), *TINY, "--out", str(o / "w.safetensors")], ("ckpt_folder.pt", "is a folder")),
    ("checkpoint unsafe pickle", lambda b, o: ["convert", str(b.ckpt_unsafe), *TINY, "--out", str(o / "w.safetensors")], ("argparse.Namespace", "--trust-checkpoint")),
    ("checkpoint wrong keys", lambda b, o: ["convert", str(b.ckpt_wrong_keys), *TINY, "--out", str(o / "w.safetensors")], ("keys missing", "pass a checkpoint of this slow8x8_tiny")),
    ("checkpoint of another backbone", lambda b, o: ["convert", str(b.ckpt_tiny), "-b", "slow8x8", "--out", str(o / "w.safetensors")], ("pass --backbone slow8x8_tiny",)),
    ("sfc checkpoint as backbone", lambda b, o: ["export", "--out", str(o / "ex"), *EXPORT_TINY, "--checkpoint", str(b.sfc_ckpt)], ("sfc.safetensors",)),
    ("backbone checkpoint as sfc", lambda b, o: ["predict", str(b.good), *TINY, "--sfc-checkpoint", str(b.ckpt_tiny)], ("tiny.pt", "not a safetensors SFC checkpoint")),
    ("sfc weights of wrong shapes", lambda b, o: ["predict", str(b.good), *TINY, "--sfc-checkpoint", str(b.sfc_wrong_shapes)], ("sfc_wrong.safetensors", "do not fit")),
    ("sfc checkpoint is a folder", lambda b, o: ["predict", str(b.good), *TINY, "--sfc-checkpoint", str(b.ckpt_dir)], ("is a folder",)),
    ("export with bad checkpoint", lambda b, o: ["export", "--out", str(o / "ex"), *EXPORT_TINY, "--checkpoint", str(b.ckpt_wrong_keys)], ("keys missing",)),
    # manifests and artifacts
    ("verify without manifest", lambda b, o: ["verify", str(b.no_manifest)], ("has no manifest.json",)),
    ("manifest not JSON", lambda b, o: ["verify", str(b.m_not_json)], ("not valid JSON",)),
    ("manifest is a JSON list", lambda b, o: ["verify", str(b.m_list)], ("not a manifest object",)),
    ("manifest missing a key", lambda b, o: ["verify", str(b.m_missing_key)], ("not a complete sfc-deploy manifest",)),
    ("manifest from a newer version", lambda b, o: ["verify", str(b.m_newer)], ("manifest version 99", "install")),
    ("manifest from an older version", lambda b, o: ["predict", str(b.good), "--export", str(b.m_older), "--runtime", "torchscript"], ("manifest version 1", "re-export")),
    ("manifest not UTF-8", lambda b, o: ["verify", str(b.m_latin1)], ("manifest.json",)),
    ("manifest fields of wrong types", lambda b, o: ["verify", str(b.m_bad_types)], ("not a complete sfc-deploy manifest",)),
    ("artifact missing", lambda b, o: ["verify", str(b.art_missing)], ("tail.fp32.ts", "missing")),
    ("artifact tampered", lambda b, o: ["predict", str(b.good), "--export", str(b.art_tampered), "--runtime", "torchscript"], ("sfc.fp32.ts", "sha256")),
    ("bench on a damaged export", lambda b, o: ["bench", str(b.art_tampered), "-r", "torchscript", "--json", str(o / "b.json")], ("sfc.fp32.ts", "sha256")),
    ("bench on a file", lambda b, o: ["bench", str(b.export_file), "-r", "torchscript"], ("not an export folder",)),
    ("bench runtime not exported", lambda b, o: ["bench", str(b.export), "-r", "onnxruntime"], ("has no", "--format onnx")),
    ("predict precision not exported", lambda b, o: ["predict", str(b.good), "--export", str(b.export), "--runtime", "torchscript", "--precision", "bf16"], ("bf16",)),
    # absurd options
    ("tau 1e400", lambda b, o: ["info", *TINY, "--tau", "1e400"], ("1e400",)),
    ("tau nan", lambda b, o: ["info", *TINY, "--tau", "nan"], ("nan",)),
    ("tau zero", lambda b, o: ["info", *TINY, "--tau", "0"], ("tau",)),
    ("tau absurd", lambda b, o: ["train", str(b.csv_missing), "--out", str(o / "r"), *TINY, "--tau", "1e9"], ("tau must be at most",)),
    ("frames 0", lambda b, o: ["export", "--out", str(o / "ex"), *TINY, "--frames", "0"], ("--frames",)),
    ("size 0x0", lambda b, o: ["export", "--out", str(o / "ex"), *TINY, "--size", "0x0"], ("too small",)),
    ("size abc", lambda b, o: ["export", "--out", str(o / "ex"), *TINY, "--size", "abc"], ("256x312",)),
    ("format tflite", lambda b, o: ["export", "--out", str(o / "ex"), *TINY, "-f", "tflite"], ("unknown format 'tflite'",)),
    ("precision int3", lambda b, o: ["export", "--out", str(o / "ex"), *TINY, "-p", "int3"], ("unknown precision 'int3'",)),
    ("parts neck", lambda b, o: ["export", "--out", str(o / "ex"), *TINY, "--parts", "neck"], ("neck",)),
    ("dense clips 11", lambda b, o: ["verify", str(b.export), "--dense-clips", "11"], ("--dense-clips",)),
    ("graph fastest", lambda b, o: ["verify", str(b.export), "-g", "fastest"], ("unknown SFC graph 'fastest'",)),
    ("runtime tvm", lambda b, o: ["verify", str(b.export), "-r", "tvm"], ("unknown runtime 'tvm'",)),
    ("top 0", lambda b, o: ["predict", str(b.good), "--top", "0"], ("--top",)),
    ("batch size 0", lambda b, o: ["bench", str(b.export), "-r", "torchscript", "--batch-size", "0"], ("--batch-size",)),
    ("batch size text", lambda b, o: ["bench", str(b.export), "-r", "torchscript", "--batch-size", "30,ten"], ("--batch-size",)),
    ("threads 0", lambda b, o: ["bench", str(b.export), "-r", "torchscript", "--threads", "0"], ("--threads",)),
    ("milestones text", lambda b, o: ["train", str(b.csv_missing), "--out", str(o / "r"), *TINY, "--milestones", "8;12"], ("milestones",)),
    ("scale one value", lambda b, o: ["train-backbone", str(b.csv_missing), "--out", str(o / "r"), "--scale", "2"], ("--scale",)),
    ("strategies foo", lambda b, o: ["eval", str(b.csv_missing), "--out", str(o / "ev"), *TINY, "--strategies", "foo"], ("foo",)),
    ("num clips 0", lambda b, o: ["eval", str(b.csv_missing), "--out", str(o / "ev"), *TINY, "--num-clips", "0"], ("--num-clips",)),
    ("unknown backbone", lambda b, o: ["info", "-b", "slow9x9"], ("slow9x9", "did you mean")),
    ("unknown command", lambda b, o: ["exprot"], ("exprot",)),
    ("unknown option", lambda b, o: ["export", "--out", str(o / "ex"), "--fromat", "onnx"], ("--fromat",)),
    ("option that does not apply", lambda b, o: ["predict", str(b.good), "--precision", "fp16"], ("--precision", "--export")),
    ("runtime without export", lambda b, o: ["eval", str(b.csv_missing), "--out", str(o / "ev"), "--runtime", "onnxruntime"], ("--export",)),
    # outputs that are files, folders, or under a file
    ("export --out is a file", lambda b, o: ["export", "--out", str(o / "a_file"), *EXPORT_TINY], ("a_file", "existing file")),
    ("export --out is a file, --force", lambda b, o: ["export", "--out", str(o / "a_file"), *EXPORT_TINY, "--force"], ("a_file", "existing file")),
    ("export --out exists", lambda b, o: ["export", "--out", str(o / "a_dir"), *EXPORT_TINY], ("a_dir", "--force")),
    ("export --out under a file", lambda b, o: ["export", "--out", str(o / "a_file" / "sub"), *EXPORT_TINY], ("is a file, not a folder",)),
    ("eval --out is a file", lambda b, o: ["eval", str(b.csv_missing), "--out", str(o / "a_file"), *TINY], ("a_file", "existing file")),
    ("eval --name escapes", lambda b, o: ["eval", str(b.csv_missing), "--out", str(o / "ev"), *TINY, "--name", "../x"], ("--name",)),
    ("train --out is a file", lambda b, o: ["train", str(b.csv_missing), "--out", str(o / "a_file"), *TINY], ("a_file", "existing file")),
    ("train-backbone --out is a file", lambda b, o: ["train-backbone", str(b.csv_missing), "--out", str(o / "a_file")], ("a_file", "existing file")),
    ("convert --out is a folder", lambda b, o: ["convert", str(b.ckpt_tiny), *TINY, "--out", str(o / "a_dir"), "--force"], ("a_dir", "is a folder")),
    ("convert --out wrong suffix", lambda b, o: ["convert", str(b.ckpt_tiny), *TINY, "--out", str(o / "w.pt")], (".safetensors",)),
    ("convert --out exists", lambda b, o: ["convert", str(b.ckpt_tiny), *TINY, "--out", str(o / "a_file")], ("--out",)),
    ("predict --json is a folder", lambda b, o: ["predict", str(b.good), "--export", str(b.export), "--runtime", "torchscript", "--json", str(o / "a_dir")], ("a_dir", "is a folder")),
    ("bench --json is a folder", lambda b, o: ["bench", str(b.export), "-r", "torchscript", "--json", str(o / "a_dir")], ("a_dir", "is a folder")),
    ("bench --plot under a file", lambda b, o: ["bench", str(b.export), "-r", "torchscript", "--plot", str(o / "a_file" / "p.png")], ("is a file, not a folder",)),
    ("synth OUT is a file", lambda b, o: ["synth", str(o / "a_file"), "--classes", "2"], ("a_file", "existing file")),
    ("synth OUT exists", lambda b, o: ["synth", str(o / "a_dir"), "--classes", "2"], ("a_dir", "--force")),
]


def test_the_suite_is_large_enough() -> None:
    assert len(CASES) >= 60
    assert len({name for name, _, _ in CASES}) == len(CASES)
    commands = {args(SimpleNamespace(**{k: Path("x") for k in _FIELDS}), Path("o"))[0] for _, args, _ in CASES}
    assert {"predict", "bench", "train", "train-backbone", "eval", "convert", "export", "verify", "info", "synth"} <= commands


_FIELDS = (
    "root export good good2 missing empty garbage truncated text_video dir_video csv_latin1 csv_header csv_missing "
    "csv_empty csv_dir csv_corrupt csv_unknown_label csv_bad_classes tree_empty_class tree_no_videos ucf ckpt_missing "
    "ckpt_garbage ckpt_empty ckpt_dir ckpt_unsafe ckpt_wrong_keys ckpt_tiny sfc_ckpt sfc_wrong_shapes no_manifest "
    "m_not_json m_list m_missing_key m_newer m_older m_latin1 m_bad_types art_missing art_tampered export_file"
).split()


@pytest.mark.parametrize(("name", "args", "fragments"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_fails_in_one_line_and_leaves_nothing(name: str, args: Args, fragments: tuple[str, ...],
                                                        bad: SimpleNamespace, out: Path) -> None:
    before_out, before_bad = _snapshot(out), _snapshot(bad.root)
    result = runner.invoke(app, args(bad, out))
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in result.output, result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert _snapshot(out) == before_out, "the command left output behind"
    assert _snapshot(bad.root) == before_bad, "the command changed its input or wrote beside it"


def test_unexpected_errors_are_one_line_with_exit_70_and_a_traceback_under_debug(
    monkeypatch: pytest.MonkeyPatch, bad: SimpleNamespace
) -> None:
    def boom(*args, **kwargs):
        raise ZeroDivisionError("a bug\nspanning two lines")

    monkeypatch.setattr("sfc_deploy.models.create_model", boom)
    result = runner.invoke(app, ["info", *TINY])
    assert result.exit_code == 70, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == ["error: unexpected ZeroDivisionError: a bug spanning two lines (a bug in sfc-deploy: rerun with "
                     "--debug for the traceback and report it)"]
    debug = runner.invoke(app, ["--debug", "info", *TINY])
    assert debug.exit_code == 70 and "Traceback (most recent call last)" in debug.stderr


def test_multi_line_library_errors_become_one_line(bad: SimpleNamespace, out: Path) -> None:
    from sfc_deploy.errors import ConfigError

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("sfc_deploy.models.get_config",
                   lambda *a, **k: (_ for _ in ()).throw(ConfigError("first line\n  second line\n\nthird")))
        result = runner.invoke(app, ["info", *TINY])
    assert result.exit_code == 2
    assert [line for line in result.stderr.splitlines() if line.strip()] == ["error: first line second line third"]


def test_help_still_works_and_exits_0() -> None:
    result = runner.invoke(app, ["export", "--help"])
    assert result.exit_code == 0 and "--out" in result.output


def test_skip_missing_drops_the_missing_videos(bad: SimpleNamespace) -> None:
    from sfc_deploy.data.datasets import load_video_list

    videos = load_video_list(bad.csv_missing, missing="skip")
    assert [p.name for p, _ in videos] == ["good.mp4"] and videos.skipped


def test_weights_written_by_convert_have_the_umask_permissions(bad: SimpleNamespace, tmp_path: Path) -> None:
    from sfc_deploy.common.atomic import current_umask

    out = tmp_path / "w.safetensors"
    result = runner.invoke(app, ["convert", str(bad.ckpt_tiny), *TINY, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.stat().st_mode & 0o777 == 0o666 & ~current_umask()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.safetensors"]
