"""The HTTP side of `captioner serve`: a small Starlette app over a :class:`CaptionService`.

Inference runs in the threadpool, so the event loop keeps answering while a caption is computed and a
slow upload or a broken file never holds up anyone else. Uploads are checked before decoding (size,
format, pixel count) and every rejection is a 4xx with a one-line message in the ``caption --json``
error shape ``{"image", "error", "model"}``, which the page shows as it is (Starlette's own refusals,
an unknown page or a wrong method, are JSON ``{"error"}`` too). benchmarks/bench_fuzz.py checks all
this against thousands of malformed requests.

Endpoints: ``GET /`` the page; ``POST /api/caption`` one image (multipart field ``image`` or ``demo``,
or a raw ``image/*`` body) -> the ``caption --json`` entry (``overlays=1`` adds the page's heatmaps and
per-word figures, see :func:`render_overlays`); ``GET /api/models``; ``GET /api/demos``;
``GET /demo/<name>``; ``GET /healthz``.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Mapping

from ..data.erase import parse_boxes
from ..errors import CaptionerError, ConfigError
from ..model.results import error_entry
from ..model.search import DecodeOptions
from .page import render_page
from .service import CaptionService, RequestError, log, too_big

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response

BEAMS = (1, 2, 3, 5, 10)  # offered on the page; the API takes any beam from 1 to MAX_BEAM
MAX_BEAM = 10
MAX_WORDS = 50
_FORM_SLACK = 64 * 1024  # multipart boundaries and small fields on top of the file itself


def _require_web() -> None:
    """A clear error, not an ImportError traceback, when the web packages are missing."""
    import importlib.util

    missing = [pkg for mod, pkg in (("starlette", "starlette"), ("uvicorn", "uvicorn"),
                                    ("python_multipart", "python-multipart"))
               if importlib.util.find_spec(mod) is None]
    if missing:
        raise ConfigError(f"`captioner serve` needs {', '.join(missing)}; install with: "
                          "pip install starlette uvicorn python-multipart")


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


def _erase_param(params: Mapping[str, Any]) -> list | None:
    """The optional ``erase`` field: a JSON list of at most 64 ``[x, y, w, h]`` boxes, or a 400 saying what is wrong."""
    raw = params.get("erase")
    if raw in (None, ""):
        return None
    try:
        return parse_boxes(str(raw))
    except ConfigError as exc:
        raise RequestError(400, str(exc)) from None


def _label(filename: str | None) -> str:
    name = Path((filename or "").replace("\\", "/")).name.strip()
    return name[:120] or "upload"


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing it as soon as it grows past ``limit`` (never buffers more)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise RequestError(413, too_big("upload", int(declared), limit))
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, too_big("upload", size, limit))
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


def _caption_endpoint(service: CaptionService) -> Callable[[Request], Awaitable[Response]]:
    """``POST /api/caption``: one image in, its ``caption --json`` entry out; every refusal a JSON 4xx."""
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import ClientDisconnect
    from starlette.responses import JSONResponse

    async def api_caption(request: Request) -> Response:
        started = time.perf_counter()
        label, model = "upload", service.default
        try:
            data, label, params = await _parse(request, service)
            model = service.pick(params.get("model"))
            opts = DecodeOptions(beam=_int_param(params, "beam", 3, 1, MAX_BEAM),
                                 max_len=_int_param(params, "max_len", 20, 1, MAX_WORDS))
            overlays = str(params.get("overlays", "")).lower() in ("1", "true", "yes")
            erase = _erase_param(params)
            if data is None:
                image = await run_in_threadpool(service.open_demo, label)
            else:
                image = await run_in_threadpool(service.open_upload, data, label)
            entry = await run_in_threadpool(service.caption, image, label, model, opts, overlays, erase)
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

    return api_caption


def create_app(service: CaptionService, allowed_hosts: list[str] | None = None) -> Starlette:
    """The ASGI app over ``service``; ``allowed_hosts`` guards a loopback server against DNS rebinding."""
    _require_web()
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.middleware import Middleware
    from starlette.middleware.trustedhost import TrustedHostMiddleware
    from starlette.responses import FileResponse, HTMLResponse, JSONResponse
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

    api_caption = _caption_endpoint(service)

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
