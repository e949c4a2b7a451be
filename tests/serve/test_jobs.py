"""The job queue: uploads checked by content, one worker, cancellation, failures kept apart."""

from __future__ import annotations

import io
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar, Literal

import numpy as np
import pytest
import tifffile
import torch
from hostile_helpers import BOMBS, float_tiff_declaring
from serve_helpers import GatedRunner, image_bytes, truncated_jpeg, wait_until_finished

from mordasr.infer.pipeline import UpscaleResult
from mordasr.io.image import DecodedImage
from mordasr.serve import jobs as jobs_module
from mordasr.serve.jobs import (
    Job,
    JobProgress,
    JobQueue,
    JobState,
    Settings,
    UploadError,
    UpscaleRunner,
    parse_settings,
)


@pytest.fixture
def gate() -> GatedRunner:
    return GatedRunner()


@pytest.fixture
def jobs(gate: GatedRunner, tmp_path: Path) -> Iterator[JobQueue]:
    queue = JobQueue(gate, tmp_path / "jobs")
    queue.start()
    yield queue
    gate.release.set()
    queue.stop()


def test_jobs_run_one_at_a_time_in_upload_order(jobs: JobQueue, gate: GatedRunner) -> None:
    first = jobs.submit("a.png", image_bytes(), Settings())
    second = jobs.submit("b.png", image_bytes(), Settings())
    assert gate.started.wait(10)
    assert jobs.get(second.id).state == JobState.QUEUED
    gate.release.set()
    assert wait_until_finished(jobs, second.id).state == JobState.DONE
    assert jobs.get(first.id).state == JobState.DONE
    assert gate.ran == ["a.png", "b.png"]
    assert gate.most_at_once == 1


def test_a_running_job_reports_its_tiles(jobs: JobQueue, gate: GatedRunner) -> None:
    job = jobs.submit("a.png", image_bytes(), Settings())
    assert gate.started.wait(10)
    running = jobs.get(job.id)
    assert (running.state, running.tiles_done, running.tiles_total) == (JobState.RUNNING, 1, 4)


def test_a_queued_job_cancelled_never_runs(jobs: JobQueue, gate: GatedRunner) -> None:
    jobs.submit("a.png", image_bytes(), Settings())
    queued = jobs.submit("b.png", image_bytes(), Settings())
    assert gate.started.wait(10)
    assert jobs.cancel(queued.id).state == JobState.CANCELLED
    gate.release.set()
    after = jobs.submit("c.png", image_bytes(), Settings())
    assert wait_until_finished(jobs, after.id).state == JobState.DONE
    assert gate.ran == ["a.png", "c.png"]


def test_a_running_job_cancelled_stops_at_the_next_tile(jobs: JobQueue, gate: GatedRunner) -> None:
    job = jobs.submit("a.png", image_bytes(), Settings())
    assert gate.started.wait(10)
    jobs.cancel(job.id)
    cancelled = wait_until_finished(jobs, job.id)
    assert cancelled.state == JobState.CANCELLED
    assert cancelled.result_file is None


def test_a_failing_job_is_reported_in_one_line_and_the_next_one_runs(tmp_path: Path) -> None:
    def flaky(job: Job, progress: JobProgress) -> None:
        if job.name == "bad.png":
            raise RuntimeError("out of\nmemory")
        (job.folder / "result.png").write_bytes(image_bytes(8, 8))
        job.result_file = job.result_view = "result.png"

    queue = JobQueue(flaky, tmp_path / "jobs")
    queue.start()
    try:
        bad = queue.submit("bad.png", image_bytes(), Settings())
        good = queue.submit("good.png", image_bytes(), Settings())
        assert wait_until_finished(queue, good.id).state == JobState.DONE
        failed = queue.get(bad.id)
        assert failed.state == JobState.FAILED
        assert failed.error == "RuntimeError: out of memory"
    finally:
        queue.stop()


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"hello, I am a text file", "not a recognised image format"),
        (truncated_jpeg(), "truncated"),
    ],
    ids=["not-an-image", "corrupt-jpeg"],
)
def test_an_upload_that_is_no_image_is_refused_with_one_line(
    tmp_path: Path, data: bytes, reason: str
) -> None:
    queue = JobQueue(GatedRunner(), tmp_path / "jobs")
    with pytest.raises(UploadError, match=reason) as caught:
        queue.submit("photo.jpg", data, Settings())
    message = str(caught.value)
    assert message.startswith("photo.jpg: ") and "\n" not in message
    assert str(tmp_path) not in message  # the server's folders stay private
    assert queue.jobs() == [] and list((tmp_path / "jobs").iterdir()) == []


