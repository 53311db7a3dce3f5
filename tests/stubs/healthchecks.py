"""A local stand-in for a healthchecks.io-style ping endpoint: records every ping, can answer with an error."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class Ping:
    method: str
    path: str
    run_id: str
    body: str


class PingStub:
    def __init__(self) -> None:
        self.pings: list[Ping] = []
        self.fail_status: int | None = None
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return None

            def _record(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length).decode() if length else ""
                parts = urlsplit(self.path)
                run_id = parse_qs(parts.query).get("rid", [""])[0]
                status = stub.fail_status or 200
                if status == 200:
                    stub.pings.append(Ping(self.command, parts.path, run_id, body))
                payload = b"OK" if status == 200 else b"error"
                self.send_response(status)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = _record
            do_POST = _record
            do_HEAD = _record

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> PingStub:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()
