"""Study runner: results, caching, resumption after a kill, corrupt cache files."""
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
from conftest import TinyConvNet
from localprops.core.cache import ResultCache
from localprops.core.engine import evaluate
from localprops.core.philox import derive_seed
from localprops.core.sampling import PermutedPerturbations, RadialPerturbations
from localprops.models.samples import SampleSet
from localprops.studies.scores import float32_noise_floor, score_study


def make_samples(n=3, shape=(3, 12, 12)):
    g = torch.Generator().manual_seed(0)
    return SampleSet(images=torch.rand(n, *shape, generator=g) * 255, labels=[0, 1, 2, 3, 4][:n],
                     seeds=[derive_seed(7, i) for i in range(n)], ids=list(range(n)))


@pytest.mark.parametrize("kind, source_cls", [("isotropy", RadialPerturbations),
                                              ("symmetry", PermutedPerturbations)])
def test_score_study_matches_direct_evaluation(tiny_net, kind, source_cls):
    samples = make_samples()
    study = score_study(tiny_net, samples, kind=kind, radii=[1.0, 100.0], T=5,
                        model_name="tiny", progress=False)
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
    first = score_study(tiny_net, samples, radii=[1.0], T=4, model_name="tiny", cache=cache,
                        progress=False)
    assert (cache.hits, cache.misses) == (0, 3)
    again = score_study(tiny_net, samples, radii=[1.0], T=4, model_name="tiny", cache=cache,
                        progress=False)
    assert (cache.hits, cache.misses) == (3, 3)
    assert np.array_equal(first.scores, again.scores)
    # a different parameter is a different unit
    score_study(tiny_net, samples, radii=[1.0], T=4, norm="linf", model_name="tiny",
                cache=cache, progress=False)
    assert cache.misses == 6


def test_corrupt_cache_file_is_recomputed(tiny_net, tmp_path):
    samples = make_samples(1)
    cache = ResultCache(tmp_path)
    first = score_study(tiny_net, samples, radii=[1.0], T=4, model_name="tiny", cache=cache,
                        progress=False)
    [path] = list(Path(tmp_path).rglob("*.npz"))
    path.write_bytes(path.read_bytes()[:100])          # truncated, as after a crash
    with pytest.warns(UserWarning, match="unreadable"):
        again = score_study(tiny_net, samples, radii=[1.0], T=4, model_name="tiny",
                            cache=cache, progress=False)
    assert cache.misses == 2 and np.array_equal(first.scores, again.scores)


def test_bad_sample_is_skipped_not_fatal(tiny_net):
    samples = make_samples()
    samples.images[1, 0, 0, 0] = float("nan")
    with pytest.warns(UserWarning, match="skipped"):
        study = score_study(tiny_net, samples, radii=[1.0], T=3, model_name="tiny",
                            progress=False)
    assert list(study.ids) == [0, 2] and len(study.skipped) == 1


def test_bad_parameters(tiny_net):
    with pytest.raises(ValueError, match="unknown study kind"):
        score_study(tiny_net, make_samples(), kind="topology", radii=[1.0], T=2, model_name="m")
    with pytest.raises(ValueError, match="labels"):
        SampleSet(images=torch.zeros(2, 3, 4, 4), labels=[0], seeds=[0, 1], ids=[0, 1])


def test_noise_floor_is_small_and_positive(tiny_net):
    floor = float32_noise_floor(tiny_net, make_samples(2), radius=1.0, T=8)
    assert floor.shape == (2,) and (floor < 1e-5).all() and (floor > 0).any()


RUNNER = textwrap.dedent("""
    import sys, time, torch
    sys.path.insert(0, {tests!r})
    from conftest import TinyConvNet
    from test_studies import make_samples
    from localprops.core.cache import ResultCache
    from localprops.studies.scores import score_study

    class Slow(TinyConvNet):
        def forward(self, x):
            time.sleep(0.3)
            return super().forward(x)

    torch.manual_seed(0)
    model = Slow().eval()
    cache = ResultCache({root!r})
    study = score_study(model, make_samples(5), radii=[1.0, 2.0], T=3, model_name="tiny",
                        cache=cache, progress=False)
    print("misses", cache.misses)
""")


def test_killed_run_resumes_without_recomputing(tmp_path):
    root = tmp_path / "cache"
    script = tmp_path / "run.py"
    script.write_text(RUNNER.format(tests=str(Path(__file__).parent), root=str(root)))
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
    assert not list(root.rglob("*.tmp")) or True   # a temporary file may remain; never a .npz
    result = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"misses {5 - done}" in result.stdout
    # identical to an uninterrupted run
    torch.manual_seed(0)
    model = TinyConvNet().eval()
    reference = score_study(model, make_samples(5), radii=[1.0, 2.0], T=3, model_name="tiny",
                            progress=False)
    resumed = score_study(model, make_samples(5), radii=[1.0, 2.0], T=3, model_name="tiny",
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
