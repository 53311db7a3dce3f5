"""A local stand-in for SendGrid's v3 mail API: POST /v3/mail/send with a Bearer key, 202 and an empty body."""

from __future__ import annotations

import json
from typing import Any

from tests.stubs.base import HttpStub, StubHandler


class SendGridStub(HttpStub):
    def __init__(self, api_key: str = "SG.test") -> None:
        self.api_key = api_key
        self.requests: list[dict[str, Any]] = []
        stub = self

        class Handler(StubHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                raw = self.rfile.read(length)
                if self.path != "/v3/mail/send":
                    self.send_json(404, {"errors": [{"message": "not found"}]})
                    return
                if self.headers.get("Authorization") != f"Bearer {stub.api_key}":
                    self.send_json(401, {"errors": [{"message": "The provided authorization grant is invalid"}]})
                    return
                body = json.loads(raw or b"{}")
                # The checks SendGrid makes before accepting a message.
                problems = [
                    field for field in ("personalizations", "from", "subject", "content") if not body.get(field)
                ]
                if problems:
                    self.send_json(400, {"errors": [{"message": f"missing {p}", "field": p} for p in problems]})
                    return
                stub.requests.append(body)
                self.send_bytes(202, b"")

        super().__init__(Handler)
