"""Video upscaling: a clip streamed frame by frame, its sound copied, routed per shot."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image, ImageSequence
from tiny_models import photo, tiny_mor_model

from mordasr.cli import main
from mordasr.infer import video as video_module
from mordasr.infer.pipeline import Upscaler
from mordasr.infer.video import Frame, ShotRouter, VideoError, upscale_video
from mordasr.mor import MoRLayer, mor_layers

av = pytest.importorskip("av")

from video_helpers import FRAMES, RATE, clip_streams, clip_times, write_clip  # noqa: E402


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    return write_clip(tmp_path / "clip.mp4")


def _log(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def test_a_clip_is_upscaled_with_its_frames_rate_and_sound(
    model_dir: Path, clip: Path, tmp_path: Path
) -> None:
    target = tmp_path / "out.mp4"
    result = upscale_video(Upscaler(model_dir, device="cpu", tile=None), clip, target)
    count, rate, size, seconds = clip_streams(target)
    source_count, source_rate, _, source_seconds = clip_streams(clip)
    assert (result.frames, count, source_count, size) == (FRAMES, FRAMES, FRAMES, (128, 96))
    assert rate == source_rate == RATE
    assert seconds == pytest.approx(source_seconds)
    assert clip_times(target) == clip_times(clip)


@pytest.mark.parametrize("suffix", [".mov", ".mkv", ".webm"])
def test_other_containers_keep_their_container_frames_and_sound(
    model_dir: Path, tmp_path: Path, suffix: str
) -> None:
    source = write_clip(tmp_path / f"clip{suffix}")
    out = tmp_path / "out"
    assert main(["upscale", str(source), "-o", str(out), "--model", str(model_dir), "-q"]) == 0
    count, rate, size, seconds = clip_streams(out / f"clip{suffix}")
    assert (count, rate, size) == (FRAMES, RATE, (128, 96))
    assert seconds == pytest.approx(clip_streams(source)[3])


def test_routing_is_constant_within_each_shot_and_differs_between_shots(
    model_dir: Path, clip: Path, tmp_path: Path
) -> None:
    log = tmp_path / "routing.csv"
    upscaler = Upscaler(model_dir, device="cpu", tile=None)
    result = upscale_video(upscaler, clip, tmp_path / "out.mp4", routing_log=log)
    rows = _log(log)
    assert result.shots == 2
    assert [int(row["shot"]) for row in rows] == [0] * 6 + [1] * 6
    first, second = rows[:6], rows[6:]
    for shot in (first, second):
        assert len({(row["shot_scores"], row["kept"]) for row in shot}) == 1
        assert len({row["scores"] for row in shot}) > 1  # the frames' own scores vary
    assert first[0]["shot_scores"] != second[0]["shot_scores"]
    assert first[0]["kept"] != second[0]["kept"]


def test_a_shot_is_routed_by_the_mean_scores_of_its_first_window() -> None:
    router = ShotRouter(window=2)
    flat = torch.zeros(3, 8, 8)
    frames = [Frame(i, i, flat, torch.tensor([float(i)])) for i in range(4)]
    routed = [r for frame in frames for r in router.push(frame)] + router.flush()
    assert [r.frame.index for r in routed] == [0, 1, 2, 3]
    assert all(r.scores == pytest.approx(torch.tensor([1.0])) for r in routed)


def test_a_scene_change_starts_a_new_shot() -> None:
    router = ShotRouter(window=1)
    dark, bright = torch.zeros(3, 8, 8), torch.ones(3, 8, 8)
    for index, lr in enumerate((dark, dark, bright)):
        router.push(Frame(index, index, lr, None))
    assert [r.frame.shot for r in router.flush()] == [1]
    assert router.shots == 2


def test_upscale_tensor_routes_by_explicit_scores(model_dir: Path) -> None:
    upscaler = Upscaler(model_dir, device="cpu", tile=None, backend="torch")
    lr = torch.from_numpy(photo(24, 32)).permute(2, 0, 1).float() / 255
    scores = torch.full((1, 7), 0.9)
    with torch.no_grad():
        expected = upscaler.model(lr[None], scores)[0].clamp(0, 1)  # type: ignore[call-arg]
    routed = upscaler.upscale_tensor(lr, scores=scores)
    torch.testing.assert_close(routed, expected, atol=1e-5, rtol=0)
    assert not torch.allclose(upscaler.upscale_tensor(lr), routed, atol=1e-4)


def test_a_folder_of_images_and_videos_is_upscaled_and_a_corrupt_video_fails_in_one_line(
    model_dir: Path, clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    clip.rename(folder / "a.mp4")
    (folder / "b.mkv").write_bytes(b"\x1a\x45\xdf\xa3 not really a video")
    Image.fromarray(photo(24, 32)).save(folder / "c.png")
    out = tmp_path / "out"
    argv = ["upscale", str(folder), "-o", str(out), "--model", str(model_dir), "--outscale", "2"]
    assert main(argv) == 1
    assert clip_streams(out / "a.mp4")[0::2] == (FRAMES, (64, 48))
    assert Image.open(out / "c.png").size == (64, 48)
    assert not (out / "b.mkv").exists()
    with open(out / "failures.csv", newline="", encoding="utf-8") as file:
        rows = list(csv.reader(file))[1:]
    assert [Path(path).name for path, _ in rows] == ["b.mkv"]
    assert "\n" not in rows[0][1]
    assert "2 upscaled, 0 skipped (exist), 1 failed" in capsys.readouterr().out


def test_without_pyav_a_video_fails_with_the_install_hint(
    model_dir: Path, clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(video_module, "has_pyav", lambda: False)
    upscaler = Upscaler(model_dir, device="cpu", tile=None)
    with pytest.raises(VideoError, match=r"pip install 'mordasr\[video\]'"):
        upscale_video(upscaler, clip, tmp_path / "out.mp4")


def test_ctrl_c_leaves_a_playable_file_of_the_frames_done(
    model_dir: Path,
    clip: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    upscaler = Upscaler(model_dir, device="cpu", tile=None)
    calls = []
    upscale = upscaler.upscale_tensor

    def interrupted_at_the_fifth_frame(*args: object, **kwargs: object) -> torch.Tensor:
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return upscale(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(upscaler, "upscale_tensor", interrupted_at_the_fifth_frame)
    with pytest.raises(KeyboardInterrupt):
        upscale_video(upscaler, clip, tmp_path / "out.mp4")
    assert not (tmp_path / "out.mp4").exists()
    count, _, _, seconds = clip_streams(tmp_path / "out.partial.mp4")
    assert count == 4
    assert 4 / RATE <= seconds < 6 / RATE  # the sound of the frames done (whole packets)
    line = f"4 frames written to {tmp_path / 'out.partial.mp4'} (--resume continues from there)"
    assert capsys.readouterr().err.strip().endswith(line)


def _upscales(
    upscaler: Upscaler, monkeypatch: pytest.MonkeyPatch, interrupt_at: int | None = None
) -> list[int]:
    """Count the frames ``upscaler`` upscales (Ctrl-C at call ``interrupt_at``)."""
    calls: list[int] = []
    upscale = upscaler.upscale_tensor

    def counted(*args: object, **kwargs: object) -> torch.Tensor:
        calls.append(1)
        if len(calls) == interrupt_at:
            raise KeyboardInterrupt
        return upscale(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(upscaler, "upscale_tensor", counted)
    return calls


def _interrupted(
    model_dir: Path, clip: Path, target: Path, monkeypatch: pytest.MonkeyPatch, **options: Any
) -> None:
    """Upscale ``clip`` to ``target`` (``options`` to :func:`upscale_video`) until Ctrl-C at
    the sixth frame, which leaves the finished frame groups behind."""
    upscaler = Upscaler(model_dir, device="cpu", tile=None)
    _upscales(upscaler, monkeypatch, interrupt_at=6)
    with pytest.raises(KeyboardInterrupt):
        upscale_video(upscaler, clip, target, **options)


def test_resume_continues_after_the_frames_done_with_the_same_frames_and_sound(
    model_dir: Path, clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target, log = tmp_path / "out.mp4", tmp_path / "routing.csv"
    _interrupted(model_dir, clip, target, monkeypatch, group_frames=3, routing_log=log)
    upscaler = Upscaler(model_dir, device="cpu", tile=None)
    resumed = _upscales(upscaler, monkeypatch)
    result = upscale_video(upscaler, clip, target, group_frames=3, routing_log=log, resume=True)
    assert (len(resumed), result.frames) == (FRAMES - 5, FRAMES)
    count, rate, size, seconds = clip_streams(target)
    assert (count, rate, size) == (FRAMES, RATE, (128, 96))
    assert seconds == pytest.approx(clip_streams(clip)[3])
    assert clip_times(target) == clip_times(clip)
    assert [int(row["frame"]) for row in _log(log)] == list(range(FRAMES))
    assert sorted(tmp_path.iterdir()) == sorted([clip, target, log])  # no partial, no groups


def test_resume_starts_over_when_the_settings_changed(
    model_dir: Path, clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "out.mp4"
    _interrupted(model_dir, clip, target, monkeypatch)
    upscaler = Upscaler(model_dir, device="cpu", tile=None)
    resumed = _upscales(upscaler, monkeypatch)
    assert upscale_video(upscaler, clip, target, crf=30, resume=True).frames == FRAMES
    assert len(resumed) == FRAMES


def test_each_shot_folds_its_routing_plan_once_for_all_its_frames(
    model_dir: Path, clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    upscaler = Upscaler(model_dir, device="cpu", tile=None)
    folds: list[int] = []
    fold = MoRLayer.fold

    def counted(layer: MoRLayer, routing: object) -> torch.Tensor:
        folds.append(1)
        return fold(layer, routing)  # type: ignore[arg-type]

    monkeypatch.setattr(MoRLayer, "fold", counted)
    result = upscale_video(upscaler, clip, tmp_path / "out.mp4")
    layers = len(list(mor_layers(upscaler.model)))  # type: ignore[arg-type]
    assert layers > 0
    assert (result.shots, len(folds)) == (2, 2 * layers)


def test_a_video_file_named_by_o_is_written_in_its_container(
    model_dir: Path, clip: Path, tmp_path: Path
) -> None:
    target = tmp_path / "result.mkv"
    assert main(["upscale", str(clip), "-o", str(target), "--model", str(model_dir), "-q"]) == 0
    count, rate, size, _ = clip_streams(target)
    assert (count, rate, size) == (FRAMES, RATE, (128, 96))
    with av.open(str(target)) as container:
        assert container.format.name.startswith("matroska")


@pytest.mark.parametrize("name", ["result.png", "result.gif"])
def test_a_video_named_to_an_image_file_is_refused_in_one_line(
    clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    assert main(["upscale", str(clip), "-o", str(tmp_path / name), "--model", "bicubic"]) == 2
    assert "is a video: -o must name a video file" in capsys.readouterr().err
    assert not (tmp_path / name).exists()


def test_an_image_named_to_a_video_file_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "photo.png"
    Image.fromarray(photo(24, 32)).save(source)
    assert main(["upscale", str(source), "-o", str(tmp_path / "a.mp4"), "--model", "bicubic"]) == 2
    assert "names a video but" in capsys.readouterr().err


def _durations(animation: Image.Image) -> list[int]:
    """Each frame's duration (WebP gives it once the frame is loaded)."""
    frames = [frame.copy() for frame in ImageSequence.Iterator(animation)]
    return [frame.info["duration"] for frame in frames]


