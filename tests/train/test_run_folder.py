"""Training never touches a user's files, and hostile configs are one line, not a hang."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from mordasr.cli import main
from mordasr.train import trainer
from mordasr.train.config import ConfigError, TrainConfig
from mordasr.train.trainer import RUN_STATE, RunFolderError, claim_output_dir

ALIAS_BOMB = """\
a: &a [x, x, x, x, x, x, x, x, x, x]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h, *h]
total_steps: *i
"""


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(path.relative_to(folder)): (path.read_bytes(), path.stat().st_mtime_ns)
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def test_a_folder_of_user_files_is_refused_in_one_line_and_left_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mine = tmp_path / "my-photos"
    mine.mkdir()
    (mine / "config.json").write_text('{"mine": true}')
    (mine / "log.csv").write_text("my,own,log\n")
    before = snapshot(mine)
    config = tmp_path / "train.yaml"
    config.write_text(f"output_dir: {mine}\ntotal_steps: 1\n")
    assert main(["train", str(config), "--stop-at", "0"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"mordasr train: output_dir {mine} holds files that no mordasr run")
    assert "config.json, log.csv" in err
    assert snapshot(mine) == before


def test_a_new_or_empty_folder_becomes_a_run_folder(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    for folder in (empty, tmp_path / "new" / "run"):
        claim_output_dir(folder, "realesrgan-mor")
        assert json.loads((folder / RUN_STATE).read_text())["written_by"] == "mordasr train"


def test_a_run_folder_is_claimed_again_when_resumed(tmp_path: Path) -> None:
    run = tmp_path / "run"
    claim_output_dir(run, "realesrgan-mor")
    (run / "log.csv").write_text("step\n1\n")
    claim_output_dir(run, "realesrgan-mor")  # no error: the run's own files
    assert (run / "log.csv").read_text() == "step\n1\n"


def test_a_run_from_before_the_state_file_is_recognised_by_its_checkpoints(
    tmp_path: Path,
) -> None:
    run = tmp_path / "old-run"
    (run / "checkpoints" / "step_00000002").mkdir(parents=True)
    (run / "log.csv").write_text("step\n2\n")
    claim_output_dir(run, "realesrgan-mor")
    assert (run / RUN_STATE).is_file()


def test_a_run_stopped_before_its_first_checkpoint_is_recognised_by_its_config(
    tmp_path: Path,
) -> None:
    run = tmp_path / "early-run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"task": "realesrgan-mor", "output_dir": str(run)}))
    claim_output_dir(run, "realesrgan-mor")
    assert (run / RUN_STATE).is_file()


def test_a_config_json_naming_another_folder_is_the_users(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.json").write_text(json.dumps({"output_dir": str(tmp_path / "elsewhere")}))
    with pytest.raises(RunFolderError, match="holds files that no mordasr run wrote"):
        claim_output_dir(mine, "realesrgan-mor")
    assert sorted(p.name for p in mine.iterdir()) == ["config.json"]


def test_an_output_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("mine")
    with pytest.raises(RunFolderError, match="is a file"):
        claim_output_dir(path, "realesrgan-mor")
    assert path.read_text() == "mine"


def test_a_yaml_alias_bomb_is_refused_quickly_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(ALIAS_BOMB)  # a billion values once expanded
    start = time.monotonic()
    with pytest.raises(ConfigError, match="alias bomb") as error:
        TrainConfig.from_yaml(path)
    assert time.monotonic() - start < 5
    assert "\n" not in str(error.value) and len(str(error.value)) < 300


def test_yaml_aliases_of_a_normal_size_still_work(tmp_path: Path) -> None:
    path = tmp_path / "aliases.yaml"
    path.write_text("total_steps: &steps 7\ncheckpoint_every: *steps\n")
    config = TrainConfig.from_yaml(path)
    assert (config.total_steps, config.checkpoint_every) == (7, 7)


def test_a_base_cycle_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a.yaml").write_text("base: b.yaml\ntotal_steps: 1\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    (tmp_path / "self.yaml").write_text("base: self.yaml\n")
    for name in ("a.yaml", "self.yaml"):
        assert main(["train", str(tmp_path / name)]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err
        assert "the bases form a cycle" in err and "RecursionError" not in err


def test_a_marker_written_by_another_process_of_the_run_meanwhile_is_not_foreign(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / RUN_STATE).write_text("{}\n")  # written after this process found no marker
    monkeypatch.setattr(trainer, "is_run_folder", lambda folder: False)
    claim_output_dir(run, "sr")
    assert (run / RUN_STATE).read_text() == "{}\n"
