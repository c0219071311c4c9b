"""`captioner serve`: a local web page to caption photos and explore where the model looked.

A small Starlette app run by uvicorn. Models are loaded once at start; each sits behind its own lock
and inference runs in the threadpool, so the event loop keeps answering while a caption is computed
and a slow upload or a broken file never holds up anyone else. Uploads are checked before decoding
(size, format, pixel count) and every rejection is a 4xx with a one-line message in the
``caption --json`` error shape ``{"image", "error", "model"}``, which the page shows as it is (Starlette's
own refusals, an unknown page or a wrong method, are JSON ``{"error"}`` too). benchmarks/bench_fuzz.py
checks all this against thousands of malformed requests.

Endpoints: ``GET /`` the page; ``POST /api/caption`` one image (multipart field ``image`` or ``demo``,
or a raw ``image/*`` body) -> the ``caption --json`` entry (``overlays=1`` adds the page's heatmaps and
per-word figures, see :func:`render_overlays`); ``GET /api/models``; ``GET /api/demos``;
``GET /demo/<name>``; ``GET /healthz``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import ipaddress
import logging
import os
import secrets
import socket
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from PIL import Image, UnidentifiedImageError

from ..model.search import DecodeOptions
from ..devices import add_device_argument
from ..errors import CaptionerError, ConfigError, ImageError
from ..data.images import MAX_PIXELS, is_image_name, load_image
from ..model.results import caption_entry, error_entry
from .page import render_page, size_text

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.requests import Request

    from ..model.caption_model import CaptionModel

log = logging.getLogger("captioner.web")

DEMO_DIR = Path(__file__).resolve().parents[2] / "demo"
DEFAULT_MAX_UPLOAD_MB = 10.0
BEAMS = (1, 2, 3, 5, 10)  # offered on the page; the API takes any beam from 1 to MAX_BEAM
MAX_BEAM = 10
MAX_WORDS = 50
OVERLAY_PX = 384  # longest side of the photo and heatmaps sent to the page
_FORM_SLACK = 64 * 1024  # multipart boundaries and small fields on top of the file itself
#: when serving one of these, its counterpart is loaded too (if installed) so the page can compare them
COUNTERPARTS = {"flickr8k-soft": "flickr8k-hard", "flickr8k-hard": "flickr8k-soft",
                "synth-soft": "synth-hard", "synth-hard": "synth-soft"}


class RequestError(Exception):
    """A request we refuse: the HTTP status and the one-line message the page shows."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class _Served:
    model: CaptionModel
    lock: threading.Lock = field(default_factory=threading.Lock)


def _require_web() -> None:
    """A clear error, not an ImportError traceback, when the web packages are missing."""
    import importlib.util

    missing = [pkg for mod, pkg in (("starlette", "starlette"), ("uvicorn", "uvicorn"),
                                    ("python_multipart", "python-multipart"))
               if importlib.util.find_spec(mod) is None]
    if missing:
        raise ConfigError(f"`captioner serve` needs {', '.join(missing)}; install with: "
                          "pip install starlette uvicorn python-multipart")


# ------------------------------------------------------------------------------------------ the work


