"""A local stand-in for Sentry's ingest: POST /api/<project>/envelope/ with gzip (or brotli) bodies.

It parses the envelope format (a header line, then item header + payload pairs, payloads sized by
``length`` or ending at a newline) and keeps every item, so tests assert on what Sentry would store.
"""

from __future__ import annotations

import gzip
import json
from typing import Any

from tests.stubs.base import HttpStub, StubHandler


def parse_envelope(raw: bytes) -> list[tuple[dict[str, Any], Any]]:
    header_end = raw.index(b"\n") if b"\n" in raw else len(raw)
    position = header_end + 1
    items: list[tuple[dict[str, Any], Any]] = []
    while position < len(raw):
        line_end = raw.find(b"\n", position)
        if line_end == -1:
            break
        item_header = json.loads(raw[position:line_end])
        position = line_end + 1
        length = item_header.get("length")
        if length is None:
            end = raw.find(b"\n", position)
            end = len(raw) if end == -1 else end
        else:
            end = position + int(length)
        payload = raw[position:end]
        position = end + 1
        try:
            items.append((item_header, json.loads(payload)))
        except ValueError:
            items.append((item_header, payload))
    return items


class SentryStub(HttpStub):
    def __init__(self, project: int = 42, key: str = "publickey") -> None:
        self.project = project
        self.items: list[tuple[dict[str, Any], Any]] = []
        stub = self

        class Handler(StubHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                raw = self.rfile.read(length)
                encoding = self.headers.get("Content-Encoding", "")
                if encoding == "gzip":
                    raw = gzip.decompress(raw)
                elif encoding == "br":
                    import brotli  # type: ignore[import-not-found]

                    raw = brotli.decompress(raw)
                if self.path.rstrip("/") != f"/api/{stub.project}/envelope" or key not in (
                    self.headers.get("X-Sentry-Auth", "") + self.path
                ):
                    self.send_response(403)
                    self.end_headers()
                    return
                stub.items.extend(parse_envelope(raw))
                payload = b'{"id": "stub"}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        super().__init__(Handler)
        port = self.server.server_address[1]
        self.dsn = f"http://{key}@127.0.0.1:{port}/{project}"

    def of_type(self, kind: str) -> list[Any]:
        return [payload for header, payload in self.items if header.get("type") == kind]
