"""The `mordasr` command line skeleton."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mordasr.cli import build_parser, main

COMMANDS = {"upscale", "degrade", "estimate", "train", "eval", "benchmark", "analyze", "serve"}


def test_every_documented_command_is_registered() -> None:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    assert set(subparsers.choices) >= COMMANDS


def test_no_command_prints_help_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_console_script_reports_its_version() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mordasr.cli", "--version"], capture_output=True, text=True
    )
    assert result.returncode == 0
    assert result.stdout.startswith("mordasr ")
