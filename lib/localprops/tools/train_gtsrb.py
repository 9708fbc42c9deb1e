"""Train the two GTSRB nets of the book, reproducibly, on CPU or GPU.

Usage (the committed weights were made with the commands recorded in
``localprops/weights/gtsrb_weights.json``)::

    python -m localprops.tools.train_gtsrb --model gtsrb-ciresan --epochs 8 \\
        --seed 0 --out lib/localprops/weights/

Data: the book's 32x32 ``gtsrb32.npz`` (``--data PATH`` or the environment
variable ``LOCALPROPS_GTSRB``), or the official GTSRB through
``torchvision.datasets.GTSRB`` (``--source torchvision --root DIR``; the
images are resized to 32x32 like the book's file; nothing is downloaded).

What the script does, in order:

1. splits the training images into train / validation **by track** (a
   physical sign, ``(class, track)``), a fraction ``--val-fraction`` of the
   tracks of every class, so that near-duplicate frames never straddle the
   split;
2. computes the per-channel mean / std of the training part and wraps the
   net in :class:`localprops.models.Normalized` (input [0, 255]);
3. trains with AdamW, a linear warm-up then cosine learning-rate decay,
   and (``--augment``, default) a small random affine transform (rotation
   +-10 degrees, scale 0.9-1.1, shift +-2 px) plus brightness / contrast
   jitter (x0.7-1.3) on every batch; no label smoothing by default, since
   the book selects samples classified with more than 99 % confidence;
4. evaluates the final net on the full official test set (12,630 images)
   and writes ``<out>/<model>.pt`` (a float32 state dict) and updates
   ``<out>/gtsrb_weights.json`` with the accuracy, sha256, command, seed,
   epochs, torch version and date.

After every epoch the state of the run (net, optimizer, random streams) is
saved to ``<out>/<model>.resume.pt``; ``--resume`` continues a stopped run
from there and gives the same weights as an uninterrupted one.

Everything random (split, initialisation, order, augmentation) derives from
``--seed``; on the same machine and torch version a rerun gives the same
weights.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from localprops.models import data, gtsrb_nets
from localprops.models.data import file_sha256
from localprops.models.wrappers import Normalized
from localprops.models.zoo import GTSRB_WEIGHTS_JSON, WEIGHTS_DIR

#: --memory-format -> torch layout (speed only; the function computed is the same).
MEMORY_FORMATS = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}


# --------------------------------------------------------------------- data
def split_by_track(labels: np.ndarray, tracks: np.ndarray, val_fraction: float,
                   seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of the train and validation parts, split by track.

    Parameters
    ----------
    labels, tracks : class and track number of every training image; a
        physical sign is the pair ``(label, track)``.
    val_fraction : fraction of the tracks of every class put in validation
        (at least one track per class when the class has two or more).
    seed : seed of the choice of tracks.

    Returns
    -------
    train_rows, val_rows : sorted int64 arrays.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie in [0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels).astype(np.int64)
    tracks = np.asarray(tracks).astype(np.int64)
    val_mask = np.zeros(len(labels), dtype=bool)
    if val_fraction > 0:
        for label in np.unique(labels):
            class_tracks = np.unique(tracks[labels == label])
            n_val = int(round(val_fraction * len(class_tracks)))
            if len(class_tracks) > 1:
                n_val = min(max(n_val, 1), len(class_tracks) - 1)
            else:
                n_val = 0
            chosen = rng.choice(class_tracks, size=n_val, replace=False)
            val_mask |= (labels == label) & np.isin(tracks, chosen)
    return np.flatnonzero(~val_mask), np.flatnonzero(val_mask)


def load_npz_source(path: str | None) -> dict[str, np.ndarray]:
    """Train / test arrays from the book's ``gtsrb32.npz``."""
    arrays = data.load_gtsrb(path)
    return {key: arrays[key] for key in
            ("x_train", "y_train", "track_train", "x_test", "y_test",
             "class_names")}


def _track_from_path(path: str) -> int:
    """Track number ``TTTTT`` of an official training file ``TTTTT_FFFFF.ppm``."""
    stem = Path(path).stem
    head = stem.split("_")[0]
    return int(head) if head.isdigit() else -1


