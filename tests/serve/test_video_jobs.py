"""The web page takes a short video: its result (with sound) plays in a video element."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="needs the web extra")
pytest.importorskip("httpx", reason="FastAPI's test client needs httpx")
pytest.importorskip("av", reason="needs the video extra")

from app_client import client_for, finished
from fastapi.testclient import TestClient
from video_helpers import FRAMES, RATE, clip_streams, write_clip

from mordasr.serve.app import STATIC
from mordasr.serve.jobs import JobCancelled, JobQueue, Settings, UpscaleRunner


@pytest.fixture
def clip(tmp_path: Path) -> bytes:
    return write_clip(tmp_path / "clip.mp4").read_bytes()


def upload(client: TestClient, data: bytes, name: str = "clip.mp4", **headers: str) -> Any:
    return client.post("/api/jobs", files={"file": (name, data)}, headers=headers)


def test_a_video_upload_becomes_a_video_four_times_larger_with_its_sound(
    tmp_path: Path, clip: bytes
) -> None:
    for client in client_for(JobQueue(UpscaleRunner("cpu"), tmp_path / "jobs")):
        response = upload(client, clip)
        assert response.status_code == 201, response.text
        job = finished(client, response.json()["id"])
        assert (job["state"], job["kind"]) == ("done", "video"), job["error"]
        assert (job["input_size"], job["result_size"]) == ([32, 24], [128, 96])
        assert (job["tiles_done"], job["tiles_total"]) == (FRAMES, FRAMES)
        result = tmp_path / "result.mp4"
        result.write_bytes(client.get(job["result_url"]).content)
        count, rate, size, seconds = clip_streams(result)
        assert (count, rate, size) == (FRAMES, RATE, (128, 96))
        assert seconds == pytest.approx(clip_streams(tmp_path / "clip.mp4")[3])


def test_the_page_shows_a_video_result_in_a_video_element() -> None:
    page, script = (STATIC / "index.html").read_text(), (STATIC / "app.js").read_text()
    assert '<video id="video"' in page and "video/*" in page
    assert 'job.kind === "video"' in script and '$("video").src' in script


def test_a_video_over_the_frame_limit_is_refused_in_one_line_with_nothing_stored(
    tmp_path: Path, clip: bytes
) -> None:
    queue = JobQueue(UpscaleRunner("cpu"), tmp_path / "jobs", max_video_frames=FRAMES - 1)
    for client in client_for(queue):
        response = upload(client, clip)
        assert response.status_code == 400
        assert response.json()["detail"] == (
            f"clip.mp4: {FRAMES} frames is more than the {FRAMES - 1} frame limit of a video here"
        )
    assert list((tmp_path / "jobs").iterdir()) == []


def test_a_file_named_as_a_video_that_is_none_is_refused_with_nothing_stored(
    tmp_path: Path,
) -> None:
    for client in client_for(JobQueue(UpscaleRunner("cpu"), tmp_path / "jobs")):
        response = upload(client, b"\x00\x00\x00\x18ftypmp42 not really", "fake.mp4")
        assert response.status_code == 400
        detail = response.json()["detail"]
        assert detail.startswith("fake.mp4: not a readable video") and "\n" not in detail
    assert list((tmp_path / "jobs").iterdir()) == []


@pytest.mark.parametrize(
    "headers, status",
    [({"origin": "http://evil.example"}, 403), ({"host": "evil.example"}, 403)],
)
def test_a_video_upload_from_another_site_is_refused_with_nothing_stored(
    tmp_path: Path, clip: bytes, headers: dict[str, str], status: int
) -> None:
    for client in client_for(JobQueue(UpscaleRunner("cpu"), tmp_path / "jobs")):
        assert upload(client, clip, **headers).status_code == status
    assert list((tmp_path / "jobs").iterdir()) == []


def test_a_video_over_the_upload_size_is_refused_before_its_body(
    tmp_path: Path, clip: bytes
) -> None:
    queue = JobQueue(UpscaleRunner("cpu"), tmp_path / "jobs", max_bytes=len(clip) // 2)
    for client in client_for(queue):
        headers = {
            "content-type": "multipart/form-data; boundary=x",
            "content-length": str(len(clip) + 2**20),
        }
        response = client.post("/api/jobs", content=clip[:1024], headers=headers)
        assert response.status_code == 413
    assert list((tmp_path / "jobs").iterdir()) == []


def test_a_running_video_cancelled_stops_at_the_next_frame(tmp_path: Path, clip: bytes) -> None:
    queue = JobQueue(UpscaleRunner("cpu"), tmp_path / "jobs")
    job = queue.submit("clip.mp4", clip, Settings("bicubic", 0))
    frames: list[int] = []

    def cancelled_after_two_frames(done: int, total: int) -> None:
        frames.append(done)
        if done == 2:
            raise JobCancelled

    with pytest.raises(JobCancelled):
        UpscaleRunner("cpu")(job, cancelled_after_two_frames)
    assert frames == [1, 2]
    assert sorted(path.name for path in job.folder.iterdir()) == ["input.mp4"]
