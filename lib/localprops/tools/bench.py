"""Benchmarks of the localprops engine, printed and written as a markdown table.

Run ``python -m localprops.tools.bench`` (``--quick`` for a fast run, ``--only NAME``
for one benchmark, ``--out PATH`` for the markdown file). Each benchmark is a
function ``bench_<name>(quick: bool) -> list[dict]`` registered in
``BENCHMARKS``; every row is a flat dict, and one table writer renders all of
them, so new benchmarks only add a function and a registry entry.

Timings depend on the machine and on what else runs on it; the markdown output
records the machine, the load average and the date next to the numbers.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: Number of Mantel tests in the paper's topology study: 6 models x 300
#: images x 21 radii.
PAPER_MANTEL_TESTS = 6 * 300 * 21

Row = dict[str, Any]


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

def _median_time(fn: Callable[[], Any], repeats: int,
                 warmup: bool = True) -> tuple[float, Any]:
    """Median wall time of ``fn()`` over ``repeats`` calls, after a warm-up call.

    Parameters
    ----------
    fn : callable
        Function to time; it must block until its work is done.
    repeats : int
        Number of timed calls.
    warmup : bool
        Call ``fn`` once untimed first (compilation, caches).

    Returns
    -------
    seconds : float
        Median wall time of one call.
    result : object
        Return value of the last call.
    """
    result = fn() if warmup else None
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def _format_seconds(seconds: float) -> str:
    """Human-readable duration.

    Parameters
    ----------
    seconds : float

    Returns
    -------
    str
        e.g. '12.3 ms', '4.56 s', '1.2 h'.
    """
    if not np.isfinite(seconds):
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} us"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    if seconds < 120:
        return f"{seconds:.2f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def machine_info() -> dict[str, str]:
    """Describe the machine and the library versions.

    Returns
    -------
    dict of str to str
        platform, CPU, CPU count, load average, library versions, device,
        numba threads and threading layer, date (UTC).
    """
    import numba
    import torch

    try:
        layer = numba.threading_layer()        # known once a parallel kernel ran
    except ValueError:
        layer = os.environ.get("NUMBA_THREADING_LAYER", "default")
    info = {
        "date (UTC)": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "CPU count": str(os.cpu_count()),
        "load average (1, 5, 15 min)": ", ".join(f"{v:.2f}" for v in os.getloadavg())
        if hasattr(os, "getloadavg") else "n/a",
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": f"{numba.__version__} ({numba.get_num_threads()} threads, "
                 f"{layer} threading layer)",
        "torch": torch.__version__,
        "device": (f"cuda: {torch.cuda.get_device_name(0)}" if torch.cuda.is_available()
                   else "cpu (no CUDA device)"),
    }
    try:
        import skbio
        info["scikit-bio"] = skbio.__version__
    except ImportError:
        info["scikit-bio"] = "not installed"
    return info


def format_table(rows: Sequence[Row]) -> str:
    """Render rows as a markdown table (columns: union of keys, in order).

    Parameters
    ----------
    rows : sequence of dict
        Flat rows; floats whose key ends in '_s' are formatted as durations.

    Returns
    -------
    str
    """
    if not rows:
        return "(no rows)\n"
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]

    def cell(key: str, value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, float) and key.endswith("_s"):
            return _format_seconds(value)
        if isinstance(value, float):
            return f"{value:.3g}"
        return str(value)

    lines = ["| " + " | ".join(columns) + " |",
             "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(cell(c, row.get(c)) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def write_markdown(path: str | Path, sections: dict[str, list[Row]],
                   info: dict[str, str], command: str) -> Path:
    """Write the machine description and one table per benchmark.

    Parameters
    ----------
    path : str or Path
        Output markdown file (parent folders are created).
    sections : dict of str to list of dict
        Benchmark name to its rows.
    info : dict of str to str
        From ``machine_info``.
    command : str
        The command line that produced the numbers.

    Returns
    -------
    Path
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    parts = ["# localprops benchmarks\n", f"Produced by `{command}`.\n",
             "## Machine\n", format_table([{"item": k, "value": v} for k, v in info.items()])]
    for name, rows in sections.items():
        parts += [f"\n## {name}\n", format_table(rows)]
    path.write_text("\n".join(parts))
    return path


