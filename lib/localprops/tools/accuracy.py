"""Accuracy of the ImageNet models on a labelled image folder (a maintainer's CLI).

``python -m localprops.tools.accuracy --evaluate-imagenet [--root DIR]`` writes
top-1 / top-5 of the EfficientNet-Lites on ``$LOCALPROPS_IMAGENET`` into
``localprops/models/weights/imagenet_accuracy.json``, the record the models
chapter reads.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
from pathlib import Path
from typing import Sequence

import torch

from localprops.models.data import IMAGENET_ENV
from localprops.models.wrappers import ModelSpec, resolve_device
from localprops.models.zoo import (
    EFFICIENTNET_LITE,
    EFFICIENTNET_PREPROCESSING_GRID,
    IMAGENET_ACCURACY_JSON,
    WEIGHTS_DIR,
    known_names,
    load,
    load_efficientnet,
)


def _imagenet_scores(spec: ModelSpec, root: str | os.PathLike | None) -> dict:
    """Top-1, top-5 and count of confident correct answers on an image folder."""
    from localprops.models.data import load_imagenet_folder

    loaded = load_imagenet_folder(root, spec.preprocess)
    logits = spec.logits(loaded.images, batch_size=25)
    probs = torch.softmax(logits.double(), 1)
    truth = probs.gather(1, loaded.labels[:, None])[:, 0]
    correct = probs.argmax(1) == loaded.labels
    top5 = (logits.topk(5, 1).indices == loaded.labels[:, None]).any(1)
    return {"top1": round(correct.double().mean().item(), 4),
            "top5": round(top5.double().mean().item(), 4),
            "correct_above_0.99": int((correct & (truth > 0.99)).sum()),
            "images": len(loaded.labels),
            "preprocessing": repr(spec.preprocess),
            "normalisation": spec.model.extra_repr()}


def _compare_preprocessing(name: str, root: str | os.PathLike | None,
                           device: torch.device) -> list[dict]:
    """Scores of an EfficientNet-Lite under every option of the grid."""
    return [_imagenet_scores(load_efficientnet(name, device, option), root)
            for option in EFFICIENTNET_PREPROCESSING_GRID]


def evaluate_imagenet(names: Sequence[str] = tuple(EFFICIENTNET_LITE),
                      root: str | os.PathLike | None = None,
                      out: str | os.PathLike | None = WEIGHTS_DIR / IMAGENET_ACCURACY_JSON,
                      device: str | torch.device | None = None,
                      compare_preprocessing: bool = False) -> dict:
    """Top-1 / top-5 accuracy of ImageNet models on a labelled image folder.

    Parameters
    ----------
    names : models to evaluate, each with its default preprocessing.
    root : the folder (default ``$LOCALPROPS_IMAGENET``).
    out : JSON file the results are merged into (None: not written).
    device : default CUDA when available, else CPU.
    compare_preprocessing : also score the EfficientNet-Lites under
        :data:`EFFICIENTNET_PREPROCESSING_GRID` (kept under
        ``preprocessing_search``).

    Returns
    -------
    dict name -> {top1, top5, correct_above_0.99, images, preprocessing, ...}.
    """
    device = resolve_device(device)
    results = {}
    for name in names:
        spec = load(name, device=device)
        entry = _imagenet_scores(spec, root)
        entry.update({"weights": spec.weights, "torch_version": torch.__version__,
                      "date": datetime.date.today().isoformat(),
                      "command": "python -m localprops.tools.accuracy --evaluate-imagenet"})
        if compare_preprocessing and name in EFFICIENTNET_LITE:
            entry["preprocessing_search"] = _compare_preprocessing(name, root, device)
            entry["command"] += " --compare-preprocessing"
        results[name] = entry
    if out is not None:
        out = Path(out)
        record = json.loads(out.read_text()) if out.exists() else {}
        record.update(results)
        out.write_text(json.dumps(record, indent=2) + "\n")
    return results


def _main(argv: Sequence[str] | None = None) -> None:
    """``python -m localprops.tools.accuracy --evaluate-imagenet [--root DIR]``."""
    parser = argparse.ArgumentParser(prog="python -m localprops.tools.accuracy")
    parser.add_argument("--evaluate-imagenet", action="store_true",
                        help="top-1 of the EfficientNet-Lites on $LOCALPROPS_IMAGENET "
                             "(written to weights/imagenet_accuracy.json)")
    parser.add_argument("--root", default=None, help=f"image folder (default ${IMAGENET_ENV})")
    parser.add_argument("--models", nargs="+", default=list(EFFICIENTNET_LITE))
    parser.add_argument("--out", default=str(WEIGHTS_DIR / IMAGENET_ACCURACY_JSON))
    parser.add_argument("--compare-preprocessing", action="store_true",
                        help="also score the EfficientNet-Lites under other "
                             "resizing / normalisation choices")
    parser.add_argument("--device", default=None)
    parser.add_argument("--list", action="store_true", help="print the known names")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(known_names()))
    elif args.evaluate_imagenet:
        results = evaluate_imagenet(args.models, args.root, args.out, args.device,
                                    args.compare_preprocessing)
        print(json.dumps(results, indent=2))
    else:
        parser.print_help()


if __name__ == "__main__":
    _main()
