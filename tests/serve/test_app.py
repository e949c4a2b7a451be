"""The web API with FastAPI's test client: upload, progress, result, errors, traversal, cancel."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from serve_helpers import GatedRunner, image_bytes, truncated_jpeg

pytest.importorskip("fastapi", reason="needs the web extra")
pytest.importorskip("httpx", reason="FastAPI's test client needs httpx")

from app_client import client_for, finished
from fastapi.testclient import TestClient

from mordasr.infer.tiling import tile_starts
from mordasr.serve.app import STATIC
from mordasr.serve.jobs import JobQueue, UpscaleRunner


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    yield from client_for(JobQueue(UpscaleRunner("cpu"), tmp_path / "jobs"))


def upload(client: TestClient, data: bytes, name: str = "photo.png", **form: str) -> Any:
    return client.post("/api/jobs", files={"file": (name, data)}, data=form)


def test_page_and_assets_load_nothing_from_the_network(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "<title>" in page.text
    for name in ("app.js", "style.css"):
        assert client.get(f"/static/{name}").status_code == 200
    for path in STATIC.iterdir():
        text = path.read_text()
        assert "http://" not in text and "https://" not in text, path.name


def test_an_upload_becomes_a_result_four_times_larger(client: TestClient) -> None:
    response = upload(client, image_bytes(40, 30), tile="0")
    assert response.status_code == 201
    job = finished(client, response.json()["id"])
    assert job["state"] == "done", job["error"]
    result = client.get(job["result_url"])
    assert Image.open(io.BytesIO(result.content)).size == (160, 120)
    before = client.get(job["input_url"])
    assert Image.open(io.BytesIO(before.content)).size == (40, 30)


def test_progress_counts_the_tiles(client: TestClient) -> None:
    job = finished(client, upload(client, image_bytes(200, 150), tile="128").json()["id"])
    count = len(tile_starts(150, 128, 32)) * len(tile_starts(200, 128, 32))
    assert (job["tiles_done"], job["tiles_total"]) == (count, count)


def test_the_chosen_format_is_written(client: TestClient) -> None:
    job = finished(client, upload(client, image_bytes(), format="jpg", tile="0").json()["id"])
    assert client.get(job["result_url"]).content.startswith(b"\xff\xd8")


def test_a_download_is_named_after_the_upload(client: TestClient) -> None:
    job = finished(client, upload(client, image_bytes(), "holiday.png", tile="0").json()["id"])
    response = client.get(job["download_url"])
    assert 'filename="holiday-mordasr.png"' in response.headers["content-disposition"]


def test_all_results_download_as_one_zip(client: TestClient) -> None:
    ids = [upload(client, image_bytes(), f"{name}.png", tile="0").json()["id"] for name in "ab"]
    for job_id in ids:
        finished(client, job_id)
    archive = zipfile.ZipFile(io.BytesIO(client.get("/api/results.zip").content))
    assert sorted(archive.namelist()) == ["a-mordasr.png", "b-mordasr.png"]


def test_a_corrupt_upload_gets_one_line_and_the_queue_keeps_working(client: TestClient) -> None:
    refused = upload(client, truncated_jpeg(), "broken.jpg")
    assert refused.status_code == 400
    detail = refused.json()["detail"]
    assert detail.startswith("broken.jpg: ") and "\n" not in detail
    job = finished(client, upload(client, image_bytes(), tile="0").json()["id"])
    assert job["state"] == "done"
    assert [item["name"] for item in client.get("/api/jobs").json()["jobs"]] == ["photo.png"]


def test_an_upload_over_the_limit_is_refused(tmp_path: Path) -> None:
    queue = JobQueue(UpscaleRunner("cpu"), tmp_path / "jobs", max_bytes=2**20)
    for client in client_for(queue):
        response = upload(client, b"\0" * (2**20 + 1))
        assert response.status_code == 413
        assert "1 MB limit" in response.json()["detail"]


def test_only_the_offered_models_can_be_picked(client: TestClient) -> None:
    response = upload(client, image_bytes(), model="/etc")
    assert response.status_code == 400
    assert "unknown model" in response.json()["detail"]
    assert "bicubic" in client.get("/api/options").json()["models"]


def test_requests_for_files_outside_the_job_folder_are_refused(
    client: TestClient, tmp_path: Path
) -> None:
    (tmp_path / "secret.txt").write_text("the secret")
    job = finished(client, upload(client, image_bytes(), tile="0").json()["id"])
    base = f"/api/jobs/{job['id']}/files"
    attempts = [
        f"{base}/../../../secret.txt",
        f"{base}/..%2F..%2Fsecret.txt",
        f"{base}/%2e%2e%2f%2e%2e%2fsecret.txt",
        f"{base}/%2e%2e",
        f"{base}/%2F{str(tmp_path / 'secret.txt').lstrip('/').replace('/', '%2F')}",
        "/api/jobs/..%2F/files/secret.txt",
        f"/api/jobs/{job['id']}/..%2F..%2Fsecret.txt",
        "/static/../../secret.txt",
        "/static/..%2F..%2F..%2Fpyproject.toml",
    ]
    for url in attempts:
        response = client.get(url)
        assert response.status_code in (403, 404), url
        assert "the secret" not in response.text and "[project]" not in response.text, url


def test_a_link_planted_in_a_job_folder_is_not_followed(client: TestClient, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("the secret")
    job = finished(client, upload(client, image_bytes(), tile="0").json()["id"])
    result = tmp_path / "jobs" / job["id"] / "result.png"
    result.unlink()
    result.symlink_to(secret)
    response = client.get(job["result_url"])
    assert response.status_code == 403
    assert "the secret" not in response.text


def test_jobs_are_listed_for_a_reloaded_page(client: TestClient) -> None:
    job_id = upload(client, image_bytes(), tile="0").json()["id"]
    finished(client, job_id)
    listed = client.get("/api/jobs").json()["jobs"]
    assert [(job["id"], job["state"]) for job in listed] == [(job_id, "done")]


def test_queued_and_running_jobs_can_be_cancelled(tmp_path: Path) -> None:
    gate = GatedRunner()
    for client in client_for(JobQueue(gate, tmp_path / "jobs")):
        running = upload(client, image_bytes(), "a.png").json()["id"]
        queued = upload(client, image_bytes(), "b.png").json()["id"]
        assert gate.started.wait(10)
        progress = client.get(f"/api/jobs/{running}").json()
        assert (progress["state"], progress["tiles_done"], progress["tiles_total"]) == (
            "running",
            1,
            4,
        )
        assert client.post(f"/api/jobs/{queued}/cancel").json()["state"] == "cancelled"
        client.post(f"/api/jobs/{running}/cancel")
        assert finished(client, running)["state"] == "cancelled"
        assert gate.ran == ["a.png"]


def test_an_unknown_job_is_not_found(client: TestClient) -> None:
    assert client.get("/api/jobs/nope").status_code == 404
    assert client.post("/api/jobs/nope/cancel").status_code == 404
