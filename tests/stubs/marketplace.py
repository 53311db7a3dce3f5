"""A local stand-in for Dify's plugin marketplace: the global manifest endpoint the upgrade check reads."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MANIFEST_PATH = "/api/v1/dist/plugins/manifest.json"


@dataclass
class MarketplaceState:
    plugins: list[dict[str, Any]] = field(default_factory=list)
    fail_status: int | None = None  # answer the manifest with this HTTP status
    raw_body: bytes | None = None  # answer with these bytes instead of the JSON manifest
    calls: list[tuple[str, dict[str, str]]] = field(default_factory=list)


def plugin(org: str, name: str, version: str) -> dict[str, Any]:
    """One manifest entry with the fields the marketplace sends (and one Dify ignores)."""
    identifier = f"{org}/{name}:{version}@{'0' * 64}"
    return {
        "org": org,
        "name": name,
        "latest_version": version,
        "latest_package_identifier": identifier,
        "latest_package_url": f"https://marketplace.example/api/v1/plugins/download?unique_identifier={identifier}",
        "icon": "icon.svg",
    }


class MarketplaceStub:
    def __init__(self) -> None:
        self.state = MarketplaceState()
        state = self.state

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return None

            def do_GET(self) -> None:
                state.calls.append((self.path, dict(self.headers.items())))
                if self.path != MANIFEST_PATH:
                    self._send(404, b'{"error":"not found"}')
                elif state.fail_status:
                    self._send(state.fail_status, b'{"error":"boom"}')
                elif state.raw_body is not None:
                    self._send(200, state.raw_body)
                else:
                    self._send(200, json.dumps({"plugins": state.plugins}).encode())

            def _send(self, status: int, payload: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> MarketplaceStub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
