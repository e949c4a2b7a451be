"""`mordasr serve`: the install hint without the web extra, and a real server on localhost."""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mordasr.cli import main
from mordasr.serve.cli import INSTALL_HINT


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_without_the_web_extra_serve_prints_a_one_line_hint(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "fastapi", None)  # as if it were not installed
    assert main(["serve"]) == 2
    assert capsys.readouterr().err.strip() == INSTALL_HINT


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    pytest.importorskip("fastapi", reason="needs the web extra")
    port = free_port()
    root = Path(__file__).resolve().parents[2]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
    }
    jobs = tmp_path_factory.mktemp("jobs")
    command = [sys.executable, "-m", "mordasr.cli", "serve", "--port", str(port)]
    process = subprocess.Popen(
        [*command, "--model", "bicubic", "--jobs-dir", str(jobs)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None:
                    pytest.fail(f"mordasr serve exited: {process.stdout and process.stdout.read()}")
                time.sleep(0.2)
        else:
            pytest.fail("mordasr serve did not start within 60 s")
        yield port
    finally:
        process.terminate()
        process.wait(30)


def raw_get(port: int, path: str, **headers: str) -> tuple[int, bytes]:
    """GET ``path`` exactly as written (no client-side clean-up of ``..``)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.putrequest("GET", path, skip_host="Host" in headers, skip_accept_encoding=True)
    for name, value in headers.items():
        connection.putheader(name, value)
    connection.endheaders()
    response = connection.getresponse()
    return response.status, response.read()


def test_serve_starts_the_page_on_localhost(server: int) -> None:
    status, page = raw_get(server, "/")
    assert status == 200 and b"mordasr" in page
    token = re.search(rb'name="mordasr-token" content="([^"]+)"', page)
    assert token is not None
    status, body = raw_get(server, "/api/options", **{"X-Mordasr-Token": token[1].decode()})
    assert status == 200
    assert json.loads(body)["default_model"] == "bicubic"
    assert raw_get(server, "/api/options")[0] == 403  # no token


def test_serve_refuses_a_rebound_host_name(server: int) -> None:
    status, body = raw_get(server, "/", Host=f"evil.example:{server}")
    assert status == 403 and b"mordasr-token" not in body


@pytest.mark.parametrize(
    "path",
    [
        "/static/../../../pyproject.toml",
        "/static/..%2f..%2f..%2fpyproject.toml",
        "/../pyproject.toml",
    ],
)
def test_raw_dot_dot_requests_are_refused(server: int, path: str) -> None:
    status, body = raw_get(server, path)
    assert status in (400, 403, 404)
    assert b"[project]" not in body


def test_a_busy_port_is_one_line_before_any_address_is_shown() -> None:
    pytest.importorskip("fastapi", reason="needs the web extra")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        root = Path(__file__).resolve().parents[2]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), *sys.path])}
        done = subprocess.run(
            [sys.executable, "-m", "mordasr.cli", "serve", "--port", str(port)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 2
    assert done.stdout == ""  # no "open http://..." for a server that never ran
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith(f"mordasr serve: cannot listen on 127.0.0.1:{port}: ")