@pytest.mark.parametrize("suffix", [".gif", ".webp"])
def test_an_animation_keeps_every_frame_its_durations_and_loop(tmp_path: Path, suffix: str) -> None:
    frames = [Image.fromarray(photo(24, 32, seed)) for seed in range(3)]
    source = tmp_path / f"anim{suffix}"
    durations = [100, 200, 300]
    frames[0].save(source, save_all=True, append_images=frames[1:], duration=durations, loop=2)
    out = tmp_path / "out"
    assert main(["upscale", str(source), "-o", str(out), "--model", "bicubic", "-q"]) == 0
    with Image.open(out / f"anim{suffix}") as result:
        assert (result.n_frames, result.size, result.info["loop"]) == (3, (128, 96), 2)
        assert _durations(result) == durations


@pytest.mark.parametrize("suffix", [".gif", ".webp"])
def test_an_animation_file_named_by_o_keeps_every_frame(tmp_path: Path, suffix: str) -> None:
    frames = [Image.fromarray(photo(24, 32, seed)) for seed in range(3)]
    source = tmp_path / f"anim{suffix}"
    frames[0].save(source, save_all=True, append_images=frames[1:], duration=[50, 60, 70])
    target = tmp_path / f"result{suffix}"
    assert main(["upscale", str(source), "-o", str(target), "--model", "bicubic", "-q"]) == 0
    with Image.open(target) as result:
        assert (result.n_frames, result.size) == (3, (128, 96))
        assert _durations(result) == [50, 60, 70]