def test_a_decompression_bomb_upload_is_refused_with_nothing_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = JobQueue(GatedRunner(), tmp_path / "jobs", max_pixels=10**9)
    monkeypatch.setattr(jobs_module.Image, "MAX_IMAGE_PIXELS", 100)  # 40x30 is now a bomb
    with pytest.raises(UploadError, match="decompression bomb") as caught:
        queue.submit("bomb.png", image_bytes(40, 30), Settings())
    assert str(caught.value).startswith("bomb.png: ") and "\n" not in str(caught.value)
    assert queue.jobs() == [] and list((tmp_path / "jobs").iterdir()) == []


def test_running_out_of_memory_while_reading_an_upload_stores_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_memory(path: Path, **options: object) -> DecodedImage:
        raise MemoryError

    monkeypatch.setattr(jobs_module, "read_image", no_memory)
    queue = JobQueue(GatedRunner(), tmp_path / "jobs")
    with pytest.raises(UploadError, match=r"^big.png: cannot be read \(MemoryError\)$"):
        queue.submit("big.png", image_bytes(), Settings())
    assert queue.jobs() == [] and list((tmp_path / "jobs").iterdir()) == []


@pytest.mark.parametrize("name", BOMBS)
def test_every_file_of_the_hostile_corpus_is_refused_unread_with_nothing_stored(
    tmp_path: Path, name: str
) -> None:
    queue = JobQueue(GatedRunner(), tmp_path / "jobs")
    tracemalloc.start()
    try:
        with pytest.raises(UploadError, match="pixel limit") as caught:
            queue.submit(name, BOMBS[name](), Settings())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(caught.value).startswith(f"{name}: ") and "\n" not in str(caught.value)
    assert peak < 8 * 2**20
    assert queue.jobs() == [] and list((tmp_path / "jobs").iterdir()) == []


def test_a_float_tiff_declaring_too_many_pixels_is_refused_before_decoding(
    tmp_path: Path,
) -> None:
    queue = JobQueue(GatedRunner(), tmp_path / "jobs", max_pixels=16_000_000)
    with pytest.raises(UploadError, match="8000x8000 is more than the 16,000,000 pixel limit"):
        queue.submit("huge.tif", float_tiff_declaring(8000, 8000), Settings())
    assert queue.jobs() == [] and list((tmp_path / "jobs").iterdir()) == []


def test_the_format_comes_from_the_content_not_the_name(tmp_path: Path) -> None:
    queue = JobQueue(GatedRunner(), tmp_path / "jobs")
    job = queue.submit("looks-like.png", image_bytes(image_format="JPEG"), Settings())
    assert job.input_file == "input.jpg"


def test_an_input_browsers_cannot_show_gets_a_png_view(tmp_path: Path) -> None:
    queue = JobQueue(GatedRunner(), tmp_path / "jobs")
    job = queue.submit("scan.tif", image_bytes(image_format="TIFF"), Settings())
    assert (job.input_file, job.input_view) == ("input.tif", "input-view.png")
    assert (job.folder / job.input_view).read_bytes().startswith(b"\x89PNG")


def test_uploads_over_the_size_limits_are_refused(tmp_path: Path) -> None:
    queue = JobQueue(GatedRunner(), tmp_path / "jobs", max_bytes=10_000, max_pixels=50 * 50)
    with pytest.raises(UploadError, match="MB limit"):
        queue.submit("big.png", image_bytes(200, 200), Settings())
    with pytest.raises(UploadError, match="60x60 is more than the 2,500 pixel limit"):
        queue.submit("wide.png", image_bytes(60, 60, "JPEG"), Settings())


def test_upload_names_never_become_paths(tmp_path: Path) -> None:
    queue = JobQueue(GatedRunner(), tmp_path / "jobs")
    job = queue.submit("../../evil.png", image_bytes(), Settings())
    assert job.name == "evil.png"
    assert job.folder.parent == (tmp_path / "jobs").resolve()
    assert not (tmp_path / "evil.png").exists()


def test_a_temporary_root_is_removed_when_the_queue_stops() -> None:
    queue = JobQueue(GatedRunner())
    queue.submit("a.png", image_bytes(), Settings())
    root = queue.root
    queue.stop()
    assert not root.exists()


def test_files_outside_the_job_folder_are_refused(tmp_path: Path) -> None:
    queue = JobQueue(GatedRunner(), tmp_path / "jobs")
    job = queue.submit("a.png", image_bytes(), Settings())
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    for name in ("../../secret.txt", str(secret), "..", "."):
        with pytest.raises(KeyError):
            queue.file(job.id, name)
    with pytest.raises(KeyError):
        queue.file("..", "secret.txt")
    (job.folder / job.input_file).unlink()
    (job.folder / job.input_file).symlink_to(secret)
    with pytest.raises(PermissionError):
        queue.file(job.id, job.input_file)