# --------------------------------------------------------------------------
# Mantel test
# --------------------------------------------------------------------------

def _distance_stack(count: int, n: int, seed: int) -> np.ndarray:
    """Euclidean distance matrices of random point clouds.

    Parameters
    ----------
    count, n : int
        Number of matrices and of points per matrix.
    seed : int

    Returns
    -------
    float64 array (count, n, n)
    """
    from scipy.spatial.distance import pdist, squareform

    rng = np.random.default_rng(seed)
    return np.stack([squareform(pdist(rng.normal(size=(n, 5)))) for _ in range(count)])


def bench_mantel(quick: bool = False, n: int = 100, permutations: int = 9999,
                 batch: int | None = None, repeats: int | None = None,
                 paper_tests: int = PAPER_MANTEL_TESTS) -> list[Row]:
    """Time ``localprops.core.mantel.mantel`` against ``skbio.stats.distance.mantel``.

    Stages: one test; ``batch`` independent pairs in one call; one ``x``
    against ``batch`` partners in one call; on CUDA (when available) the
    torch path for both batched stages. scikit-bio runs one test per call (a
    loop for the batched stages). Every stage asserts that both give the same
    statistic (1e-9). Per-test times are extrapolated to ``paper_tests``.

    Parameters
    ----------
    quick : bool
        Fewer repeats and a smaller batch (16 instead of 64).
    n : int
        Matrix size (the paper's topology study: 100).
    permutations : int
        Permutations per test.
    batch : int or None
        Tests per batched call; default 16 (quick) or 64.
    repeats : int or None
        Timed repeats per stage (median reported); default 3 (quick) or 5.
    paper_tests : int
        Number of tests to extrapolate to.

    Returns
    -------
    list of dict
        One row per stage: stage, tests per call, seconds per test for ours
        and scikit-bio, speed-up, extrapolated total times.
    """
    import torch

    from localprops.core.mantel import mantel

    batch = batch or (16 if quick else 64)
    repeats = repeats or (3 if quick else 5)
    try:
        from skbio.stats.distance import mantel as sk_mantel
    except ImportError:
        sk_mantel = None

    xs = _distance_stack(batch, n, seed=0)
    ys = _distance_stack(batch, n, seed=1)
    kw = dict(permutations=permutations, seed=0)

    def reference(pairs: list[tuple[np.ndarray, np.ndarray]]) -> Callable[[], np.ndarray]:
        return lambda: np.array([sk_mantel(a, b, permutations=permutations, seed=0)[0]
                                 for a, b in pairs])

    stages: list[tuple[str, int, Callable[[], Any], list[tuple[np.ndarray, np.ndarray]]]] = [
        ("one test (numba)", 1, lambda: mantel(xs[0], ys[0], **kw), [(xs[0], ys[0])]),
        (f"{batch} independent pairs, one call (numba)", batch,
         lambda: mantel(xs, ys, **kw), list(zip(xs, ys))),
        (f"one x against {batch} y, one call (numba)", batch,
         lambda: mantel(xs[0], ys, **kw), [(xs[0], b) for b in ys]),
    ]
    if torch.cuda.is_available():
        xs_c = torch.as_tensor(xs, device="cuda")
        ys_c = torch.as_tensor(ys, device="cuda")
        gpu_kw = dict(kw, max_memory_bytes=4 * 2**30)

        def on_gpu(x: Any, y: Any) -> Callable[[], Any]:
            def run() -> Any:
                out = mantel(x, y, **gpu_kw)       # returns host arrays: synchronized
                torch.cuda.synchronize()
                return out
            return run

        stages += [
            (f"{batch} independent pairs, one call (torch, CUDA)", batch,
             on_gpu(xs_c, ys_c), list(zip(xs, ys))),
            (f"one x against {batch} y, one call (torch, CUDA)", batch,
             on_gpu(xs_c[0], ys_c), [(xs[0], b) for b in ys]),
        ]

    rows = []
    for stage, tests, run, pairs in stages:
        ours_s, (stat, _) = _median_time(run, repeats)
        ours_per_test = ours_s / tests
        row: Row = {"stage": stage, "N": n, "permutations": permutations,
                    "tests/call": tests, "ours per test_s": ours_per_test}
        if sk_mantel is not None:
            # scikit-bio: one call per test, in a loop for the batched stages
            # (warmed up by the first stage; fewer repeats of the long loops)
            ref_s, ref_stat = _median_time(
                reference(pairs), repeats if len(pairs) == 1 else max(1, repeats // 3),
                warmup=len(pairs) == 1)
            np.testing.assert_allclose(np.ravel(stat), ref_stat, rtol=0, atol=1e-9,
                                       err_msg=f"statistics differ in stage {stage!r}")
            ref_per_test = ref_s / len(pairs)
            row["scikit-bio per test_s"] = ref_per_test
            row["speed-up"] = ref_per_test / ours_per_test
        row[f"ours, {paper_tests} tests_s"] = ours_per_test * paper_tests
        if sk_mantel is not None:
            row[f"scikit-bio, {paper_tests} tests_s"] = ref_per_test * paper_tests
        rows.append(row)
    return rows


# --------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------

#: Registered benchmarks: name -> function(quick) returning rows.
# ------------------------------------------------------------------ engine
def _bench_model(name: str, device):
    """A model for throughput: real weights where present, else random ones (same cost)."""

    from localprops import models
    try:
        spec = models.load(name, device=device)
        return spec.model, (3, *spec.input_size), "trained"
    except (RuntimeError, ValueError, OSError):
        import torchvision
        net = torchvision.models.get_model(name, weights=None)
        model = models.Normalized(net, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
        return model.eval().to(device), (3, 224, 224), "random (no checkpoint here)"


def bench_engine(quick: bool = False, names: Sequence[str] = ("gtsrb-ciresan", "gtsrb-aghdam",
                                                               "efficientnet-lite0", "resnet18"),
                 batch_size: int | None = None) -> list[Row]:
    """Engine throughput against the bare forward and against a per-image loop.

    For each model: (a) the bare forward on batches already prepared in
    memory; (b) ``evaluate`` on lazily generated radial perturbations
    (sampling, adding, softmax and score extraction included); (c) the
    straightforward loop a first implementation would write, one forward per
    perturbed image. Same batch size for (a) and (b) (default: the engine's
    device-aware chunk, :func:`localprops.core.engine.default_batch_size`); float32.
    """
    import torch

    from localprops.core.engine import default_batch_size, evaluate
    from localprops.core.sampling import RadialPerturbations

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = []
    for name in names:
        model, shape, weights = _bench_model(name, device)
        chunk = batch_size or default_batch_size(shape, device)
        small = shape[-1] <= 64
        n_images = (512 if small else 64) if quick else (4096 if small else 256)
        if device.type == "cuda":
            n_images *= 8
        radii = [1.0, 5.0, 10.0, 20.0]
        t = max(1, n_images // len(radii))
        n_images = t * len(radii)
        x = torch.rand(shape, generator=torch.Generator().manual_seed(0)) * 255
        source = RadialPerturbations(shape, radii, t, "l2", 0)
        prepared = [source.rows(i, min(i + chunk, n_images), device=device) + x.to(device)
                    for i in range(0, n_images, chunk)]

        def bare():
            with torch.inference_mode():
                for batch in prepared:
                    model(batch)
            if device.type == "cuda":
                torch.cuda.synchronize()

        def engine():
            evaluate(model, x, source, labels=0, batch_size=chunk, progress=False)
            if device.type == "cuda":
                torch.cuda.synchronize()

        loop_n = min(n_images, 32 if quick else 128)
        flat = torch.cat(prepared)[:loop_n]

        def loop():
            with torch.no_grad():
                for image in flat:
                    torch.softmax(model(image.unsqueeze(0)), -1)[0, 0].item()

        repeats = 1 if quick else 3
        t_bare = _median_time(bare, repeats)[0]
        t_engine = _median_time(engine, repeats)[0]
        t_loop = _median_time(loop, repeats)[0]
        rate_bare, rate_engine, rate_loop = n_images / t_bare, n_images / t_engine, loop_n / t_loop
        rows.append({"model": name, "weights": weights, "device": device.type,
                     "images": n_images, "batch": chunk,
                     "bare forward img/s": f"{rate_bare:.1f}",
                     "engine img/s": f"{rate_engine:.1f}",
                     "per-image loop img/s": f"{rate_loop:.1f}",
                     "engine / bare": f"{rate_engine / rate_bare:.2f}",
                     "engine / loop": f"{rate_engine / rate_loop:.1f}x"})
    return rows


_MEMORY_PROBE = """
import resource, sys, torch
from localprops import models
from localprops.core.engine import evaluate
from localprops.core.sampling import RadialPerturbations
torch.set_num_threads(1)
spec = models.load("gtsrb-ciresan", device="cpu")
x = torch.rand(3, 32, 32) * 255
radii = [float(r) for r in range(1, 22)]
evaluate(spec.model, x, RadialPerturbations((3, 32, 32), radii, int(sys.argv[1]), "l2", 0),
         labels=0, batch_size=128, progress=False)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def bench_memory(quick: bool = False) -> list[Row]:
    """Peak memory of ``evaluate`` (fresh process each) as R x T grows 10x and 100x."""
    import subprocess

    rows = []
    for t in ((10, 100) if quick else (10, 100, 1000)):
        out = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, str(t)], check=True,
                             capture_output=True, text=True).stdout.split()[-1]
        rows.append({"model": "gtsrb-ciresan", "R x T": 21 * t, "batch": 128,
                     "peak resident memory (MiB)": f"{int(out) / 1024:.0f}"})
    return rows


# ------------------------------------------------------------------- units

def chapter_parameters(profile: str, chapter: str) -> dict[str, Any]:
    """A chapter's parameters as a build runs it: its ``parameters`` cell, then the profile's."""
    import nbformat

    from localprops.tools.build import BuildError, literal_assignments, repo_root
    from localprops.tools.profiles import load_profile

    notebook = repo_root() / "notebooks" / f"{chapter}.ipynb"
    cells = [cell for cell in nbformat.read(notebook, as_version=4).cells
             if "parameters" in cell.metadata.get("tags", [])]
    own = literal_assignments(cells[0].source) if cells else None
    if own is None:
        raise BuildError(f"{notebook}: no parameters cell of literal assignments")
    return {**own, **load_profile(profile).parameters_for(chapter, own)}


def _unit_studies(spec, x, chapters: dict[str, dict[str, Any]], normalizers: Any
                  ) -> dict[str, tuple[int, Callable[[], Any]]]:
    """Study name -> (samples the profile gives it, a call running it on ``x``, uncached).

    ``normalizers`` are the model's min-max normalizers of chapter 06, fitted
    once per model by the caller (the fit is not a unit and is not timed).
    """
    from localprops.core.sampling import radius_grid
    from localprops.models import samples
    from localprops.studies import attacks, firstorder, fourier, halfspace, subspace
    from localprops.studies.depth import depth_study
    from localprops.studies.lipschitz import lipschitz_study
    from localprops.studies.scores import float32_noise_floor, score_study
    from localprops.studies.topology import topology_study
    from localprops.studies.worstcase import worst_case_study

    p02, p05, p06, p08, p09 = (chapters[c] for c in ("02", "05", "06", "08", "09"))
    grid, topology_grid = (radius_grid(p02["eps"], p02["radii"]),
                           radius_grid(p05["eps"], p05["radii"]))
    T, norms, gtsrb = p02["T"], p02["norms"], spec.dataset == "gtsrb"
    dims = subspace.dims_grid(int(x.images[0].numel()), p09["subspace_points"],
                              None if gtsrb else p09["imagenet_max_dim"])
    iso: dict[str, Any] = {}

    def isotropy() -> None:
        iso.update({norm: score_study(spec, x, kind="isotropy", radii=grid, T=T, norm=norm,
                                      progress=False) for norm in norms})

    def count(chapter: dict[str, Any], key: str = "n_samples") -> int:
        return samples.samples_for(chapter[key], spec)

    return {
        "noise floor": (count(p02), lambda: float32_noise_floor(spec, x, radius=p02["eps"],
                                                                T=16)),
        "isotropy": (count(p02), isotropy),
        "symmetry": (count(p02), lambda: [score_study(
            spec, x, kind="symmetry", radii=grid, T=T, norm=norm, progress=False)
            for norm in norms]),
        "topology": (count(p05), lambda: topology_study(
            spec, x, radii=topology_grid, T=p05["T"], permutations=p05["permutations"],
            progress=False)),
        "depth": (count(p05, "n_depth"), lambda: depth_study(
            spec, x, radii=topology_grid, T=p05["T"], progress=False)),
        "lipschitz": (count(p06), lambda: [lipschitz_study(
            spec, x, normalizers, radii=grid, T=p06["T"], norm=norm, progress=False)
            for norm in ("l2", "linf")]),
        "worst case": (count(p06), lambda: worst_case_study(
            spec, x, normalizers, radii=p06["radii"], progress=False)),
        "first order": (count(p08), lambda: [firstorder.first_order_study(
            spec, x, radii=grid, T=T, norm=norm, second_radii=p08["second_radii"],
            T_second=p08["T_second"], progress=False) for norm in norms]),
        "attacks": (count(p08), lambda: [attacks.attack_study(
            spec, x, iso[norm], pgd_steps=p08["pgd_steps"], candidates=p08["candidates"],
            progress=False) for norm in norms]),
        "noise errors": (count(p09), lambda: halfspace.noise_error_study(
            spec, x, p09["sigmas"], n_draws=p09["n_draws"], progress=False)),
        "subspace": (count(p09), lambda: subspace.subspace_study(
            spec, x, dims, candidates=p09["candidates"], progress=False)),
        "heat map": (count(p09, "n_heat"), lambda: fourier.fourier_heat_map(
            spec, x, p09["heat_norms"], stride=1 if gtsrb else p09["imagenet_stride"],
            progress=False)),
    }


def bench_units(quick: bool = False, profile: str = "default",
                models: Sequence[str] | None = None) -> list[Row]:
    """Seconds per sample of every cached study unit, and what a profile's build would cost.

    Each study of the chapters 02-06, 08 and 09 runs on the first samples of
    each model at the profile's parameters (no cache; one sample for an
    ImageNet model, two for a GTSRB one), after one untimed pass over every
    study on one sample of the first model (compiled kernels, first-call
    allocations); the seconds per sample times the samples the profile gives
    that study estimate the minutes of a build from an empty cache. Outside
    the units (loading models and data, plots, chapter 04, which is not
    cached) is not counted, nor the noise-augmented net of 09. ``quick``: the
    ``ci`` profile's parameters and one GTSRB net.
    """
    import warnings

    from localprops.models import samples
    from localprops.studies.lipschitz import fit_normalizers

    warnings.filterwarnings("ignore", category=FutureWarning)
    profile = "ci" if quick else profile
    chapters = {c[:2]: chapter_parameters(profile, c) for c in (
        "02_isotropy", "05_topology", "06_lipschitz", "08_beyond", "09_fourier_laws")}
    p02 = chapters["02"]
    prepared = [p for p in samples.prepare(
        list(models or (["gtsrb-aghdam"] if quick else p02["models"])),
        n_samples={"gtsrb": 1 if quick else 2, "imagenet": 1}, threshold=p02["threshold"],
        seed=p02["seed"], imagenet_limit=p02["imagenet_limit"]) if len(p.samples)]
    normalizers = {p.spec.name: fit_normalizers(p.spec.model,
                                                samples.fitting_images(p.spec, 200),
                                                p.spec.feature_layer) for p in prepared}
    if prepared:                                       # warm-up, untimed
        first = prepared[0]
        for _, run in _unit_studies(first.spec, first.samples.first(1), chapters,
                                    normalizers[first.spec.name]).values():
            run()
    rows: list[Row] = []
    for p in prepared:
        total = 0.0
        for study, (count, run) in _unit_studies(p.spec, p.samples, chapters,
                                                 normalizers[p.spec.name]).items():
            start = time.perf_counter()
            run()
            per_sample = (time.perf_counter() - start) / len(p.samples)
            total += per_sample * count
            rows.append({"model": p.spec.name, "study": study,
                         "seconds per sample": f"{per_sample:.2f}",
                         f"samples ({profile})": count,
                         "estimated minutes": f"{per_sample * count / 60:.1f}"})
        rows.append({"model": p.spec.name, "study": "all units", "seconds per sample": "",
                     f"samples ({profile})": "", "estimated minutes": f"{total / 60:.1f}"})
    return rows


BENCHMARKS: dict[str, Callable[..., list[Row]]] = {
    "engine": bench_engine,
    "memory": bench_memory,
    "mantel": bench_mantel,
    "units": bench_units,
}


def main(argv: Sequence[str] | None = None) -> dict[str, list[Row]]:
    """Run the benchmarks, print their tables and write them as markdown.

    Parameters
    ----------
    argv : sequence of str or None
        Command-line arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    dict of str to list of dict
        Benchmark name to its rows.
    """
    parser = argparse.ArgumentParser(prog="python -m localprops.tools.bench",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="fewer repeats and smaller batches (a check that it runs)")
    parser.add_argument("--only", choices=sorted(BENCHMARKS), action="append",
                        help="run only this benchmark (may be repeated)")
    parser.add_argument("--out", default="benchmarks/bench_results.md",
                        help="markdown output file (default: %(default)s)")
    parser.add_argument("--profile", default="default",
                        help="the profile whose parameters the 'units' benchmark times "
                             "(a name in profiles/ or a .yml path; default: %(default)s)")
    args = parser.parse_args(argv)

    if not args.only or "units" in args.only:      # a clear error before any timing
        from localprops.tools.profiles import ProfileError, load_profile
        try:
            load_profile(args.profile)
        except ProfileError as error:
            parser.error(str(error))
    load_before = machine_info()["load average (1, 5, 15 min)"]
    sections: dict[str, list[Row]] = {}
    for name in args.only or list(BENCHMARKS):
        print(f"## {name}", flush=True)
        options = {"profile": args.profile} if name == "units" else {}
        sections[name] = BENCHMARKS[name](quick=args.quick, **options)
        print(format_table(sections[name]), flush=True)
    info = machine_info()
    key = "load average (1, 5, 15 min)"
    info[key] = f"{load_before} before, {info[key]} after"
    print(format_table([{"item": k, "value": v} for k, v in info.items()]))
    command = "python -m localprops.tools.bench " + " ".join(argv if argv is not None
                                                       else sys.argv[1:])
    path = write_markdown(args.out, sections, info, command.strip())
    print(f"written to {path}")
    return sections


if __name__ == "__main__":
    main()
