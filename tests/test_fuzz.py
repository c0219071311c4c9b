"""`captioner serve` under a seeded fuzzer: hostile requests get a 4xx JSON error or a caption, never a 5xx.

The short version of benchmarks/bench_fuzz.py, against a real uvicorn on 127.0.0.1 (raw sockets, so
broken HTTP framing is sent as it is), serving a tiny random-weights model.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

pytest.importorskip("starlette", reason="the web server needs starlette (pip install -r requirements.txt)")
pytest.importorskip("python_multipart", reason="the web server needs python-multipart")

from captioner.web.server import CaptionService, create_app, load_models, running_server  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_fuzz  # noqa: E402
from bench_fuzz import Answer, Case  # noqa: E402

MAX_UPLOAD = 200_000


class _Errors(logging.Handler):
    """Collects what the server logs at ERROR: an exception inside the app, even one the client never saw."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record.getMessage())


@pytest.fixture(scope="module")
def server(tiny_checkpoint):
    service = CaptionService(load_models(str(tiny_checkpoint), compare="none"), demo_dir=ROOT / "demo",
                             max_upload_bytes=MAX_UPLOAD)
    errors = _Errors()
    loggers = [logging.getLogger(name) for name in ("captioner.web", "uvicorn.error")]
    with running_server(create_app(service, allowed_hosts=["127.0.0.1"])) as url:
        for lg in loggers:
            lg.addHandler(errors)
        host, port = url.removeprefix("http://").split(":")
        try:
            yield host, int(port), errors
        finally:
            for lg in loggers:
                lg.removeHandler(errors)


@pytest.mark.parametrize("seed", [0, 1])
def test_hostile_requests_get_a_4xx_json_error_or_a_caption(server, seed):
    host, port, errors = server
    report = bench_fuzz.fuzz(host, port, requests=300, seed=seed, max_upload=MAX_UPLOAD)
    assert report.sent == 300
    assert report.failures == []
    assert errors.records == []  # nothing failed inside the app either (a client that left is no error)
    # the fuzzer reached the model and the refusals alike, so the checks above checked something
    assert report.statuses.get(200, 0) > 10 and report.statuses.get(400, 0) > 10
    assert report.statuses.get(413, 0) > 0 and report.statuses.get(415, 0) > 0
    assert bench_fuzz.healthy(host, port, timeout=30)


def test_the_same_seed_sends_the_same_requests():
    def raw(seed: int) -> list[bytes]:
        gen = bench_fuzz.Generator(seed, "127.0.0.1", MAX_UPLOAD)
        return [gen.case().raw for _ in range(50)]

    assert raw(3) == raw(3) and raw(3) != raw(4)


def test_the_checker_flags_what_the_api_must_never_answer():
    app, wire = Case("form", b""), Case("wire/huge-header", b"", wire=True)
    json_type = {"content-type": "application/json"}
    assert bench_fuzz.problem(app, Answer(500, json_type, b'{"error": "internal"}'))
    assert bench_fuzz.problem(app, Answer(200, json_type, b'{"image": "a.jpg"}'))  # no caption
    assert bench_fuzz.problem(app, Answer(400, {"content-type": "text/plain"}, b"Bad Request"))
    assert bench_fuzz.problem(app, Answer(400, json_type, b'{"error": "two\\nlines"}'))
    assert bench_fuzz.problem(app, Answer(302, json_type, b"{}"))
    assert bench_fuzz.problem(app, None)  # a dropped connection is an answer only to broken framing
    assert bench_fuzz.problem(app, Answer(200, json_type, b'{"caption": "a dog"}')) is None
    assert bench_fuzz.problem(app, Answer(415, json_type, b'{"error": "not an image"}')) is None
    assert bench_fuzz.problem(wire, Answer(400, {"content-type": "text/plain"}, b"Invalid HTTP request")) is None
    assert bench_fuzz.problem(wire, None) is None
    assert bench_fuzz.problem(wire, Answer(503, json_type, b'{"error": "x"}'))


def test_the_fuzzer_targets_only_this_machine():
    with pytest.raises(ValueError, match="only targets this machine"):
        bench_fuzz.fuzz("192.0.2.1", 80, requests=1)