class CaptionService:
    """The blocking part of the server (decode, caption, draw heatmaps), kept free of any web code.

    Each model has its own lock: PyTorch modules are not safe to run from two threads at once, and
    one request at a time per model also keeps memory flat under load. Image decoding and heatmap
    drawing happen outside the lock, so they overlap with another request's inference.
    """

    def __init__(self, models: Mapping[str, CaptionModel], demo_dir: str | os.PathLike | None = DEMO_DIR,
                 max_upload_bytes: int = int(DEFAULT_MAX_UPLOAD_MB * 1024 * 1024),
                 max_pixels: int = MAX_PIXELS) -> None:
        if not models:
            raise ConfigError("no model to serve; pass --model NAME_OR_PATH")
        if max_upload_bytes < 1:
            raise ConfigError(f"upload limit must be positive, got {max_upload_bytes} bytes")
        self.served = {name: _Served(m) for name, m in models.items()}
        self.default = next(iter(self.served))
        self.max_upload_bytes = max_upload_bytes
        self.max_pixels = max_pixels
        root = Path(demo_dir) if demo_dir else None
        # Listed once: a demo is fetched by its name in this table, never by a path from the request.
        self.demos: dict[str, Path] = {
            p.name: p for p in sorted(root.iterdir()) if p.is_file() and is_image_name(p)
        } if root and root.is_dir() else {}

    def model_info(self) -> list[dict[str, Any]]:
        return [{"name": n, "attention": s.model.cfg.attention, "grid": s.model.cfg.grid,
                 "encoder": s.model.cfg.encoder,
                 "familiarity_threshold": _threshold(s.model)} for n, s in self.served.items()]

    def pick(self, name: str | None) -> str:
        name = name or self.default
        if name not in self.served:
            raise RequestError(400, f"unknown model {name!r}; this server has: {', '.join(self.served)}")
        return name

    def open_upload(self, data: bytes, label: str) -> Image.Image:
        """Decode uploaded bytes with :func:`load_image`, refusing empty, non-image and huge files."""
        if not data:
            raise RequestError(400, f"{label}: empty upload (0 bytes); choose a photo file")
        if len(data) > self.max_upload_bytes:
            raise RequestError(413, _too_big(label, len(data), self.max_upload_bytes))
        # A header-only look picks the status; load_image itself decodes and words the message.
        status = 400
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(io.BytesIO(data)) as probe:
                    w, h = probe.size
            if w * h > min(self.max_pixels, Image.MAX_IMAGE_PIXELS or self.max_pixels):
                status = 413
        except UnidentifiedImageError:
            status = 415
        except Image.DecompressionBombError:
            status = 413
        except Exception:  # noqa: BLE001  broken header: load_image below says what is wrong
            status = 400
        with tempfile.TemporaryDirectory(prefix="captioner-upload.") as tmp:
            path = Path(tmp) / "upload"
            path.write_bytes(data)
            try:
                return load_image(path, max_pixels=self.max_pixels)
            except ImageError as exc:
                raise RequestError(status, str(exc).replace(str(path), label)) from None

    def open_demo(self, name: str) -> Image.Image:
        if name not in self.demos:
            raise RequestError(404, f"no demo image {name!r}; choose one of: {', '.join(self.demos) or 'none'}")
        return load_image(self.demos[name])

    def caption(self, image: Image.Image, label: str, model: str, opts: DecodeOptions,
                overlays: bool = False) -> dict[str, Any]:
        """The ``caption --json`` entry for one image; ``overlays`` adds the page's heatmaps and figures."""
        served = self.served[model]
        with served.lock:
            result = served.model.caption_images([image], opts)[0]
        entry = caption_entry(label, result, model, served.model.cfg.grid)
        if overlays:
            entry.update(render_overlays(image, entry))
        return entry


def render_overlays(image: Image.Image, entry: Mapping[str, Any], max_side: int = OVERLAY_PX) -> dict[str, Any]:
    """What the page adds to the entry: the photo and each word's heatmap as JPEG data URIs, and the figures.

    ``{"thumbnail", "overlays": [uri per word], "attention_max", "show_image_weight", "words"}``, where
    ``words`` is the entry's list with each word's ``peak`` (max α) and ``image_weight`` (Σ α) added.
    Drawn with :func:`captioner.visualize.overlay` on the caption-wide scale of
    :func:`captioner.visualize.attention_scale`, the code behind the CLI's PNG/GIF/HTML outputs, on the
    upright photo the model saw, so the page and the files always agree.
    """
    from ..heatmaps import attention_scale, overlay

    thumb = image.copy()
    thumb.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    sc = attention_scale([w["attention"] for w in entry["words"]])
    uris = [_jpeg_uri(overlay(thumb, w["attention"], w.get("location"), vmax=sc.top)) for w in entry["words"]]
    # min(1, ...): a row of 5-decimal weights can sum a hair over 1; the figure is a share of the attention.
    words = [{**w, "peak": round(peak, 5), "image_weight": round(min(1.0, weight), 5)}
             for w, peak, weight in zip(entry["words"], sc.peaks, sc.image_weights)]
    return {"thumbnail": _jpeg_uri(thumb), "overlays": uris, "attention_max": round(sc.vmax, 5),
            "show_image_weight": sc.show_image_weight, "words": words}


