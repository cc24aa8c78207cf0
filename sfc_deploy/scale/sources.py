"""What ``sfc-deploy classify INPUT`` accepts, resolved to a list of video paths in a stable order.

INPUT is one of: a dataset CSV (its ``path`` column, relative to the CSV's folder), a text file with
one path per line (``#`` comments and blank lines ignored; relative to the file's folder), a folder
(every video file below it, recursively), a glob pattern (``videos/**/*.mp4``), or one video file.
Paths are not opened here: a missing or corrupt video becomes a row with its error.
"""

from __future__ import annotations

import csv
import glob
import io
from pathlib import Path

from sfc_deploy.common.text import read_text_file
from sfc_deploy.data.datasets import VIDEO_EXTENSIONS
from sfc_deploy.errors import ConfigError

LIST_SUFFIXES = (".txt", ".lst", ".list")


def resolve_inputs(source: str | Path) -> list[str]:
    """The video paths INPUT names, de-duplicated, in INPUT's order (sorted for folders and globs)."""
    text = str(source)
    path = Path(text)
    if any(ch in text for ch in "*?[") and not path.exists():
        paths = sorted(glob.glob(text, recursive=True))
        paths = [p for p in paths if Path(p).is_file()]
        if not paths:
            raise ConfigError(f"the pattern {text!r} matches no files; check it (quote it so the shell does not expand it)")
    elif path.is_dir():
        paths = sorted(str(p) for p in path.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
        if not paths:
            raise ConfigError(f"{path} holds no video files ({', '.join(VIDEO_EXTENSIONS)}); pass another folder")
    elif path.suffix.lower() == ".csv":
        paths = _from_csv(path)
    elif path.suffix.lower() in LIST_SUFFIXES:
        lines = read_text_file(path, what="list of videos").splitlines()
        entries = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
        paths = [str(_relative_to(path.parent, e)) for e in entries]
    elif path.is_file() or path.suffix.lower() in VIDEO_EXTENSIONS:
        paths = [str(path)]  # one video (a missing one becomes its own error row)
    else:
        raise ConfigError(
            f"{source}: not a CSV, a list file ({', '.join(LIST_SUFFIXES)}), a folder, a glob or a video; "
            "check the path"
        )
    paths = list(dict.fromkeys(paths))
    if not paths:
        raise ConfigError(f"{source} lists no videos; nothing to classify")
    return paths


def _relative_to(base: Path, entry: str) -> Path:
    p = Path(entry)
    return p if p.is_absolute() else base / p


def _from_csv(path: Path) -> list[str]:
    text = read_text_file(path, what="CSV")
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        fields = [f.strip() for f in reader.fieldnames or ()]
        rows = list(reader)
    except csv.Error as exc:
        raise ConfigError(f"{path} is not a valid CSV ({exc}); fix the file") from None
    if "path" not in fields:
        raise ConfigError(f"{path}: no 'path' column (columns: {', '.join(fields) or 'none'}); add a path,... header row")
    key = next(k for k in reader.fieldnames or () if k.strip() == "path")
    return [str(_relative_to(path.parent, row[key].strip())) for row in rows if (row.get(key) or "").strip()]
