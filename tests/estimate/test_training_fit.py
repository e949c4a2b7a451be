"""Fitting the learned estimator's heads: rank correlation, photo split and the whole run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import spearmanr

from mordasr.estimate import LearnedEstimator
from mordasr.estimate.training import train_estimator
from mordasr.estimate.training.fit import spearman, split_paths


def test_spearman_matches_scipy_with_ties() -> None:
    a = torch.tensor([0.1, 0.4, 0.4, 0.2, 0.9, 0.0, 0.4])
    b = torch.tensor([0.0, 0.5, 0.3, 0.3, 1.0, 0.0, 0.2])
    assert spearman(a, b) == pytest.approx(spearmanr(a.numpy(), b.numpy()).statistic)


def test_photos_split_into_disjoint_seeded_sets() -> None:
    paths = [Path(f"{i}.png") for i in range(20)]
    train, held = split_paths(paths, 0.15, seed=0)
    assert len(held) == 3 and sorted(train + held) == sorted(paths)
    assert split_paths(paths, 0.15, seed=0) == (train, held)


def test_an_unknown_label_scheme_is_refused_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown label scheme"):
        train_estimator([], tmp_path / "heads.safetensors", labels="v9")


@pytest.mark.slow
def test_a_run_writes_loadable_heads_and_reuses_its_feature_cache(tmp_path: Path) -> None:
    photos = []
    for i in range(3):
        rng = np.random.default_rng(i)
        big = np.kron(rng.random((25, 25, 3)), np.ones((8, 8, 1)))
        photos.append(tmp_path / f"{i}.png")
        Image.fromarray((255 * big).astype(np.uint8)).save(photos[-1])
    out, cache = tmp_path / "heads.safetensors", tmp_path / "features.pt"
    settings = {"samples": 8, "epochs": 2, "hidden": 16, "labels": "v1", "cache": cache}
    state = torch.random.get_rng_state()

    record = train_estimator(photos, out, command="test", log=lambda line: None, **settings)
    rerun = train_estimator(photos, out, command="test", log=lambda line: None, **settings)

    assert json.loads(out.with_suffix(".json").read_text()) == rerun
    assert (record["features_from_cache"], rerun["features_from_cache"]) == (False, True)
    assert record["samples"] == {"train": 8, "validation": 64} and record["labels"] == "v1"
    assert torch.equal(torch.random.get_rng_state(), state)
    assert LearnedEstimator.from_pretrained(out).heads.trunk[0].out_features == 16
