"""A local stand-in for Resend's HTTP API: POST /emails with a Bearer key."""

from __future__ import annotations

from typing import Any

from tests.stubs.base import HttpStub, StubHandler


class ResendStub(HttpStub):
    def __init__(self, api_key: str = "re_test") -> None:
        self.api_key = api_key
        self.requests: list[dict[str, Any]] = []
        self.fail_status: int | None = None
        stub = self

        class Handler(StubHandler):
            def do_POST(self) -> None:
                body = self.read_json()
                if self.path != "/emails":
                    self.send_json(404, {"message": "not found"})
                    return
                if self.headers.get("Authorization") != f"Bearer {stub.api_key}":
                    self.send_json(401, {"message": "API key is invalid"})
                    return
                if stub.fail_status:
                    self.send_json(stub.fail_status, {"message": "boom"})
                    return
                stub.requests.append(body)
                self.send_json(200, {"id": f"email-{len(stub.requests)}"})

        super().__init__(Handler)
