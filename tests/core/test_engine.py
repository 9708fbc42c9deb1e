"""evaluate() against a plain per-image loop on a tiny ConvNet."""
import numpy as np
import pytest
import torch

from conftest import OutOfMemoryOnce
from localprops.core import engine
from localprops.core.engine import evaluate
from localprops.core.sampling import PermutedPerturbations, RadialPerturbations

SHAPE = (3, 12, 12)


@pytest.fixture
def clean_image():
    g = torch.Generator().manual_seed(1)
    return torch.rand(SHAPE, generator=g) * 255


def per_image_loop(model, x, nu, label, layer):
    """The straightforward first implementation: one forward per perturbed image."""
    probs, feats = [], []
    store = {}
    handle = dict(model.named_modules())[layer].register_forward_hook(
        lambda m, i, o: store.__setitem__("f", o.flatten(1)))
    with torch.no_grad():
        for r in range(nu.shape[0]):
            for t in range(nu.shape[1]):
                logits = model((x + nu[r, t]).unsqueeze(0))
                probs.append(torch.softmax(logits.double(), -1)[0])
                feats.append(store["f"][0])
    handle.remove()
    r, t = nu.shape[:2]
    probs = torch.stack(probs).reshape(r, t, -1)
    return probs, probs[..., label], torch.stack(feats).reshape(r, t, -1)


@pytest.mark.parametrize("batch_size", [1, 7, 1000])
def test_matches_per_image_loop(tiny_net, clean_image, batch_size):
    source = RadialPerturbations(SHAPE, [0.5, 50.0, 500.0], 6, "l2", 2)
    nu = source.materialize()
    probs, scores, feats = per_image_loop(tiny_net, clean_image, nu, 3, "classifier.2")
    for perturbations in (nu, source):
        out = evaluate(tiny_net, clean_image, perturbations, labels=3,
                       feature_layer="classifier.2", batch_size=batch_size, progress=False)
        assert out.probs.shape == (3, 6, 5) and out.features.shape == (3, 6, 16)
        assert torch.allclose(out.probs, probs, atol=1e-6)
        assert torch.allclose(out.scores, scores, atol=1e-6)
        assert torch.allclose(out.features, feats, atol=1e-5)
        assert torch.equal(out.predictions, probs.argmax(-1))
    with torch.no_grad():
        clean = torch.softmax(tiny_net(clean_image[None]).double(), -1)[0]
    assert torch.allclose(out.clean_probs, clean, atol=1e-6)
    assert out.clean_features.shape == (16,)


def test_leaves_the_perturbation_tensor_unchanged(tiny_net, clean_image):
    nu = RadialPerturbations(SHAPE, [1.0], 4).materialize()
    before = nu.clone()
    first = evaluate(tiny_net, clean_image, nu, labels=0, progress=False)
    assert torch.equal(nu, before)
    second = evaluate(tiny_net, clean_image, nu, labels=0, progress=False)
    assert torch.equal(first.scores, second.scores)


def test_chunk_size_does_not_change_scores(tiny_net, clean_image):
    source = PermutedPerturbations(SHAPE, [1.0, 30.0], 10, "linf", 4)
    a = evaluate(tiny_net, clean_image, source, labels=0, batch_size=3, progress=False)
    b = evaluate(tiny_net, clean_image, source, labels=0, batch_size=20, progress=False)
    assert torch.allclose(a.scores, b.scores, atol=1e-6)


def test_restores_training_mode_and_no_grad(tiny_net, clean_image):
    tiny_net.train()
    out = evaluate(tiny_net, clean_image, RadialPerturbations(SHAPE, [1.0], 2), progress=False)
    assert tiny_net.training and not out.probs.requires_grad
    assert out.scores is None and out.features is None


def test_confident_scores_are_not_rounded_to_one(clean_image):
    class Confident(torch.nn.Module):
        def forward(self, x):
            logits = torch.zeros(len(x), 3)
            logits[:, 0] = 25 + x.flatten(1)[:, 0] / 255     # p(class 0) ~ 1 - 3e-11
            return logits

    nu = RadialPerturbations(SHAPE, [10.0], 8).materialize()
    out = evaluate(Confident(), clean_image, nu, labels=0, progress=False)
    assert (out.scores < 1).all() and out.scores.max() > out.scores.min()