def _threshold(model: Any) -> float | None:
    """The model's familiarity threshold, for the page's warning (None: no familiarity data)."""
    fam = getattr(model, "familiarity", None)
    return fam.threshold if fam is not None else None


def _jpeg_uri(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=88)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _too_big(label: str, size: int, limit: int) -> str:
    return (f"{label}: upload is {size_text(size)}, over the limit of {size_text(limit)}; "
            "resize the photo (or restart with a bigger --max-upload-mb)")


def _int_param(params: Mapping[str, Any], key: str, default: int, low: int, high: int) -> int:
    raw = params.get(key)
    if raw in (None, ""):
        return default
    try:
        value = int(str(raw))
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise RequestError(400, f"{key} must be a whole number from {low} to {high}, got {str(raw)[:40]!r}")
    return value


def _label(filename: str | None) -> str:
    name = Path((filename or "").replace("\\", "/")).name.strip()
    return name[:120] or "upload"


# --------------------------------------------------------------------------------------------- HTTP


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing it as soon as it grows past ``limit`` (never buffers more)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise RequestError(413, _too_big("upload", int(declared), limit))
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, _too_big("upload", size, limit))
        chunks.append(chunk)
    return b"".join(chunks)


async def _parse(request: Request, service: CaptionService) -> tuple[bytes | None, str, dict[str, Any]]:
    """``(image bytes or None for a demo, label, parameters)`` from a multipart form or a raw image body."""
    from starlette.datastructures import UploadFile
    from starlette.exceptions import HTTPException
    from starlette.requests import Request as StarletteRequest

    params: dict[str, Any] = dict(request.query_params)
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype.startswith("image/") or ctype == "application/octet-stream":
        body = await _read_body(request, service.max_upload_bytes)
        return body, _label(params.get("filename")), params
    if ctype not in ("multipart/form-data", "application/x-www-form-urlencoded"):
        raise RequestError(415, f"unsupported content type {ctype or '(none)'!r}; send the photo as "
                                "multipart/form-data (field 'image') or as a raw image/* body")
    body = await _read_body(request, service.max_upload_bytes + _FORM_SLACK)
    replayed = False

    async def receive() -> dict[str, Any]:
        nonlocal replayed
        if replayed:
            return {"type": "http.disconnect"}
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await StarletteRequest(request.scope, receive).form(max_files=2, max_fields=20)
    except HTTPException as exc:
        raise RequestError(400, f"malformed form upload ({exc.detail}); send multipart/form-data") from None
    try:
        upload = form.get("image")
        params.update({k: v for k, v in form.items() if isinstance(v, str)})
        if isinstance(upload, UploadFile):
            return await upload.read(), _label(upload.filename), params
        if upload:  # a text field called image: someone posted a path or a URL, not a file
            raise RequestError(400, "field 'image' must be a file upload, not text; attach the photo itself")
        if params.get("demo"):
            return None, str(params["demo"]), params
        raise RequestError(400, "no image in the request; attach a photo as field 'image' or name a demo")
    finally:
        await form.close()


