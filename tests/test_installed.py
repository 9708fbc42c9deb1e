"""The package works when pip-installed, outside a checkout.

A wheel is built offline from a copy of the checkout's sources (so exactly
the files pyproject.toml's package data ships), unpacked in a temporary
folder, and a fresh interpreter whose working directory is elsewhere imports
localprops from it, loads the bundled GTSRB weights, selects clean samples
from the bundled evaluation subset and runs a tiny study whose results are
cached in the user's cache folder, as on Colab after ``pip install``.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

import localprops

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lib" / "localprops"

pytestmark = pytest.mark.slow

SCRIPT = textwrap.dedent("""
    import json, os, sys
    import localprops
    from localprops import models
    from localprops.core.cache import ResultCache, cache_dir, checkout_root
    from localprops.models import data
    from localprops.models.samples import SampleSet, select_samples
    from localprops.studies.scores import score_study

    spec = models.load("gtsrb-ciresan", device="cpu")
    subset = data.gtsrb_eval_subset()
    selection = select_samples(spec, subset["images"][:40],
                               subset["labels"][:40].astype("int64"), n=2,
                               dataset_indices=subset["test_index"][:40])
    samples = SampleSet(images=selection.images, labels=selection.labels.tolist(),
                        seeds=selection.seeds, ids=selection.indices.tolist())
    cache = ResultCache(cache_dir())
    runs = [score_study(spec, samples, radii=[1.0, 10.0], T=4, cache=cache,
                        progress=False) for _ in range(2)]
    print(json.dumps(dict(
        file=localprops.__file__, checkout_root=str(checkout_root()),
        cache_dir=cache_dir(), samples=len(samples), shape=list(runs[0].scores.shape),
        misses=cache.misses, hits=cache.hits,
        same=bool((runs[0].scores == runs[1].scores).all()))))
""")


def shipped_files(wheel: Path) -> set[str]:
    """Files of the package in the wheel, relative to the package folder."""
    with zipfile.ZipFile(wheel) as archive:
        return {name.removeprefix("localprops/") for name in archive.namelist()
                if name.startswith("localprops/")}


def source_files() -> set[str]:
    """Files of the package in the checkout (bytecode caches aside)."""
    return {path.relative_to(PACKAGE).as_posix() for path in PACKAGE.rglob("*")
            if path.is_file() and "__pycache__" not in path.parts
            and path.suffix not in (".pyc", ".pyo")}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built offline from a copy of the sources (the checkout stays clean)."""
    pytest.importorskip("setuptools", minversion="68",
                        reason="building the wheel needs setuptools>=68 (the `test` extra)")
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "lib", source / "lib",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--no-index", "--quiet", "--wheel-dir", str(out), str(source)],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"pip wheel failed:\n{result.stdout}\n{result.stderr}"
    [built] = out.glob("*.whl")
    return built


def test_wheel_version_is_the_package_version(wheel):
    """pyproject.toml's version is dynamic: localprops.__version__ is its one source."""
    assert wheel.name == f"localprops-{localprops.__version__}-py3-none-any.whl"


def test_wheel_ships_every_file_of_the_package(wheel):
    """Code, weights and assets: a file left out of package-data is missed by users."""
    missing = sorted(source_files() - shipped_files(wheel))
    assert not missing, f"pyproject.toml's package data leaves out {missing}"
    assert {"models/weights/gtsrb-ciresan.pt", "models/weights/gtsrb_weights.json",
            "models/_assets/gtsrb_eval_subset.npz"} <= shipped_files(wheel)


def test_installed_package_runs_a_study_outside_a_checkout(wheel, tmp_path):
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    user_cache = tmp_path / "xdg-cache"
    work = tmp_path / "work"
    work.mkdir()
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("LOCALPROPS_") and key != "PYTHONPATH"}
    env.update(PYTHONPATH=str(site), XDG_CACHE_HOME=str(user_cache),
               PYTHONDONTWRITEBYTECODE="1")
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=work, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert Path(report["file"]).resolve() == (site / "localprops" / "__init__.py").resolve()
    assert report["checkout_root"] == "None"
    assert Path(report["cache_dir"]) == user_cache / "localprops"
    assert report["samples"] == 2 and report["shape"] == [2, 2, 4]
    # computed once, stored in the user's cache folder, then read back
    assert (report["misses"], report["hits"], report["same"]) == (2, 2, True)
    stored = sorted((user_cache / "localprops").rglob("*.npz"))
    assert len(stored) == 2, stored
    assert not list(work.iterdir()), "nothing is written to the working directory"
