"""Tests of localprops.tools.train_gtsrb: split, augmentation, schedule, a tiny run."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from localprops import models
from localprops.models import data, gtsrb_nets
from localprops.tools import train_gtsrb


def needs_env(variable: str) -> Path:
    """The path in ``$variable``, or skip the test saying what to set."""
    value = os.environ.get(variable)
    if not value or not Path(value).exists():
        pytest.skip(f"needs real data: set {variable} (see shared/data/README.md)")
    return Path(value)


def _pairs(labels, tracks, rows):
    return {(int(labels[r]), int(tracks[r])) for r in rows}


def test_split_by_track_keeps_tracks_whole():
    labels = np.repeat(np.arange(4), 30)
    tracks = np.tile(np.repeat(np.arange(6), 5), 4)
    train, val = train_gtsrb.split_by_track(labels, tracks, 0.2, seed=3)
    assert len(train) + len(val) == 120 and not set(train) & set(val)
    assert not _pairs(labels, tracks, train) & _pairs(labels, tracks, val)
    assert sorted(set(labels[val])) == [0, 1, 2, 3]       # every class validated
    again = train_gtsrb.split_by_track(labels, tracks, 0.2, seed=3)
    assert np.array_equal(val, again[1])
    assert not np.array_equal(val, train_gtsrb.split_by_track(labels, tracks, 0.2, 4)[1])
    with pytest.raises(ValueError):
        train_gtsrb.split_by_track(labels, tracks, 1.0, seed=0)


def test_single_track_class_stays_in_training():
    train, val = train_gtsrb.split_by_track(np.zeros(5), np.zeros(5), 0.5, seed=0)
    assert len(val) == 0 and len(train) == 5


@pytest.mark.data
def test_split_by_track_on_real_data():
    arrays = data.load_gtsrb(needs_env(data.GTSRB_ENV))
    labels, tracks = arrays["y_train"], arrays["track_train"]
    train, val = train_gtsrb.split_by_track(labels, tracks, 0.1, seed=0)
    assert not _pairs(labels, tracks, train) & _pairs(labels, tracks, val)
    assert 0.05 < len(val) / len(labels) < 0.15


def test_augment_batch_is_small_seeded_and_in_range():
    x = torch.rand(4, 3, 32, 32) * 255
    first = train_gtsrb.augment_batch(x, torch.Generator().manual_seed(1))
    second = train_gtsrb.augment_batch(x, torch.Generator().manual_seed(1))
    assert torch.equal(first, second) and first.shape == x.shape
    assert first.min() >= 0 and first.max() <= 255
    flat = torch.full((2, 3, 32, 32), 100.0)
    jittered = train_gtsrb.augment_batch(flat, torch.Generator().manual_seed(0))
    assert ((jittered >= 100 * 0.7 - 1e-3) & (jittered <= 100 * 1.3 + 1e-3)).all()


def test_learning_rate_schedule():
    assert train_gtsrb.lr_at(0, 100, 10, 1.0) == pytest.approx(0.1)
    assert train_gtsrb.lr_at(9, 100, 10, 1.0) == pytest.approx(1.0)
    assert train_gtsrb.lr_at(10, 100, 10, 1.0) == pytest.approx(1.0)
    assert train_gtsrb.lr_at(100, 100, 10, 1.0) == pytest.approx(0.0)


def test_command_line_leaves_out_data_paths():
    line = train_gtsrb.command_line(["--model", "gtsrb-aghdam", "--data", "/x/y.npz",
                                     "--epochs", "3", "--out", "/w", "--quiet", "--resume"])
    assert line == "python -m localprops.tools.train_gtsrb --model gtsrb-aghdam --epochs 3"


def test_parameter_counts_match_the_documented_ones():
    assert gtsrb_nets.count_parameters(gtsrb_nets.CiresanNet()) == 1_543_443
    assert gtsrb_nets.count_parameters(gtsrb_nets.AghdamNet()) == 1_116_293
    with pytest.raises(ValueError, match="gtsrb-ciresan"):
        gtsrb_nets.build("lenet")


def _fake_npz(path: Path) -> Path:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(43), 4).astype(np.uint8)
    tracks = np.tile([0, 0, 1, 1], 43).astype(np.uint16)
    np.savez(path, x_train=rng.integers(0, 256, (172, 32, 32, 3), dtype=np.uint8),
             y_train=labels, track_train=tracks,
             x_test=rng.integers(0, 256, (43, 32, 32, 3), dtype=np.uint8),
             y_test=np.arange(43, dtype=np.uint8),
             class_names=np.array([f"class {i}" for i in range(43)]))
    return path


def test_tiny_training_run_writes_loadable_weights(tmp_path):
    npz = _fake_npz(tmp_path / "fake.npz")
    out = tmp_path / "weights"
    entry = train_gtsrb.main(["--model", "gtsrb-aghdam", "--epochs", "1", "--seed", "5",
                              "--batch-size", "64", "--data", str(npz), "--out", str(out),
                              "--threads", "1", "--quiet", "--device", "cpu"])
    record = json.loads((out / models.GTSRB_WEIGHTS_JSON).read_text())
    assert record["gtsrb-aghdam"] == json.loads(json.dumps(entry))
    assert entry["test_images"] == 43 and entry["seed"] == 5
    assert entry["train_images"] + entry["val_images"] == 172
    assert entry["sha256"] == data.file_sha256(out / "gtsrb-aghdam.pt")
    assert "--data" not in entry["command"]
    state = torch.load(out / "gtsrb-aghdam.pt", weights_only=True)
    assert all(t.dtype == torch.float32 for t in state.values())
    spec = models.load("gtsrb-aghdam", device="cpu", weights_path=out)
    assert spec.model(torch.zeros(2, 3, 32, 32)).shape == (2, 43)
    again = train_gtsrb.main(["--model", "gtsrb-aghdam", "--epochs", "1", "--seed", "5",
                              "--data", str(npz), "--out", str(tmp_path / "again"),
                              "--threads", "1", "--quiet", "--device", "cpu"])
    assert again["sha256"] == entry["sha256"]            # seeded: same weights


def test_memory_format_is_an_option_of_speed_only(tmp_path):
    npz = _fake_npz(tmp_path / "fake.npz")
    out = tmp_path / "contiguous"
    entry = train_gtsrb.main(["--model", "gtsrb-aghdam", "--epochs", "1", "--seed", "5",
                              "--data", str(npz), "--out", str(out), "--memory-format",
                              "contiguous", "--threads", "1", "--quiet", "--device", "cpu"])
    assert "--memory-format contiguous" in entry["command"]
    spec = models.load("gtsrb-aghdam", device="cpu", weights_path=out)
    assert spec.model(torch.zeros(2, 3, 32, 32)).shape == (2, 43)
    with pytest.raises(SystemExit):
        train_gtsrb.parse_args(["--model", "gtsrb-aghdam", "--memory-format", "nhwc"])


def test_a_resumed_run_gives_the_weights_of_an_uninterrupted_one(monkeypatch, tmp_path):
    npz = _fake_npz(tmp_path / "fake.npz")
    options = ["--model", "gtsrb-aghdam", "--epochs", "2", "--seed", "3", "--data", str(npz),
               "--threads", "1", "--quiet", "--device", "cpu"]
    whole = train_gtsrb.main(options + ["--out", str(tmp_path / "whole")])
    assert not train_gtsrb.checkpoint_path(tmp_path / "whole", "gtsrb-aghdam").exists()

    real_evaluate, calls = train_gtsrb.evaluate, []

    def killed_in_epoch_two(*args, **kwargs):        # the run dies after epoch 1's checkpoint
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(train_gtsrb, "evaluate", killed_in_epoch_two)
    out = tmp_path / "stopped"
    with pytest.raises(KeyboardInterrupt):
        train_gtsrb.main(options + ["--out", str(out)])
    assert train_gtsrb.checkpoint_path(out, "gtsrb-aghdam").exists()
    monkeypatch.setattr(train_gtsrb, "evaluate", real_evaluate)
    with pytest.raises(SystemExit, match="--seed was 3, now 4"):
        train_gtsrb.main([*options[:5], "4", *options[6:], "--out", str(out), "--resume"])
    resumed = train_gtsrb.main(options + ["--out", str(out), "--resume"])
    assert resumed["sha256"] == whole["sha256"]
    assert [h["epoch"] for h in resumed["history"]] == [1, 2]
    assert resumed["command"] == whole["command"]
    with pytest.raises(SystemExit, match="no checkpoint"):
        train_gtsrb.main(options + ["--out", str(tmp_path / "none"), "--resume"])


def test_training_without_data_names_the_variable(monkeypatch, tmp_path):
    monkeypatch.delenv(data.GTSRB_ENV, raising=False)
    with pytest.raises(data.DataNotFoundError, match="LOCALPROPS_GTSRB"):
        train_gtsrb.main(["--model", "gtsrb-aghdam", "--out", str(tmp_path), "--quiet"])


def _fake_torchvision_gtsrb(root: Path) -> Path:
    """The folder layout torchvision.datasets.GTSRB reads, with tiny images."""
    from PIL import Image

    base = root / "gtsrb"
    rng = np.random.default_rng(1)
    for label in range(43):
        folder = base / "GTSRB" / "Training" / f"{label:05d}"
        folder.mkdir(parents=True)
        for track in range(2):
            Image.fromarray(rng.integers(0, 256, (40, 35, 3), dtype=np.uint8)).save(
                folder / f"{track:05d}_00000.ppm")
    test_folder = base / "GTSRB" / "Final_Test" / "Images"
    test_folder.mkdir(parents=True)
    rows = ["Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"]
    for index in range(43):
        Image.fromarray(rng.integers(0, 256, (30, 33, 3), dtype=np.uint8)).save(
            test_folder / f"{index:05d}.ppm")
        rows.append(f"{index:05d}.ppm;33;30;1;1;30;28;{index}")
    (base / "GT-final_test.csv").write_text("\n".join(rows) + "\n")
    return root


def test_torchvision_source(tmp_path):
    root = _fake_torchvision_gtsrb(tmp_path / "tv")
    arrays = train_gtsrb.load_torchvision_source(str(root))
    assert arrays["x_train"].shape == (86, 32, 32, 3) and arrays["x_test"].shape == (43, 32, 32, 3)
    assert arrays["y_train"].tolist() == np.repeat(np.arange(43), 2).tolist()
    assert arrays["track_train"].tolist() == [0, 1] * 43
    assert arrays["class_names"][14] == "Stop"
    entry = train_gtsrb.main(["--model", "gtsrb-aghdam", "--epochs", "1", "--source",
                              "torchvision", "--root", str(root), "--out",
                              str(tmp_path / "w"), "--quiet", "--threads", "1"])
    assert entry["source"] == "torchvision" and "--root" not in entry["command"]


def test_torchvision_source_missing_folder(tmp_path):
    with pytest.raises(data.DataNotFoundError, match="download=True"):
        train_gtsrb.load_torchvision_source(str(tmp_path))
