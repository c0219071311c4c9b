"""`captioner serve`: the local web page to caption photos and explore where the model looked, and its API.

This module runs it: the command's flags, the listening socket, and a server in a background thread for
tests and notebooks. The app is :mod:`captioner.web.app`; the work behind it :mod:`captioner.web.service`.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import socket
import sys
import threading
import time
from typing import Any, Iterator

from ..devices import add_device_argument
from ..errors import ConfigError
from .app import _require_web, create_app
from .service import (
    DEFAULT_MAX_UPLOAD_MB,
    DEMO_DIR,
    CaptionService,
    RequestError,
    load_models,
    render_overlays,
)


# ------------------------------------------------------------------------------------------ the work


# --------------------------------------------------------------------------------------------- HTTP


# ------------------------------------------------------------------------------------- running it


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket, or a clear error when the port is taken (port 0 picks a free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror}); choose another --port or --host") \
            from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


@contextlib.contextmanager
def running_server(app: Any, host: str = "127.0.0.1", port: int = 0, timeout: float = 30.0) -> Iterator[str]:
    """Serve ``app`` from a background thread for the ``with`` block; yields its base URL (tests, notebooks)."""
    import uvicorn

    sock = bind_socket(host, port)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", timeout_keep_alive=5))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="captioner-serve")
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError("the captioner server did not start")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="default", help="shipped model name or checkpoint path (default: default)")
    p.add_argument("--compare", default="auto",
                   help="a second model to show side by side; 'auto' (default) loads the soft/hard counterpart "
                        "of --model when installed, 'none' serves one model")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--max-upload-mb", type=float, default=DEFAULT_MAX_UPLOAD_MB,
                   help=f"largest accepted upload in MB (default {DEFAULT_MAX_UPLOAD_MB:g})")
    p.add_argument("--demo-dir", default=str(DEMO_DIR), help="folder of demo photos offered on the page")
    add_device_argument(p)


def run(args: argparse.Namespace) -> int:
    """Load the models, then serve until Ctrl+C."""
    _require_web()
    import uvicorn

    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be from 0 to 65535, got {args.port}")
    if not args.max_upload_mb > 0:
        raise ConfigError(f"--max-upload-mb must be positive, got {args.max_upload_mb}")
    sock = bind_socket(args.host, args.port)  # before loading models: a taken port fails at once
    service = CaptionService(load_models(args.model, args.compare, args.device), demo_dir=args.demo_dir,
                             max_upload_bytes=int(args.max_upload_mb * 1024 * 1024))
    local = is_loopback(args.host)
    allowed = ["127.0.0.1", "localhost", "::1", "[::1]", args.host] if local else None
    app = create_app(service, allowed_hosts=allowed)
    if not local:
        print(f"captioner: warning: listening on {args.host}: anyone who can reach this machine can use the "
              "server (there is no login); use --host 127.0.0.1 to keep it local", file=sys.stderr)
    host = f"[{args.host}]" if ":" in args.host and not args.host.startswith("[") else args.host
    print(f"captioner: serving {', '.join(service.served)} at http://{host}:{sock.getsockname()[1]}/ "
          "(Ctrl+C to stop)", file=sys.stderr, flush=True)
    config = uvicorn.Config(app, log_level="info", lifespan="off", timeout_keep_alive=5)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
    return 0


__all__ = ["CaptionService", "RequestError", "add_arguments", "create_app", "load_models", "render_overlays",
           "run", "running_server"]
