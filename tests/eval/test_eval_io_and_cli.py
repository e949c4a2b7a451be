"""Image reading by content, SR/HR pairing by name, and the ``mordasr eval`` command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mordasr.cli import main
from mordasr.eval.evaluate import evaluate_pairs, markdown_table, parse_metrics
from mordasr.eval.io import list_images, load_image, pair_images


def _save(path: Path, array: np.ndarray, fmt: str = "PNG") -> Path:
    Image.fromarray(array).save(path, format=fmt)
    return path


def _rgb(seed: int, size: int = 24) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(size, size, 3), dtype=np.uint8)


def test_load_image_reads_rgb_as_unit_range_tensor(tmp_path: Path) -> None:
    array = _rgb(0)
    image = load_image(_save(tmp_path / "a.png", array))
    assert image.shape == (1, 3, 24, 24)
    restored = (image * 255).round().to(torch.uint8)[0].permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(restored, array)


def test_load_image_detects_the_format_from_content(tmp_path: Path) -> None:
    path = _save(tmp_path / "looks_like.jpg", _rgb(1), fmt="PNG")
    assert load_image(path).shape == (1, 3, 24, 24)


def test_load_image_replicates_grayscale_and_drops_alpha(tmp_path: Path) -> None:
    gray = load_image(_save(tmp_path / "g.png", _rgb(2)[..., 0]))
    assert torch.equal(gray[:, 0], gray[:, 2])
    rgba = np.dstack([_rgb(3), np.full((24, 24), 7, np.uint8)])
    assert load_image(_save(tmp_path / "a.png", rgba)).shape == (1, 3, 24, 24)


def test_load_image_keeps_16_bit_precision(tmp_path: Path) -> None:
    path = tmp_path / "deep.png"
    Image.fromarray(np.full((4, 4), 65535 // 3, dtype=np.uint16)).save(path)
    assert load_image(path)[0, 0, 0, 0].item() == pytest.approx(1 / 3, abs=1e-5)


def test_list_images_skips_non_images(tmp_path: Path) -> None:
    _save(tmp_path / "b.png", _rgb(4))
    (tmp_path / "notes.txt").write_text("not an image")
    assert [p.name for p in list_images(tmp_path)] == ["b.png"]


def test_pairing_accepts_exact_names_and_separator_suffixes() -> None:
    hr = [Path("hr/0801.png"), Path("hr/0802.png"), Path("hr/img_1.png")]
    sr = [Path("sr/0801_x4_out.jpg"), Path("sr/0802.png"), Path("sr/img_1-sr.webp")]
    pairs, unmatched = pair_images(sr, hr)
    assert [(s.name, h.name) for s, h in pairs] == [
        ("0801_x4_out.jpg", "0801.png"),
        ("0802.png", "0802.png"),
        ("img_1-sr.webp", "img_1.png"),
    ]
    assert unmatched == []


def test_pairing_prefers_the_longest_matching_hr_name() -> None:
    hr = [Path("img_1.png"), Path("img_1_a.png")]
    sr = [Path("img_1_out.png"), Path("img_1_a_out.png")]
    pairs, _ = pair_images(sr, hr)
    assert [(s.name, h.name) for s, h in pairs] == [
        ("img_1_out.png", "img_1.png"),
        ("img_1_a_out.png", "img_1_a.png"),
    ]


def test_pairing_does_not_match_a_bare_prefix() -> None:
    with pytest.raises(ValueError, match="no SR image"):
        pair_images([Path("08010.png")], [Path("0801.png")])


def test_pairing_reports_unmatched_sr_files() -> None:
    pairs, unmatched = pair_images([Path("a.png"), Path("zzz.png")], [Path("a.png")])
    assert len(pairs) == 1 and [p.name for p in unmatched] == ["zzz.png"]


def test_pairing_rejects_ambiguous_sr_files() -> None:
    with pytest.raises(ValueError, match="several SR images"):
        pair_images([Path("a_1.png"), Path("a_2.png")], [Path("a.png")])


def test_parse_metrics_rejects_unknown_names() -> None:
    assert parse_metrics("PSNR, ssim") == ("psnr", "ssim")
    with pytest.raises(ValueError, match="unknown metrics"):
        parse_metrics("psnr,fid")


def test_evaluate_pairs_rejects_size_mismatches(tmp_path: Path) -> None:
    sr = _save(tmp_path / "sr.png", _rgb(5, 24))
    hr = _save(tmp_path / "hr.png", _rgb(5, 32))
    with pytest.raises(ValueError, match="size mismatch"):
        evaluate_pairs([(sr, hr)], metrics=("psnr",), progress=False)


def test_markdown_table_lists_each_metric_mean(tmp_path: Path) -> None:
    hr = _save(tmp_path / "hr.png", _rgb(6))
    result = evaluate_pairs([(hr, hr)], metrics=("ssim",), progress=False)
    assert "| SSIM ↑ | 1.0000 |" in markdown_table(result)


@pytest.fixture()
def folders(tmp_path: Path) -> tuple[Path, Path]:
    sr_dir, hr_dir = tmp_path / "sr", tmp_path / "hr"
    sr_dir.mkdir()
    hr_dir.mkdir()
    for index in range(2):
        clean = _rgb(10 + index, 32)
        noisy = np.clip(clean.astype(int) + (index + 1) * 4, 0, 255).astype(np.uint8)
        _save(hr_dir / f"im{index}.png", clean)
        _save(sr_dir / f"im{index}_out.png", noisy)
    return sr_dir, hr_dir


def test_cli_prints_a_markdown_table(
    folders: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    sr_dir, hr_dir = folders
    status = main(["eval", "--sr", str(sr_dir), "--hr", str(hr_dir), "--metrics", "psnr,ssim"])
    out = capsys.readouterr().out
    assert status == 0
    assert "| PSNR ↑ |" in out and "mean over 2 images" in out


def test_cli_json_has_per_image_values_and_means(
    folders: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    sr_dir, hr_dir = folders
    argv = ["eval", "--sr", str(sr_dir), "--hr", str(hr_dir), "--metrics", "psnr", "--json"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    per_image = [v["psnr"] for v in report["per_image"].values()]
    assert set(report["per_image"]) == {"im0.png", "im1.png"}
    assert report["mean"]["psnr"] == pytest.approx(sum(per_image) / 2)


def test_cli_fails_cleanly_when_an_hr_image_has_no_sr(
    folders: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    sr_dir, hr_dir = folders
    (sr_dir / "im1_out.png").unlink()
    assert main(["eval", "--sr", str(sr_dir), "--hr", str(hr_dir), "--metrics", "psnr"]) == 1
    assert "no SR image" in capsys.readouterr().err
