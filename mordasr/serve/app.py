"""The FastAPI app of `mordasr serve`: one static page and a small JSON API over a job queue.

Routes (all under the page's own origin; the page loads nothing from the network):

- ``GET /``: the page, carrying the server's API token; ``/static/...``: its script and style.
- ``GET /api/options``: models, formats, tiles and which optional controls work.
- ``POST /api/jobs``: upload one image or short video (multipart ``file`` plus the
  settings) -> the job, or 400 / 413 with a one-line ``detail``.
- ``GET /api/jobs``, ``GET /api/jobs/{id}``: state and tile progress (the page polls them).
- ``POST /api/jobs/{id}/cancel``: cancel a queued or running job.
- ``GET /api/jobs/{id}/files/{name}``: one of that job's files (``?download=1``: as an
  attachment named after the upload); nothing outside the job's folder is ever served.
- ``GET /api/results.zip``: every finished result.

Every request passes :class:`~mordasr.serve.guard.Guard` first: only this server's host
names, no other site's requests, API calls only with the token, upload sizes checked before
their body is read; every answer forbids framing and loading from anywhere else.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, File, Form, HTTPException, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

from mordasr import __version__
from mordasr.serve.guard import TOKEN_PLACEHOLDER, Guard
from mordasr.serve.jobs import (
    OUTPUT_FORMATS,
    JobQueue,
    UploadError,
    available_models,
    parse_settings,
)

STATIC = Path(__file__).parent / "static"
TILES = (0, 128, 256, 512, 1024)
"""Tile sides the page offers (0: the whole image at once)."""


def create_app(
    jobs: JobQueue,
    default_model: str = "default",
    allowed_hosts: Iterable[str] = (),
    token: str | None = None,
) -> FastAPI:
    """The app serving ``jobs``; its worker runs while the app does (FastAPI lifespan).

    ``allowed_hosts``: ``Host`` names answered besides the loopback ones (``name`` or
    ``name:port``); ``token``: the API token the page carries (default: a random one, also
    at ``app.state.token``).
    """

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        jobs.start()
        try:
            yield
        finally:
            jobs.stop()

    app = FastAPI(title="mordasr", version=__version__, lifespan=lifespan, docs_url=None)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    guard = Guard(allowed_hosts, token, max_upload=jobs.max_bytes)
    app.middleware("http")(guard)
    app.state.token = guard.token
    page = (STATIC / "index.html").read_text().replace(TOKEN_PLACEHOLDER, guard.token)
    models = available_models(default_model)

    def job_or_404(job_id: str) -> Any:
        try:
            return jobs.get(job_id)
        except KeyError:
            raise HTTPException(404, "no such job") from None

    @app.get("/", include_in_schema=False)
    def index() -> HTMLResponse:
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})

    @app.get("/api/options")
    def options() -> dict[str, Any]:
        tiles: list[int | str] = ["auto", *TILES]
        return {
            "version": __version__,
            "models": models,
            "default_model": default_model,
            "formats": list(OUTPUT_FORMATS),
            "tiles": tiles,
            "default_tile": "auto",
            "max_upload_mb": jobs.max_bytes // 2**20,
            "max_video_frames": jobs.max_video_frames,
        }

    @app.post("/api/jobs", status_code=201)
    def submit(
        file: Annotated[UploadFile, File()],
        model: Annotated[str, Form()] = default_model,
        tile: Annotated[str, Form()] = "256",
        output_format: Annotated[str, Form(alias="format")] = "auto",
        strength: Annotated[float | None, Form()] = None,
        outscale: Annotated[float | None, Form()] = None,
    ) -> dict[str, Any]:
        name = file.filename or "image"
        data = file.file.read(jobs.max_bytes + 1)
        if len(data) > jobs.max_bytes:
            raise HTTPException(413, f"{name}: larger than the {jobs.max_bytes // 2**20} MB limit")
        try:
            settings = parse_settings(models, model, tile, output_format, strength, outscale)
            return jobs.submit(name, data, settings).to_json()
        except UploadError as error:
            raise HTTPException(400, str(error)) from None

    @app.get("/api/jobs")
    def list_jobs() -> dict[str, Any]:
        return {"jobs": [job.to_json() for job in jobs.jobs()]}

    @app.get("/api/jobs/{job_id}")
    def get_job(job_id: str) -> dict[str, Any]:
        return job_or_404(job_id).to_json()

    @app.post("/api/jobs/{job_id}/cancel")
    def cancel_job(job_id: str) -> dict[str, Any]:
        job_or_404(job_id)
        return jobs.cancel(job_id).to_json()

    @app.get("/api/jobs/{job_id}/files/{name}")
    def job_file(job_id: str, name: str, download: bool = False) -> FileResponse:
        job = job_or_404(job_id)
        try:
            path = jobs.file(job_id, name)
        except KeyError:
            raise HTTPException(404, "no such file") from None
        except PermissionError:
            raise HTTPException(403, "outside the job's folder") from None
        filename = job.download_name() if download and name == job.result_file else None
        return FileResponse(path, filename=filename)

    @app.get("/api/results.zip")
    def results_zip() -> Response:
        headers = {"Content-Disposition": 'attachment; filename="mordasr-results.zip"'}
        return Response(jobs.results_zip(), media_type="application/zip", headers=headers)

    return app