def create_app(service: CaptionService, allowed_hosts: list[str] | None = None) -> Starlette:
    """The ASGI app over ``service``; ``allowed_hosts`` guards a loopback server against DNS rebinding."""
    _require_web()
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException
    from starlette.middleware import Middleware
    from starlette.middleware.trustedhost import TrustedHostMiddleware
    from starlette.requests import ClientDisconnect
    from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
    from starlette.routing import Route

    def page_config() -> dict[str, Any]:
        compare = list(service.served)[1] if len(service.served) > 1 else None
        return {"models": service.model_info(), "compare": compare, "demos": list(service.demos),
                "beams": list(BEAMS), "beam": 3, "max_upload_bytes": service.max_upload_bytes}

    async def index(request: Request) -> Response:
        nonce = secrets.token_urlsafe(16)
        csp = (f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
               "img-src 'self' data: blob:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
               "frame-ancestors 'none'")
        return HTMLResponse(render_page(page_config(), nonce),
                            headers={"Content-Security-Policy": csp, "Cache-Control": "no-store"})

    async def api_caption(request: Request) -> Response:
        started = time.perf_counter()
        label, model = "upload", service.default
        try:
            data, label, params = await _parse(request, service)
            model = service.pick(params.get("model"))
            opts = DecodeOptions(beam=_int_param(params, "beam", 3, 1, MAX_BEAM),
                                 max_len=_int_param(params, "max_len", 20, 1, MAX_WORDS))
            overlays = str(params.get("overlays", "")).lower() in ("1", "true", "yes")
            if data is None:
                image = await run_in_threadpool(service.open_demo, label)
            else:
                image = await run_in_threadpool(service.open_upload, data, label)
            entry = await run_in_threadpool(service.caption, image, label, model, opts, overlays)
        except ClientDisconnect:  # gone before its upload was complete: nobody to answer
            log.info("client went away while sending %s", label)
            return JSONResponse(error_entry(label, "upload incomplete: the client disconnected", model),
                                status_code=400)
        except RequestError as exc:
            log.info("refused %s: %s", label, exc.message)
            return JSONResponse(error_entry(label, exc.message, model), status_code=exc.status)
        except CaptionerError as exc:
            return JSONResponse(error_entry(label, str(exc), model), status_code=400)
        except Exception as exc:  # noqa: BLE001  one broken request must not take the server down
            log.exception("captioning %s failed", label)
            return JSONResponse(error_entry(label, f"internal error while captioning ({type(exc).__name__}: "
                                                   f"{exc}); see the server log", model), status_code=500)
        log.info("captioned %s with %s in %.2f s", label, model, time.perf_counter() - started)
        return JSONResponse(entry)

    async def models(request: Request) -> Response:
        return JSONResponse({"models": service.model_info(), "default": service.default})

    async def demos(request: Request) -> Response:
        return JSONResponse({"demos": list(service.demos)})

    async def demo_file(request: Request) -> Response:
        path = service.demos.get(request.path_params["name"])
        if path is None:
            return JSONResponse({"error": "no such demo image"}, status_code=404)
        return FileResponse(path, headers={"Cache-Control": "max-age=3600"})

    async def healthz(request: Request) -> Response:
        return JSONResponse({"ok": True, "models": list(service.served)})

    async def http_error(request: Request, exc: Exception) -> Response:
        """Starlette's own refusals (no such page, wrong method) in JSON too, like every other answer."""
        assert isinstance(exc, HTTPException)
        return JSONResponse({"error": f"{exc.detail} ({request.method} {request.url.path[:100]})"},
                            status_code=exc.status_code, headers=exc.headers)

    routes = [
        Route("/", index), Route("/api/caption", api_caption, methods=["POST"]),
        Route("/api/models", models), Route("/api/demos", demos),
        Route("/demo/{name}", demo_file), Route("/healthz", healthz),
    ]
    middleware = [Middleware(_SecurityHeaders)]
    if allowed_hosts:
        middleware.append(Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts))
    app = Starlette(routes=routes, middleware=middleware, exception_handlers={HTTPException: http_error})
    app.state.service = service
    return app


class _SecurityHeaders:
    """Pure ASGI middleware: no MIME sniffing, no referrer, no framing, on every response."""

    HEADERS = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
               (b"x-frame-options", b"DENY")]

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + self.HEADERS
            await send(message)

        await self.app(scope, receive, send_with_headers if scope["type"] == "http" else send)


# ------------------------------------------------------------------------------------- running it


def load_models(model: str, compare: str | None = "auto", device: str = "cpu") -> dict[str, CaptionModel]:
    """Load the served models once: ``model``, plus ``compare`` (``auto``: the soft/hard counterpart if installed)."""
    from ..model.caption_model import load_model
    from ..model.registry import ALIASES, available_models

    names = [model]
    if compare == "auto":
        other = COUNTERPARTS.get(ALIASES.get(model, model))
        if other and other in available_models():
            names.append(other)
    elif compare and compare != "none":
        names.append(compare)
    loaded: dict[str, CaptionModel] = {}
    for name in names:
        m = load_model(name, device=device)
        key, n = m.name, 2
        while key in loaded:  # two checkpoints with one name (e.g. two runs' best.safetensors)
            key, n = f"{m.name}#{n}", n + 1
        loaded[key] = m
    return loaded


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
