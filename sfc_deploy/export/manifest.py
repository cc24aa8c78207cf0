"""``manifest.json``: everything a runtime needs to know about an export folder, typed.

The manifest is the artifact boundary: the exporter writes it, runtimes read it, verification
compares what it lists. It holds the backbone config and preprocessing, the split, the SFC config,
the input the graphs were built for, one record per artifact (part, format, precision, variant, I/O
names, symbolic shapes, dtypes, sha256) and the library versions; ``verify`` adds the parity
results. It is written atomically, and every artifact is checked against its sha256 before it is
loaded. A manifest of another schema version is refused with what to do about it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from sfc_deploy.common.atomic import atomic_write_text
from sfc_deploy.common.environment import library_versions
from sfc_deploy.errors import ArtifactError, ConfigError
from sfc_deploy.models.config import BackboneConfig
from sfc_deploy.models.sfc import SFCConfig

MANIFEST = "manifest.json"
#: Bumped when the layout of the manifest or of the artifacts changes incompatibly.
#: 2: ONNX Runtime serves its own recorded graphs (variant "ort"), written at export time.
MANIFEST_VERSION = 2
WEIGHTS = "model.safetensors"


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape (ints, or strings for symbolic dims such as "batch") and dtype of one I/O tensor."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str

    @classmethod
    def from_dict(cls, d: dict) -> "TensorSpec":
        return cls(d["name"], tuple(d["shape"]), d["dtype"])


@dataclass(frozen=True)
class Artifact:
    """One exported file: which part of the model it is, in which format, precision and variant.

    ``variant``: "default"; for the SFC ONNX graphs "portable" or "custom"; "ort" (or "ort-custom")
    for the graph ONNX Runtime serves, derived at export time from the file named in ``derived_from``.
    ``device``: the device type a compiled artifact runs on only ("cpu" or "cuda": AOTInductor
    packages); None for device-portable files (ONNX, TorchScript, weights). Manifests written
    before the field existed load with None, and their AOTInductor packages were CPU ones.
    """

    file: str
    part: str  # head | sfc | tail | clip | weights, or one of SFC's streaming pieces (models.parts.SFC_PIECES)
    format: str  # onnx | torchscript | aoti | tensorrt | pytorch
    precision: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    variant: str = "default"
    sha256: str = ""
    bytes: int = 0
    derived_from: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    device: str | None = None

    @classmethod
    def from_dict(cls, d: dict) -> "Artifact":
        return cls(
            file=d["file"],
            part=d["part"],
            format=d["format"],
            precision=d["precision"],
            inputs=tuple(TensorSpec.from_dict(t) for t in d["inputs"]),
            outputs=tuple(TensorSpec.from_dict(t) for t in d["outputs"]),
            variant=d.get("variant", "default"),
            sha256=d.get("sha256", ""),
            bytes=d.get("bytes", 0),
            derived_from=d.get("derived_from"),
            extra=d.get("extra", {}),
            device=d.get("device"),
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def static_time(self) -> bool:
        """Whether the time axis of the first input is fixed (an int) rather than symbolic."""
        shape = self.inputs[0].shape
        return len(shape) > 2 and isinstance(shape[2], int)


@dataclass(frozen=True)
class DenseInput:
    """The 30-crop protocol the clip model serves: clips x crops of frames x crop x crop."""

    clips: int
    crops: int
    frames: int
    crop: int


@dataclass(frozen=True)
class InputRecord:
    """The input the SFC graphs were built for (sampled frames, HxW) and how it was sampled."""

    raw_frames: int
    frames: int
    size: tuple[int, int]
    stride: int
    head_streamable: bool
    dense: DenseInput

    @classmethod
    def from_dict(cls, d: dict) -> "InputRecord":
        return cls(d["raw_frames"], d["frames"], tuple(d["size"]), d["stride"], d["head_streamable"],
                   DenseInput(**d["dense"]))


@dataclass
class Manifest:
    """The parsed ``manifest.json`` of an export folder (``root``)."""

    root: Path
    backbone: BackboneConfig
    sfc: SFCConfig
    split: str
    input: InputRecord
    artifacts: list[Artifact]
    formats: list[str]
    parts: list[str]
    precisions: list[str]
    random_weights: bool = True
    checkpoint: str | None = None
    sfc_checkpoint: str | None = None
    created: str = ""
    libraries: dict[str, str] = field(default_factory=dict)
    parity: dict[str, Any] | None = None
    manifest_version: int = MANIFEST_VERSION

    @property
    def tau(self) -> float:
        return self.sfc.tau

    @property
    def preprocess(self):
        return self.backbone.preprocess

    def to_dict(self) -> dict[str, Any]:
        data = {
            "manifest_version": self.manifest_version,
            "created": self.created,
            "random_weights": self.random_weights,
            "checkpoint": self.checkpoint,
            "sfc_checkpoint": self.sfc_checkpoint,
            "backbone": self.backbone.to_dict(),
            "preprocess": self.backbone.to_dict()["preprocess"],
            "sfc": self.sfc.to_dict(),
            "split": self.split,
            "tau": self.sfc.tau,
            "input": {**asdict(self.input), "size": list(self.input.size)},
            "formats": list(self.formats),
            "parts": list(self.parts),
            "precisions": list(self.precisions),
            "artifacts": [a.to_dict() for a in self.artifacts],
            "libraries": dict(self.libraries),
        }
        if self.parity is not None:
            data["parity"] = self.parity
        return data

    @classmethod
    def from_dict(cls, root: Path, data: dict[str, Any]) -> "Manifest":
        return cls(
            root=root,
            backbone=BackboneConfig.from_dict(data["backbone"]),
            sfc=SFCConfig.from_dict(data["sfc"]),
            split=data["split"],
            input=InputRecord.from_dict(data["input"]),
            artifacts=[Artifact.from_dict(a) for a in data["artifacts"]],
            formats=list(data.get("formats", [])),
            parts=list(data.get("parts", [])),
            precisions=list(data.get("precisions", [])),
            random_weights=bool(data.get("random_weights", True)),
            checkpoint=data.get("checkpoint"),
            sfc_checkpoint=data.get("sfc_checkpoint"),
            created=data.get("created", ""),
            libraries=dict(data.get("libraries", {})),
            parity=data.get("parity"),
            manifest_version=data["manifest_version"],
        )

    def find(self, part: str, fmt: str, precision: str = "fp32", variant: str | None = None) -> Artifact:
        """The artifact for a part; a missing one names what the folder does have."""
        for art in self.artifacts:
            if art.part == part and art.format == fmt and art.precision == precision:
                if variant is None or art.variant == variant:
                    return art
        have = sorted({f"{a.format}/{a.precision}" for a in self.artifacts})
        same = f"{fmt}/{precision}" in have  # then only the variant is missing: say which
        want = f"{fmt}/{precision}" + (f" ({variant})" if variant and same else "")
        raise ArtifactError(
            f"{self.root} has no {part} artifact in {want}; it has {', '.join(have)}. "
            f"Re-export with --format {fmt} --precision {precision}"
        )

    def path_of(self, art: Artifact, *, check: bool = True) -> Path:
        """Absolute path of an artifact, after checking it still matches its sha256."""
        path = self.root / art.file
        if not path.is_file():
            raise ArtifactError(f"{path} is listed in the manifest but missing; re-run sfc-deploy export")
        if check and art.sha256 and not _matches(path, art.sha256):
            raise ArtifactError(
                f"{path} does not match its sha256 in {self.root / MANIFEST} (modified or corrupt); "
                "re-run sfc-deploy export --force"
            )
        return path

    def check_files(self) -> None:
        """Every listed file present and matching its sha256 (before minutes of work, not after)."""
        for art in self.artifacts:
            self.path_of(art)

    def with_parity(self, parity: dict[str, Any]) -> "Manifest":
        return replace(self, parity=parity)

    def save(self) -> None:
        atomic_write_text(self.root / MANIFEST, json.dumps(self.to_dict(), indent=2) + "\n")


#: (file, size, mtime_ns) -> the sha256 it had then: a file checked once in this process is not
#: hashed again while unchanged (a check before the work, then each runner's load, read it once)
_HASHED: dict[tuple[str, int, int], str] = {}


def _matches(path: Path, sha256: str) -> bool:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHED:
        _HASHED[key] = sha256_of(path)
    return _HASHED[key] == sha256


def sha256_of(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_manifest(root: str | Path) -> Manifest:
    """Read and validate ``DIR/manifest.json``."""
    root = Path(root)
    path = root / MANIFEST
    if not path.is_file():
        raise ArtifactError(f"{root} has no {MANIFEST}; pass a folder written by `sfc-deploy export`")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path} is not valid JSON ({exc}); re-run sfc-deploy export --force") from exc
    if not isinstance(data, dict):
        raise ArtifactError(f"{path} holds a JSON {type(data).__name__}, not a manifest object; re-run sfc-deploy export --force")
    version = data.get("manifest_version")
    if version != MANIFEST_VERSION:
        wrote = data.get("libraries", {}).get("sfc-deploy", "unknown") if isinstance(data.get("libraries"), dict) else "unknown"
        older = isinstance(version, int) and version < MANIFEST_VERSION
        fix = ("re-export it with this version (sfc-deploy export --force)" if older
               else f"install the sfc-deploy that wrote it ({wrote}) or a newer one, or re-export with this version")
        raise ArtifactError(
            f"{path} has manifest version {version!r} but this sfc-deploy ({_own_version()}) reads version "
            f"{MANIFEST_VERSION}; {fix}"
        )
    try:
        return Manifest.from_dict(root, data)
    except (KeyError, TypeError, ValueError, AttributeError, ConfigError) as exc:
        raise ArtifactError(
            f"{path} is not a complete sfc-deploy manifest ({type(exc).__name__}: {exc}); re-run sfc-deploy export --force"
        ) from exc


def _own_version() -> str:
    return library_versions().get("sfc-deploy", "unknown")
