"""Planning inputs and outputs so that no file of the user's is lost."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mordasr.io.paths import (
    DANGLING_LINK,
    NOT_A_FILE,
    SUBFOLDER,
    OutputPlanError,
    check_output_folder,
    check_plan,
    scan_inputs,
)


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_folders_give_their_files_sorted_and_report_what_they_leave_out(tmp_path: Path) -> None:
    b, a = _touch(tmp_path / "in" / "b.png"), _touch(tmp_path / "in" / "a.png")
    _touch(tmp_path / "in" / "nested" / "c.png")
    (tmp_path / "in" / "gone.png").symlink_to(tmp_path / "missing.png")
    scan = scan_inputs([tmp_path / "in"])
    assert scan.files == [a, b]
    assert scan.left_out == {
        DANGLING_LINK: [tmp_path / "in" / "gone.png"],
        SUBFOLDER: [tmp_path / "in" / "nested"],
    }
    assert scan.left_out_summary() == "1 dangling link, 1 sub-folder"


def test_special_files_in_a_folder_are_reported_not_read(tmp_path: Path) -> None:
    a = _touch(tmp_path / "in" / "a.png")
    os.mkfifo(tmp_path / "in" / "pipe")
    scan = scan_inputs([tmp_path / "in"])
    assert scan.files == [a] and scan.left_out == {NOT_A_FILE: [tmp_path / "in" / "pipe"]}


def test_a_file_reached_twice_is_processed_once(tmp_path: Path) -> None:
    a = _touch(tmp_path / "in" / "a.png")
    (tmp_path / "link.png").symlink_to(a)
    assert scan_inputs([a, tmp_path / "in", tmp_path / "link.png"]).files == [a]


def test_named_files_are_kept_even_if_missing(tmp_path: Path) -> None:
    assert scan_inputs([tmp_path / "nope.png"]).files == [tmp_path / "nope.png"]


def test_an_output_that_is_an_input_is_refused(tmp_path: Path) -> None:
    a = _touch(tmp_path / "a.png")
    with pytest.raises(OutputPlanError, match="would replace the input"):
        check_plan({a: tmp_path / "." / "a.png"})


def test_an_output_that_is_another_input_or_a_hard_link_to_it_is_refused(tmp_path: Path) -> None:
    a, b = _touch(tmp_path / "a.jpg"), _touch(tmp_path / "b.png")
    os.link(b, tmp_path / "out.png")
    with pytest.raises(OutputPlanError, match=r"replace the input .*b\.png"):
        check_plan({a: tmp_path / "out.png"}, [a, b])


def test_two_inputs_sharing_an_output_are_refused_naming_both(tmp_path: Path) -> None:
    first, second = tmp_path / "x" / "a.png", tmp_path / "y" / "a.png"
    with pytest.raises(OutputPlanError) as caught:
        check_plan({first: tmp_path / "out" / "a.png", second: tmp_path / "out" / "a.png"})
    assert str(first) in str(caught.value) and str(second) in str(caught.value)


def test_distinct_outputs_pass(tmp_path: Path) -> None:
    a, b = _touch(tmp_path / "a.png"), _touch(tmp_path / "b.png")
    check_plan({a: tmp_path / "o" / "a.png", b: tmp_path / "o" / "b.png"})


def test_an_output_folder_under_a_file_is_refused_for_any_user(tmp_path: Path) -> None:
    parent = _touch(tmp_path / "plain_file")
    with pytest.raises(OutputPlanError, match=r"is under .*plain_file, a file"):
        check_output_folder(parent / "out")


def test_an_output_folder_that_is_a_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(OutputPlanError, match="is a file, not a folder"):
        check_output_folder(_touch(tmp_path / "out"))


def test_a_new_output_folder_is_checked_without_being_created(tmp_path: Path) -> None:
    check_output_folder(tmp_path / "new" / "deeper")
    assert sorted(tmp_path.iterdir()) == []
