"""`mordasr serve`: start the local web page (needs the ``web`` extra)."""

from __future__ import annotations

import argparse
import ipaddress
import socket
import sys
from importlib.util import find_spec

from mordasr.io.cliargs import add_subcommand
from mordasr.serve.jobs import MAX_VIDEO_FRAMES, JobQueue, UpscaleRunner

# The sub-command's help line and description.
SUMMARY = (
    "a local web page: upload, upscale with progress, compare before and after",
    "Serve a web page on this machine to upscale images and short videos: drop files, pick the "
    "model and tile size, follow the progress, compare before/after and download. Jobs run "
    "one at a time; results stay listed until the server stops.",
)

WEB_MODULES = ("fastapi", "uvicorn", "multipart")
"""What the ``web`` extra installs (python-multipart imports as ``multipart``)."""

INSTALL_HINT = (
    "mordasr serve: the web page needs the web extra: pip install 'mordasr[web]' "
    "(in a checkout: pip install -e '.[web]')"
)


def missing_web_modules() -> list[str]:
    """The modules of the ``web`` extra that cannot be imported here."""
    return [name for name in WEB_MODULES if find_spec(name) is None]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``serve`` sub-command."""
    parser = add_subcommand(subparsers, "serve", SUMMARY)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: localhost)")
    parser.add_argument("--port", type=int, default=7860, help="port (default: 7860)")
    parser.add_argument(
        "--allowed-host",
        action="append",
        default=None,
        metavar="NAME",
        help="a host name (or name:port) the page is opened under, besides localhost; repeat "
        "for several (default: the --host address where it is not a loopback one)",
    )
    parser.add_argument(
        "--model", default="default", help="the model selected first (as for `mordasr upscale`)"
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1..., mps (default: auto)")
    parser.add_argument(
        "--jobs-dir",
        default=None,
        help="keep uploads and results in this folder (default: a temporary one, removed on exit)",
    )
    parser.add_argument("--max-upload-mb", type=int, default=50, help="largest upload (MB)")
    parser.add_argument(
        "--max-megapixels", type=float, default=16.0, help="largest input (millions of pixels)"
    )
    parser.add_argument(
        "--max-video-frames",
        type=int,
        default=MAX_VIDEO_FRAMES,
        help=f"longest video upload, in frames (default: {MAX_VIDEO_FRAMES})",
    )
    parser.set_defaults(func=run)


def allowed_hosts(args: argparse.Namespace) -> list[str]:
    """The host names answered besides the loopback ones: ``--allowed-host``, or else the
    ``--host`` address itself where it names another interface (not 0.0.0.0 or ::)."""
    if args.allowed_host:
        return list(args.allowed_host)
    try:
        address = ipaddress.ip_address(args.host)
    except ValueError:
        return [args.host]
    return [] if address.is_loopback or address.is_unspecified else [args.host]


def run(args: argparse.Namespace) -> int:
    """Entry point of ``mordasr serve``; runs until interrupted."""
    if missing_web_modules():
        print(INSTALL_HINT, file=sys.stderr)
        return 2
    import uvicorn  # the web extra is optional: imported only once it is known to be there

    from mordasr.serve.app import create_app

    try:
        loopback = ipaddress.ip_address(args.host).is_loopback
    except ValueError:
        loopback = args.host == "localhost"
    if not loopback:
        print(
            f"mordasr serve: warning: binding {args.host}; anyone who can reach it can use "
            "the page (it has no login)",
            file=sys.stderr,
        )
    jobs = JobQueue(
        UpscaleRunner(args.device),
        args.jobs_dir,
        max_bytes=args.max_upload_mb * 2**20,
        max_pixels=int(args.max_megapixels * 1e6),
        max_video_frames=args.max_video_frames,
    )
    try:
        listening = bind(args.host, args.port)
    except OSError as error:
        reason = error.strerror or str(error)
        print(
            f"mordasr serve: cannot listen on {args.host}:{args.port}: {reason} "
            "(another --port, or stop what uses it)",
            file=sys.stderr,
        )
        return 2
    app = create_app(jobs, default_model=args.model, allowed_hosts=allowed_hosts(args))
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"mordasr serve: open http://{shown}:{args.port}/ (Ctrl+C stops)", flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[listening])
    return 0


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to ``host``:``port``, before anything is printed: a busy port is one
    line, not an address to open followed by an exit."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    listening = socket.socket(family, kind, proto)
    try:
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listening.bind(address)
    except OSError:
        listening.close()
        raise
    return listening
