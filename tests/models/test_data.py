"""Tests of localprops.models.data: GTSRB arrays, ImageNet folders, sample selection."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from localprops.core.philox import derive_seed
from localprops.models import ResizeCrop, data, from_module
from localprops.models.samples import select_samples
from localprops.tools import assets


def needs_env(variable: str) -> Path:
    """The path in ``$variable``, or skip the test saying what to set."""
    value = os.environ.get(variable)
    if not value or not Path(value).exists():
        pytest.skip(f"needs real data: set {variable} (see shared/data/README.md)")
    return Path(value)


# ------------------------------------------------------------ conversions
def test_images_to_tensor_layout_and_values():
    images = np.arange(2 * 4 * 5 * 3, dtype=np.uint8).reshape(2, 4, 5, 3)
    x = data.images_to_tensor(images)
    assert x.shape == (2, 3, 4, 5) and x.dtype == torch.float32
    assert x[1, 2, 3, 4] == images[1, 3, 4, 2]
    assert data.images_to_tensor(images[0]).shape == (1, 3, 4, 5)


@pytest.mark.parametrize("bad, error", [
    (np.zeros((2, 4, 4, 3), dtype=np.float32), TypeError),
    (np.zeros((2, 4, 4), dtype=np.uint8), ValueError),
    (np.zeros((2, 3, 4, 4), dtype=np.uint8), ValueError),
])
def test_images_to_tensor_rejects_bad_input(bad, error):
    with pytest.raises(error):
        data.images_to_tensor(bad)


@pytest.mark.parametrize("bad, error", [
    (torch.full((1, 3, 4, 4), 300.0), ValueError),       # not raw pixels
    (torch.full((1, 3, 4, 4), -1.0), ValueError),
    (torch.zeros(3, 4, 4), ValueError),                  # no batch axis
    (torch.zeros(1, 4, 4, 3), ValueError),               # channels last
    (torch.zeros(1, 3, 4, 4, dtype=torch.int32), TypeError),
    (np.zeros((1, 4, 4, 3), dtype=np.float64), TypeError),
    ([[1, 2]], TypeError),
    (torch.full((1, 3, 2, 2), float("nan")), ValueError),
])
def test_as_image_batch_rejects_bad_input(bad, error):
    with pytest.raises(error):
        data.as_image_batch(bad)


# -------------------------------------------------------------------- GTSRB
def test_gtsrb_eval_subset_is_stratified_and_fixed():
    subset = data.gtsrb_eval_subset()
    assert subset["images"].shape == (430, 32, 32, 3)
    assert subset["images"].dtype == np.uint8
    assert np.bincount(subset["labels"], minlength=43).tolist() == [10] * 43
    assert len(subset["class_names"]) == 43 and subset["class_names"][14] == "Stop"
    assert len(np.unique(subset["test_index"])) == 430
    assert subset["test_index"].max() < 12630


def test_make_gtsrb_eval_subset_is_deterministic_and_spread():
    labels = np.repeat(np.arange(3), [30, 5, 12])
    first = assets.make_gtsrb_eval_subset(labels, per_class=4)
    assert np.array_equal(first, assets.make_gtsrb_eval_subset(labels, per_class=4))
    assert np.bincount(labels[first]).tolist() == [4, 4, 4]
    assert first[0] == 0 and first[3] == 29          # first and last of class 0


def test_load_gtsrb_without_path_names_the_variable(monkeypatch):
    monkeypatch.delenv(data.GTSRB_ENV, raising=False)
    with pytest.raises(data.DataNotFoundError, match="LOCALPROPS_GTSRB"):
        data.load_gtsrb()


def test_load_gtsrb_missing_file(tmp_path):
    with pytest.raises(data.DataNotFoundError, match="does not exist"):
        data.load_gtsrb(tmp_path / "nope.npz")


@pytest.mark.data
def test_gtsrb_file_and_subset_agree():
    arrays = data.load_gtsrb(needs_env(data.GTSRB_ENV))
    assert arrays["x_train"].shape == (19605, 32, 32, 3)
    assert arrays["x_test"].shape == (12630, 32, 32, 3)
    subset = data.gtsrb_eval_subset()
    index = subset["test_index"]
    assert np.array_equal(arrays["x_test"][index], subset["images"])
    assert np.array_equal(arrays["y_test"][index], subset["labels"])
    assert np.array_equal(index, assets.make_gtsrb_eval_subset(arrays["y_test"]))


# ----------------------------------------------------------------- ImageNet
def test_imagenet_classes_are_torchvision_order():
    classes = data.imagenet_classes()
    assert len(classes) == 1000
    wnids = [w for _, w, _ in classes]
    assert wnids == sorted(wnids) and [i for i, _, _ in classes] == list(range(1000))
    assert classes[0] == (0, "n01440764", "tench")


def _write_folder(root: Path) -> None:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(
        root / "n01440764_tench.JPEG")
    Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8), mode="L").save(
        root / "n01443537_grey.png")
    (root / "n01484850_broken.JPEG").write_bytes(b"not an image at all")
    (root / "README.txt").write_text("not an image")


def test_load_imagenet_folder_flat_layout(tmp_path):
    _write_folder(tmp_path)
    with pytest.warns(UserWarning, match="n01484850_broken.JPEG"):
        loaded = data.load_imagenet_folder(tmp_path, ResizeCrop(8, (8, 8)))
    assert loaded.images.shape == (2, 3, 8, 8)            # grey one made RGB
    assert loaded.images.min() >= 0 and loaded.images.max() <= 255
    assert loaded.labels.tolist() == [0, 1]
    assert [p.name for p in loaded.paths] == ["n01440764_tench.JPEG",
                                              "n01443537_grey.png"]


def test_load_imagenet_folder_imagefolder_layout_and_limit(tmp_path):
    for wnid in ("n01443537", "n01440764"):
        (tmp_path / wnid).mkdir()
        for k in range(2):
            Image.new("RGB", (10, 12), (k * 50, 0, 0)).save(tmp_path / wnid / f"{k}.jpg")
    loaded = data.load_imagenet_folder(tmp_path, ResizeCrop(None, (6, 6)), limit=3)
    assert loaded.labels.tolist() == [0, 0, 1]


def test_load_imagenet_folder_unnamed_file_warns(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "holiday.jpg")
    Image.new("RGB", (8, 8)).save(tmp_path / "n01440764_x.jpg")
    with pytest.warns(UserWarning, match="holiday.jpg"):
        loaded = data.load_imagenet_folder(tmp_path, ResizeCrop(None, None))
    assert loaded.labels.tolist() == [0]


def test_load_imagenet_folder_bad_paths(tmp_path, monkeypatch):
    with pytest.raises(data.DataNotFoundError, match="does not exist"):
        data.load_imagenet_folder(tmp_path / "missing", ResizeCrop(8, (8, 8)))
    with pytest.raises(data.DataNotFoundError, match="no labelled ImageNet images"):
        data.load_imagenet_folder(tmp_path, ResizeCrop(8, (8, 8)))
    monkeypatch.delenv(data.IMAGENET_ENV, raising=False)
    with pytest.raises(data.DataNotFoundError, match="LOCALPROPS_IMAGENET"):
        data.load_imagenet_folder(None, ResizeCrop(8, (8, 8)))


@pytest.mark.data
def test_load_imagenet_sample_labels():
    root = needs_env(data.IMAGENET_ENV)
    loaded = data.load_imagenet_folder(root, ResizeCrop(64, (64, 64)), limit=4)
    index_of = data.wnid_to_index()
    assert loaded.labels.tolist() == [index_of[p.name[:9]] for p in loaded.paths]
    assert loaded.labels[0] == 0                       # n01440764_tench
    assert len(list(root.glob("*.JPEG"))) == 500


# ----------------------------------------------------------- select_samples
class _TableModel(nn.Module):
    """Logits looked up by the image's first pixel value (0..255)."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("table", table)
        self.head = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        row = (x[:, 0, 0, 0] * 255).round().long()      # undo the 1/255 scale
        return self.head(self.table[row])


