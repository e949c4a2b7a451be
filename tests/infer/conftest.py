"""Fixtures the inference tests share."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh ``MORDASR_CACHE`` for one test: the graphs a backend exports are never shared."""
    monkeypatch.setenv("MORDASR_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"
