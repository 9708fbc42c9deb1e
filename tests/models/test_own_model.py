"""A reader's own model (``module:callable``) and images (.npz or folder)."""
from __future__ import annotations

import itertools
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from localprops.core.cache import ResultCache
from localprops.core.checks import UnitRangeWarning
from localprops.models import ModelSpec, ModelUnavailableError, available, data, load, samples, zoo

_COUNTER = itertools.count()

#: A ConvNet that tells red, green and blue images apart with logits 20 apart
#: (weights set by hand, no training): every clean image passes the 99% filter.
COLOUR_NET = '''
import torch
from torch import nn


class ColourNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(3, 3)
        with torch.no_grad():
            self.conv.weight.copy_(torch.eye(3)[:, :, None, None])
            self.conv.bias.zero_()
            self.fc.weight.copy_(30 * torch.eye(3))
            self.fc.bias.zero_()

    def forward(self, x):
        return self.fc(self.flat(self.pool(torch.relu(self.conv(x)))))
'''


def colour_images(n_per_class: int = 4, size: int = 8, seed: int = 0):
    """uint8 (N, size, size, 3): noise in [0, 60] plus 190 in the class's channel."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(3), n_per_class)
    images = rng.integers(0, 60, size=(len(labels), size, size, 3)).astype(np.uint8)
    for i, label in enumerate(labels):
        images[i, :, :, label] += 190
    return images, labels


def write_module(folder: Path, body: str) -> str:
    """Write a uniquely named module into ``folder``; return its name."""
    name = f"own_model_{next(_COUNTER)}_{folder.name.replace('-', '_')}"
    (folder / f"{name}.py").write_text(COLOUR_NET + textwrap.dedent(body))
    return name


BUILD_DICT = '''
def build():
    return dict(model=ColourNet(), mean=(0, 0, 0), std=(1, 1, 1), input_size=(8, 8),
                classes=["red", "green", "blue"], feature_layer="flat",
                dataset="{dataset}")
'''


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """tmp_path as the working directory, with no extra module path."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(zoo.MODULE_PATH_ENV, raising=False)
    return tmp_path


def save_npz(path: Path, images, labels) -> Path:
    np.savez(path, images=images, labels=labels)
    return path


# ------------------------------------------------------------ module:callable
def test_module_callable_returning_a_dict(in_tmp):
    save_npz(in_tmp / "imgs.npz", *colour_images())
    module = write_module(in_tmp, BUILD_DICT.format(dataset="imgs.npz"))
    spec = load(f"{module}:build", device="cpu")
    assert isinstance(spec, ModelSpec)
    assert spec.name == f"{module}:build"
    assert spec.dataset == str((in_tmp / "imgs.npz").resolve())
    assert "state sha256" in spec.weights and "images sha256" in spec.weights
    assert not any(p.requires_grad for p in spec.model.parameters())
    assert spec.feature_layer == "model.flat"
    assert str(in_tmp) not in __import__("sys").path     # only for the import


def test_module_callable_returning_a_spec_with_device(in_tmp):
    module = write_module(in_tmp, '''
        from localprops.models import from_module

        def build(device=None):
            assert device is not None
            return from_module(ColourNet(), mean=(0, 0, 0), std=(1, 1, 1), input_size=(8, 8),
                               classes=["r", "g", "b"], feature_layer="flat")
        ''')
    spec = load(f"{module}:build", device="cpu")
    assert spec.name == f"{module}:build" and spec.dataset == "custom"
    assert spec.device == torch.device("cpu")


def test_weights_change_with_the_state_dict(in_tmp):
    module = write_module(in_tmp, BUILD_DICT.format(dataset="custom") + '''
def retrained():
    net = ColourNet()
    with torch.no_grad():
        net.fc.bias[0] = 1.0
    return dict(build(), model=net)
''')
    a, b = load(f"{module}:build", "cpu"), load(f"{module}:retrained", "cpu")
    assert a.weights != b.weights
    assert a.weights == load(f"{module}:build", "cpu").weights


