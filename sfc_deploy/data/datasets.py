"""Lists of labelled videos in the layouts people already have, and a torch Dataset over them.

Each reader returns a :class:`VideoList`: ``(path, label_index)`` items in file order plus the
``class_names`` that give the indices meaning. Files are resolved and checked when the list is
read, so a wrong root fails at once with one message instead of hours into an evaluation.

Layouts:
    * CSV, ``path,label`` (our own, written by ``sfc-deploy synth``; extra columns such as the
      action window ``start,end`` are kept in :attr:`VideoList.extras`);
    * CSV, Kinetics style ``youtube_id,time_start,time_end,label`` (the official annotation files;
      ``split``/``is_cc`` columns are ignored), clips named ``{youtube_id}_{start:06d}_{end:06d}.mp4``
      under ``{root}/{label}/`` or directly under ``{root}``;
    * UCF101 split files: ``classInd.txt`` + ``trainlist0N.txt`` / ``testlist0N.txt``;
    * a folder per class.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch.utils.data import Dataset

from sfc_deploy.common.text import read_text_file
from sfc_deploy.data.samplers import SampledVideo, get_sampler, sample_video
from sfc_deploy.errors import ConfigError, VideoError
from sfc_deploy.models.config import BackboneConfig

#: File suffixes treated as videos when scanning folders or guessing Kinetics file names.
VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".avi", ".webm", ".mkv", ".mov", ".m4v")

Missing = Literal["error", "skip"]


@dataclass(frozen=True)
class VideoList(Sequence[tuple[Path, int]]):
    """Labelled videos: ``lst[i] == (path, label_index)``.

    Attributes:
        items: (path, label index) pairs in file order.
        class_names: names of the label indices.
        extras: per item, the source columns not consumed (e.g. ``{"start": "12", "end": "96"}``).
        skipped: entries dropped because their file was missing (``missing="skip"``).
    """

    items: tuple[tuple[Path, int], ...]
    class_names: tuple[str, ...]
    extras: tuple[dict[str, str], ...] = field(default=(), compare=False)
    skipped: tuple[str, ...] = field(default=(), compare=False)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[Path, int]:  # type: ignore[override]
        return self.items[index]

    def __iter__(self) -> Iterator[tuple[Path, int]]:
        return iter(self.items)

    @property
    def labels(self) -> list[int]:
        return [label for _, label in self.items]


def _finish(
    entries: list[tuple[str, Path | None, int, dict[str, str]]], names: Sequence[str], missing: Missing, source: Path
) -> VideoList:
    """Drop or report entries whose file is missing; ``entries`` are (name, path or None, label, extras)."""
    if missing not in ("error", "skip"):
        raise ConfigError(f"missing must be 'error' or 'skip', got {missing!r}")
    absent = [name for name, path, _, _ in entries if path is None or not path.is_file()]
    if absent and missing == "error":
        raise VideoError(
            f"{source}: {len(absent)} of {len(entries)} listed videos are missing (first: {absent[0]}); "
            "check the root directory, or pass --skip-missing to drop them"
        )
    kept = [(p, label, extra) for _, p, label, extra in entries if p is not None and p.is_file()]
    return VideoList(
        items=tuple((p, label) for p, label, _ in kept),
        class_names=tuple(names),
        extras=tuple(extra for _, _, extra in kept),
        skipped=tuple(absent),
    )


def _label_index(value: str, names: Sequence[str], lookup: dict[str, int], where: str) -> int:
    value = value.strip()
    if value in lookup:
        return lookup[value]
    if value.lstrip("-").isdigit() and 0 <= int(value) < len(names):
        return int(value)
    raise ConfigError(
        f"{where}: label {value!r} is not one of the {len(names)} class names; fix the label or the class list"
    )


def read_class_names(path: str | Path) -> tuple[str, ...]:
    """One class name per line (blank lines ignored), as ``classes.txt`` is written."""
    text = read_text_file(path, what="class list")
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def _kinetics_candidates(root: Path, row: dict[str, str]) -> list[Path]:
    start, end = int(float(row["time_start"])), int(float(row["time_end"]))
    stem = f"{row['youtube_id'].strip()}_{start:06d}_{end:06d}"
    label = row["label"].strip()
    dirs = dict.fromkeys([label, label.replace(" ", "_"),
                          label.replace(" ", "_").replace("(", "").replace(")", "").replace("'", "")])
    return [root / d / f"{stem}{ext}" for d in dirs for ext in VIDEO_EXTENSIONS] + [
        root / f"{stem}{ext}" for ext in VIDEO_EXTENSIONS
    ]


def read_csv_list(
    csv_path: str | Path,
    *,
    root: str | Path | None = None,
    class_names: Sequence[str] | None = None,
    missing: Missing = "error",
) -> VideoList:
    """A ``path,label`` or Kinetics ``youtube_id,time_start,time_end,label`` CSV.

    Args:
        csv_path: the CSV (header row required).
        root: directory that relative paths / Kinetics clips live under (default: the CSV's folder).
        class_names: label order. Default: ``classes.txt`` beside the CSV if present, else the
            sorted distinct labels (Kinetics' convention). Labels may be names or integer indices.
        missing: "error" (default) or "skip" entries whose file does not exist.
    """
    csv_path = Path(csv_path)
    text = read_text_file(csv_path, what="CSV")
    base = Path(root) if root is not None else csv_path.parent
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        columns = {c.strip() for c in reader.fieldnames or ()}
        rows = [{k.strip(): (v or "") for k, v in r.items() if k is not None} for r in reader]
    except csv.Error as exc:
        raise ConfigError(f"{csv_path} is not a valid CSV ({exc}); fix the file") from None
    kinetics = {"youtube_id", "time_start", "time_end", "label"} <= columns
    if not kinetics and not {"path", "label"} <= columns:
        raise ConfigError(
            f"{csv_path}: columns {sorted(columns)} are neither path,label nor youtube_id,time_start,time_end,label; "
            "fix the header row"
        )
    if class_names is None:
        classes_txt = csv_path.parent / "classes.txt"
        if classes_txt.is_file():
            class_names = read_class_names(classes_txt)
        else:
            class_names = sorted({r["label"].strip() for r in rows})
    lookup = {name: i for i, name in enumerate(class_names)}
    used = {"youtube_id", "time_start", "time_end", "label", "split", "is_cc"} if kinetics else {"path", "label"}
    entries = []
    for line, row in enumerate(rows, start=2):
        label = _label_index(row["label"], class_names, lookup, f"{csv_path}:{line}")
        extra = {k: v for k, v in row.items() if k not in used}
        if kinetics:
            name = f"{row['youtube_id']}_{int(float(row['time_start'])):06d}_{int(float(row['time_end'])):06d}"
            path = next((p for p in _kinetics_candidates(base, row) if p.is_file()), None)
        else:
            name = row["path"].strip()
            path = Path(name) if Path(name).is_absolute() else base / name
        entries.append((name, path, label, extra))
    return _finish(entries, class_names, missing, csv_path)


def read_ucf101(
    root: str | Path,
    splits_dir: str | Path | None = None,
    *,
    split: int = 1,
    subset: Literal["train", "test"] = "test",
    missing: Missing = "error",
) -> VideoList:
    """UCF101's official splits: ``classInd.txt`` (1-based ``index name``) and the N-th split list.

    ``trainlist0N.txt`` lines are ``Class/v_Class_g08_c01.avi 1``; ``testlist0N.txt`` lines carry no
    label, which is taken from the folder name.

    Args:
        root: the folder holding ``Class/v_*.avi``.
        splits_dir: the folder holding the split files (default ``root/ucfTrainTestlist`` if it
            exists, else ``root``).
        split: 1, 2 or 3.
        subset: "train" or "test".
        missing: "error" or "skip" entries whose file does not exist.
    """
    root = Path(root)
    if splits_dir is None:
        splits_dir = root / "ucfTrainTestlist" if (root / "ucfTrainTestlist").is_dir() else root
    splits_dir = Path(splits_dir)
    if subset not in ("train", "test"):
        raise ConfigError(f"subset must be 'train' or 'test', got {subset!r}")
    list_file = splits_dir / f"{subset}list{split:02d}.txt"
    class_file = splits_dir / "classInd.txt"
    for needed in (class_file, list_file):
        if not needed.is_file():
            raise ConfigError(
                f"{needed}: UCF101 split file not found; pass the folder holding classInd.txt and {list_file.name}"
            )
    lines = [line.split() for line in read_text_file(class_file, what="class index").splitlines() if line.strip()]
    try:
        indexed = sorted((int(i), name) for i, name in lines)
    except ValueError:
        raise ConfigError(f"{class_file}: each line must be 'INDEX NAME' (UCF101's classInd.txt); fix the file") from None
    names = [name for _, name in indexed]
    lookup = {name: i for i, name in enumerate(names)}
    entries = []
    for line in read_text_file(list_file, what="split list").splitlines():
        parts = line.split()
        if not parts:
            continue
        rel = parts[0]
        if len(parts) > 1 and not parts[1].isdigit():
            raise ConfigError(f"{list_file}: {line.strip()!r} is not 'PATH LABEL_INDEX'; fix the split list")
        label = int(parts[1]) - 1 if len(parts) > 1 else _label_index(rel.split("/")[0], names, lookup, str(list_file))
        entries.append((rel, root / rel, label, {}))
    return _finish(entries, names, missing, list_file)


def read_folder(root: str | Path, *, extensions: Sequence[str] = VIDEO_EXTENSIONS) -> VideoList:
    """``root/<class name>/<video>``: classes are the sub-folders in sorted order."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"{root}: not a directory; pass the folder that holds one sub-folder per class")
    names = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    suffixes = {e.lower() for e in extensions}
    items = tuple(
        (p, label)
        for label, name in enumerate(names)
        for p in sorted((root / name).iterdir())
        if p.is_file() and p.suffix.lower() in suffixes
    )
    if not items:
        raise ConfigError(f"{root}: no videos ({', '.join(sorted(suffixes))}) in class sub-folders; check the folder")
    empty = [name for label, name in enumerate(names) if not any(lab == label for _, lab in items)]
    if empty:
        raise ConfigError(
            f"{root}: class folder {empty[0]!r}{f' (and {len(empty) - 1} more)' if len(empty) > 1 else ''} holds no "
            f"videos ({', '.join(sorted(suffixes))}), so nothing would teach that class; add videos or remove the folder"
        )
    return VideoList(items=items, class_names=tuple(names), extras=tuple({} for _ in items))


def load_video_list(
    source: str | Path,
    *,
    root: str | Path | None = None,
    split: int = 1,
    subset: Literal["train", "test"] = "test",
    missing: Missing = "error",
) -> VideoList:
    """Pick the reader from what ``source`` is: a CSV, a UCF101 split folder, or a class-folder tree."""
    source = Path(source)
    if source.suffix.lower() == ".csv":
        return read_csv_list(source, root=root, missing=missing)
    if source.is_dir() and ((source / "classInd.txt").is_file() or (source / "ucfTrainTestlist").is_dir()):
        if (source / "classInd.txt").is_file():
            return read_ucf101(root or source, source, split=split, subset=subset, missing=missing)
        return read_ucf101(source, split=split, subset=subset, missing=missing)
    if source.is_dir():
        return read_folder(source)
    raise ConfigError(
        f"{source}: not a CSV file or a directory; pass a dataset CSV, a UCF101 split folder or a class-folder tree"
    )


class VideoDataset(Dataset):
    """A :class:`VideoList` sampled by a strategy: ``ds[i] == (tensor (B, 3, T, H, W), label)``.

    ``sfc`` rows have a video-dependent T, so batch them with ``batch_size=1`` (or a custom
    collate); the clip strategies give fixed shapes.

    Args:
        videos: the list to read.
        strategy: a sampler name (validated now, not at the first item).
        config: backbone config giving frames, stride and preprocessing.
        return_sample: return the :class:`SampledVideo` (frame indices included) instead of the tensor.
        **opts: the strategy's options.
    """

    def __init__(
        self,
        videos: VideoList,
        strategy: str,
        config: BackboneConfig,
        *,
        return_sample: bool = False,
        **opts: object,
    ) -> None:
        get_sampler(strategy).check_options(opts)
        self.videos = videos
        self.strategy = strategy
        self.config = config
        self.return_sample = return_sample
        self.opts = opts

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.videos.class_names

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, index: int) -> tuple[torch.Tensor | SampledVideo, int]:
        path, label = self.videos[index]
        sample = sample_video(path, self.strategy, self.config, **self.opts)
        return (sample if self.return_sample else sample.tensor), label