def load_torchvision_source(root: str, size: int = 32, progress: bool = True
                            ) -> dict[str, np.ndarray]:
    """Train / test arrays from ``torchvision.datasets.GTSRB`` (no download).

    Whole images are resized to ``size`` x ``size`` (bilinear, antialiased),
    as in the book's npz file.
    """
    import torchvision
    from PIL import Image

    arrays: dict[str, np.ndarray] = {}
    for split in ("train", "test"):
        try:
            dataset = torchvision.datasets.GTSRB(root, split=split, download=False)
        except RuntimeError as error:
            raise data.DataNotFoundError(
                f"torchvision GTSRB ({split}) not found under {root}: download "
                f"it once with torchvision.datasets.GTSRB({root!r}, "
                f"split={split!r}, download=True) on a machine with internet "
                f"access ({error})") from error
        samples = dataset._samples
        images = np.stack([np.asarray(Image.open(p).convert("RGB").resize(
            (size, size), Image.BILINEAR)) for p, _ in tqdm(samples, desc=split,
                                                          disable=not progress)])
        arrays[f"x_{split}"] = images.astype(np.uint8)
        arrays[f"y_{split}"] = np.array([c for _, c in samples], dtype=np.uint8)
        if split == "train":
            arrays["track_train"] = np.array([_track_from_path(p) for p, _ in samples])
    arrays["class_names"] = data.gtsrb_eval_subset()["class_names"]
    return arrays


