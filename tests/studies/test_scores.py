"""Score studies and their runner: score statistics, results, caching, resumption after a kill, corrupt cache files."""
import copy
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TinyConvNet, spec_of
from localprops.core.cache import ResultCache
from localprops.core.engine import evaluate
from localprops.core.philox import derive_seed
from localprops.core.sampling import PermutedPerturbations, RadialPerturbations
from localprops.models.samples import SampleSet
from localprops.studies.scores import (
    float32_noise_floor,
    float64_radii,
    score_statistics,
    score_study,
)


def make_samples(n=3, shape=(3, 12, 12)):
    g = torch.Generator().manual_seed(0)
    return SampleSet(images=torch.rand(n, *shape, generator=g) * 255, labels=[0, 1, 2, 3, 4][:n],
                     seeds=[derive_seed(7, i) for i in range(n)], ids=list(range(n)))


@pytest.mark.parametrize("kind, source_cls", [("isotropy", RadialPerturbations),
                                              ("symmetry", PermutedPerturbations)])
def test_score_study_matches_direct_evaluation(tiny_net, kind, source_cls):
    samples = make_samples()
    study = score_study(spec_of(tiny_net, "tiny"), samples, kind=kind, radii=[1.0, 100.0], T=5, progress=False)
    assert study.scores.shape == (3, 2, 5)
    for i in range(3):
        source = source_cls((3, 12, 12), [1.0, 100.0], 5, "l2", samples.seeds[i])
        direct = evaluate(tiny_net, samples.images[i], source, labels=samples.labels[i],
                          progress=False)
        assert np.allclose(study.scores[i], direct.scores.numpy(), atol=1e-7)
    stats = study.statistics
    assert np.allclose(stats.range, study.scores.max(-1) - study.scores.min(-1))


def test_cache_hits_and_identical_results(tiny_net, tmp_path):
    samples = make_samples()
    cache = ResultCache(tmp_path)
    first = score_study(spec_of(tiny_net, "tiny"), samples, radii=[1.0], T=4, cache=cache,
                        progress=False)
    assert (cache.hits, cache.misses) == (0, 3)
    again = score_study(spec_of(tiny_net, "tiny"), samples, radii=[1.0], T=4, cache=cache,
                        progress=False)
    assert (cache.hits, cache.misses) == (3, 3)
    assert np.array_equal(first.scores, again.scores)
    # a different parameter is a different unit
    score_study(spec_of(tiny_net, "tiny"), samples, radii=[1.0], T=4, norm="linf",
                cache=cache, progress=False)
    assert cache.misses == 6


def test_corrupt_cache_file_is_recomputed(tiny_net, tmp_path):
    samples = make_samples(1)
    cache = ResultCache(tmp_path)
    first = score_study(spec_of(tiny_net, "tiny"), samples, radii=[1.0], T=4, cache=cache,
                        progress=False)
    [path] = list(Path(tmp_path).rglob("*.npz"))
    path.write_bytes(path.read_bytes()[:100])          # truncated, as after a crash
    with pytest.warns(UserWarning, match="unreadable"):
        again = score_study(spec_of(tiny_net, "tiny"), samples, radii=[1.0], T=4,
                            cache=cache, progress=False)
    assert cache.misses == 2 and np.array_equal(first.scores, again.scores)


def test_bad_sample_is_skipped_not_fatal(tiny_net):
    samples = make_samples()
    samples.images[1, 0, 0, 0] = float("nan")
    with pytest.warns(UserWarning, match="skipped"):
        study = score_study(spec_of(tiny_net, "tiny"), samples, radii=[1.0], T=3,
                            progress=False)
    assert list(study.ids) == [0, 2] and len(study.skipped) == 1


def test_bad_parameters(tiny_net):
    with pytest.raises(ValueError, match="unknown study kind"):
        score_study(spec_of(tiny_net, "m"), make_samples(), kind="topology", radii=[1.0], T=2)
    with pytest.raises(ValueError, match="labels"):
        SampleSet(images=torch.zeros(2, 3, 4, 4), labels=[0], seeds=[0, 1], ids=[0, 1])


def test_noise_floor_is_small_and_positive(tiny_net):
    floor = float32_noise_floor(tiny_net, make_samples(2), radius=1.0, T=8)
    for values in (floor.probability, floor.log_odds):
        assert values.shape == (2,) and (values < 1e-4).all() and (values > 0).any()
    assert np.array_equal(floor.for_samples([1, 0]), floor.probability[::-1])
    with pytest.raises(KeyError, match="same SampleSet"):
        floor.for_samples([7])


