"""Tests of localprops.models: loading, conventions, integrity, availability."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch import nn

from localprops import models
from localprops.models import data

#: The GTSRB nets whose weights are committed (the paper's two, then the
#: ImageNet families trained on GTSRB as their training finishes).
GTSRB_NAMES = sorted(json.loads((models.WEIGHTS_DIR / models.GTSRB_WEIGHTS_JSON).read_text()))
#: Width of the layer before the classifier.
FEATURE_WIDTH = {"gtsrb-ciresan": 300, "gtsrb-aghdam": 400, "gtsrb-ciresan-noise": 300, "gtsrb-alexnet": 1024,
                 "gtsrb-vgg11bn": 1024, "gtsrb-googlenet": 1024, "gtsrb-resnet18": 512}


def needs_env(variable: str) -> Path:
    """The path in ``$variable``, or skip the test saying what to set."""
    value = os.environ.get(variable)
    if not value or not Path(value).exists():
        pytest.skip(f"needs real data: set {variable} (see shared/data/README.md)")
    return Path(value)


@pytest.fixture(scope="module", params=GTSRB_NAMES)
def gtsrb_spec(request):
    return models.load(request.param, device="cpu")


# ------------------------------------------------------------- GTSRB nets
def test_gtsrb_spec_conventions(gtsrb_spec):
    spec = gtsrb_spec
    assert spec.dataset == "gtsrb" and spec.input_size == (32, 32)
    assert len(spec.classes) == 43 and spec.classes[14] == "Stop"
    assert isinstance(spec.model, models.Normalized)
    assert not spec.model.training and not spec.model.model.training
    x = data.images_to_tensor(data.gtsrb_eval_subset()["images"][:5])
    logits = spec.model(x)
    assert logits.shape == (5, 43)
    assert spec.weights_source.startswith("trained for this book")


def test_gtsrb_feature_layer_hook_gives_flat_vector(gtsrb_spec):
    spec = gtsrb_spec
    layer = dict(spec.model.named_modules())[spec.feature_layer]
    seen = []
    handle = layer.register_forward_hook(lambda m, a, out: seen.append(out))
    try:
        with torch.no_grad():
            spec.model(torch.full((3, 3, 32, 32), 128.0))
    finally:
        handle.remove()
    width = FEATURE_WIDTH[spec.name]
    assert seen[0].flatten(1).shape == (3, width)
    assert spec.features(torch.full((3, 3, 32, 32), 128.0)).shape == (3, width)
    assert models.find_feature_layer(spec.model, (32, 32)) == spec.feature_layer


def test_gtsrb_preprocess_gives_raw_pixels(gtsrb_spec):
    image = Image.fromarray(np.random.default_rng(0).integers(
        0, 256, (57, 43, 3), dtype=np.uint8))
    x = gtsrb_spec.preprocess(image)
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert x.min() >= 0 and x.max() <= 255 and x.max() > 1


def test_gtsrb_nets_classify_the_bundled_subset(gtsrb_spec):
    subset = data.gtsrb_eval_subset()
    accuracy = models.accuracy(gtsrb_spec, subset["images"], subset["labels"])
    assert accuracy > 0.95       # both nets: > 97 % on the full test set


def test_gtsrb_sha256_mismatch_is_reported(tmp_path):
    shutil.copy(models.WEIGHTS_DIR / models.GTSRB_WEIGHTS_JSON, tmp_path)
    good = (models.WEIGHTS_DIR / "gtsrb-aghdam.pt").read_bytes()
    (tmp_path / "gtsrb-aghdam.pt").write_bytes(good[:-10] + b"0123456789")
    with pytest.raises(models.WeightsIntegrityError, match="sha256") as error:
        models.load("gtsrb-aghdam", device="cpu", weights_path=tmp_path)
    assert "gtsrb-aghdam.pt" in str(error.value)


def test_gtsrb_weights_via_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(models.WEIGHTS_DIR_ENV, str(tmp_path))
    with pytest.raises(models.ModelUnavailableError, match="train_gtsrb"):
        models.load("gtsrb-ciresan", device="cpu")


def test_untrained_net_names_its_training_command_first(tmp_path):
    (tmp_path / models.GTSRB_WEIGHTS_JSON).write_text("{}")
    with pytest.raises(models.ModelUnavailableError) as error:
        models.load("gtsrb-vgg11bn", device="cpu", weights_path=tmp_path)
    first, second = str(error.value).splitlines()
    assert first.endswith("--model gtsrb-vgg11bn --weights-dtype float16`")
    assert str(tmp_path) not in first and str(tmp_path) in second


def test_weights_record_is_complete():
    record = json.loads((models.WEIGHTS_DIR / models.GTSRB_WEIGHTS_JSON).read_text())
    for name in GTSRB_NAMES:
        entry = record[name]
        # the paper's two nets reach 97 %; the families must reach 95 % (issue 19)
        floor = 0.97 if name in ("gtsrb-ciresan", "gtsrb-aghdam") else 0.95
        assert entry["test_images"] == 12630 and entry["test_accuracy"] >= floor
        for key in ("sha256", "command", "epochs", "seed", "torch_version", "date",
                    "reference"):
            assert key in entry
        assert name in models.GTSRB_NAMES
        path = models.WEIGHTS_DIR / entry["file"]
        # float16 weights keep the largest family (VGG-11-BN, 12.4 M parameters) at 25 MB
        assert path.stat().st_size < 26_000_000
        assert data.file_sha256(path) == entry["sha256"]


def test_loader_reproduces_the_training_pipelines_logits(gtsrb_spec):
    """The wrapper's preprocessing and normalisation agree with training's."""
    record = json.loads((models.WEIGHTS_DIR / models.GTSRB_WEIGHTS_JSON).read_text())
    reference = record[gtsrb_spec.name]["reference"]
    n = len(reference["logits"])
    x = data.images_to_tensor(data.gtsrb_eval_subset()["images"][:n])
    with torch.no_grad():
        logits = gtsrb_spec.model(x).double().numpy()
    np.testing.assert_allclose(logits, np.asarray(reference["logits"]), rtol=0, atol=2e-4)
    assert all(not p.requires_grad for p in gtsrb_spec.model.parameters())
    assert not gtsrb_spec.model.training


@pytest.mark.data
@pytest.mark.parametrize("name", GTSRB_NAMES)
def test_gtsrb_accuracy_matches_record(name):
    arrays = data.load_gtsrb(needs_env(data.GTSRB_ENV))
    record = json.loads((models.WEIGHTS_DIR / models.GTSRB_WEIGHTS_JSON).read_text())
    rows = np.arange(0, len(arrays["y_test"]), 12)[:1000]   # fixed 1,000 images
    spec = models.load(name, device="cpu")
    accuracy = models.accuracy(spec, arrays["x_test"][rows], arrays["y_test"][rows],
                               batch_size=500)
    # 1,000 of 12,630 images: the standard error of the estimate is ~0.45 %
    assert abs(accuracy - record[name]["test_accuracy"]) < 0.015


# -------------------------------------------------------------- torchvision
@pytest.fixture()
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv(models.ALLOW_DOWNLOAD_ENV, "0")
    return tmp_path


def test_torchvision_model_from_cache(torch_home):
    url = torchvision.models.ResNet18_Weights.DEFAULT.url
    folder = torch_home / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), folder / os.path.basename(url))
    spec = models.load("resnet18", device="cpu")
    assert spec.dataset == "imagenet" and spec.input_size == (224, 224)
    assert len(spec.classes) == 1000 and spec.classes[0] == "tench"
    x = spec.preprocess(Image.new("RGB", (300, 400), (200, 10, 30)))
    assert x.shape == (3, 224, 224) and x.max() == 200
    assert spec.model(x[None]).shape == (1, 1000)
    assert spec.feature_layer == "model.avgpool"
    assert spec.features(x[None]).shape == (1, 512)
    assert "resnet18-f37072fd.pth" in spec.weights


def test_torchvision_missing_checkpoint_is_explained(torch_home):
    with pytest.raises(models.ModelUnavailableError) as error:
        models.load("alexnet", device="cpu")
    message = str(error.value)
    assert "alexnet-owt-7be5be79.pth" in message and str(torch_home) in message
    assert "TORCH_HOME" in message


def test_available_reports_reasons(torch_home):
    result = models.available(["gtsrb-aghdam", "resnet50", "no-such-net"])
    assert result.ok == ["gtsrb-aghdam"]
    assert "resnet50" in result.reasons["resnet50"] and "TORCH_HOME" in result.reasons["resnet50"]
    assert "unknown model" in result.reasons["no-such-net"]
    assert "no-such-net: skipped" in result.note()


# ------------------------------------------------------- EfficientNet-Lite
@pytest.fixture(scope="module")
def lite0():
    return models.load("efficientnet-lite0", device="cpu")


def test_efficientnet_lite0_loads(lite0):
    spec = lite0
    assert spec.input_size == (224, 224) and len(spec.classes) == 1000
    x = torch.full((1, 3, 224, 224), 120.0)
    assert spec.model(x).shape == (1, 1000)
    assert spec.features(x).shape == (1, 1280)
    assert models.find_feature_layer(spec.model, (224, 224)) == spec.feature_layer


@pytest.mark.data
@pytest.mark.parametrize("file_name, index", [("n01440764_tench.JPEG", 0),
                                              ("n01582220_magpie.JPEG", 18)])
def test_efficientnet_lite0_classifies_samples(file_name, index, lite0):
    root = needs_env(data.IMAGENET_ENV)
    spec = lite0
    x = spec.preprocess(Image.open(root / file_name))
    assert spec.model(x[None]).argmax().item() == index


def test_imagenet_accuracy_record():
    record = json.loads((models.WEIGHTS_DIR / models.IMAGENET_ACCURACY_JSON).read_text())
    for name in ("efficientnet-lite0", "efficientnet-lite2"):
        assert record[name]["images"] == 500 and 0.8 < record[name]["top1"] < 0.97


# --------------------------------------------------------- names and misc
def test_unknown_name_lists_known_ones():
    with pytest.raises(ValueError) as error:
        models.load("resnet-9000")
    for name in ("gtsrb-ciresan", "gtsrb-aghdam", "efficientnet-lite0", "alexnet",
                 "resnet18", "vgg16", "googlenet"):
        assert name in str(error.value)
    with pytest.raises(TypeError):
        models.load(3)


def test_from_module_wraps_a_custom_net():
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 8), nn.ReLU(), nn.Linear(8, 2))
    spec = models.from_module(net, mean=[0.5] * 3, std=[0.25] * 3, input_size=(4, 4),
                              classes=["no", "yes"], feature_layer="2", device="cpu")
    x = torch.rand(2, 3, 4, 4) * 255
    expected = net((x / 255 - 0.5) / 0.25)
    assert torch.allclose(spec.model(x), expected)
    assert spec.feature_layer == "model.2" and spec.features(x).shape == (2, 8)
    assert spec.preprocess(Image.new("RGB", (9, 7))).shape == (3, 4, 4)
    with pytest.raises(ValueError, match="feature_layer"):
        models.from_module(net, mean=[0] * 3, std=[1] * 3, input_size=(4, 4),
                           classes=["a", "b"], feature_layer="nope")
    with pytest.raises(TypeError):
        models.from_module("net", mean=[0] * 3, std=[1] * 3, input_size=(4, 4),
                           classes=["a", "b"], feature_layer="2")


def test_normalized_rejects_bad_std_and_preprocess_rejects_arrays():
    with pytest.raises(ValueError, match="std"):
        models.Normalized(nn.Identity(), [0, 0, 0], [1, 0, 1])
    with pytest.raises(TypeError, match="PIL"):
        models.ResizeCrop(8, (8, 8))(np.zeros((8, 8, 3), dtype=np.uint8))


def test_resolve_device_defaults_to_cuda_when_present():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert models.resolve_device(None).type == expected
    assert models.resolve_device("cpu") == torch.device("cpu")