# ------------------------------------------------------------- augmentation
def augment_batch(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random small affine transform and brightness / contrast jitter.

    Parameters
    ----------
    x : images (N, 3, H, W) in [0, 255].
    generator : the torch generator all draws come from (CPU).

    Returns
    -------
    Augmented images, same shape, clipped to [0, 255].
    """
    n, _, height, width = x.shape

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, generator=generator)

    angle = uniform(-10.0, 10.0) * math.pi / 180.0
    scale = uniform(0.9, 1.1)
    shift_x = uniform(-2.0, 2.0) * 2.0 / width
    shift_y = uniform(-2.0, 2.0) * 2.0 / height
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift_x], 1),
                         torch.stack([sin, cos, shift_y], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid.to(x.device), mode="bilinear",
                      padding_mode="border", align_corners=False)
    contrast = uniform(0.7, 1.3).to(x.device).view(n, 1, 1, 1)
    brightness = uniform(0.7, 1.3).to(x.device).view(n, 1, 1, 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = ((x - mean) * contrast + mean) * brightness
    return x.clamp(0.0, 255.0)


def add_gaussian_noise(x: torch.Tensor, max_sigma: float,
                       generator: torch.Generator) -> torch.Tensor:
    """Gaussian-noise augmentation: ``x + sigma_i * N(0, I)``, clipped to [0, 255].

    Each image draws its own ``sigma_i ~ U(0, max_sigma)`` (grey levels), so
    the net sees clean and noisy images alike (as in Yin et al. 2019 and
    Ford et al. 2019, where sigma is drawn per image). All draws come from
    ``generator`` (CPU), so a run is reproducible from its seed.
    """
    n = x.shape[0]
    sigma = max_sigma * torch.rand(n, generator=generator).view(n, 1, 1, 1)
    noise = torch.randn(x.shape, generator=generator)
    return (x + (sigma * noise).to(x.device, x.dtype)).clamp(0.0, 255.0)


# ----------------------------------------------------------------- training
def channel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images (N, H, W, 3), on [0, 1]."""
    values = images.reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
    return values.mean(0).tolist(), values.std(0).tolist()


@torch.no_grad()
def evaluate(model: nn.Module, images: np.ndarray, labels: np.ndarray,
             device: torch.device, batch_size: int = 500,
             progress: bool = False) -> float:
    """Top-1 accuracy of ``model`` on uint8 images (N, H, W, 3)."""
    model.eval()
    correct = 0
    starts = range(0, len(images), batch_size)
    for start in tqdm(starts, desc="evaluate", disable=not progress, leave=False):
        x = data.images_to_tensor(images[start:start + batch_size]).to(device)
        y = torch.as_tensor(labels[start:start + batch_size].astype(np.int64),
                            device=device)
        correct += (model(x).argmax(1) == y).sum().item()
    return correct / len(images)


def lr_at(step: int, total: int, warmup: int, base: float) -> float:
    """Linear warm-up then cosine decay to zero."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1.0 + math.cos(math.pi * progress))


def train(args: argparse.Namespace, arrays: dict[str, np.ndarray],
          device: torch.device) -> tuple[Normalized, dict]:
    """Train one net; return the wrapped net and the facts for the JSON."""
    torch.manual_seed(args.seed)
    train_rows, val_rows = split_by_track(arrays["y_train"], arrays["track_train"],
                                          args.val_fraction, args.seed)
    if args.limit:
        train_rows = train_rows[:args.limit]
        val_rows = val_rows[:args.limit]
    x_all, y_all = arrays["x_train"], arrays["y_train"].astype(np.int64)
    mean, std = channel_stats(x_all[train_rows])
    net = Normalized(gtsrb_nets.build(args.model), mean, std).to(device)
    memory_format = MEMORY_FORMATS[args.memory_format]
    net = net.to(memory_format=memory_format)
    x_train = data.images_to_tensor(x_all[train_rows])
    y_train = torch.as_tensor(y_all[train_rows])
    optimizer = torch.optim.AdamW(net.parameters(), lr=args.lr,
                                  weight_decay=args.weight_decay)
    generator = torch.Generator().manual_seed(args.seed)
    steps_per_epoch = math.ceil(len(train_rows) / args.batch_size)
    total = steps_per_epoch * args.epochs
    warmup = min(args.warmup_steps, total // 4 + 1)
    step, history, start_time, first_epoch = 0, [], time.time(), 0
    checkpoint = checkpoint_path(Path(args.out), args.model)
    if args.resume:
        saved = load_checkpoint(checkpoint, args)
        net.load_state_dict(saved["net"])
        optimizer.load_state_dict(saved["optimizer"])
        generator.set_state(saved["generator"])
        torch.set_rng_state(saved["torch_rng"])
        step, history, first_epoch = saved["step"], saved["history"], saved["epoch"]
        start_time -= history[-1]["seconds"] if history else 0.0
    for epoch in range(first_epoch, args.epochs):
        net.train()
        order = torch.randperm(len(train_rows), generator=generator)
        bar = tqdm(range(steps_per_epoch), desc=f"{args.model} epoch {epoch + 1}/"
                   f"{args.epochs}", disable=args.quiet, mininterval=5.0)
        running = 0.0
        for batch in bar:
            rows = order[batch * args.batch_size:(batch + 1) * args.batch_size]
            x = x_train[rows]
            if args.augment:
                x = augment_batch(x, generator)
            if args.noise_sigma:
                x = add_gaussian_noise(x, args.noise_sigma, generator)
            x = x.to(device).contiguous(memory_format=memory_format)
            y = y_train[rows].to(device)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, total, warmup, args.lr)
            loss = F.cross_entropy(net(x), y, label_smoothing=args.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            running = 0.98 * running + 0.02 * loss.item() if batch else loss.item()
            bar.set_postfix(loss=f"{running:.3f}", refresh=False)
        val_acc = (evaluate(net, x_all[val_rows], y_all[val_rows], device)
                   if len(val_rows) else float("nan"))
        history.append({"epoch": epoch + 1, "train_loss": round(running, 4),
                        "val_accuracy": round(val_acc, 5),
                        "seconds": round(time.time() - start_time, 1)})
        print(json.dumps({"model": args.model, **history[-1]}), flush=True)
        save_checkpoint(checkpoint, args, {
            "net": net.state_dict(), "optimizer": optimizer.state_dict(),
            "generator": generator.get_state(), "torch_rng": torch.get_rng_state(),
            "step": step, "history": history, "epoch": epoch + 1})
    net = net.to(memory_format=torch.contiguous_format).eval()
    facts = {"train_images": int(len(train_rows)), "val_images": int(len(val_rows)),
             "val_accuracy": history[-1]["val_accuracy"], "history": history,
             "train_seconds": round(time.time() - start_time, 1),
             "mean": mean, "std": std}
    return net, facts


# --------------------------------------------------------------- checkpoints
#: Options that do not change the trained net; a resumed run may differ in them.
RUN_ONLY_OPTIONS = ("resume", "quiet", "out", "threads", "device", "data", "root")


def checkpoint_path(out: Path, name: str) -> Path:
    """Where the end-of-epoch state of a run lives (deleted once the run ends)."""
    return out / f"{name}.resume.pt"


def _training_options(args: argparse.Namespace) -> dict:
    return {key: value for key, value in sorted(vars(args).items())
            if key not in RUN_ONLY_OPTIONS}


def save_checkpoint(path: Path, args: argparse.Namespace, state: dict) -> None:
    """Write the state after an epoch atomically, so a killed run loses at most one epoch."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    torch.save({"options": _training_options(args), **state}, partial)
    partial.replace(path)


def load_checkpoint(path: Path, args: argparse.Namespace) -> dict:
    """The state saved by :func:`save_checkpoint`, checked against this run's options."""
    if not path.exists():
        raise SystemExit(f"--resume: no checkpoint at {path}; a run writes one after "
                         "each epoch into --out. Start without --resume.")
    saved = torch.load(path, weights_only=False)
    now = _training_options(args)
    changed = {key: (saved["options"].get(key), now[key]) for key in now
               if saved["options"].get(key) != now[key]}
    if changed:
        listed = ", ".join(f"--{k.replace('_', '-')} was {a!r}, now {b!r}"
                           for k, (a, b) in changed.items())
        raise SystemExit(f"--resume: the checkpoint {path} was written with other "
                         f"options ({listed}); rerun with the same options.")
    return saved


# ------------------------------------------------------------------- output
def round_weights(net: nn.Module, dtype: torch.dtype) -> None:
    """Round every floating-point tensor of ``net`` through ``dtype`` in place.

    The net evaluated after this is exactly the one :func:`save_weights`
    stores in ``dtype`` and the loader reads back (into float32).
    """
    with torch.no_grad():
        for value in net.state_dict().values():
            if value.is_floating_point():
                value.copy_(value.to(dtype).to(value.dtype))


def save_weights(net: Normalized, out: Path, name: str,
                 dtype: torch.dtype = torch.float32) -> Path:
    """Save the state dict of ``net`` as ``<out>/<name>.pt`` (floats in ``dtype``)."""
    out.mkdir(parents=True, exist_ok=True)
    state = {key: (value.detach().to("cpu", dtype) if value.is_floating_point()
                   else value.detach().cpu()).contiguous().clone()
             for key, value in net.state_dict().items()}
    path = out / f"{name}.pt"
    torch.save(state, path)
    return path


def update_record(out: Path, name: str, entry: dict) -> Path:
    """Insert ``entry`` under ``name`` in ``<out>/gtsrb_weights.json``."""
    path = out / GTSRB_WEIGHTS_JSON
    record = json.loads(path.read_text()) if path.exists() else {}
    record[name] = entry
    path.write_text(json.dumps(dict(sorted(record.items())), indent=2) + "\n")
    return path


#: How many images of the bundled evaluation subset the reference logits use.
REFERENCE_IMAGES = 4


@torch.no_grad()
def reference_logits(net: nn.Module, device: torch.device) -> dict:
    """Logits of the first images of the bundled subset, through the training pipeline.

    Stored with the weights (``reference`` in ``gtsrb_weights.json``): the
    loader's wrapper must give the same logits for the same images, which
    checks that its preprocessing and normalisation agree with training.
    """
    net.eval()
    images = data.gtsrb_eval_subset()["images"][:REFERENCE_IMAGES]
    logits = net(data.images_to_tensor(images).to(device)).double().cpu()
    return {"images": f"gtsrb_eval_subset()['images'][:{REFERENCE_IMAGES}]",
            "logits": [[round(float(v), 5) for v in row] for row in logits]}


def record_reference(name: str, out: Path, device: torch.device) -> dict:
    """Add the reference logits of the committed net ``name`` to its record."""
    from localprops.models import zoo

    spec = zoo.load(name, device=device, weights_path=out)
    path = out / GTSRB_WEIGHTS_JSON
    record = json.loads(path.read_text())
    record[name]["reference"] = reference_logits(spec.model, device)
    path.write_text(json.dumps(dict(sorted(record.items())), indent=2) + "\n")
    return record[name]["reference"]


def command_line(argv: list[str]) -> str:
    """The command that reproduces this run.

    Paths (``--data``, ``--root``, ``--out``) and the flags that do not change
    the net (``--quiet``, ``--resume``) are left out.
    """
    kept, skip = [], False
    for item in argv:
        if skip:
            skip = False
            continue
        if item in ("--data", "--root", "--out"):
            skip = True
            continue
        if item in ("--quiet", "--resume"):
            continue
        kept.append(item)
    return "python -m localprops.tools.train_gtsrb " + shlex.join(kept)


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m localprops.tools.train_gtsrb",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, choices=sorted(gtsrb_nets.ARCHITECTURES))
    parser.add_argument("--record-reference", action="store_true",
                        help="only add the reference logits of the committed net to "
                             "its record (no training)")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--warmup-steps", type=int, default=200)
    parser.add_argument("--label-smoothing", type=float, default=0.0)
    parser.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--noise-sigma", type=float, default=0.0,
                        help="Gaussian-noise augmentation: each image gets noise of "
                             "std ~ U(0, NOISE_SIGMA) grey levels (0: none)")
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--source", choices=("npz", "torchvision"), default="npz")
    parser.add_argument("--data", default=None,
                        help=f"gtsrb32.npz (default: ${data.GTSRB_ENV})")
    parser.add_argument("--root", default=None, help="torchvision GTSRB root")
    parser.add_argument("--out", default=str(WEIGHTS_DIR))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default=None, help="cpu / cuda (default: cuda if available)")
    parser.add_argument("--limit", type=int, default=0,
                        help="use only the first LIMIT train / val / test images (smoke tests)")
    parser.add_argument("--memory-format", choices=sorted(MEMORY_FORMATS),
                        default="channels_last",
                        help="layout of images and weights during training (speed only: "
                             "AlexNet trains about 12%% faster contiguous on 2 CPU cores)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--resume", action="store_true",
                        help="continue a stopped run from <out>/<model>.resume.pt, "
                             "written after every epoch (same options needed)")
    parser.add_argument("--weights-dtype", choices=("float32", "float16"), default="float32",
                        help="dtype of the saved weights; the test accuracy is that "
                             "of the net rounded to it")
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.batch_size < 1:
        parser.error("--epochs and --batch-size must be at least 1")
    if args.source == "torchvision" and not args.root:
        parser.error("--source torchvision needs --root DIR")
    return args