def _spec_and_images():
    # probability of the true class 0 for images 0..5 (image 1: class 1 wins)
    p_true = [0.995, 0.001, 0.98, 0.999, 0.9999, 0.5]
    table = torch.stack([torch.log(torch.tensor([p, 1 - p])) for p in p_true])
    spec = from_module(_TableModel(table), mean=[0, 0, 0], std=[1, 1, 1],
                       input_size=(2, 2), classes=["a", "b"], feature_layer="head",
                       device="cpu")
    images = torch.zeros(6, 3, 2, 2)
    images[:, 0, 0, 0] = torch.arange(6, dtype=torch.float32)
    return spec, images, torch.zeros(6, dtype=torch.int64)


@pytest.mark.parametrize("batch_size", [1, 2, 64])
def test_select_samples_order_threshold_and_seeds(batch_size):
    spec, images, labels = _spec_and_images()
    chosen = select_samples(spec, images, labels, n=2, batch_size=batch_size,
                                 base_seed=7)
    assert chosen.positions.tolist() == [0, 3]
    assert chosen.indices.tolist() == [0, 3]
    assert torch.allclose(chosen.scores, torch.tensor([0.995, 0.999], dtype=torch.float64))
    assert chosen.seeds == [derive_seed(7, 0), derive_seed(7, 3)]
    assert torch.equal(chosen.images, images[[0, 3]])
    assert len(chosen) == 2


def test_select_samples_threshold_and_dataset_indices():
    spec, images, labels = _spec_and_images()
    with pytest.warns(UserWarning, match="only 4 of 6"):
        chosen = select_samples(spec, images, labels, n=10, threshold=0.97,
                                     dataset_indices=[10, 11, 12, 13, 14, 15])
    assert chosen.positions.tolist() == [0, 2, 3, 4]
    assert chosen.indices.tolist() == [10, 12, 13, 14]
    assert chosen.seeds == [derive_seed(0, i) for i in (10, 12, 13, 14)]


def test_select_samples_warns_when_short():
    spec, images, labels = _spec_and_images()
    with pytest.warns(UserWarning, match="only 3 of 6"):
        chosen = select_samples(spec, images, labels, n=5)
    assert chosen.positions.tolist() == [0, 3, 4]


@pytest.mark.parametrize("kwargs, error", [
    ({"n": 0}, ValueError),
    ({"n": 1.5}, TypeError),
    ({"n": 1, "threshold": 1.5}, ValueError),
    ({"n": 1, "dataset_indices": [1, 2]}, ValueError),
    ({"n": 1, "base_seed": -1}, ValueError),
])
def test_select_samples_bad_arguments(kwargs, error):
    spec, images, labels = _spec_and_images()
    with pytest.raises(error):
        select_samples(spec, images, labels, **kwargs)


def test_select_samples_bad_labels_and_images():
    spec, images, labels = _spec_and_images()
    with pytest.raises(ValueError, match="labels must have shape"):
        select_samples(spec, images, labels[:3], n=1)
    with pytest.raises(TypeError, match="integers"):
        select_samples(spec, images, labels.float(), n=1)
    with pytest.raises(ValueError, match="raw pixel"):
        select_samples(spec, images * 1000, labels, n=1)
