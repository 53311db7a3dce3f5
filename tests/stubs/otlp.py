"""A local OTLP/HTTP metrics receiver: POST /v1/metrics with a protobuf ExportMetricsServiceRequest.

Decodes with the OpenTelemetry protocol's own generated classes and keeps every data point as
(metric name, attributes, value), which is what a collector would forward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tests.stubs.base import HttpStub, StubHandler


@dataclass(frozen=True)
class Point:
    name: str
    attributes: dict[str, Any]
    value: float


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


class OtlpStub(HttpStub):
    def __init__(self, token: str | None = None) -> None:
        self.token = token
        self.points: list[Point] = []
        self.resources: list[dict[str, Any]] = []
        stub = self

        class Handler(StubHandler):
            def do_POST(self) -> None:
                from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
                    ExportMetricsServiceRequest,
                    ExportMetricsServiceResponse,
                )

                length = int(self.headers.get("Content-Length", 0))
                raw = self.rfile.read(length)
                if self.path != "/v1/metrics":
                    self.send_response(404)
                    self.end_headers()
                    return
                if stub.token and self.headers.get("Authorization") != f"Bearer {stub.token}":
                    self.send_response(401)
                    self.end_headers()
                    return
                if self.headers.get("Content-Encoding") == "gzip":
                    import gzip

                    raw = gzip.decompress(raw)
                request = ExportMetricsServiceRequest()
                request.ParseFromString(raw)
                for resource_metrics in request.resource_metrics:
                    stub.resources.append({a.key: _value(a.value) for a in resource_metrics.resource.attributes})
                    for scope in resource_metrics.scope_metrics:
                        for metric in scope.metrics:
                            stub.points.extend(_points(metric))
                payload = ExportMetricsServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        super().__init__(Handler)

    def named(self, name: str) -> list[Point]:
        return [point for point in self.points if point.name == name]


def _points(metric: Any) -> list[Point]:
    kind = metric.WhichOneof("data")
    data = getattr(metric, kind)
    found = []
    for point in data.data_points:
        attributes = {a.key: _value(a.value) for a in point.attributes}
        if kind == "histogram":
            value = float(point.sum)
        else:
            value = float(point.as_int if point.WhichOneof("value") == "as_int" else point.as_double)
        found.append(Point(metric.name, attributes, value))
    return found