def test_float64_radii_and_log_odds(tiny_net):
    """eps in L2 is evaluated in float64; float64 rows match a float64 model; log-odds agree."""
    samples = make_samples(2)
    assert float64_radii(samples, [1e-3, 1.0], "l2") == [1e-3]
    study = score_study(spec_of(tiny_net, "m"), samples, radii=[1e-3, 1.0], T=4)
    assert study.float64.tolist() == [True, False]
    reference = score_study(spec_of(copy.deepcopy(tiny_net).double(), "m64"), samples,
                            radii=[1e-3], T=4, precise=[])
    np.testing.assert_allclose(study.scores[:, :1], reference.scores, rtol=0, atol=1e-15)
    s = study.scores
    np.testing.assert_allclose(study.log_odds, np.log(s / (1 - s)), rtol=1e-6)
    floor = float32_noise_floor(tiny_net, samples, radius=1e-3, T=4)
    assert (study.range_floors(floor)[:, 0] < study.range_floors(floor)[:, 1]).all()


RUNNER = textwrap.dedent("""
    import sys, time, torch
    sys.path[:0] = [{tests!r}, {here!r}]
    from conftest import TinyConvNet, spec_of
    from test_scores import make_samples
    from localprops.core.cache import ResultCache
    from localprops.studies.scores import score_study

    class Slow(TinyConvNet):
        def forward(self, x):
            time.sleep(0.3)
            return super().forward(x)

    torch.manual_seed(0)
    model = Slow().eval()
    cache = ResultCache({root!r})
    study = score_study(spec_of(model, "tiny"), make_samples(5), radii=[1.0, 2.0], T=3,
                        cache=cache, progress=False)
    print("misses", cache.misses)
""")


def assert_complete_units(root: Path, n: int) -> None:
    """``n`` unit files under ``root``, each a whole archive with its manifest."""
    units = sorted(root.rglob("*.npz"))
    assert len(units) == n
    for path in units:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {key: stored[key] for key in stored.files}
        assert {"manifest", "scores", "predictions"} <= arrays.keys(), path
        assert arrays["scores"].shape == (2, 3), path


def test_killed_run_resumes_without_recomputing(tmp_path):
    root = tmp_path / "cache"
    script = tmp_path / "run.py"
    script.write_text(RUNNER.format(tests=str(Path(__file__).parents[1]),
                                     here=str(Path(__file__).parent), root=str(root)))
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, str(script)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline and len(list(root.rglob("*.npz"))) < 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(list(root.rglob("*.npz")))
    assert 2 <= done < 5, "the run should be killed part-way"
    # A SIGKILL during a write can leave that one unit's temporary file (no
    # handler runs), but never a partial unit under its real name: every .npz
    # is complete and readable.
    leftover = set(root.rglob("*.tmp"))
    assert len(leftover) <= 1, f"one write at a time, yet {len(leftover)} temporary files"
    assert_complete_units(root, done)
    result = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"misses {5 - done}" in result.stdout
    # the finished run left no temporary file of its own; the killed run's
    # leftover was not taken for a result (it is neither read nor renamed)
    assert set(root.rglob("*.tmp")) == leftover
    assert_complete_units(root, 5)
    # identical to an uninterrupted run
    torch.manual_seed(0)
    model = TinyConvNet().eval()
    reference = score_study(spec_of(model, "tiny"), make_samples(5), radii=[1.0, 2.0], T=3,
                            progress=False)
    resumed = score_study(spec_of(model, "tiny"), make_samples(5), radii=[1.0, 2.0], T=3,
                          cache=ResultCache(root), progress=False)
    assert np.array_equal(reference.scores, resumed.scores)


def test_progress_bars_respect_tqdm_disable(monkeypatch):
    from localprops.core.progress import progress_bar, progress_enabled
    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert not progress_enabled(True) and progress_bar(range(3), enabled=True).disable
    monkeypatch.setenv("TQDM_DISABLE", "0")
    assert progress_enabled(True) and not progress_enabled(False)


def test_use_ieee_float32_turns_tf32_off():
    from localprops.models.samples import use_ieee_float32

    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
    try:
        use_ieee_float32()
        assert not torch.backends.cudnn.allow_tf32
        assert not torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_score_statistics_brute_force():
    rng = np.random.default_rng(0)
    scores = rng.random((4, 3, 10))
    preds = rng.integers(0, 3, (4, 3, 10))
    labels = np.array([0, 1, 2, 0])
    stats = score_statistics(scores, preds, labels[:, None])
    for s in range(4):
        for r in range(3):
            v = scores[s, r]
            assert stats.range[s, r] == max(v) - min(v)
            assert np.isclose(stats.mean[s, r], sum(v) / len(v))
            assert stats.any_misclassified[s, r] == any(p != labels[s] for p in preds[s, r])


def test_score_statistics_torch_and_int_label():
    scores = torch.tensor([[0.9, 0.99, 0.95]])
    stats = score_statistics(scores, torch.tensor([[1, 1, 1]]), 1)
    assert np.isclose(stats.range[0], 0.09) and not stats.any_misclassified[0]
    assert score_statistics(scores).any_misclassified is None


def test_score_statistics_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        score_statistics([[0.1, float("nan")]])
    with pytest.raises(ValueError, match="true label"):
        score_statistics([[0.1]], [[1]])
    with pytest.raises(ValueError, match="differs"):
        score_statistics([[0.1, 0.2]], [[1]], 1)
