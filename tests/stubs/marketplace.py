"""A local stand-in for Dify's plugin marketplace: the global manifest endpoint the upgrade check reads."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from tests.stubs.base import HttpStub, StubHandler

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


class MarketplaceStub(HttpStub):
    def __init__(self) -> None:
        self.state = MarketplaceState()
        state = self.state

        class Handler(StubHandler):
            def do_GET(self) -> None:
                state.calls.append((self.path, dict(self.headers.items())))
                if self.path != MANIFEST_PATH:
                    self.send_bytes(404, b'{"error":"not found"}')
                elif state.fail_status:
                    self.send_bytes(state.fail_status, b'{"error":"boom"}')
                elif state.raw_body is not None:
                    self.send_bytes(200, state.raw_body)
                else:
                    self.send_bytes(200, json.dumps({"plugins": state.plugins}).encode())

        super().__init__(Handler)
