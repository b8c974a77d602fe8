"""A fault-injecting HTTP proxy on loopback, for putting a flaky network in front of a real
server (the S3 test server, an MLflow server).

A seeded share of the requests (``error_rate``) is answered with a fault instead of the
upstream's answer:

- ``500`` / ``503``: an S3-style XML error, the request never reaches the upstream;
- ``stall``: no answer at all for ``stall_s`` seconds (longer than the client's read timeout),
  then the connection is closed. A mutating request (PUT/POST/DELETE) is forwarded first, so the
  upstream did the work and only the answer is lost — what makes idempotent writes necessary.

Whether a request is faulted depends only on ``seed``, its method, its ``request_key`` (the path
by default; ``s3_request_key`` leaves out the bucket and upload ids, which tests pick at random)
and how many times that same request was seen before, so the faults are the same from run to
run whatever order threads send requests in. Every decision is recorded in ``events``.

Requests are forwarded byte for byte with their original ``Host`` header, so AWS SigV4
signatures made for the proxy's address stay valid at the upstream.
"""

from __future__ import annotations

import hashlib
import http.client
import random
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import parse_qsl, urlencode, urlsplit

FAULTS = ("500", "503", "stall")
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "proxy-authenticate",
              "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade", "expect"}
MUTATING = {"PUT", "POST", "DELETE", "PATCH"}
ERROR_BODY = ('<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
              "<Message>fault injected by the test proxy</Message>"
              "<RequestId>fault-proxy</RequestId></Error>")
ERROR_CODES = {"500": "InternalError", "503": "ServiceUnavailable"}


def s3_request_key(path: str) -> str:
    """A path-style S3 request without its bucket and multipart upload id."""
    parts = urlsplit(path)
    key = parts.path.lstrip("/").partition("/")[2]
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "uploadId"]
    return f"{key}?{urlencode(query)}" if query else key


@dataclass(frozen=True)
class Event:
    method: str
    path: str
    outcome: str  # "forwarded" (with the upstream's status), "500", "503" or "stall"
    status: int | None = None  # the upstream's status when it was asked


class FaultProxy:
    """``with FaultProxy(upstream, error_rate=0.3, seed=1) as proxy: ... proxy.endpoint``"""

    def __init__(self, upstream: str, *, error_rate: float = 0.3, seed: int = 0,
                 faults: tuple[str, ...] = FAULTS, stall_s: float = 2.0,
                 upstream_timeout: float = 30.0,
                 fail_when: Callable[[str, str], bool] | None = None,
                 request_key: Callable[[str], str] = lambda path: path) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"upstream must be http://host:port (got {upstream!r})")
        self.upstream = (parts.hostname, parts.port or 80)
        self.error_rate, self.seed, self.faults = error_rate, seed, faults
        self.stall_s, self.upstream_timeout = stall_s, upstream_timeout
        self.fail_when = fail_when  # (method, path) -> always answer 500, whatever the seed
        self.request_key = request_key
        self.events: list[Event] = []
        self._seen: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- life cycle ------------------------------------------------------------------------
    def start(self) -> FaultProxy:
        proxy = self

        class Handler(_Handler):
            owner = proxy

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._closing.set()  # wakes stalled handlers
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        assert self._server is not None, "start the proxy first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # -- what happened ---------------------------------------------------------------------
    @property
    def faults_injected(self) -> int:
        with self._lock:
            return sum(e.outcome != "forwarded" for e in self.events)

    def forwarded(self, method: str | None = None) -> list[Event]:
        """Requests the upstream answered, in the order it answered them."""
        with self._lock:
            return [e for e in self.events if e.status is not None
                    and (method is None or e.method == method)]

    # -- decisions -------------------------------------------------------------------------
    def decide(self, method: str, path: str) -> str | None:
        """The fault for this request, or None; a function of seed, request and repeat count."""
        if self.fail_when is not None and self.fail_when(method, path):
            return "500"
        key = self.request_key(path)
        with self._lock:
            seen = self._seen[(method, key)]
            self._seen[(method, key)] += 1
        digest = hashlib.sha256(f"{self.seed}|{method}|{key}|{seen}".encode()).digest()
        rng = random.Random(digest)
        if rng.random() >= self.error_rate:
            return None
        return rng.choice(self.faults)

    def record(self, event: Event) -> None:
        with self._lock:
            self.events.append(event)


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client that gave up
            super().handle_error(request, client_address)  # type: ignore[arg-type]


class _Handler(BaseHTTPRequestHandler):
    owner: FaultProxy
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self._handle()

    do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = do_GET

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline().strip():  # trailers
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        proxy, method = self.owner, self.command
        body = self._body()  # always read, so the client is never left mid-send
        self.close_connection = True
        fault = proxy.decide(method, self.path)
        if fault in ERROR_CODES:
            proxy.record(Event(method, self.path, fault))
            payload = b"" if method == "HEAD" else ERROR_BODY.format(
                code=ERROR_CODES[fault]).encode()
            self.send_response(int(fault))
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(payload)
            return
        if fault == "stall":
            if method in MUTATING:  # the upstream does the work; its answer is lost
                status, _, _ = self._forward(body)
                proxy.record(Event(method, self.path, "stall", status))
            else:
                proxy.record(Event(method, self.path, "stall"))
            proxy._closing.wait(proxy.stall_s)
            return  # close without answering
        try:
            status, headers, payload = self._forward(body)
        except OSError:
            self.send_error(502, "upstream unreachable")
            return
        proxy.record(Event(method, self.path, "forwarded", status))
        self.send_response(status)
        for name, value in headers:
            if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                self.send_header(name, value)
        if method == "HEAD":
            length = next((v for n, v in headers if n.lower() == "content-length"), "0")
            self.send_header("Content-Length", length)
        else:
            self.send_header("Content-Length", str(len(payload)))
        self.send_header("Connection", "close")
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(payload)

    def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        host, port = self.owner.upstream
        connection = http.client.HTTPConnection(host, port, timeout=self.owner.upstream_timeout)
        try:
            connection.putrequest(self.command, self.path, skip_host=True,
                                  skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                    connection.putheader(name, value)
            if body or self.command in MUTATING:
                connection.putheader("Content-Length", str(len(body)))
            connection.endheaders(body or None)
            response = connection.getresponse()
            payload = response.read()
            return response.status, response.getheaders(), payload
        finally:
            connection.close()