def test_module_path_env_is_searched(tmp_path, monkeypatch):
    elsewhere = tmp_path / "models"
    elsewhere.mkdir()
    module = write_module(elsewhere, BUILD_DICT.format(dataset="custom"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(zoo.MODULE_PATH_ENV, str(elsewhere))
    assert load(f"{module}:build", "cpu").name == f"{module}:build"


def test_unimportable_module_says_where_to_put_it(in_tmp):
    with pytest.raises(ModelUnavailableError, match=r"no module 'nowhere_xyz'.*working "
                                                    r"directory.*LOCALPROPS_MODULE_PATH"):
        load("nowhere_xyz:build", "cpu")
    reasons = available(["nowhere_xyz:build"]).reasons
    assert "nowhere_xyz" in reasons["nowhere_xyz:build"]


def test_module_importing_a_missing_package(in_tmp):
    module = write_module(in_tmp, "import not_installed_pkg_xyz\n")
    with pytest.raises(ModelUnavailableError, match="not_installed_pkg_xyz.*install"):
        load(f"{module}:build", "cpu")


def test_missing_callable_lists_the_modules_callables(in_tmp):
    module = write_module(in_tmp, BUILD_DICT.format(dataset="custom"))
    with pytest.raises(ModelUnavailableError, match=r"no attribute 'biuld'.*'build'"):
        load(f"{module}:biuld", "cpu")


def test_failing_callable(in_tmp):
    module = write_module(in_tmp, "def build():\n    raise OSError('no weights file')\n")
    with pytest.raises(ModelUnavailableError, match="calling it raised OSError: no weights"):
        load(f"{module}:build", "cpu")


@pytest.mark.parametrize("body, message", [
    ("def build():\n    return ColourNet()\n", r"(?s)returned a ColourNet; it must return a "
                                                r"ModelSpec.*def build\(\)"),
    ("def build():\n    return dict(mean=(0,), std=(1,))\n", "no 'model' key"),
    ("def build():\n    return dict(model=ColourNet(), colour=1)\n", r"unknown keys \['colour'\]"),
])
def test_callable_returning_the_wrong_thing(in_tmp, body, message):
    module = write_module(in_tmp, body)
    with pytest.raises(TypeError, match=message):
        load(f"{module}:build", "cpu")
    assert f"{module}:build" in available([f"{module}:build"]).reasons


def test_from_module_errors_name_the_callable(in_tmp):
    module = write_module(in_tmp, BUILD_DICT.replace('"flat"', '"nope"').format(
        dataset="custom"))
    with pytest.raises(ValueError, match=f"{module}:build: from_module rejected.*nope"):
        load(f"{module}:build", "cpu")


def test_malformed_module_callable_name():
    with pytest.raises(ValueError, match="package.module:callable"):
        load("my model:build", "cpu")


# ------------------------------------------------------------------ images
def spec_for(dataset, size: int = 8) -> ModelSpec:
    namespace: dict = {}
    exec(COLOUR_NET, namespace)
    return zoo.from_module(namespace["ColourNet"](), mean=(0, 0, 0), std=(1, 1, 1),
                           input_size=(size, size), classes=["red", "green", "blue"],
                           feature_layer="flat", device="cpu", dataset=str(dataset),
                           name="colour")


def test_npz_source_through_prepare(in_tmp):
    images, labels = colour_images()
    save_npz(in_tmp / "imgs.npz", images, labels)
    module = write_module(in_tmp, BUILD_DICT.format(dataset="imgs.npz"))
    prepared = samples.prepare([f"{module}:build"], n_samples=5, device="cpu",
                               cache=ResultCache(in_tmp / "cache"))
    assert not prepared.notes, prepared.notes
    (p,) = prepared.models
    assert len(p.samples) == 5 and p.classes == 3
    assert (p.clean_scores > 0.99).all()
    for i, label, image in zip(p.samples.ids, p.samples.labels, p.samples.images):
        assert label == labels[i]
        assert torch.equal(image, torch.from_numpy(images[i]).permute(2, 0, 1).float())
    assert f"{module}:build: 5 samples" in prepared.report()


def test_float_npz_channels_first_is_accepted(in_tmp):
    images, labels = colour_images()
    save_npz(in_tmp / "f.npz", images.transpose(0, 3, 1, 2).astype(np.float32), labels)
    source = data.load_image_source("f.npz", classes="rgb", input_size=(8, 8))
    assert source.images.shape == (12, 3, 8, 8) and source.labels.tolist() == labels.tolist()


def test_folder_source_through_prepare(in_tmp):
    from PIL import Image

    images, labels = colour_images(size=12)
    for i, (image, label) in enumerate(zip(images, labels)):
        folder = in_tmp / "folder" / ["red", "green", "blue"][label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i:03d}.png")
    spec = spec_for("folder")          # 12x12 files, resized to 8x8 by preprocess
    source = data.load_image_source("folder", classes=spec.classes, input_size=(8, 8),
                                    preprocess=spec.preprocess)
    # class = position in `classes` (red, green, blue), not sorted folder order
    assert sorted(source.labels.tolist()) == sorted(labels.tolist())
    assert source.labels[:4].tolist() == [2] * 4               # blue/ sorts first
    candidates = samples._file_candidates(spec, 0.99)
    assert len(candidates.ids) == 12
    assert candidates.load(candidates.ids[:2]).shape == (2, 3, 8, 8)


def test_folder_named_by_index(in_tmp):
    from PIL import Image

    images, labels = colour_images()
    for i, (image, label) in enumerate(zip(images, labels)):
        (in_tmp / "f" / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(in_tmp / "f" / str(label) / f"{i}.png")
    spec = spec_for("f")
    source = data.load_image_source("f", classes=spec.classes, input_size=(8, 8),
                                    preprocess=spec.preprocess)
    assert source.labels.tolist() == sorted(labels.tolist())


@pytest.mark.parametrize("arrays, message", [
    (dict(images=np.zeros((4, 8, 8), np.uint8), labels=np.zeros(4, int)), "must be 4-D"),
    (dict(images=np.zeros((4, 8, 8, 1), np.uint8), labels=np.zeros(4, int)),
     r"\(N, H, W, 3\).*greyscale"),
    (dict(images=np.zeros((4, 3, 8, 8), np.uint8), labels=np.zeros(4, int)),
     "channels-first: np.transpose"),
    (dict(images=np.zeros((4, 8, 8, 3), np.float32), labels=np.zeros(4, int)),
     "channels-last: np.transpose"),
    (dict(images=np.zeros((4, 16, 16, 3), np.uint8), labels=np.zeros(4, int)),
     r"\(16, 16\).*input_size is \(8, 8\): resize"),
    (dict(images=np.full((4, 3, 8, 8), 300.0), labels=np.zeros(4, int)),
     r"must lie in \[0, 255\]"),
    (dict(images=np.full((4, 3, 8, 8), -0.5), labels=np.zeros(4, int)),
     r"must lie in \[0, 255\].*Undo any normalisation"),
    (dict(images=np.zeros((4, 8, 8, 3), np.int64), labels=np.zeros(4, int)),
     "astype"),
    (dict(images=np.zeros((4, 8, 8, 3), np.uint8)), "no labels array"),
    (dict(images=np.zeros((4, 8, 8, 3), np.uint8), labels=np.array([0, 1, 2, 3])),
     r"class indices in \[0, 2\].*got \[3\]"),
    (dict(images=np.zeros((4, 8, 8, 3), np.uint8), labels=np.zeros(3, int)),
     r"shape \(4,\)"),
    (dict(images=np.zeros((4, 8, 8, 3), np.uint8), labels=np.full(4, 0.5)),
     "integer class indices"),
])
def test_bad_npz_says_what_to_fix(in_tmp, arrays, message):
    np.savez(in_tmp / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=message):
        data.load_image_source("bad.npz", classes=["a", "b", "c"], input_size=(8, 8))


def test_missing_or_wrong_kind_of_source(in_tmp):
    with pytest.raises(ValueError, match="not found.*npz.*folder of class subfolders"):
        data.load_image_source("nope.npz", classes="abc", input_size=(8, 8))
    (in_tmp / "x.txt").write_text("hi")
    with pytest.raises(ValueError, match="must be an .npz"):
        data.load_image_source("x.txt", classes="abc", input_size=(8, 8))
    (in_tmp / "flat").mkdir()
    with pytest.raises(ValueError, match="no class subfolders"):
        data.load_image_source("flat", classes="abc", input_size=(8, 8),
                               preprocess=spec_for("flat").preprocess)


def test_unit_range_images_warn_naming_the_convention(in_tmp):
    images, labels = colour_images()
    save_npz(in_tmp / "unit.npz", images.transpose(0, 3, 1, 2) / 255.0, labels)
    with pytest.warns(UnitRangeWarning, match=r"\[0, 255\]"):
        data.load_image_source("unit.npz", classes="rgb", input_size=(8, 8))


def test_prepare_notes_a_bad_source_with_the_fix(in_tmp):
    np.savez(in_tmp / "bad.npz", images=np.zeros((4, 8, 8, 3), np.uint8),
             labels=np.full(4, 7))
    module = write_module(in_tmp, BUILD_DICT.format(dataset="bad.npz"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = samples.prepare([f"{module}:build"], n_samples=2, device="cpu",
                                   cache=ResultCache(in_tmp / "cache"))
    assert not prepared.models
    assert "class indices in [0, 2]" in prepared.notes[0]


def test_fitting_images_reads_the_source(in_tmp):
    save_npz(in_tmp / "imgs.npz", *colour_images())
    assert samples.fitting_images(spec_for("imgs.npz"), 5).shape == (5, 3, 8, 8)


# ------------------------------------------------- a whole chapter, papermill
NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


@pytest.mark.slow
def test_isotropy_chapter_runs_on_an_own_model(tmp_path, monkeypatch):
    """notebooks/02_isotropy.ipynb at ci sizes on a module:callable model and an .npz.

    Both norms: with norms=["l2"] alone the chapter fails in its first-order
    cell (it fills gains["linf"] unconditionally), a notebook issue.
    """
    import nbformat
    import papermill

    models_dir = tmp_path / "mine"
    models_dir.mkdir()
    save_npz(models_dir / "imgs.npz", *colour_images(n_per_class=2, size=16))
    module = write_module(models_dir, BUILD_DICT.replace("(8, 8)", "(16, 16)").format(
        dataset="imgs.npz"))
    # what the build does for a profile in models_dir: the kernel inherits it
    monkeypatch.setenv(zoo.MODULE_PATH_ENV, str(models_dir))
    monkeypatch.setenv("LOCALPROPS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TQDM_DISABLE", "1")
    name = f"{module}:build"
    out = tmp_path / "02_isotropy.ipynb"
    papermill.execute_notebook(
        str(NOTEBOOKS / "02_isotropy.ipynb"), str(out), kernel_name="python3",
        cwd=str(NOTEBOOKS), progress_bar=False, log_output=False,
        parameters=dict(models=[name], n_samples=2, radii=[1, 10], T=6, norms=["l2", "linf"],
                        imagenet_limit=20, device="cpu", profile="test-own-model"))
    executed = nbformat.read(out, as_version=4)
    text = "\n".join(str(output.get("text", "")) + str(output.get("data", {}))
                     for cell in executed.cells if cell.cell_type == "code"
                     for output in cell.get("outputs", []))
    assert f"{name}: 2 samples over 2 classes" in text
    assert "skipped" not in text
    assert (tmp_path / "cache" / "verdicts" / "test-own-model" / "02_isotropy.json").is_file()
