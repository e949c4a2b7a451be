"""`mordasr analyze` end to end on a tiny MoR model and a few generated photos."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
from PIL import Image
from tiny_models import photo, tiny_mor_model

from mordasr.cli import main

PRESETS = ["--preset", "mordasr-mild", "--preset", "mordasr-severe"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("analyze")
    (root / "HR").mkdir()
    for i in range(3):
        Image.fromarray(photo(72, 64, seed=i)).save(root / "HR" / f"p{i}.png")
    return tiny_mor_model(root / "models"), root / "HR"


@pytest.fixture(scope="module")
def analysed(setup: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    model, hr = setup
    out = tmp_path_factory.mktemp("out") / "analysis"
    args = ["analyze", "--model", str(model), "--images", str(hr), *PRESETS, "--crop", "64"]
    assert main([*args, "-o", str(out)]) == 0
    return out


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_every_table_figure_and_report_is_written(analysed: Path) -> None:
    layer = json.loads((analysed / "summary.json").read_text())["frequency_file"]
    stems = ["zero_experts_per_layer", layer, "real_experts_vs_score"]
    for stem in stems:
        assert (analysed / f"{stem}.csv").is_file()
        with Image.open(analysed / f"{stem}.png") as figure:
            figure.load()
            assert figure.format == "PNG" and min(figure.size) > 200
    assert (analysed / "report.md").is_file()


def test_tables_have_one_column_per_set(analysed: Path) -> None:
    zero = read_csv(analysed / "zero_experts_per_layer.csv")
    assert list(zero[0]) == ["layer", "mordasr-mild", "mordasr-severe"]
    assert len(zero) == 5
    layer = json.loads((analysed / "summary.json").read_text())["frequency_file"]
    frequency = read_csv(analysed / f"{layer}.csv")
    assert list(frequency[0]) == [
        "slot",
        "kind",
        "blur",
        "noise",
        "jpeg",
        "mordasr-mild",
        "mordasr-severe",
    ]
    assert [row["kind"] for row in frequency] == ["real"] * 4 + ["zero"] * 2
    points = read_csv(analysed / "real_experts_vs_score.csv")
    assert list(points[0]) == ["set", "image", "severity", "real_experts"]
    assert len(points) == 3 * 5


def test_report_answers_the_severity_question_with_the_summary_numbers(analysed: Path) -> None:
    summary = json.loads((analysed / "summary.json").read_text())
    comparison = summary["comparison"]
    report = (analysed / "report.md").read_text()
    answer = "**Yes.**" if comparison["severe_keeps_more"] else "**No.**"
    assert answer in report
    for value in comparison["mean_real_experts"].values():
        assert f"{value:.3f}" in report
    assert summary["images"] == 3 and summary["top_k"] == 2


def test_report_gives_the_kept_expert_overlap_of_every_pair_of_sets(analysed: Path) -> None:
    overlap = json.loads((analysed / "summary.json").read_text())["kept_overlap"]
    assert list(overlap) == ["mordasr-mild", "mordasr-severe", "blur", "noise", "jpeg"]
    assert all(0.0 <= value <= 1.0 for row in overlap.values() for value in row.values())
    row = overlap["mordasr-mild"]
    line = "| mordasr-mild | " + " | ".join(f"{v:.3f}" for v in row.values()) + " |"
    assert line in (analysed / "report.md").read_text()


@pytest.mark.parametrize(
    ("model_path", "options", "message"),
    [
        (".", ["--preset", "mordasr-mild"], "two or more --preset"),
        (".", [*PRESETS, "--crop", "64", "--layer", "nope"], "unknown layer 'nope'"),
        ("../tiny.pth", [], "not a MoR model"),
    ],
    ids=["one-preset-is-no-comparison", "unknown-layer", "plain-backbone"],
)
def test_a_refused_analysis_says_why_and_writes_nothing(
    setup: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    model_path: str,
    options: list[str],
    message: str,
) -> None:
    """``model_path`` is relative to the tiny MoR model folder (its plain backbone is beside it)."""
    model, hr = setup
    out = tmp_path / "out"
    args = ["analyze", "--model", str(model / model_path), "--images", str(hr), *options]
    assert main([*args, "-o", str(out)]) == 1
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_without_matplotlib_it_says_how_to_install_it(
    setup: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    model, hr = setup
    args = ["analyze", "--model", str(model), "--images", str(hr), "-o", str(tmp_path / "out")]
    assert main(args) == 1
    assert "pip install 'mordasr[analyze]'" in capsys.readouterr().err


def _analyse(model: Path, hr: Path, out: Path) -> str:
    args = ["analyze", "--model", str(model), "--images", str(hr), *PRESETS, "--crop", "64"]
    assert main([*args, "--max-images", "1", "-o", str(out)]) == 0
    return (out / "report.md").read_text()


def test_a_model_routed_by_other_inputs_is_analysed_with_them(
    setup: tuple[Path, Path], tmp_path: Path
) -> None:
    model = tiny_mor_model(tmp_path / "models", router_input="blur-noise")
    _analyse(model, setup[1], tmp_path / "out")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["sets"]["mordasr-mild"]["images"] == 1


def test_the_no_bias_explanation_is_given_only_for_routers_without_bias(
    setup: tuple[Path, Path], tmp_path: Path
) -> None:
    biased = tiny_mor_model(tmp_path / "models", router_bias=True)
    assert "A router without bias" not in _analyse(biased, setup[1], tmp_path / "biased")
    assert "A router without bias" in _analyse(setup[0], setup[1], tmp_path / "plain")


def test_report_gives_how_much_rerouting_a_mild_image_changes_its_output(analysed: Path) -> None:
    swap = json.loads((analysed / "summary.json").read_text())["swap_change"]
    assert swap["mean"] > 0 and swap["p99"] >= 0
    report = (analysed / "report.md").read_text()
    assert f"{swap['mean']:.2f}/255 on average and {swap['p99']:.2f}/255 at the 99th" in report
