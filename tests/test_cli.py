"""The `mordasr` command line skeleton."""

from __future__ import annotations

import argparse
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


def subcommand(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    return subparsers.choices[name]


def top_level_help(name: str) -> str:
    subparsers = next(a for a in build_parser()._actions if a.dest == "command")
    return next(action.help for action in subparsers._choices_actions if action.dest == name)


def test_export_input_shape_reads_the_same_in_both_helps() -> None:
    assert "(N,3,H,W)" in top_level_help("export")
    assert "(N,3,H,W)" in subcommand("export").format_help()
    assert "(1,3,H,W)" not in top_level_help("export") + subcommand("export").format_help()


@pytest.mark.parametrize("name", ["upscale", "serve", "degrade"])
def test_device_help_mentions_mps(name: str) -> None:
    assert "mps" in subcommand(name).format_help()


def test_degrade_help_has_no_restructuredtext_markup_and_shows_defaults() -> None:
    text = subcommand("degrade").format_help()
    assert "``" not in text and ":data:" not in text
    assert "images per batch (default 16)" in " ".join(text.split())
    for flag in ("--scale", "--seed", "--batch-size", "--device", "--save-gt", "--overwrite"):
        help_line = " ".join(text.split(flag)[-1].split()[:12])
        assert "default" in help_line, flag