def test_a_video_over_the_pixel_limit_is_refused_before_decoding(
    model_dir: Path, clip: Path, tmp_path: Path
) -> None:
    upscaler = Upscaler(model_dir, device="cpu", tile=None)
    with pytest.raises(VideoError, match="pixel limit"):
        upscale_video(upscaler, clip, tmp_path / "out.mp4", max_pixels=32 * 24 - 1)
    assert list(tmp_path.iterdir()) == [clip]


def test_progress_counts_the_frames(
    model_dir: Path, clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    upscaler = Upscaler(model_dir, device="cpu", tile=None, progress=True)
    upscale_video(upscaler, clip, tmp_path / "out.mp4")
    assert f"{FRAMES}/{FRAMES}" in capsys.readouterr().err


def test_the_resume_flag_continues_a_video_interrupted_in_a_batch(
    model_dir: Path, clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    argv = ["upscale", str(clip), "-o", str(out), "--model", str(model_dir), "-q"]
    calls: list[int] = []
    upscale = Upscaler.upscale_tensor

    def interrupted_at_the_fourth_frame(
        self: Upscaler, *args: object, **kwargs: object
    ) -> torch.Tensor:
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return upscale(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Upscaler, "upscale_tensor", interrupted_at_the_fourth_frame)
    assert main(argv) == 130
    assert main([*argv, "--resume"]) == 0
    assert len(calls) == 4 + FRAMES - 3
    assert clip_streams(out / "clip.mp4")[0] == FRAMES


def test_resume_starts_over_with_another_model(
    model_dir: Path, clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "out.mp4"
    _interrupted(model_dir, clip, target, monkeypatch)
    other = Upscaler(tiny_mor_model(tmp_path / "other", router_bias=True), device="cpu", tile=None)
    resumed = _upscales(other, monkeypatch)
    assert upscale_video(other, clip, target, resume=True).frames == FRAMES
    assert len(resumed) == FRAMES


def test_after_a_crash_resume_redoes_the_group_that_was_being_written(
    model_dir: Path, clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "out.mp4"
    _interrupted(model_dir, clip, target, monkeypatch, group_frames=3)
    parts = tmp_path / ".out.mp4.parts"
    assert sorted(path.name for path in parts.glob("*.group")) == [
        "000000000-000000003.group",
        "000000003-000000002.group",
    ]
    # a killed run leaves the group it was writing under its temporary name
    (parts / "000000003-000000002.group").rename(parts / ".000000003.part")
    upscaler = Upscaler(model_dir, device="cpu", tile=None)
    resumed = _upscales(upscaler, monkeypatch)
    assert upscale_video(upscaler, clip, target, group_frames=3, resume=True).frames == FRAMES
    assert len(resumed) == FRAMES - 3
    assert clip_streams(target)[0] == FRAMES
    assert clip_times(target) == clip_times(clip)
