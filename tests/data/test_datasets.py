"""Dataset list formats (our CSV, Kinetics CSV, UCF101 splits, class folders) and the torch wrapper."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from sfc_deploy.data.datasets import (
    VideoDataset,
    load_video_list,
    read_csv_list,
    read_folder,
    read_ucf101,
)
from sfc_deploy.errors import ConfigError, VideoError
from sfc_deploy.models.config import Preprocess
from sfc_deploy.models.registry import get_config

CFG = get_config("slow8x8_tiny").replace(preprocess=Preprocess(short_side=32, crop=32))


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_path_label_csv_with_classes_txt_and_extras(tmp_path):
    touch(tmp_path / "v" / "a.mp4")
    touch(tmp_path / "v" / "b.mp4")
    (tmp_path / "classes.txt").write_text("zoom\nabseil\n")
    (tmp_path / "train.csv").write_text("path,label,start,end\nv/a.mp4,abseil,3,40\nv/b.mp4,zoom,0,10\n")
    videos = read_csv_list(tmp_path / "train.csv")
    assert videos.class_names == ("zoom", "abseil")  # classes.txt order, not alphabetical
    assert list(videos) == [(tmp_path / "v" / "a.mp4", 1), (tmp_path / "v" / "b.mp4", 0)]
    assert videos.extras[0] == {"start": "3", "end": "40"} and videos.labels == [1, 0]


def test_csv_integer_labels_and_explicit_root(tmp_path):
    touch(tmp_path / "data" / "x.avi")
    (tmp_path / "list.csv").write_text("path,label\nx.avi,1\n")
    videos = read_csv_list(tmp_path / "list.csv", root=tmp_path / "data", class_names=["a", "b"])
    assert list(videos) == [(tmp_path / "data" / "x.avi", 1)]


def test_kinetics_csv_both_layouts_and_missing(tmp_path):
    root = tmp_path / "k400"
    touch(root / "air drumming" / "abc123_000010_000020.mp4")
    touch(root / "xyz789_000001_000011.mp4")  # flat layout
    csv_text = (
        "label,youtube_id,time_start,time_end,split\n"
        "air drumming,abc123,10,20,val\n"
        "zumba,xyz789,1,11,val\n"
        "zumba,gone42,5,15,val\n"
    )
    (tmp_path / "val.csv").write_text(csv_text)
    with pytest.raises(VideoError, match=r"1 of 3 listed videos are missing \(first: gone42_000005_000015\)"):
        read_csv_list(tmp_path / "val.csv", root=root)
    videos = read_csv_list(tmp_path / "val.csv", root=root, missing="skip")
    assert videos.class_names == ("air drumming", "zumba")
    assert list(videos) == [
        (root / "air drumming" / "abc123_000010_000020.mp4", 0),
        (root / "xyz789_000001_000011.mp4", 1),
    ]
    assert videos.skipped == ("gone42_000005_000015",)


def test_kinetics_label_folder_with_underscores(tmp_path):
    touch(tmp_path / "air_drumming" / "abc123_000010_000020.mp4")
    (tmp_path / "val.csv").write_text("youtube_id,time_start,time_end,label\nabc123,10.0,20.0,air drumming\n")
    assert read_csv_list(tmp_path / "val.csv")[0] == (tmp_path / "air_drumming" / "abc123_000010_000020.mp4", 0)


def test_csv_errors(tmp_path):
    (tmp_path / "bad.csv").write_text("file,class\na.mp4,x\n")
    with pytest.raises(ConfigError, match="neither path,label nor youtube_id"):
        read_csv_list(tmp_path / "bad.csv")
    (tmp_path / "lab.csv").write_text("path,label\na.mp4,nope\n")
    with pytest.raises(ConfigError, match=r"lab.csv:2: label 'nope' is not one of the 1 class names"):
        read_csv_list(tmp_path / "lab.csv", class_names=["yes"])
    with pytest.raises(ConfigError, match="CSV not found"):
        read_csv_list(tmp_path / "none.csv")


def _ucf(tmp_path: Path) -> Path:
    root = tmp_path / "UCF-101"
    for rel in (
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi",
        "Archery/v_Archery_g01_c01.avi",
        "Archery/v_Archery_g09_c02.avi",
    ):
        touch(root / rel)
    splits = root / "ucfTrainTestlist"
    splits.mkdir()
    (splits / "classInd.txt").write_text("1 ApplyEyeMakeup\n2 Archery\n")
    (splits / "trainlist01.txt").write_text(
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\nArchery/v_Archery_g09_c02.avi 2\n"
    )
    (splits / "testlist01.txt").write_text("Archery/v_Archery_g01_c01.avi\n")
    return root


def test_ucf101_splits(tmp_path):
    root = _ucf(tmp_path)
    train = read_ucf101(root, subset="train")
    assert train.class_names == ("ApplyEyeMakeup", "Archery")
    assert [label for _, label in train] == [0, 1]
    test = read_ucf101(root, root / "ucfTrainTestlist", subset="test")
    assert list(test) == [(root / "Archery" / "v_Archery_g01_c01.avi", 1)]
    assert list(load_video_list(root, subset="train")) == list(train)
    with pytest.raises(ConfigError, match="testlist02.txt"):
        read_ucf101(root, split=2)


def test_folder_tree(tmp_path):
    touch(tmp_path / "b_class" / "1.mp4")
    touch(tmp_path / "a_class" / "2.webm")
    touch(tmp_path / "a_class" / "notes.txt")
    videos = read_folder(tmp_path)
    assert videos.class_names == ("a_class", "b_class")
    assert list(videos) == [(tmp_path / "a_class" / "2.webm", 0), (tmp_path / "b_class" / "1.mp4", 1)]
    assert list(load_video_list(tmp_path)) == list(videos)
    with pytest.raises(ConfigError, match="no videos"):
        read_folder(tmp_path / "a_class")


def test_video_dataset_samples_and_batches(make_video, tmp_path):
    for i, label in enumerate(["left", "right", "left"]):
        make_video(tmp_path / "vids" / label / f"{i}.mp4", frames=30, size=(48, 64))
    videos = read_folder(tmp_path / "vids")
    ds = VideoDataset(videos, "uniform", CFG, num_clips=2)
    assert len(ds) == 3 and ds.class_names == ("left", "right")
    clip, label = ds[2]
    assert clip.shape == (2, 3, 8, 32, 32) and label == 1
    batch, labels = next(iter(DataLoader(ds, batch_size=3)))
    assert batch.shape == (3, 2, 3, 8, 32, 32) and labels.tolist() == [0, 0, 1]
    sample, _ = VideoDataset(videos, "sfc", CFG, return_sample=True)[0]
    assert sample.frame_indices == ((0, 8, 16, 24, 24, 24, 24, 24),) and isinstance(sample.tensor, torch.Tensor)
    with pytest.raises(ConfigError, match="takes no option num_clips"):
        VideoDataset(videos, "sfc", CFG, num_clips=3)
    with pytest.raises(ConfigError, match="unknown sampling strategy"):
        VideoDataset(videos, "dence", CFG)
