"""A local stand-in for SendGrid's v3 mail API: POST /v3/mail/send with a Bearer key, 202 and an empty body."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class SendGridStub:
    def __init__(self, api_key: str = "SG.test") -> None:
        self.api_key = api_key
        self.requests: list[dict[str, Any]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return None

            def _answer(self, status: int, body: dict[str, Any] | None = None) -> None:
                payload = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                if payload:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                raw = self.rfile.read(length)
                if self.path != "/v3/mail/send":
                    self._answer(404, {"errors": [{"message": "not found"}]})
                    return
                if self.headers.get("Authorization") != f"Bearer {stub.api_key}":
                    self._answer(401, {"errors": [{"message": "The provided authorization grant is invalid"}]})
                    return
                body = json.loads(raw or b"{}")
                # The checks SendGrid makes before accepting a message.
                problems = [
                    field for field in ("personalizations", "from", "subject", "content") if not body.get(field)
                ]
                if problems:
                    self._answer(400, {"errors": [{"message": f"missing {p}", "field": p} for p in problems]})
                    return
                stub.requests.append(body)
                self._answer(202)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> SendGridStub:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()
