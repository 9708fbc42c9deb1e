"""Rebuild the assets bundled with the package (a maintainer's CLI).

``python -m localprops.tools.assets --build-assets`` rewrites
``localprops/models/_assets``: the class-stratified 430-image GTSRB
evaluation subset (from ``$LOCALPROPS_GTSRB``) and the ImageNet-1k class list
(from the ``imagenet_classes.tsv`` of ``$LOCALPROPS_IMAGENET``).
"""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from localprops.models.data import (
    GTSRB_SUBSET_FILE,
    IMAGENET_CLASSES_FILE,
    IMAGENET_ENV,
    load_gtsrb,
    resolve_path,
)


def make_gtsrb_eval_subset(labels: np.ndarray, per_class: int = 10) -> np.ndarray:
    """Deterministic class-stratified choice of test indices.

    For every class (in class order) take ``per_class`` images evenly spaced
    over that class's images in file order (the official test file is in
    no particular sign order, so this spreads over tracks and conditions).

    Returns
    -------
    int64 indices into the test set, grouped by class.
    """
    labels = np.asarray(labels)
    chosen = []
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        take = min(per_class, len(rows))
        positions = np.unique(np.linspace(0, len(rows) - 1, take).round().astype(int))
        chosen.append(rows[positions])
    return np.concatenate(chosen).astype(np.int64)


def write_gtsrb_eval_subset(path: str | os.PathLike | None = None,
                            out: str | os.PathLike = GTSRB_SUBSET_FILE,
                            per_class: int = 10) -> Path:
    """Build the committed GTSRB evaluation subset from ``gtsrb32.npz``."""
    arrays = load_gtsrb(path)
    index = make_gtsrb_eval_subset(arrays["y_test"], per_class)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, images=arrays["x_test"][index],
                        labels=arrays["y_test"][index].astype(np.uint8),
                        test_index=index, class_names=arrays["class_names"])
    return out


def write_imagenet_classes(source_tsv: str | os.PathLike,
                           out: str | os.PathLike = IMAGENET_CLASSES_FILE) -> Path:
    """Build the bundled class list from a tsv with ``index``, ``wnid`` columns.

    Checks that the index is the position in the sorted wnid list and takes
    the names from torchvision's ImageNet category list.
    """
    import torchvision

    with open(source_tsv, newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    wnids = [r["wnid"] for r in rows]
    if len(wnids) != 1000 or wnids != sorted(wnids) or [
            int(r["index"]) for r in rows] != list(range(1000)):
        raise ValueError(f"{source_tsv}: expected 1000 rows sorted by wnid, "
                         "indexed 0..999")
    names = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(["index", "wnid", "name"])
        writer.writerows((i, w, n) for i, (w, n) in enumerate(zip(wnids, names)))
    return out


def _main(argv: Sequence[str] | None = None) -> None:
    """Rebuild the bundled assets: ``python -m localprops.tools.assets --build-assets``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m localprops.tools.assets")
    parser.add_argument("--build-assets", action="store_true",
                        help="rewrite _assets/ from $LOCALPROPS_GTSRB and the "
                             "imagenet_classes.tsv in $LOCALPROPS_IMAGENET")
    parser.add_argument("--gtsrb", default=None)
    parser.add_argument("--imagenet-tsv", default=None)
    args = parser.parse_args(argv)
    if not args.build_assets:
        parser.print_help()
        return
    print(write_gtsrb_eval_subset(args.gtsrb))
    tsv = args.imagenet_tsv or resolve_path(None, IMAGENET_ENV,
                                        "ImageNet folder") / "imagenet_classes.tsv"
    print(write_imagenet_classes(tsv))


if __name__ == "__main__":
    _main()
