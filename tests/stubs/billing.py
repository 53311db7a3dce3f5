"""A local stand-in for Dify's private billing service, speaking its real HTTP shapes
(docs/dify-reference.md#billing-api)."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class BillingState:
    secret: str = "test-secret"
    plans: dict[str, dict[str, Any]] = field(default_factory=dict)
    whitelist: list[str] = field(default_factory=list)
    fail_whitelist: int | None = None  # HTTP status to answer with
    fail_plans: int | None = None
    expiration_as_string: bool = False  # Dify's API may send ints as strings
    calls: list[tuple[str, Any]] = field(default_factory=list)


class BillingStub:
    def __init__(self) -> None:
        self.state = BillingState()
        state = self.state

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

            def _authorised(self) -> bool:
                if self.headers.get("Billing-Api-Secret-Key") != state.secret:
                    self._send(401, {"error": "bad secret"})
                    return False
                return True

            def do_GET(self) -> None:
                state.calls.append(("GET", self.path))
                if not self._authorised():
                    return
                if self.path == "/subscription/cleanup/whitelist":
                    if state.fail_whitelist:
                        self._send(state.fail_whitelist, {"error": "boom"})
                        return
                    self._send(200, {"data": [{"tenant_id": tid} for tid in state.whitelist]})
                    return
                self._send(404, {"error": "not found"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                state.calls.append(("POST", body))
                if not self._authorised():
                    return
                if self.path != "/subscription/plan/batch":
                    self._send(404, {"error": "not found"})
                    return
                if state.fail_plans:
                    self._send(state.fail_plans, {"error": "boom"})
                    return
                data = {}
                for tid in body.get("tenant_ids", []):
                    if tid in state.plans:
                        plan = dict(state.plans[tid])
                        if state.expiration_as_string:
                            plan["expiration_date"] = str(plan["expiration_date"])
                        data[tid] = plan
                self._send(200, {"data": data})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def plan_calls(self) -> list[list[str]]:
        return [body["tenant_ids"] for method, body in self.state.calls if method == "POST"]

    def __enter__(self) -> BillingStub:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()