def main(argv: list[str] | None = None) -> dict:
    """Train, evaluate on the official test set, save, record; return the entry."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.record_reference:
        return record_reference(args.model, Path(args.out), device)
    arrays = (load_torchvision_source(args.root, progress=not args.quiet)
              if args.source == "torchvision"
              else load_npz_source(args.data))
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        net, facts = train(args, arrays, device)
    finally:
        torch.set_num_threads(threads)
    dtype = getattr(torch, args.weights_dtype)
    round_weights(net, dtype)
    x_test, y_test = arrays["x_test"], arrays["y_test"].astype(np.int64)
    if args.limit:
        x_test, y_test = x_test[:args.limit], y_test[:args.limit]
    test_acc = evaluate(net, x_test, y_test, device, progress=not args.quiet)
    out = Path(args.out)
    path = save_weights(net.cpu(), out, args.model, dtype)
    entry = {
        "file": path.name, "sha256": file_sha256(path),
        "test_accuracy": round(test_acc, 5), "test_images": int(len(y_test)),
        "test_set": "official GTSRB final test set" if not args.limit else "first --limit images",
        "parameters": gtsrb_nets.count_parameters(net.model),
        "command": command_line(argv), "epochs": args.epochs, "seed": args.seed,
        "batch_size": args.batch_size, "lr": args.lr, "weight_decay": args.weight_decay,
        "label_smoothing": args.label_smoothing, "augment": args.augment,
        "noise_sigma": args.noise_sigma,
        "source": args.source, "device": str(device), "threads": args.threads,
        "weights_dtype": args.weights_dtype,
        "torch_version": torch.__version__, "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **facts,
    }
    entry["reference"] = reference_logits(net, torch.device("cpu"))
    update_record(out, args.model, entry)
    checkpoint_path(out, args.model).unlink(missing_ok=True)
    print(json.dumps({"model": args.model, "test_accuracy": entry["test_accuracy"],
                      "file": str(path), "sha256": entry["sha256"]}), flush=True)
    return entry


if __name__ == "__main__":
    main()
