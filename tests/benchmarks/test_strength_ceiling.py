"""benchmarks/strength_ceiling.py end to end on a tiny MoR model and a hand-made mixed set."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from PIL import Image
from script_loader import loaded_script
from tiny_models import photo

GROUPS = ("clean", "noise")
IDS = ("a-0", "b-0")
STRENGTHS = ("0", "1", "1.5")


@pytest.fixture(scope="module")
def script() -> Iterator[ModuleType]:
    with loaded_script("strength_ceiling") as module:
        yield module


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two groups x two crops: 64x64 HR, 16x16 LR, in make_mixed_set.py's layout."""
    root = tmp_path_factory.mktemp("mixed")
    for seed, image_id in enumerate(IDS):
        hr = Image.fromarray(photo(64, 64, seed=seed))
        lr = np.asarray(hr.resize((16, 16), Image.Resampling.BICUBIC), dtype=np.int16)
        noise = np.random.default_rng(seed).integers(-40, 41, lr.shape)
        images = {"HR": hr, "LR/clean": lr, "LR/noise": np.clip(lr + noise, 0, 255)}
        for folder, image in images.items():
            (root / folder).mkdir(parents=True, exist_ok=True)
            if isinstance(image, np.ndarray):
                image = Image.fromarray(image.astype(np.uint8))
            image.save(root / folder / f"{image_id}.png")
    (root / "set.json").write_text(json.dumps({"groups": list(GROUPS), "ids": list(IDS)}))
    return root


def _run(script: ModuleType, mixed: Path, out: Path, model_dir: Path) -> list[dict]:
    argv = [str(mixed), "-o", str(out), "--model", str(model_dir)]
    assert script.main([*argv, "--strengths", *STRENGTHS]) == 0
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def finished(
    script: ModuleType, mixed: Path, tmp_path_factory: pytest.TempPathFactory, model_dir: Path
) -> tuple[Path, list[dict]]:
    """A finished run's folder and its result lines."""
    out = tmp_path_factory.mktemp("ceiling")
    return out, _run(script, mixed, out, model_dir)


def test_every_group_image_and_strength_is_scored_once(finished: tuple[Path, list[dict]]) -> None:
    _, rows = finished
    keys = {(r["group"], r["id"], r["strength"]) for r in rows}
    assert len(rows) == len(keys) == len(GROUPS) * len(IDS) * len(STRENGTHS)
    assert {r["strength"] for r in rows} == {0.0, 1.0, 1.5}
    assert all(r["lpips"] >= 0 and r["psnr_y"] > 0 for r in rows)


def test_a_finished_run_scores_nothing_new(
    script: ModuleType,
    mixed: Path,
    model_dir: Path,
    finished: tuple[Path, list[dict]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    out, rows = finished
    assert _run(script, mixed, out, model_dir) == rows
    assert "scored 0 new" in capsys.readouterr().out


def test_an_interrupted_run_resumes_with_the_missing_lines(
    script: ModuleType,
    mixed: Path,
    tmp_path: Path,
    model_dir: Path,
    finished: tuple[Path, list[dict]],
) -> None:
    _, rows = finished
    text = "".join(json.dumps(row) + "\n" for row in rows[:5])
    (tmp_path / "results.jsonl").write_text(text + json.dumps(rows[5])[:20])
    assert _run(script, mixed, tmp_path, model_dir) == rows


def test_the_oracle_is_never_worse_than_the_best_single_strength(
    script: ModuleType, finished: tuple[Path, list[dict]]
) -> None:
    out, rows = finished
    scores = script.complete_scores(rows, list(GROUPS), list(IDS), [0.0, 1.0, 1.5])
    summary = script.summarise(scores)
    best = summary["strengths"].index(summary["best_single"])
    for row in summary["rows"].values():
        assert row["oracle_lpips"] <= min(row["lpips"]) <= row["lpips"][best]
        assert row["oracle_gain"]["mean"] <= row["group_gain"]["mean"] <= 0
    assert "Headroom" in (out / "summary.md").read_text()


def test_a_folder_scored_with_another_model_is_refused(
    script: ModuleType, mixed: Path, finished: tuple[Path, list[dict]]
) -> None:
    out, _ = finished
    with pytest.raises(SystemExit, match="holds results of model"):
        script.main([str(mixed), "-o", str(out), "--model", "bicubic"])
