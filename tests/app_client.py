"""The web app under FastAPI's test client, for the serve tests (needs the ``web`` extra)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from fastapi.testclient import TestClient

from mordasr.serve.app import create_app
from mordasr.serve.guard import TOKEN_HEADER
from mordasr.serve.jobs import JobQueue

TOKEN = "test-token"


def client_for(queue: JobQueue) -> Iterator[TestClient]:
    """A client of the app over ``queue`` (default model ``bicubic``) that sends the token."""
    app = create_app(queue, default_model="bicubic", token=TOKEN)
    with TestClient(app, base_url="http://127.0.0.1", headers={TOKEN_HEADER: TOKEN}) as client:
        yield client


def finished(client: TestClient, job_id: str, timeout: float = 60.0) -> dict[str, Any]:
    """Poll a job through the API until it is done, failed or cancelled."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["state"] in ("done", "failed", "cancelled"):
            return job
        time.sleep(0.02)
    raise TimeoutError(job_id)
