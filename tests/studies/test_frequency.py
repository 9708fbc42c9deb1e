"""Frequency study (chapter 04): closed forms on tiny modules, and the F1-F3 rules."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import spec_of
from localprops.core.philox import derive_seed
from localprops.core.sampling import PermutedPerturbations, RadialPerturbations
from localprops.models.samples import SampleSet
from localprops.report import claims
from localprops.report.scorecard import INCONCLUSIVE, LOGICAL, NOT_SUPPORTED, PARTLY, SUPPORTED
from localprops.studies import frequency
from localprops.studies.frequency import FrequencyStudy, correlation_distance, frequency_study


def sample_set(n=3, shape=(3, 8, 8), low=0.0, high=255.0):
    g = torch.Generator().manual_seed(5)
    images = low + (high - low) * torch.rand(n, *shape, generator=g, dtype=torch.float64)
    return SampleSet(images, list(range(n)), [derive_seed(2, i) for i in range(n)],
                     list(range(n)))


class Stem(nn.Module):
    """conv -> activation -> max-pool -> classifier, in float64 (no rounding noise)."""

    def __init__(self, conv: nn.Conv2d, inplace: bool = False, side: int = 8):
        super().__init__()
        self.conv, self.act, self.pool = conv, nn.ReLU(inplace=inplace), nn.MaxPool2d(2)
        self.head = nn.Linear(conv.out_channels * (side // 2) ** 2, 3)

    def forward(self, x):
        return self.head(self.pool(self.act(self.conv(x))).flatten(1))


def random_stem(inplace=False):
    torch.manual_seed(0)
    return Stem(nn.Conv2d(3, 4, 3, padding=1), inplace).double().eval()


# ------------------------------------------------------------- measurement
@pytest.mark.parametrize("inplace", [False, True])
def test_linear_convolution_gap_is_proportional_to_r_in_closed_form(inplace):
    # an in-place ReLU after the convolution must not reach the recorded output
    radii, T, samples = [0.1, 1.0, 10.0, 100.0], 5, sample_set(3, (3, 16, 16))
    model = random_stem(inplace)
    study = frequency_study(model, samples, radii, T=T, progress=False)
    assert study.layers == {"convolution": "conv", "activation": "act", "pooling": "pool",
                            "pooling_input": "pool (its input)"}
    assert study.relative["convolution"].shape == (3, 4, T - 1)
    weight = model.conv.weight.detach()
    for i, seed in enumerate(samples.seeds):
        # the response to nu is K * nu (no bias): the gap is r ||K * (u_t - u_0)|| exactly
        nu = PermutedPerturbations((3, 16, 16), radii, T, "l2", seed).materialize(
            dtype=torch.float64)
        k = F.conv2d(nu.flatten(0, 1), weight, padding=1).reshape(4, T, -1)
        gap = (k[:, 1:] - k[:, :1]).norm(dim=-1)
        assert np.allclose(study.absolute["convolution"][i], gap, rtol=1e-8)
        assert np.allclose(study.relative["convolution"][i], gap / k[:, :1].norm(dim=-1),
                           rtol=1e-8)
    assert (study.relative["convolution"] > 0.5).all()
    # each radius has its own direction, so the log-log slope is 1 up to their spread
    slope = [np.polyfit(np.log(radii), np.log(a), 1)[0]
             for a in study.per_sample("absolute", "convolution")]
    assert np.allclose(slope, 1.0, atol=0.05)
    # after the ReLU: the gaps and correlation distances of relu(conv(x + nu)), by hand
    x = samples.images[0]
    nu = PermutedPerturbations((3, 16, 16), radii, T, "l2", samples.seeds[0]).materialize(
        dtype=torch.float64)
    with torch.no_grad():
        act = torch.relu(model.conv(x + nu.flatten(0, 1))).reshape(4, T, -1)
        delta = act - torch.relu(model.conv(x[None])).reshape(1, 1, -1)
    gap = (act[:, 1:] - act[:, :1]).norm(dim=-1)
    assert np.allclose(study.absolute["activation"][0], gap, rtol=1e-8)
    cos = (delta[:, 1:] * delta[:, :1]).sum(-1) / (delta[:, 1:].norm(dim=-1)
                                                   * delta[:, :1].norm(dim=-1))
    assert np.allclose(study.distance["activation"][0], 1 - cos, rtol=1e-8)


def test_results_do_not_depend_on_chunking_and_match_the_single_sample_gap():
    model, samples, radii = random_stem(), sample_set(4), [1.0, 5.0, 20.0]
    a = frequency_study(spec_of(model, "stem"), samples, radii, T=4, batch_size=4,
                        progress=False)
    assert a.model == "stem" and a.classes == 4
    b = frequency_study(model, samples, radii, T=4, batch_size=20, progress=False)  # spans samples
    for kind in a.layers:
        assert np.allclose(a.distance[kind], b.distance[kind], rtol=1e-12)
        assert np.allclose(a.relative[kind], b.relative[kind], rtol=1e-12)
    assert np.array_equal(a.winners, b.winners)
    for i in range(4):
        one = frequency.response_gap(model, samples.images[i], "conv", radii, T=4,
                                     seed=samples.seeds[i])
        assert np.allclose(one.relative, a.per_sample("relative", "convolution")[i])
        assert np.allclose(one.absolute, a.per_sample("absolute", "convolution")[i])


def test_correlation_distance_closed_forms():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(10_000, generator=g, dtype=torch.float64)
    b = torch.randn(10_000, generator=g, dtype=torch.float64)
    assert float(correlation_distance(a, 3 * a)) == pytest.approx(0.0, abs=1e-12)
    assert float(correlation_distance(a, -a)) == pytest.approx(2.0, abs=1e-12)
    assert float(correlation_distance(a, b)) == pytest.approx(1.0, abs=0.05)


def test_permutation_blind_layer_gives_identical_changes():
    # a 'convolution' that sums every input value: a permutation cannot change it
    conv = nn.Conv2d(3, 1, 8, bias=False)
    nn.init.ones_(conv.weight)
    model = nn.Sequential(conv, nn.Flatten(), nn.Linear(1, 2)).double().eval()
    study = frequency_study(model, sample_set(), [1.0, 10.0], T=4, progress=False)
    assert np.allclose(study.distance["convolution"], 0.0, atol=1e-9)
    assert np.allclose(study.relative["convolution"], 0.0, atol=1e-9)
    assert study.pooling is None and study.winners is None


def test_random_convolution_gives_uncorrelated_changes():
    torch.manual_seed(1)
    model = Stem(nn.Conv2d(3, 16, 3, padding=1), side=16).double().eval()
    study = frequency_study(model, sample_set(4, (3, 16, 16)), [1.0, 10.0], T=6,
                            progress=False)
    assert np.mean(study.distance["convolution"]) == pytest.approx(1.0, abs=0.1)


def test_pooling_winners_and_activation_signs_change_only_for_large_perturbations():
    # identity 1x1 convolution; inside every 2x2 window the values differ by >= 10
    conv = nn.Conv2d(1, 1, 1, bias=False)
    nn.init.ones_(conv.weight)
    model = Stem(conv).double().eval()
    window = torch.tensor([[20.0, 30.0], [40.0, 50.0]], dtype=torch.float64)
    image = window.repeat(4, 4)[None, None]
    samples = SampleSet(image, [0], [derive_seed(3, 0)], [0])
    study = frequency_study(model, samples, [1.0, 60.0], T=4, norm="linf", progress=False)
    assert study.pooling == "max"
    winners, pattern = study.per_sample("winners"), study.per_sample("pattern")
    assert winners[0, 0] == 0 and pattern[0, 0] == 0          # radius 1: nothing can change
    assert study.per_sample("winners_pair")[0, 0] == 0
    assert winners[0, 1] > 0 and pattern[0, 1] > 0            # radius 60: some do
    assert study.per_sample("winners_pair")[0, 1] > 0


def test_pooling_input_and_independent_distances_match_a_direct_computation():
    model, samples = random_stem(), sample_set(2)
    study = frequency_study(model, samples, [1.0, 30.0], T=5, progress=False)
    # the stem pools right after its activation: the pooling input is the activation
    assert np.allclose(study.distance["pooling_input"], study.distance["activation"])
    for kind, module in (("activation", model.act), ("pooling", model.pool)):
        source = PermutedPerturbations(tuple(samples.images.shape[1:]), [1.0, 30.0], 5,
                                       "l2", int(samples.seeds[1]))
        store = []
        handle = module.register_forward_hook(lambda m, i, o: store.append(o.flatten(1)))
        with torch.no_grad():
            model(samples.images[1:2])
            model(samples.images[1] + source.rows(5, 10, dtype=torch.float64))
        handle.remove()
        delta = store[1] - store[0]
        cos = F.cosine_similarity(delta[:1], delta[1:], dim=1)
        assert np.allclose(study.distance[kind][1, 1], (1 - cos).numpy())
        # the reference: the same first change against independent directions of eq. 4
        radial = RadialPerturbations(tuple(samples.images.shape[1:]), [1.0, 30.0], 5, "l2",
                                     int(samples.seeds[1]))
        handle = module.register_forward_hook(lambda m, i, o: store.append(o.flatten(1)))
        with torch.no_grad():
            model(samples.images[1] + radial.rows(5, 10, dtype=torch.float64))
        handle.remove()
        other = store[2] - store[0]
        cos = F.cosine_similarity(delta[:1], other[1:], dim=1)
        assert np.allclose(study.independent[kind][1, 1], (1 - cos).numpy())


# ------------------------------------------------------------------- rules
RADII = np.array([0.1, 1.0, 10.0])


def study(name="m", S=20, gap=1.4, slope=1.0, pool=1.0, conv=1.0, pooling="max", T=4):
    """A FrequencyStudy built by hand: per-sample gaps, slopes and distances."""
    gap, slope, pool = (np.broadcast_to(np.asarray(v, float), (S,)) for v in (gap, slope, pool))
    shape = (S, len(RADII), T - 1)
    absolute = np.broadcast_to((0.3 * RADII[None, :] ** slope[:, None])[..., None], shape)
    relative = np.broadcast_to(gap[:, None, None], shape)
    distance = {"convolution": np.full(shape, conv)}
    layers = {"convolution": "conv"}
    if pooling:
        layers.update(activation="act", pooling="pool")
        distance.update(activation=np.full(shape, conv),
                        pooling=np.broadcast_to(pool[:, None, None], shape).copy())
    tables = {k: {kind: np.array(v) for kind in layers} for k, v in
              (("absolute", absolute), ("relative", relative))}
    return FrequencyStudy(name, RADII, "l2", T, layers, list(range(S)), [i % 5 for i in range(S)],
                          tables["absolute"], tables["relative"], distance,
                          pooling=pooling)


def verdict(rows, claim):
    return {v.claim: v for v in rows}[claim]


@pytest.mark.parametrize("gaps, expected", [
    ((1.4, 1.4), SUPPORTED),
    ((1.4, 0.1), PARTLY),
    ((0.1, 0.1), NOT_SUPPORTED),
    ((1.4, [1.4] * 10 + [0.1] * 10), INCONCLUSIVE),      # 50% [30%, 70%] straddles 0.5
])
def test_f1_rule(gaps, expected):
    rows = claims.frequency_claims({"a": study("a", gap=gaps[0]), "b": study("b", gap=gaps[1])})
    row = verdict(rows, "F1")
    assert row.verdict == LOGICAL                          # shown, never counted as support
    assert row.rule.endswith(f"Rule verdict as measured: {expected}")
    assert set(row.models) == {"a", "b"} and row.models["a"]["samples"] == 20
    assert row.models["a"]["classes"] == 5
    assert row.interval is not None and row.sensitivity


@pytest.mark.parametrize("slopes, expected", [
    ((1.0, 1.0), SUPPORTED),
    ((1.0, 2.0), PARTLY),
    ((0.5, 2.0), NOT_SUPPORTED),
    ((1.0, [1.0] * 10 + [1.1] * 10), INCONCLUSIVE),      # median |slope - 1| at 0.05
])
def test_f2_rule(slopes, expected):
    rows = claims.frequency_claims({"a": study("a", slope=slopes[0]),
                                    "b": study("b", slope=slopes[1])})
    row = verdict(rows, "F2")
    assert row.verdict == LOGICAL and row.rule.endswith(f"Rule verdict as measured: {expected}")


@pytest.mark.parametrize("pools, expected", [
    ((1.2, 1.1), SUPPORTED),
    ((1.2, 0.8), PARTLY),
    ((0.9, 0.8), NOT_SUPPORTED),
    ((1.2, [1.2] * 10 + [0.8] * 10), INCONCLUSIVE),      # median difference straddles 0
])
def test_f3_rule(pools, expected):
    studies = {"a": study("a", pool=pools[0]), "b": study("b", pool=pools[1]),
               "flat": study("flat", pooling=None)}
    row = verdict(claims.frequency_claims(studies), "F3")
    assert row.verdict == expected
    assert set(row.models) == {"a", "b"}                  # no pooling layer: not in F3


def test_f3_uses_the_pooling_studies_and_is_absent_without_max_pooling():
    base = {"a": study("a", pool=0.8)}
    rows = claims.frequency_claims(base, {"a": study("a", pool=1.3)})
    assert verdict(rows, "F3").verdict == SUPPORTED
    assert "F3" not in {v.claim for v in claims.frequency_claims(
        {"a": study("a", pool=1.3, pooling="avg")})}
    assert verdict(rows, "F3").sensitivity == (
        "margin 0: supported; margin 0.005: supported; margin 0.02: supported")


def test_f3_compares_pooling_with_its_own_input():
    """A drop already present after the activation is not credited to pooling."""
    s = study("a", pool=0.8)
    s.distance["activation"] = np.full_like(s.distance["activation"], 0.8)
    row = verdict(claims.frequency_claims({"a": s}), "F3")
    assert row.models["a"]["estimate"] == pytest.approx(0.0)
    assert row.verdict == NOT_SUPPORTED             # a measured null: no rise of 0.01
    assert "margin 0: inconclusive" in row.sensitivity     # without a margin it stays open


def test_f3_a_rise_below_the_margin_counts_as_none():
    s = study("a", pool=1.005)                       # a clear but tiny rise (+0.005)
    row = verdict(claims.frequency_claims({"a": s}), "F3")
    assert row.verdict == NOT_SUPPORTED
    assert "margin 0: supported" in row.sensitivity
    assert verdict(claims.frequency_claims({"a": s}, margin=0.001), "F3").verdict == SUPPORTED
    s = study("a", pool=[1.005] * 10 + [1.02] * 10)  # median on the margin: undecided
    assert verdict(claims.frequency_claims({"a": s}), "F3").verdict == INCONCLUSIVE


def test_f3_reads_the_raw_distances_and_says_why_not_centred_ones():
    """The shared rise of window maxima is part of what pooling does: F3 reads d itself."""
    s = study("a", pool=0.8)                          # raw: pooling lowers the distance
    row = verdict(claims.frequency_claims({"a": s}), "F3")
    assert row.verdict == NOT_SUPPORTED
    assert row.models["a"]["estimate"] == pytest.approx(-0.2)
    assert "pins the mean distance at 1 + 1/(T - 1)" in row.rule


def with_reference(s, before, after):
    """Give a hand-built study distances to independent directions (before / at pooling)."""
    s.independent = {k: np.full_like(v, before) for k, v in s.distance.items()}
    s.independent["pooling"] = np.full_like(s.distance["pooling"], after)
    return s


@pytest.mark.parametrize("pool, independent_at_pooling, expected", [
    (1.0, 1.0, SUPPORTED),      # permutations alike before (1.0 vs 1.3), as unrelated after
    (0.8, 1.3, NOT_SUPPORTED),  # as alike after pooling as before: the excess stays 0.3
    (0.7, 1.0, NOT_SUPPORTED),  # both fall by 0.3: no rise relative to independent draws
    (0.5, 1.0, NOT_SUPPORTED),  # pooling makes the permutations *more* alike than noise
])
def test_f3_gives_the_reading_against_independent_directions_as_sensitivity(
        pool, independent_at_pooling, expected):
    """The conv/activation distance to the permutations is 1.0, to independent draws 1.3."""
    s = with_reference(study("a", pool=pool), 1.3, independent_at_pooling)
    row = verdict(claims.frequency_claims({"a": s}), "F3")
    assert row.verdict == NOT_SUPPORTED                # the rule reads the raw distances:
    assert row.models["a"]["estimate"] == pytest.approx(pool - 1.0)   # none rises here
    assert row.sensitivity.endswith(f"independent draw): {expected}")
    assert "to independent directions" in row.measured
