"""Fixtures shared across the layers' tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_models import tiny_mor_model


@pytest.fixture(scope="session")
def sd_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Stable Diffusion folder (:func:`tiny_sd.write_tiny_sd`), written once per test
    session: tests only read it (load it, or name it as a base model)."""
    from tiny_sd import write_tiny_sd  # skips the tests that ask for it without diffusers

    return write_tiny_sd(tmp_path_factory.mktemp("tiny_sd"))


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny MoR model folder (:func:`tiny_models.tiny_mor_model`, its plain backbone
    ``tiny.pth`` beside it), written once per test session: tests only read it (a test that
    changes a model folder copies this one first)."""
    return tiny_mor_model(tmp_path_factory.mktemp("tiny_mor"))
