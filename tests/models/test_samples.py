"""Seeded, class-stratified selection of clean samples (:mod:`localprops.models.samples`)."""
from types import SimpleNamespace

import numpy as np
import pytest

from localprops.models.samples import samples_for, stratified_order


def _labels(n_classes=7, per_class=(1, 2, 5, 9)):
    rng = np.random.default_rng(0)
    labels = np.concatenate([np.full(per_class[c % len(per_class)], c) for c in range(n_classes)])
    return rng.permutation(labels)


def test_first_n_cover_min_n_classes_and_extend():
    labels = _labels()
    ids = np.arange(100, 100 + len(labels))
    order = stratified_order(ids, labels, seed=3)
    assert sorted(order.tolist()) == list(range(len(labels)))      # a permutation
    for n in (3, 7, 12):
        assert len(set(labels[order[:n]].tolist())) == min(n, 7)
    # round-robin: no class gets two images ahead of a class that still has some
    available = np.bincount(labels, minlength=7)
    for n in range(1, len(labels) + 1):
        counts = np.bincount(labels[order[:n]], minlength=7)
        open_ = counts < available
        assert (counts.max() - counts[open_] <= 1).all()


def test_order_depends_on_seed_but_not_on_other_candidates():
    labels = _labels()
    ids = np.arange(len(labels))
    a, b = stratified_order(ids, labels, seed=0), stratified_order(ids, labels, seed=1)
    assert not np.array_equal(a, b)
    # drop some candidates: the survivors keep their relative order within a class
    keep = np.arange(len(labels)) % 3 != 0
    sub = stratified_order(ids[keep], labels[keep], seed=0)
    for c in np.unique(labels):
        full = [int(ids[k]) for k in a if labels[k] == c and keep[k]]
        part = [int(ids[keep][k]) for k in sub if labels[keep][k] == c]
        assert full == part


def test_samples_for_reads_model_then_dataset():
    spec = SimpleNamespace(name="net", dataset="gtsrb")
    assert samples_for(5, spec) == 5
    assert samples_for({"gtsrb": 100, "imagenet": 24}, spec) == 100
    assert samples_for({"net": 7, "gtsrb": 100}, spec) == 7
    with pytest.raises(ValueError, match="no entry for model 'net'"):
        samples_for({"imagenet": 24}, spec)