def test_float64_model(tiny_net, clean_image):
    model = tiny_net.double()
    out = evaluate(model, clean_image, RadialPerturbations(SHAPE, [1.0], 3), labels=1,
                   progress=False)
    assert out.probs.dtype == torch.float64


def test_out_of_memory_halves_the_chunk(tiny_net, clean_image):
    model = OutOfMemoryOnce(tiny_net, limit=5)
    source = RadialPerturbations(SHAPE, [1.0, 2.0], 10)
    out = evaluate(model, clean_image, source, labels=0, batch_size=16, progress=False)
    reference = evaluate(tiny_net, clean_image, source, labels=0, progress=False)
    assert out.batch_size == 4
    assert torch.allclose(out.scores, reference.scores, atol=1e-6)


def test_bad_input(tiny_net, clean_image):
    nu = torch.zeros(2, 3, *SHAPE)
    with pytest.raises(ValueError, match=r"one clean image"):
        evaluate(tiny_net, clean_image[None], nu)
    with pytest.raises(ValueError, match=r"shape \(R, T, 3, 12, 12\)"):
        evaluate(tiny_net, clean_image, torch.zeros(2, 3, 3, 8, 8))
    with pytest.raises(ValueError, match="NaN"):
        evaluate(tiny_net, clean_image * float("nan"), nu)
    bad = nu.clone()
    bad[0, 0, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="NaN or infinite"):
        evaluate(tiny_net, clean_image, bad)
    with pytest.raises(ValueError, match="not a module"):
        evaluate(tiny_net, clean_image, nu, feature_layer="fc7")
    with pytest.raises(ValueError, match="not a class"):
        evaluate(tiny_net, clean_image, nu, labels=5)
    with pytest.raises(TypeError, match="nn.Module"):
        evaluate(lambda v: v, clean_image, nu)
    with pytest.raises(TypeError, match="perturbations must be"):
        evaluate(tiny_net, clean_image, [[0.0]])
    with pytest.raises(ValueError, match="batch_size"):
        evaluate(tiny_net, clean_image, nu, batch_size=0)


def test_cuda_matches_cpu(tiny_net, clean_image, cuda_device):
    source = RadialPerturbations(SHAPE, [1.0, 100.0], 8, "l2", 1)
    cpu = evaluate(tiny_net, clean_image, source, labels=2, progress=False)
    gpu = evaluate(tiny_net.to(cuda_device), clean_image, source, labels=2, progress=False)
    assert torch.allclose(cpu.scores, gpu.scores, atol=1e-5)


def test_default_batch_size_is_small_on_cpu_and_large_on_gpu():
    from localprops.core.engine import default_batch_size
    assert default_batch_size((3, 224, 224), torch.device("cpu")) == 4
    assert default_batch_size((3, 32, 32), torch.device("cpu")) == 32
    assert default_batch_size((3, 2000, 2000), torch.device("cpu")) == 1
    assert default_batch_size((3, 224, 224), torch.device("cuda")) == 256


def test_evaluate_warns_when_the_clean_image_looks_like_zero_one(tiny_net):
    """The commonest mistake: an image in [0, 1] where [0, 255] is expected."""
    import warnings

    from localprops.core.checks import UnitRangeWarning

    g = torch.Generator().manual_seed(0)
    unit = torch.rand(3, 8, 8, generator=g)
    nu = torch.zeros(1, 1, 3, 8, 8)
    with pytest.warns(UnitRangeWarning, match=r"\[0, 255\]"):
        engine.evaluate(tiny_net, unit, nu)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnitRangeWarning)
        engine.evaluate(tiny_net, 255 * unit, nu)                # the right scale
        engine.evaluate(tiny_net, torch.zeros(3, 8, 8), nu)      # an all-black image


def test_studies_warn_when_the_samples_look_like_zero_one():
    from localprops.core.checks import UnitRangeWarning
    from localprops.models.samples import SampleSet
    from localprops.studies.runner import run_units

    samples = SampleSet(images=torch.rand(2, 3, 4, 4), labels=[0, 1], seeds=[1, 2], ids=[0, 1])
    with pytest.warns(UnitRangeWarning, match="multiply it by 255"):
        run_units(samples, lambda i: {"i": i}, lambda i: {"v": np.zeros(1)}, cache=None,
                  desc="test", progress=False, study_modules=())
