"""A local stand-in for Resend's HTTP API: POST /emails with a Bearer key."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class ResendStub:
    def __init__(self, api_key: str = "re_test") -> None:
        self.api_key = api_key
        self.requests: list[dict[str, Any]] = []
        self.fail_status: int | None = None
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return None

            def _send(self, status: int, body: Any) -> None:
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                if self.path != "/emails":
                    self._send(404, {"message": "not found"})
                    return
                if self.headers.get("Authorization") != f"Bearer {stub.api_key}":
                    self._send(401, {"message": "API key is invalid"})
                    return
                if stub.fail_status:
                    self._send(stub.fail_status, {"message": "boom"})
                    return
                stub.requests.append(body)
                self._send(200, {"id": f"email-{len(stub.requests)}"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> ResendStub:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()
