"""The tiny Stable Diffusion the loss tests run on, loaded through the real loading path."""

from __future__ import annotations

import pytest
from tiny_sd import write_tiny_sd

from mordasr.sr.sd import SDComponents, load_sd_components


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory: pytest.TempPathFactory) -> SDComponents:
    return load_sd_components(write_tiny_sd(tmp_path_factory.mktemp("tiny_sd")))
