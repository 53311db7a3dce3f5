"""A local stand-in for Dify's private billing service, speaking its real HTTP shapes
(docs/dify-reference.md#billing-api)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tests.stubs.base import HttpStub, StubHandler


@dataclass
class BillingState:
    secret: str = "test-secret"
    plans: dict[str, dict[str, Any]] = field(default_factory=dict)
    whitelist: list[str] = field(default_factory=list)
    fail_whitelist: int | None = None  # HTTP status to answer with
    fail_plans: int | None = None
    expiration_as_string: bool = False  # Dify's API may send ints as strings
    calls: list[tuple[str, Any]] = field(default_factory=list)


class BillingStub(HttpStub):
    def __init__(self) -> None:
        self.state = BillingState()
        state = self.state

        class Handler(StubHandler):
            def _authorised(self) -> bool:
                if self.headers.get("Billing-Api-Secret-Key") != state.secret:
                    self.send_json(401, {"error": "bad secret"})
                    return False
                return True

            def do_GET(self) -> None:
                state.calls.append(("GET", self.path))
                if not self._authorised():
                    return
                if self.path == "/subscription/cleanup/whitelist":
                    if state.fail_whitelist:
                        self.send_json(state.fail_whitelist, {"error": "boom"})
                        return
                    self.send_json(200, {"data": [{"tenant_id": tid} for tid in state.whitelist]})
                    return
                self.send_json(404, {"error": "not found"})

            def do_POST(self) -> None:
                body = self.read_json()
                state.calls.append(("POST", body))
                if not self._authorised():
                    return
                if self.path != "/subscription/plan/batch":
                    self.send_json(404, {"error": "not found"})
                    return
                if state.fail_plans:
                    self.send_json(state.fail_plans, {"error": "boom"})
                    return
                data = {}
                for tid in body.get("tenant_ids", []):
                    if tid in state.plans:
                        plan = dict(state.plans[tid])
                        if state.expiration_as_string:
                            plan["expiration_date"] = str(plan["expiration_date"])
                        data[tid] = plan
                self.send_json(200, {"data": data})

        super().__init__(Handler)

    def plan_calls(self) -> list[list[str]]:
        return [body["tenant_ids"] for method, body in self.state.calls if method == "POST"]
