"""``manifest.json``: everything a runtime needs to know about an export folder, and its integrity.

The manifest is the only source of metadata: backbone config and preprocessing, split, SFC config,
one record per artifact (part, format, precision, I/O names, symbolic shapes, dtypes, sha256),
library versions and the parity results. It is written atomically, and every artifact is checked
against its sha256 before it is loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sfc_deploy.errors import ArtifactError

MANIFEST = "manifest.json"
#: Bumped when the layout of the manifest or of the artifacts changes incompatibly.
MANIFEST_VERSION = 1
DTYPES = ("float32", "float16", "int64")
PRECISIONS = ("fp32", "fp16")


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
    """One exported file: which part of the model it is, in which format and precision."""

    file: str
    part: str  # head | sfc | tail | clip
    format: str  # onnx | torchscript | aoti | tensorrt | pytorch
    precision: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    variant: str = "default"  # for the SFC ONNX graph: "portable" or "custom"
    sha256: str = ""
    bytes: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

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
            extra=d.get("extra", {}),
        )

    def to_dict(self) -> dict:
        return asdict(self)


def sha256_of(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def library_versions() -> dict[str, str]:
    """Versions of everything that can change an artifact's numbers."""
    import importlib.metadata as md

    import torch

    versions = {"python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform()}
    for dist in ("sfc-deploy", "onnx", "onnxruntime", "onnxscript", "onnxruntime-extensions", "numpy", "tensorrt"):
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    return versions


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a text file so that readers see the old content or the new one, never half."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp's 0600 would hide it from other users
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def current_umask() -> int:
    """The process umask (read by setting and restoring it: there is no getter)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@dataclass
class Manifest:
    """The parsed ``manifest.json`` of an export folder."""

    root: Path
    data: dict[str, Any]

    @property
    def artifacts(self) -> list[Artifact]:
        return [Artifact.from_dict(a) for a in self.data["artifacts"]]

    def find(self, part: str, fmt: str, precision: str = "fp32", variant: str | None = None) -> Artifact:
        """The artifact for a part; a missing one names what the folder does have."""
        for art in self.artifacts:
            if art.part == part and art.format == fmt and art.precision == precision:
                if variant is None or art.variant == variant:
                    return art
        have = sorted({f"{a.format}/{a.precision}" for a in self.artifacts})
        want = f"{fmt}/{precision}" + (f" ({variant})" if variant else "")
        raise ArtifactError(
            f"{self.root} has no {part} artifact in {want}; it has {', '.join(have)}. "
            f"Re-export with --format {fmt} --precision {precision}"
        )

    def path_of(self, art: Artifact, *, check: bool = True) -> Path:
        """Absolute path of an artifact, after checking it still matches its sha256."""
        path = self.root / art.file
        if not path.is_file():
            raise ArtifactError(f"{path} is listed in the manifest but missing; re-run sfc-deploy export")
        if check and art.sha256 and sha256_of(path) != art.sha256:
            raise ArtifactError(
                f"{path} does not match its sha256 in {self.root / MANIFEST} (modified or corrupt); "
                "re-run sfc-deploy export --force"
            )
        return path

    def save(self) -> None:
        atomic_write_text(self.root / MANIFEST, json.dumps(self.data, indent=2, sort_keys=False) + "\n")


def load_manifest(root: str | Path) -> Manifest:
    """Read and validate ``DIR/manifest.json``."""
    root = Path(root)
    path = root / MANIFEST
    if not path.is_file():
        raise ArtifactError(f"{root} has no {MANIFEST}; pass a folder written by `sfc-deploy export`")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path} is not valid JSON ({exc}); re-run sfc-deploy export --force") from exc
    version = data.get("manifest_version")
    if version != MANIFEST_VERSION:
        raise ArtifactError(
            f"{path} has manifest version {version!r} but this sfc-deploy ({_own_version()}) reads version "
            f"{MANIFEST_VERSION}; re-export with this version or install the one that wrote it "
            f"({data.get('libraries', {}).get('sfc-deploy', 'unknown')})"
        )
    for key in ("backbone", "sfc", "split", "artifacts", "input"):
        if key not in data:
            raise ArtifactError(f"{path} lacks {key!r}; re-run sfc-deploy export --force")
    return Manifest(root=root, data=data)


def _own_version() -> str:
    from sfc_deploy import __version__

    return __version__
