"""What every local HTTP stand-in shares: a threaded server on a free loopback port, started and stopped as a
context manager, and a quiet request handler with the read/answer helpers the stubs use."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


class StubHandler(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        return None  # the tests read what the stub recorded, not its access log

    def read_body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))

    def read_json(self) -> Any:
        return json.loads(self.read_body() or b"{}")

    def send_bytes(self, status: int, payload: bytes, content_type: str | None = "application/json") -> None:
        self.send_response(status)
        if content_type and payload:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def send_json(self, status: int, body: Any) -> None:
        self.send_bytes(status, json.dumps(body).encode())


class HttpStub:
    """A server for ``handler`` on 127.0.0.1, serving from a daemon thread between ``__enter__`` and ``__exit__``.
    ``poll_interval``: how often serve_forever looks for a shutdown (shutdown waits for it)."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], *, poll_interval: float = 0.5) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": poll_interval}, daemon=True
        )

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
