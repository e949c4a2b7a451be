"""The page in a real headless Chromium: upload, progress, a corrupt file, slider, screenshot.

Uses Debian's ``chromium`` (installed by ``.ci/run``) driven by Playwright for Python; skipped
with the reason when either is missing. ``MORDASR_SERVE_SHOT_MODEL`` picks the model (default
``bicubic``, fast) and ``MORDASR_SERVE_SHOT`` where the screenshot goes; the README's
``assets/serve.png`` is this test run with the default model::

    MORDASR_SERVE_SHOT_MODEL=default MORDASR_SERVE_SHOT=assets/serve.png \
        python -m pytest tests/serve/test_browser.py
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from serve_helpers import truncated_jpeg

pytest.importorskip("fastapi", reason="needs the web extra")
pytest.importorskip("uvicorn", reason="needs the web extra")
pytest.importorskip("playwright.sync_api", reason="needs Playwright for Python")

import uvicorn
from playwright.sync_api import sync_playwright

from mordasr.serve.app import create_app
from mordasr.serve.jobs import JobQueue, UpscaleRunner

CHROMIUM = next(
    (
        path
        for path in ("/usr/bin/chromium", shutil.which("chromium"))
        if path and Path(path).exists()
    ),
    None,
)
if CHROMIUM is None:
    pytest.skip("no Chromium installed (apt-get install chromium)", allow_module_level=True)
ASSETS = Path(__file__).resolve().parents[2] / "assets"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
MODEL = os.environ.get("MORDASR_SERVE_SHOT_MODEL", "bicubic")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    queue = JobQueue(UpscaleRunner("cpu"), tmp_path / "jobs")
    app = create_app(queue, default_model=MODEL)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning")
    served = uvicorn.Server(config)
    thread = threading.Thread(target=served.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not served.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the server did not start")
        time.sleep(0.05)
    port = served.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}/"
    served.should_exit = True
    thread.join(30)


def test_upload_compare_and_screenshot_in_chromium(server: str, tmp_path: Path) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(truncated_jpeg())
    shot = Path(os.environ.get("MORDASR_SERVE_SHOT", tmp_path / "serve.png"))
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1000, "height": 760})
        outside: list[str] = []
        page.on("request", lambda r: None if r.url.startswith(server) else outside.append(r.url))
        script_errors: list[str] = []
        page.on("pageerror", lambda error: script_errors.append(str(error)))
        console_errors: list[str] = []  # "Refused to ...": what the Content-Security-Policy blocked
        page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
        page.goto(server)
        page.wait_for_selector("#model option", state="attached")
        page.set_input_files("#files", [str(broken), str(ASSETS / "0014.jpg")])
        page.click("#start")

        error = page.wait_for_selector("#errors li")
        assert error.inner_text().startswith("broken.jpg: ")
        assert "\n" not in error.inner_text()

        page.wait_for_selector('.job[data-state="done"]', timeout=900_000)
        page.wait_for_function("document.getElementById('after').naturalWidth > 0")
        page.wait_for_function("document.getElementById('before').complete")
        assert page.eval_on_selector("#after", "img => img.naturalWidth") == 179 * 4
        assert page.locator(".job").count() == 1  # the corrupt file never became a job

        page.locator("#frame").scroll_into_view_if_needed()
        frame = page.locator("#frame").bounding_box()
        assert frame is not None and frame["width"] > 300
        y = frame["y"] + frame["height"] / 2
        page.mouse.move(frame["x"] + frame["width"] / 2, y)
        page.mouse.down()
        page.mouse.move(frame["x"] + frame["width"] * 0.42, y, steps=5)
        page.mouse.up()
        split = float(page.input_value("#slider"))
        assert 40 < split < 44
        clip = page.eval_on_selector("#before", "img => img.style.clipPath")
        assert clip.startswith("inset(0px 5")  # the right ~58 % of the input is hidden

        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert shot.read_bytes().startswith(b"\x89PNG")
    assert outside == [] and script_errors == []
    assert [text for text in console_errors if "Refused to" in text] == []
