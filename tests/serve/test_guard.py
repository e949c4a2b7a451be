"""Other web pages cannot drive the local server: Host, Origin, token, headers, upload size."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from serve_helpers import image_bytes

pytest.importorskip("fastapi", reason="needs the web extra")
pytest.importorskip("httpx", reason="FastAPI's test client needs httpx")

from fastapi.testclient import TestClient

from mordasr.serve.app import create_app
from mordasr.serve.guard import TOKEN_HEADER, Guard, split_host
from mordasr.serve.jobs import JobQueue, UpscaleRunner

TOKEN = "the-servers-token"
API_ROUTES = [
    ("GET", "/api/options"),
    ("GET", "/api/jobs"),
    ("POST", "/api/jobs"),
    ("GET", "/api/jobs/x"),
    ("POST", "/api/jobs/x/cancel"),
    ("GET", "/api/jobs/x/files/result.png"),
    ("GET", "/api/results.zip"),
]


def make_client(root: Path, base_url: str = "http://127.0.0.1:7860", **app: Any) -> TestClient:
    queue = JobQueue(UpscaleRunner("cpu"), root, max_bytes=2**20)
    return TestClient(create_app(queue, default_model="bicubic", token=TOKEN, **app), base_url)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with make_client(tmp_path / "jobs") as client:
        yield client


def request(client: TestClient, method: str, path: str, **headers: str) -> Any:
    return client.request(method, path, headers={TOKEN_HEADER: TOKEN, **headers})


def assert_refused(response: Any, status: int = 403) -> None:
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert detail and "\n" not in detail


def test_loopback_hosts_with_the_servers_port_are_answered(client: TestClient) -> None:
    for host in ("127.0.0.1:7860", "localhost:7860", "[::1]:7860", "LOCALHOST:7860"):
        assert request(client, "GET", "/api/options", host=host).status_code == 200, host


@pytest.mark.parametrize("method, path", [("GET", "/"), *API_ROUTES])
@pytest.mark.parametrize("host", ["evil.example", "evil.example:7860", "127.0.0.1:9999", ""])
def test_a_foreign_host_is_refused_on_every_route(
    client: TestClient, method: str, path: str, host: str
) -> None:
    assert_refused(request(client, method, path, host=host))


@pytest.mark.parametrize("method, path", API_ROUTES)
@pytest.mark.parametrize("origin", ["http://evil.example", "null", "http://127.0.0.1:9999"])
def test_a_cross_origin_request_is_refused_on_every_api_route(
    client: TestClient, method: str, path: str, origin: str
) -> None:
    assert_refused(request(client, method, path, origin=origin))


def test_a_cross_origin_upload_is_refused_and_nothing_is_stored(
    client: TestClient, tmp_path: Path
) -> None:
    response = client.post(
        "/api/jobs",
        files={"file": ("a.png", image_bytes())},
        headers={TOKEN_HEADER: TOKEN, "origin": "http://evil.example"},
    )
    assert_refused(response)
    assert list((tmp_path / "jobs").iterdir()) == []


def test_a_cross_site_fetch_without_origin_is_refused(client: TestClient) -> None:
    assert_refused(
        request(client, "POST", "/api/jobs/x/cancel", **{"sec-fetch-site": "cross-site"})
    )


def test_the_pages_own_origin_may_post(client: TestClient) -> None:
    response = request(client, "POST", "/api/jobs/x/cancel", origin="http://127.0.0.1:7860")
    assert response.status_code == 404  # past the guard: there is no such job


@pytest.mark.parametrize("method, path", API_ROUTES)
def test_an_api_call_without_the_token_is_refused(
    client: TestClient, method: str, path: str
) -> None:
    assert_refused(client.request(method, path))
    assert_refused(client.request(method, path, headers={TOKEN_HEADER: "guessed"}))


def test_the_page_carries_the_token_and_links_may_too(client: TestClient) -> None:
    page = client.get("/").text
    assert re.search(r'<meta name="mordasr-token" content="the-servers-token">', page)
    assert client.get(f"/api/results.zip?token={TOKEN}").status_code == 200
    assert_refused(client.post(f"/api/jobs/x/cancel?token={TOKEN}"))  # a header, for changes


def test_each_server_draws_its_own_token(tmp_path: Path) -> None:
    queue = JobQueue(UpscaleRunner("cpu"), tmp_path)
    tokens = {create_app(queue).state.token for _ in range(2)}
    assert len(tokens) == 2 and all(len(token) >= 32 for token in tokens)


@pytest.mark.parametrize("path", ["/", "/static/app.js", "/api/options", "/nowhere"])
def test_every_answer_forbids_framing_and_other_sources(client: TestClient, path: str) -> None:
    for response in (request(client, "GET", path), request(client, "GET", path, host="evil")):
        assert response.headers["x-frame-options"] == "DENY"
        policy = response.headers["content-security-policy"]
        assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
        assert "http" not in policy and "*" not in policy


def test_an_oversized_content_length_is_refused_before_the_body(tmp_path: Path) -> None:
    with make_client(tmp_path / "jobs") as client:
        headers = {
            TOKEN_HEADER: TOKEN,
            "content-type": "multipart/form-data; boundary=x",
            "content-length": str(64 * 2**20),
        }
        response = client.post("/api/jobs", content=b"\0" * 1024, headers=headers)
    assert_refused(response, 413)
    assert "1 MB limit" in response.json()["detail"]
    assert list((tmp_path / "jobs").iterdir()) == []


def test_an_upload_without_a_length_is_refused(client: TestClient, tmp_path: Path) -> None:
    def body() -> Iterator[bytes]:
        yield b"--x--\r\n"

    headers = {TOKEN_HEADER: TOKEN, "content-type": "multipart/form-data; boundary=x"}
    assert_refused(client.post("/api/jobs", content=body(), headers=headers), 411)
    assert list((tmp_path / "jobs").iterdir()) == []


def test_another_interface_is_answered_under_the_allowed_names(tmp_path: Path) -> None:
    allowed = ["photos.lan", "192.168.1.5:8080"]
    with make_client(tmp_path, "http://photos.lan:7860", allowed_hosts=allowed) as client:
        assert request(client, "GET", "/api/options").status_code == 200
        assert request(client, "GET", "/api/options", host="192.168.1.5:8080").status_code == 200
        assert_refused(request(client, "GET", "/api/options", host="evil.example:7860"))


def test_host_headers_split_into_name_and_port() -> None:
    assert split_host("127.0.0.1:7860") == ("127.0.0.1", 7860)
    assert split_host("[::1]:80") == ("[::1]", 80)
    assert split_host("[::1]") == ("[::1]", None)
    assert split_host("Localhost") == ("localhost", None)
    assert Guard().host_allowed("localhost", 80, "http")
    assert not Guard().host_allowed("localhost", 7860, "http")
