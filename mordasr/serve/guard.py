"""What keeps other web pages from driving the local server (needs the ``web`` extra).

A page on another site can make the browser send requests to ``127.0.0.1`` (a multipart POST
needs no CORS preflight) and, with DNS rebinding, read the answers under its own host name.
:class:`Guard` refuses, before any route runs:

- a ``Host`` header that does not name this server: loopback names (``127.0.0.1``,
  ``localhost``, ``[::1]``) with the server's port, or the names the server was told to answer
  to (``--host`` on another interface, ``--allowed-host``); a rebinding page's host is none;
- an ``Origin`` (or ``Sec-Fetch-Site``) from another site;
- an API call without the per-server token that only the served page carries (the
  ``X-Mordasr-Token`` header; plain ``GET`` links, images and downloads, may carry it as
  ``?token=``);
- an upload whose ``Content-Length`` is over the limit, or missing, before its body is read.

Every answer gets ``X-Frame-Options: DENY`` and a Content-Security-Policy that allows only
the page's own origin, so no site can frame the page or make it load anything from elsewhere.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Awaitable, Callable, Iterable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
"""Host names every server answers to: a browser only sends these for this machine."""

TOKEN_HEADER = "X-Mordasr-Token"
TOKEN_PLACEHOLDER = "{{MORDASR_TOKEN}}"
"""Where ``index.html`` takes the server's token (a ``<meta>`` the script reads)."""

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

UPLOAD_OVERHEAD = 64 * 2**10
"""Room for the multipart framing and form fields around an upload's file."""

SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def host_name(host: str) -> str:
    """``host`` as it appears in a ``Host`` header: IPv6 addresses in brackets."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return host.lower()
    return f"[{address}]" if address.version == 6 else str(address)


def split_host(header: str) -> tuple[str, int | None]:
    """A ``Host`` header's name and port (``None`` where it names none or a bad one)."""
    name, colon, port = header.rpartition(":")
    bare_ipv6 = ":" in name and not name.endswith("]")
    if not colon or bare_ipv6 or not port.isdigit():
        return header.lower(), None
    return name.lower(), int(port)


def _refuse(status: int, detail: str) -> Response:
    return JSONResponse({"detail": detail}, status_code=status)


class Guard:
    """The checks above for one server; call :meth:`check` from an HTTP middleware.

    ``allowed_hosts``: names (``name`` or ``name:port``) answered besides the loopback ones;
    ``token``: the API token (a fresh random one by default); ``max_upload``: the largest file
    an upload may carry (bytes); ``upload_path``: the route that takes uploads.
    """

    def __init__(
        self,
        allowed_hosts: Iterable[str] = (),
        token: str | None = None,
        max_upload: int = 50 * 2**20,
        upload_path: str = "/api/jobs",
    ) -> None:
        self.names = {host_name(name) for name in LOOPBACK_NAMES}
        self.exact: set[str] = set()
        for entry in allowed_hosts:
            name, port = split_host(entry.strip())
            if port is None:
                self.names.add(host_name(name))
            else:
                self.exact.add(f"{host_name(name)}:{port}")
        self.token = token or secrets.token_urlsafe(32)
        self.max_upload = max_upload
        self.upload_path = upload_path

    def host_allowed(self, header: str, server_port: int | None, scheme: str) -> bool:
        """Whether ``header`` (a ``Host``) names this server listening on ``server_port``."""
        name, port = split_host(header.strip())
        name = host_name(name)
        if port is not None and f"{name}:{port}" in self.exact:
            return True
        if name not in self.names:
            return False
        default = 443 if scheme == "https" else 80
        return (port if port is not None else default) == (server_port or default)

    def refusal(self, request: Request) -> Response | None:
        """The one-line 4xx answer for a request that must not reach the routes, or ``None``."""
        host = request.headers.get("host", "")
        server = request.scope.get("server")
        server_port = int(server[1]) if server and server[1] is not None else None
        if not self.host_allowed(host, server_port, request.url.scheme):
            return _refuse(403, f"host {host!r} is not this server's; open the address it printed")
        origin = request.headers.get("origin")
        if origin is not None and origin != f"{request.url.scheme}://{host}":
            return _refuse(403, f"requests from {origin!r} are refused (another site)")
        site = request.headers.get("sec-fetch-site")
        if request.method not in SAFE_METHODS and site in ("cross-site", "same-site"):
            return _refuse(403, "requests from another site are refused")
        if not request.url.path.startswith("/api/"):
            return None
        given = request.headers.get(TOKEN_HEADER)
        if given is None and request.method in SAFE_METHODS:
            given = request.query_params.get("token")
        if given is None or not secrets.compare_digest(given.encode(), self.token.encode()):
            return _refuse(403, "missing or wrong token; reload the page")
        if request.method == "POST" and request.url.path == self.upload_path:
            return self._length_refusal(request.headers.get("content-length"))
        return None

    def _length_refusal(self, header: str | None) -> Response | None:
        if header is None or not header.isdigit():
            return _refuse(411, "an upload must state its Content-Length")
        if int(header) > self.max_upload + UPLOAD_OVERHEAD:
            return _refuse(413, f"larger than the {self.max_upload // 2**20} MB limit")
        return None

    async def __call__(
        self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        """The middleware: refuse or pass on, then add the security headers."""
        response = self.refusal(request) or await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        return response
