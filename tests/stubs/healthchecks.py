"""A local stand-in for a healthchecks.io-style ping endpoint: records every ping, can answer with an error."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from tests.stubs.base import HttpStub, StubHandler


@dataclass(frozen=True)
class Ping:
    method: str
    path: str
    run_id: str
    body: str


class PingStub(HttpStub):
    def __init__(self) -> None:
        self.pings: list[Ping] = []
        self.fail_status: int | None = None
        stub = self

        class Handler(StubHandler):
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

        super().__init__(Handler)
