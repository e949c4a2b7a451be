"""Images and runners the serve tests share."""

from __future__ import annotations

import io
import threading
import time

import numpy as np
from PIL import Image

from mordasr.serve.jobs import FINISHED, Job, JobProgress, JobQueue


def image_bytes(width: int = 40, height: int = 30, image_format: str = "PNG") -> bytes:
    """A small random RGB image encoded as ``image_format``."""
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, image_format)
    return buffer.getvalue()


def truncated_jpeg() -> bytes:
    """A JPEG whose header is fine but whose data stops early: corrupt, not merely unknown."""
    data = image_bytes(64, 64, "JPEG")
    return data[: len(data) // 3]


def wait_until_finished(queue: JobQueue, job_id: str, timeout: float = 60.0) -> Job:
    """Poll a job until it is done, failed or cancelled."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = queue.get(job_id)
        if job.state in FINISHED:
            return job
        time.sleep(0.02)
    raise TimeoutError(f"job {job_id} still {queue.get(job_id).state.value}")


class GatedRunner:
    """A runner that reports tile 1 of 4, then waits for :attr:`release` (or cancellation)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = threading.Event()
        self.ran: list[str] = []
        self.running = 0
        self.most_at_once = 0

    def __call__(self, job: Job, progress: JobProgress) -> None:
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        try:
            self.ran.append(job.name)
            progress(1, 4)
            self.started.set()
            while not self.release.wait(0.01):
                progress(1, 4)  # raises JobCancelled once the job is cancelled
            progress(4, 4)
            (job.folder / "result.png").write_bytes(image_bytes(8, 8))
            job.result_file = job.result_view = "result.png"
        finally:
            self.running -= 1