def test_settings_are_checked() -> None:
    models = ["default", "bicubic"]
    assert parse_settings(models, "bicubic", "0", "png", None, None).tile == 0
    for bad in (
        ("/etc", "256", "auto"),
        ("bicubic", "64", "auto"),
        ("bicubic", "big", "auto"),
        ("bicubic", "256", "gif"),
    ):
        with pytest.raises(UploadError):
            parse_settings(models, *bad, None, None)


def test_the_upscale_runner_writes_a_result_four_times_larger(tmp_path: Path) -> None:
    queue = JobQueue(UpscaleRunner("cpu"), tmp_path / "jobs")
    queue.start()
    try:
        job = queue.submit("photo.png", image_bytes(40, 30), Settings("bicubic", 0, "jpg"))
        done = wait_until_finished(queue, job.id)
        assert done.state == JobState.DONE, done.error
        assert done.result_size == (160, 120)
        assert (done.folder / "result.jpg").read_bytes().startswith(b"\xff\xd8")
    finally:
        queue.stop()


class OptionsUpscaler:
    """An Upscaler with strength, auto tiles and an output size (as issue 12 adds them) that
    reports progress as events and records how it was made and called."""

    made: ClassVar[list[dict[str, Any]]] = []
    scale = 4

    def __init__(
        self,
        model: object,
        device: str | None = None,
        tile: int | Literal["auto"] | None = "auto",
        progress: object = False,
        strength: float = 1.0,
    ) -> None:
        self.made.append({"tile": tile, "strength": strength})
        self.progress = progress

    def upscale_decoded(
        self, decoded: DecodedImage, size: tuple[int, int] | None = None
    ) -> UpscaleResult:
        self.made[-1]["size"] = size
        assert callable(self.progress)
        self.progress(SimpleNamespace(stage="file_start", tiles_done=0, tiles_total=0))
        self.progress(SimpleNamespace(stage="tile", tiles_done=3, tiles_total=3))
        height, width = size or (decoded.tensor.shape[-2] * 4, decoded.tensor.shape[-1] * 4)
        return UpscaleResult(torch.zeros(3, height, width), None)


def test_options_the_upscaler_accepts_are_passed_on(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(jobs_module, "Upscaler", OptionsUpscaler)
    OptionsUpscaler.made.clear()
    settings = parse_settings(["bicubic"], "bicubic", "auto", "png", 0.3, 2.0)
    assert settings == Settings("bicubic", "auto", "png", 0.3, 2.0)
    queue = JobQueue(UpscaleRunner("cpu"), tmp_path / "jobs")
    queue.start()
    try:
        done = wait_until_finished(queue, queue.submit("a.png", image_bytes(40, 30), settings).id)
        assert done.state == JobState.DONE, done.error
    finally:
        queue.stop()
    assert OptionsUpscaler.made == [{"tile": "auto", "strength": 0.3, "size": (60, 80)}]
    assert (done.tiles_done, done.tiles_total, done.result_size) == (3, 3, (80, 60))


def test_strength_and_output_scale_are_kept_with_a_fixed_tile() -> None:
    settings = parse_settings(["bicubic"], "bicubic", "256", "png", 0.3, 2.0)
    assert settings == Settings("bicubic", 256, "png", 0.3, 2.0)


def test_jobs_with_the_same_options_reuse_the_loaded_upscaler(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(jobs_module, "Upscaler", OptionsUpscaler)
    OptionsUpscaler.made.clear()
    queue = JobQueue(UpscaleRunner("cpu"), tmp_path / "jobs")
    queue.start()
    try:
        for tile in (256, 256, 512):
            job = queue.submit("a.png", image_bytes(), Settings("bicubic", tile))
            assert wait_until_finished(queue, job.id).state == JobState.DONE
    finally:
        queue.stop()
    assert [made["tile"] for made in OptionsUpscaler.made] == [256, 512]


def test_an_image_only_read_image_decodes_is_taken_too(tmp_path: Path) -> None:
    samples = np.random.default_rng(0).random((20, 24, 3), dtype=np.float32)
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, samples, photometric="rgb")  # float RGB: Pillow cannot open it
    queue = JobQueue(GatedRunner(), tmp_path / "jobs", max_pixels=24 * 20)
    job = queue.submit("float.tif", buffer.getvalue(), Settings())
    assert (job.input_file, job.input_view, job.input_size) == (
        "input.tif",
        "input-view.png",
        (24, 20),
    )
    small = JobQueue(GatedRunner(), tmp_path / "small", max_pixels=24 * 20 - 1)
    with pytest.raises(UploadError, match="24x20 is more than"):
        small.submit("float.tif", buffer.getvalue(), Settings())
