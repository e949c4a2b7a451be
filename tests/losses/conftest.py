"""The tiny Stable Diffusion the loss tests run on, loaded through the real loading path."""

from __future__ import annotations

from pathlib import Path

import pytest

from mordasr.sr.sd import SDComponents, load_sd_components


@pytest.fixture(scope="session")
def tiny_sd(sd_dir: Path) -> SDComponents:
    return load_sd_components(sd_dir)
