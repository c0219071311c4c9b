"""Load-test ``captioner serve``: ``python benchmarks/bench_server.py --model default``.

Starts the server in a subprocess on a free loopback port (or uses ``--url`` of one already running
on this machine), sends ``--requests`` POSTs of one photo to the JSON endpoint from ``--clients``
concurrent clients, checks every answer is a caption, and prints requests/second and latency
percentiles. Exit status 1 if any request failed. Traffic never leaves 127.0.0.1.
``--tiny`` serves a random tiny model (what the tests use) instead of a shipped one.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Iterator, Sequence
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = ("127.0.0.1", "localhost", "::1")
sys.path.insert(0, str(ROOT))  # run from a checkout without installing


def multipart(image: Path, fields: dict[str, str]) -> tuple[bytes, str]:
    """A multipart/form-data body as the page sends it: the photo as field ``image`` plus text fields."""
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{image.name}"\r\n'
                 f"Content-Type: image/jpeg\r\n\r\n".encode() + image.read_bytes() + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def start_server(model: str, log_path: Path, timeout: float, extra: Sequence[str] = ()) -> tuple[subprocess.Popen, str]:
    """``captioner serve`` (plus ``extra`` flags) on a free 127.0.0.1 port; the process and its URL once it answers."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    log = open(log_path, "w")  # noqa: SIM115  the server's log outlives this function
    proc = subprocess.Popen([sys.executable, "-m", "captioner", "serve", "--model", model, "--compare", "none",
                             "--host", "127.0.0.1", "--port", "0", *extra], stdout=log, stderr=log, env=env, cwd=ROOT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"bench_server: the server exited ({proc.returncode}):\n{log_path.read_text()}")
        for line in log_path.read_text().splitlines():
            if "serving" in line and " at http://" in line:
                url = line.split(" at ", 1)[1].split()[0].rstrip("/")
                if _get(url, "/healthz") == 200:
                    return proc, url
        time.sleep(0.2)
    proc.terminate()
    raise SystemExit(f"bench_server: the server did not start within {timeout:.0f} s; log in {log_path}")


@contextlib.contextmanager
def serving(model: str, tiny: bool, url: str | None, tmp: Path, timeout: float,
            extra: Sequence[str] = ()) -> Iterator[str]:
    """The base URL to test: ``url`` as given, or ``captioner serve`` started here and stopped after.

    ``tiny`` serves a random tiny model (what the tests use); the server's log is ``tmp/server.log``.
    """
    if url:
        yield url.rstrip("/")
        return
    if tiny:
        sys.path.insert(0, str(ROOT / "tests"))
        from conftest import make_checkpoint

        model = str(make_checkpoint(tmp / "tiny-soft.safetensors"))
    proc, started = start_server(model, tmp / "server.log", timeout, extra)
    try:
        yield started
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _get(url: str, path: str) -> int | None:
    u = urlparse(url)
    try:
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=5)
        conn.request("GET", path)
        status = conn.getresponse().status
        conn.close()
        return status
    except OSError:
        return None


def load(url: str, body: bytes, ctype: str, n_requests: int, n_clients: int,
         timeout: float) -> tuple[list[float], list[str], float]:
    """Send the requests; returns (latencies of successes in s, failure messages, wall time in s)."""
    u = urlparse(url)
    lock = threading.Lock()
    todo = [n_requests]
    latencies: list[float] = []
    failures: list[str] = []

    def client() -> None:
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)  # keep-alive, like a browser
        while True:
            with lock:
                if todo[0] == 0:
                    break
                todo[0] -= 1
            start = time.perf_counter()
            try:
                conn.request("POST", "/api/caption", body=body, headers={"Content-Type": ctype})
                resp = conn.getresponse()
                data = resp.read()
                ok = resp.status == 200 and json.loads(data).get("caption") is not None
                msg = "" if ok else f"HTTP {resp.status}: {data[:200]!r}"
            except (OSError, http.client.HTTPException, ValueError) as exc:
                ok, msg = False, f"{type(exc).__name__}: {exc}"
                conn.close()
                conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
            elapsed = time.perf_counter() - start
            with lock:
                (latencies.append(elapsed) if ok else failures.append(msg))
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(n_clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, failures, time.perf_counter() - start


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = math.ceil(len(ordered) * q / 100)  # 1-based
    return ordered[min(len(ordered), max(1, rank)) - 1]


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """--model, --tiny, --url: which server a benchmark sends to (see :func:`serving`)."""
    parser.add_argument("--model", default="default", help="model to serve (default: default)")
    parser.add_argument("--tiny", action="store_true", help="serve a random tiny model instead (as in the tests)")
    parser.add_argument("--url", help="use this already running server (loopback only) instead of starting one")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_server_arguments(parser)
    parser.add_argument("--requests", type=int, default=200, help="total requests (default 200)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    parser.add_argument("--image", default=str(ROOT / "demo" / "astronaut.jpg"), help="photo to send")
    parser.add_argument("--beam", type=int, default=3, help="beam size asked for (default 3)")
    parser.add_argument("--overlays", action="store_true", help="also ask for the page's heatmap pictures")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per request and for start-up")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.clients < 1:
        parser.error("--requests and --clients must be at least 1")
    if args.url and urlparse(args.url).hostname not in LOOPBACK:
        parser.error("--url must be a server on this machine (127.0.0.1, localhost or ::1)")

    fields = {"beam": str(args.beam)} | ({"overlays": "1"} if args.overlays else {})
    body, ctype = multipart(Path(args.image), fields)
    with tempfile.TemporaryDirectory(prefix="bench_server.") as tmp, \
            serving(args.model, args.tiny, args.url, Path(tmp), args.timeout) as url:
        load(url, body, ctype, 2, 1, args.timeout)  # warm-up, not counted
        latencies, failures, seconds = load(url, body, ctype, args.requests, args.clients, args.timeout)
    ok = len(latencies)
    line = (f"server: {args.requests} requests from {args.clients} clients: {ok} ok, {len(failures)} failed "
            f"in {seconds:.1f} s = {ok / seconds:.1f} requests/s")
    if latencies:
        line += (f"; latency p50 {percentile(latencies, 50) * 1000:.0f} ms, "
                 f"p95 {percentile(latencies, 95) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms")
    print(line + f" (model {'tiny' if args.tiny else args.model}, beam {args.beam}, {Path(args.image).name})")
    for msg in failures[:5]:
        print(f"  failed: {msg}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
