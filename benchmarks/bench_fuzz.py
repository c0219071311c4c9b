"""Fuzz ``captioner serve``'s ``/api/caption`` with hostile requests: ``python benchmarks/bench_fuzz.py --tiny``.

A seeded generator (``random.Random(seed)``: the same seed sends the same requests) writes raw HTTP
requests: broken multipart boundaries and parts, huge and odd headers, wrong content types, truncated,
mutated and random bodies, odd parameters, broken framing (Content-Length, chunked encoding, request
lines). Each goes over its own socket to a server on this machine, and each answer is checked:

* never a 5xx, and never a connection dropped without an answer, except for requests whose HTTP
  framing is itself broken (marked ``wire``), which the server may simply close;
* a 2xx is a caption (JSON with ``caption``); a 4xx from the app is the JSON error entry, one line.
  (Framing errors are answered by uvicorn itself with a plain-text 400, before the app sees them.)

and ``/healthz`` must answer after every batch. Starts ``captioner serve`` on a free 127.0.0.1 port
(``--tiny``: a random tiny model, as the tests use), or uses ``--url`` of one already running on this
machine; traffic never leaves the loopback. Bounded by ``--requests`` and ``--seconds``. Prints one
line; exit status 1 if any answer failed a check (the first few are printed), or if the server logged
an error. The tests run a short version in-process (tests/test_fuzz.py).
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import struct
import sys
import tempfile
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlparse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_server import LOOPBACK, add_server_arguments, serving  # noqa: E402
PHOTOS = sorted((ROOT / "demo").glob("synth-*.jpg"))  # small photos: the fuzzer is about input, not speed
LARGE = 64 * 1024  # bigger than what uvicorn reads ahead of the app
NASTY = ["", "0", "-1", "1", "3", "10", "11", "50", "51", "1e3", "3.0", " 3", "3 ", "+3", "0x3", "٣", "１",
         "9" * 30, "9" * 5000, "nan", "inf", "None", "true", "[]", "{}", "\x00", "\u202e3", "%00", "💥", "a" * 300]


@dataclass
class Case:
    """One request: its raw bytes, what it tries, and whether its HTTP framing is broken on purpose."""

    name: str
    raw: bytes
    wire: bool = False
    half_close: bool = False  # shut our side after sending (a body that stops short)
    large: bool = False  # a body the server may refuse unread: closing on it is a reset, which may eat the answer


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass
class Report:
    sent: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------- the requests


def png_bomb(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares ``width`` x ``height``."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


class Generator:
    """Hostile requests for ``/api/caption``, all drawn from one seeded ``random.Random``."""

    def __init__(self, seed: int, host: str, max_upload: int) -> None:
        self.rng = random.Random(seed)
        self.host, self.max_upload = host, max_upload
        self.photos = [p.read_bytes() for p in PHOTOS]

    # ---- pieces

    def photo(self) -> bytes:
        return self.rng.choice(self.photos)

    def body(self) -> bytes:
        """An image-ish body: a photo, cut, bit-flipped, a lying header, random bytes, or nothing."""
        r, photo = self.rng, self.photo()
        kind = r.randrange(10)
        if kind == 0:
            return photo
        if kind == 1:
            return photo[: r.randrange(len(photo))]
        if kind == 2:
            data = bytearray(photo)
            for _ in range(r.randint(1, 40)):
                data[r.randrange(len(data))] = r.randrange(256)
            return bytes(data)
        if kind == 3:
            return png_bomb(r.choice([0, 1, 65535, 2**31 - 1, 2**32 - 1, 20000]), r.choice([0, 1, 20000, 2**31 - 1]))
        if kind == 4:
            magic = r.choice([b"GIF89a", b"GIF87a", b"BM", b"II*\x00", b"MM\x00*", b"RIFF\x00\x00\x00\x00WEBPVP8 ",
                              b"\xff\xd8\xff\xe0", b"\x89PNG\r\n\x1a\n", b"\x00\x00\x01\x00", b"P6\n", b"%PDF-"])
            return magic + r.randbytes(r.randrange(0, 3000))
        if kind == 5:
            return r.randbytes(r.randrange(0, 5000))
        if kind == 6:
            return b""
        if kind == 7:
            return photo + r.randbytes(r.randrange(1, 2000))  # trailing junk
        if kind == 8:
            return r.randbytes(self.max_upload + r.randrange(1, 5000))  # over the limit
        return photo[:200] * r.randrange(1, 20)

    def value(self) -> str:
        return self.rng.choice(NASTY) if self.rng.random() < 0.8 else self.rng.randbytes(8).decode("latin-1")

    def params(self) -> dict[str, str]:
        r = self.rng
        keys = ["beam", "max_len", "model", "overlays", "demo", "filename", r.choice(["", "x", "beam[]", "\x00"])]
        chosen = {k: self.value() for k in r.sample(keys, r.randint(0, 4))}
        if r.random() < 0.5 and "beam" not in chosen:
            chosen["beam"] = r.choice(["1", "2"])  # keep most decoding cheap
        if r.random() < 0.2:
            chosen["demo"] = r.choice(["astronaut.jpg", "synth-1.jpg", "../README.md", "nope.jpg", ""])
        return chosen

    def query(self) -> str:
        r = self.rng
        if r.random() < 0.1:
            return "?" + r.choice(["%zz", "beam=%", "&&&", "=", "beam=1&beam=99", "a" * 9000, "%ff%fe=1"])
        params = self.params()
        return ("?" + "&".join(f"{quote(k)}={quote(v)}" for k, v in params.items())) if params else ""

    def multipart(self) -> tuple[bytes, str, str]:
        """A form, often broken; returns (body, content type, what was broken)."""
        r = self.rng
        boundary = r.choice(["b0undary", "x" * 70, "y" * 300, "a b", '"q"', "-", "\u00e9t\u00e9", "----WebKit123"])
        parts = [(f'Content-Disposition: form-data; name="{k}"'.encode("utf-8", "replace"),
                  v.encode("utf-8", "replace")) for k, v in self.params().items()]
        name = r.choice(["image", "image", "image", "Image", "img", "demo", ""])
        filename = r.choice(["a.jpg", "", "../../etc/passwd", "x" * 5000, "a\x00.jpg", "\u202egpj.exe", 'a".jpg'])
        ctype = r.choice(["image/jpeg", "image/png", "text/plain", "", "application/octet-stream"])
        head = f'Content-Disposition: form-data; name="{name}"; filename="{filename}"'
        if ctype:
            head += f"\r\nContent-Type: {ctype}"
        parts.append((head.encode("utf-8", "replace"), self.body()))
        broke = r.choice(["none", "none", "mismatch", "no-end", "no-header-end", "lf-only", "junk-between",
                          "many-files", "many-fields", "big-field", "no-disposition", "bare-boundary"])
        if broke == "many-files":
            parts += [parts[-1]] * r.randint(2, 5)
        if broke == "many-fields":
            parts += [(b'Content-Disposition: form-data; name="f"', b"v")] * r.randint(21, 60)
        if broke == "big-field":
            parts.append((b'Content-Disposition: form-data; name="beam"', b"1" * r.randint(1 << 20, 2 << 20)))
        if broke == "no-disposition":
            parts.append((b"Content-Type: text/plain", b"who am i"))
        sep = b"\n" if broke == "lf-only" else b"\r\n"
        real = ("z" + boundary) if broke == "mismatch" else boundary
        out = b""
        for part_head, data in parts:
            head_end = sep if broke == "no-header-end" else sep + sep
            out += b"--" + real.encode("utf-8", "replace") + sep + part_head + head_end + data + sep
            if broke == "junk-between":
                out += r.randbytes(30)
        if broke not in ("no-end",):
            out += b"--" + real.encode("utf-8", "replace") + b"--" + sep
        declared = r.choice([f"multipart/form-data; boundary={boundary}",
                             f'multipart/form-data; boundary="{boundary}"'])
        if broke == "bare-boundary":
            declared = r.choice(["multipart/form-data", "multipart/form-data; boundary=",
                                 'multipart/form-data; boundary=""', "multipart/form-data; charset=utf-8"])
        return out, declared, broke

    def request(self, target: str, headers: list[tuple[str, str]], body: bytes, method: str = "POST") -> bytes:
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self.host}", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in headers]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace") + body

    # ---- the cases

    def case(self) -> Case:
        r = self.rng
        kind = r.choices(["form", "raw", "ctype", "headers", "method", "urlencoded", "wire"],
                         weights=[30, 20, 12, 10, 5, 8, 15])[0]
        target = "/api/caption" + self.query()
        if kind == "form":
            body, ctype, broke = self.multipart()
            headers = [("Content-Type", ctype), ("Content-Length", str(len(body)))]
            return Case(f"form/{broke}", self.request(target, headers, body), large=len(body) > LARGE)
        if kind == "raw":
            body = self.body()
            ctype = r.choice(["image/jpeg", "image/png", "image/x-whatever", "image/", "application/octet-stream",
                              "IMAGE/JPEG", "image/jpeg; charset=\u00ff"])
            headers = [("Content-Type", ctype), ("Content-Length", str(len(body)))]
            return Case("raw", self.request(target, headers, body), large=len(body) > LARGE)
        if kind == "ctype":
            body = self.body() if r.random() < 0.5 else json.dumps({"image": "astronaut.jpg"}).encode()
            ctype = r.choice(["", "text/plain", "application/json", "multipart/mixed; boundary=x", "text/html",
                              "application/x-www-form-urlencoded; charset=klingon", "*/*", ";;;", "multipart/",
                              "\u00ff\u00fe", "a" * 5000])
            headers = [("Content-Length", str(len(body)))] + ([("Content-Type", ctype)] if ctype else [])
            return Case(f"ctype/{ctype[:30]!r}", self.request(target, headers, body), large=len(body) > LARGE)
        if kind == "headers":
            body = self.photo()
            extra = r.choice([
                [("X-Big", "a" * r.randint(4000, 12000))],  # big but within uvicorn's limit: reaches the app
                [(f"X-H{i}", "v" * 50) for i in range(r.randint(50, 150))],
                [("Content-Disposition", 'attachment; filename="' + "x" * 3000 + '"')],
                [("Accept", "\u00ff" * 100)], [("Cookie", "; ".join(f"c{i}=v" for i in range(300)))],
            ])
            headers = [("Content-Type", "image/jpeg"), ("Content-Length", str(len(body)))] + extra
            return Case("headers", self.request(target, headers, body))
        if kind == "method":
            method = r.choice(["GET", "PUT", "DELETE", "PATCH", "OPTIONS"])
            return Case(f"method/{method}", self.request(target, [("Content-Length", "0")], b"", method))
        if kind == "urlencoded":
            body = r.choice([b"demo=astronaut.jpg&beam=1", b"image=%ff%fe", b"demo=%zz", b"&&==&&", r.randbytes(200),
                             ("demo=" + quote(self.value())).encode(), b"beam=1&" * 30 + b"demo=synth-1.jpg"])
            headers = [("Content-Type", "application/x-www-form-urlencoded"), ("Content-Length", str(len(body)))]
            return Case("urlencoded", self.request(target, headers, body))
        return self.wire_case(target)

    def wire_case(self, target: str) -> Case:
        """Requests whose HTTP framing is broken: uvicorn may answer 400 itself, or close."""
        r, body = self.rng, self.photo()
        ct = ("Content-Type", "image/jpeg")
        kind = r.choice(["short-body", "long-body", "bad-length", "two-lengths", "chunked", "huge-header",
                         "bad-header", "request-line", "no-host"])
        if kind == "short-body":  # promises more than it sends, then stops
            raw = self.request(target, [ct, ("Content-Length", str(len(body) + r.randint(1, 10**6)))], body)
            return Case("wire/short-body", raw, wire=True, half_close=True)
        if kind == "long-body":  # sends more than it promised: the rest is garbage after the request
            return Case("wire/long-body", self.request(target, [ct, ("Content-Length", str(len(body) // 2))], body),
                        wire=True)
        if kind == "bad-length":
            value = r.choice(["abc", "-1", "1e3", "99999999999999999999999", " ", "0x10", "1,2"])
            return Case("wire/bad-length", self.request(target, [ct, ("Content-Length", value)], body), wire=True)
        if kind == "two-lengths":
            headers = [ct, ("Content-Length", str(len(body))), ("Content-Length", str(len(body) - 1))]
            return Case("wire/two-lengths", self.request(target, headers, body), wire=True)
        if kind == "chunked":
            chunks = r.choice([b"zz\r\nabc\r\n0\r\n\r\n", f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n",
                               b"5\r\nab\r\n0\r\n\r\n", b"ffffffffffffffff\r\n", b"3\r\nabc\r\n"])
            coding = r.choice(["chunked", "gzip, chunked", "identity", "chunked, chunked"])
            headers = [ct, ("Transfer-Encoding", coding)]
            if r.random() < 0.3:
                headers.append(("Content-Length", "5"))
            return Case("wire/chunked", self.request(target, headers, chunks), wire=True, half_close=True)
        if kind == "huge-header":
            headers = [ct, ("Content-Length", str(len(body))), ("X-Huge", "h" * r.randint(17_000, 200_000))]
            return Case("wire/huge-header", self.request(target, headers, body), wire=True)
        if kind == "bad-header":
            bad = r.choice([b"NoColon", b"Bad Name: v", b"X: a\x00b", b"X: a\rb", b" leading: space", b"\xff\xfe: v"])
            raw = self.request(target, [ct, ("Content-Length", str(len(body)))], body)
            head, rest = raw.split(b"\r\n", 1)
            return Case("wire/bad-header", head + b"\r\n" + bad + b"\r\n" + rest, wire=True)
        if kind == "request-line":
            line = r.choice([b"POST /api/caption HTTP/9.9", b"POST  /api/caption HTTP/1.1", b"POST /api/caption",
                             b"\x16\x03\x01\x02\x00\x01\x00", b"POST /api/caption?\x00 HTTP/1.1",
                             b"POST " + b"/a" * 20000 + b" HTTP/1.1", b"GARBAGE"])
            return Case("wire/request-line", line + b"\r\nHost: x\r\n\r\n", wire=True, half_close=True)
        raw = f"POST {target} HTTP/1.1\r\nContent-Type: image/jpeg\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        return Case("wire/no-host", raw + body, wire=True)


# --------------------------------------------------------------------------------- sending, checking


def send(host: str, port: int, case: Case, timeout: float) -> Answer | None:
    """Send one case on a fresh connection; the answer, or None if the server closed without one."""
    data = b""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        try:
            sock.sendall(case.raw)
            if case.half_close:
                sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server answered (413) or closed before reading it all: read what it said
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except OSError:
            pass
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return None
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        return Answer(0, {}, data)
    headers = dict(line.split(":", 1) for line in lines[1:] if ":" in line)
    return Answer(int(parts[1]), {k.strip().lower(): v.strip() for k, v in headers.items()}, body)


def problem(case: Case, answer: Answer | None) -> str | None:
    """What is wrong with ``answer`` to ``case``, or None when it is an acceptable answer."""
    if answer is None:
        return None if case.wire or case.large else "no answer (connection closed)"
    if not (answer.status == 200 or 400 <= answer.status < 500):
        return f"HTTP {answer.status}: {answer.body[:200]!r}"
    is_json = answer.headers.get("content-type", "").startswith("application/json")
    if not is_json:
        if case.wire and answer.status == 400:
            return None
        return f"HTTP {answer.status} is not JSON: {answer.body[:120]!r}"
    try:
        doc = json.loads(answer.body)
    except ValueError:
        declared = answer.headers.get("content-length", "")
        if case.large and 400 <= answer.status < 500 and declared.isdigit() and len(answer.body) < int(declared):
            return None  # the reset after a refusal cut the answer short
        return f"HTTP {answer.status}: body is not valid JSON: {answer.body[:120]!r}"
    if answer.status == 200:
        ok = isinstance(doc, dict) and isinstance(doc.get("caption"), str)
        return None if ok else f"200 without a caption: {str(doc)[:200]}"
    err = doc.get("error") if isinstance(doc, dict) else None
    ok = isinstance(err, str) and err and "\n" not in err
    return None if ok else f"HTTP {answer.status}: not a one-line error entry {str(doc)[:200]}"


def healthy(host: str, port: int, timeout: float) -> bool:
    raw = f"GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
    try:
        answer = send(host, port, Case("healthz", raw), timeout)
    except OSError:
        return False
    return answer is not None and answer.status == 200 and json.loads(answer.body).get("ok") is True


def fuzz(host: str, port: int, requests: int, seed: int = 0, seconds: float = 600.0, clients: int = 1,
         max_upload: int = 200_000, timeout: float = 60.0) -> Report:
    """Send up to ``requests`` generated cases (stopping after ``seconds``) and check every answer."""
    if host not in LOOPBACK:
        raise ValueError(f"the fuzzer only targets this machine ({', '.join(LOOPBACK)}), not {host}")
    gen = Generator(seed, host, max_upload)
    cases = [gen.case() for _ in range(requests)]
    report, lock, deadline = Report(), threading.Lock(), time.monotonic() + seconds
    todo = iter(enumerate(cases))

    def worker() -> None:
        while time.monotonic() < deadline:
            with lock:
                item = next(todo, None)
            if item is None:
                return
            i, case = item
            try:
                answer = send(host, port, case, timeout)
                issue = problem(case, answer)
            except OSError as exc:
                answer, issue = None, f"{type(exc).__name__}: {exc}"
            with lock:
                report.sent += 1
                status = answer.status if answer else -1
                report.statuses[status] = report.statuses.get(status, 0) + 1
                if issue:
                    report.failures.append(f"#{i} {case.name}: {issue}")
            if i % 50 == 49 and not healthy(host, port, timeout):
                with lock:
                    report.failures.append(f"#{i}: /healthz did not answer after it")

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if not healthy(host, port, timeout):
        report.failures.append("/healthz did not answer at the end")
    return report


# ------------------------------------------------------------------------------------------ running


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_server_arguments(parser)
    parser.add_argument("--requests", type=int, default=3000, help="requests to send, at most (default 3000)")
    parser.add_argument("--seconds", type=float, default=600.0, help="stop sending after this long (default 600)")
    parser.add_argument("--clients", type=int, default=2, help="concurrent connections (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generator: same seed, same requests")
    parser.add_argument("--max-upload-mb", type=float, default=0.5,
                        help="the upload limit of the server started here (default 0.5), for over-limit bodies")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per request and for start-up")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.clients < 1 or args.seconds <= 0:
        parser.error("--requests, --clients and --seconds must be positive")
    if args.url and urlparse(args.url).hostname not in LOOPBACK:
        parser.error("--url must be a server on this machine (127.0.0.1, localhost or ::1)")
    max_upload = int(args.max_upload_mb * 1024 * 1024)
    with tempfile.TemporaryDirectory(prefix="bench_fuzz.") as tmp:
        log_path = Path(tmp) / "server.log"
        with serving(args.model, args.tiny, args.url, Path(tmp), args.timeout,
                     ["--max-upload-mb", str(args.max_upload_mb)]) as url:
            u = urlparse(url)
            start = time.perf_counter()
            report = fuzz(u.hostname, u.port, args.requests, args.seed, args.seconds, args.clients, max_upload,
                          args.timeout)
            seconds = time.perf_counter() - start
        # a server started here: anything it logged as an error counts, even if no client saw it
        logged = [line for line in log_path.read_text().splitlines() if "ERROR" in line or "Traceback" in line] \
            if log_path.is_file() else []
    statuses = ", ".join(f"{'none' if k < 0 else k}: {v}" for k, v in sorted(report.statuses.items()))
    print(f"fuzz: {report.sent} requests (seed {args.seed}) in {seconds:.1f} s, {len(report.failures)} failed checks, "
          f"{len(logged)} server errors logged; answers by status {{{statuses}}}")
    for msg in (report.failures + logged)[:10]:
        print(f"  {msg[:300]}", file=sys.stderr)
    return 1 if report.failures or logged else 0


if __name__ == "__main__":
    sys.exit(main())
