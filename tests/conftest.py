"""Fixtures shared across the layers' tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def sd_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Stable Diffusion folder (:func:`tiny_sd.write_tiny_sd`), written once per test
    session: tests only read it (load it, or name it as a base model)."""
    from tiny_sd import write_tiny_sd  # skips the tests that ask for it without diffusers

    return write_tiny_sd(tmp_path_factory.mktemp("tiny_sd"))
