"""A local stand-in for the TiDB Cloud Serverless API (v1beta1) as Dify uses it
(docs/tidb-pool.md#the-api-calls).

Real HTTP Digest authentication (RFC 7616, MD5, ``qop=auth``): an unauthenticated request gets a 401 with a
``WWW-Authenticate`` challenge, and an authenticated one is accepted only when its response hash, nonce,
opaque, nonce count and URI check out. Endpoints:

* ``POST /clusters:batchCreate`` ``{"requests": [{"cluster": {...}}]}`` (1..20) → ``{"clusters": [...]}``
* ``GET /clusters:batchGet?clusterIds=…&view=BASIC|FULL`` (1..20) → ``{"clusters": [...]}``, unknown ids left out
* ``GET /clusters/{id}`` and ``DELETE /clusters/{id}`` (404 for an unknown cluster)

Clusters start CREATING (no userPrefix, no endpoint) and turn ACTIVE after ``polls_until_active`` batchGet
polls (None: never). Faults are scripted per authenticated request (:meth:`TidbCloudStub.script`) or made
permanent (``state.fail_always``, or ``state.fail_matching`` for the requests a fault matches, e.g. every
batchGet naming one cluster); every request is recorded. Root passwords are kept (tests check what
was sent) but never put in an answer.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import re
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

DISPLAY_NAME = re.compile(r"^[A-Za-z0-9][-A-Za-z0-9]{2,62}[A-Za-z0-9]$")  # TiDB Cloud's rule
_AUTH_PARAM = re.compile(r'(\w+)=(?:"((?:[^"\\]|\\.)*)"|([^,\s]+))')
BASE_PATH = "/v1beta1"
_ids = itertools.count(10_140_100_000_000_000_001)


@dataclass
class Fault:
    """One scripted answer to the next authenticated request (optionally only for one method/path prefix)."""

    status: int = 500
    retry_after: str | None = None  # Retry-After header value
    body: dict[str, Any] | None = None
    disconnect: bool = False  # close the connection without answering (a network error)
    method: str | None = None
    path_prefix: str | None = None
    cluster_id: str | None = None  # only requests about this cluster (named in batchGet's ids, or the path)

    def matches(self, method: str, path: str, query: dict[str, list[str]] | None = None) -> bool:
        about = self.cluster_id is None or (
            self.cluster_id in (query or {}).get("clusterIds", []) or path == f"/clusters/{self.cluster_id}"
        )
        return (
            about
            and (self.method is None or self.method == method)
            and (self.path_prefix is None or path.startswith(self.path_prefix))
        )


@dataclass
class StubCluster:
    cluster_id: str
    display_name: str
    region: str
    labels: dict[str, str]
    spending_limit: dict[str, Any]
    root_password: str
    user_prefix: str
    host: str
    create_time: str
    state: str = "CREATING"
    polls: int = 0

    def to_json(self, *, view: str = "FULL", endpoints: bool = True) -> dict[str, Any]:
        active = self.state == "ACTIVE"
        body: dict[str, Any] = {
            "name": f"clusters/{self.cluster_id}",
            "clusterId": self.cluster_id,
            "displayName": self.display_name,
            "region": {"name": self.region},
            "labels": dict(self.labels),
            "state": self.state,
            "userPrefix": self.user_prefix if active else "",
            "createTime": self.create_time,
        }
        if view == "FULL":
            body["spendingLimit"] = dict(self.spending_limit)
        if endpoints and active:
            body["endpoints"] = {"public": {"host": self.host, "port": 4000, "disabled": False}}
        return body


@dataclass
class Recorded:
    method: str
    path: str  # below /v1beta1, without the query
    query: dict[str, list[str]]
    status: int  # 0 = connection dropped
    authenticated: bool
    body: Any = None


@dataclass
class TidbCloudState:
    public_key: str = "stub-public-key"
    private_key: str = "stub-private-key"
    realm: str = "tidbcloud"
    polls_until_active: int | None = 1  # batchGet polls that see CREATING before ACTIVE; None = never
    basic_view_endpoints: bool = True  # whether batchGet's BASIC view carries endpoints.public.host
    create_limit: int | None = None  # partial batchCreate: create only this many of each request's clusters
    hidden: set[str] = field(default_factory=set)  # ids batchGet leaves out (get/delete still know them)
    delay_s: float = 0.0  # answer every authenticated request this much later (a slow API)
    fail_always: Fault | None = None  # answer every authenticated request with this
    fail_matching: list[Fault] = field(default_factory=list)  # answer every request each one matches, for good
    faults: deque[Fault] = field(default_factory=deque)
    clusters: dict[str, StubCluster] = field(default_factory=dict)
    deleted: dict[str, StubCluster] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    nonces: dict[str, int] = field(default_factory=dict)  # issued nonce -> last nonce count seen
    opaque: str = field(default_factory=lambda: secrets.token_hex(8))
    lock: threading.Lock = field(default_factory=threading.Lock)


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()  # RFC 7616 MD5: what httpx and TiDB Cloud use


def parse_digest(header: str) -> dict[str, str] | None:
    scheme, _, rest = header.partition(" ")
    if scheme.lower() != "digest":
        return None
    return {key.lower(): quoted or bare for key, quoted, bare in _AUTH_PARAM.findall(rest)}


class TidbCloudStub:
    def __init__(self) -> None:
        self.state = TidbCloudState()
        state = self.state

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return None

            # ----------------------------------------------------------------------------- plumbing
            def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

            def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
                self._send(status, {"code": status, "message": message, "details": []}, headers)

            def _challenge(self, stale: bool = False) -> None:
                nonce = secrets.token_hex(16)
                with state.lock:
                    state.nonces[nonce] = 0
                value = (
                    f'Digest realm="{state.realm}", qop="auth", nonce="{nonce}", opaque="{state.opaque}", '
                    f"algorithm=MD5{', stale=true' if stale else ''}"
                )
                self._error(401, "Unauthorized", {"WWW-Authenticate": value})

            def _authenticated(self) -> bool:
                params = parse_digest(self.headers.get("Authorization", ""))
                if params is None:
                    return False
                nonce = params.get("nonce", "")
                with state.lock:
                    last_nc = state.nonces.get(nonce)
                try:
                    nc = int(params.get("nc", ""), 16)
                except ValueError:
                    return False
                if last_nc is None or nc <= last_nc:
                    return False  # unknown nonce or replayed nonce count
                if (
                    params.get("username") != state.public_key
                    or params.get("realm") != state.realm
                    or params.get("qop") != "auth"
                    or params.get("algorithm", "MD5").upper() != "MD5"
                    or params.get("opaque") != state.opaque
                    or params.get("uri") != self.path
                ):
                    return False
                ha1 = _md5(f"{state.public_key}:{state.realm}:{state.private_key}")
                ha2 = _md5(f"{self.command}:{params['uri']}")
                expected = _md5(f"{ha1}:{nonce}:{params['nc']}:{params.get('cnonce', '')}:auth:{ha2}")
                if not hmac.compare_digest(expected, params.get("response", "")):
                    return False
                with state.lock:
                    state.nonces[nonce] = nc
                return True

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                split = urlsplit(self.path)
                path = unquote(split.path)
                path = path[len(BASE_PATH) :] if path.startswith(BASE_PATH + "/") else f"(outside {BASE_PATH}){path}"
                query = parse_qs(split.query)
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode(errors="replace")
                record = Recorded(self.command, path, query, 0, False, body)
                with state.lock:
                    state.requests.append(record)
                if not self._authenticated():
                    record.status = 401
                    self._challenge()
                    return
                record.authenticated = True
                if state.delay_s:
                    time.sleep(state.delay_s)
                fault = self._fault(path, query)
                if fault is not None:
                    record.status = 0 if fault.disconnect else fault.status
                    if fault.disconnect:
                        self.close_connection = True
                        return
                    headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else None
                    body_out = fault.body or {"code": fault.status, "message": "injected fault", "details": []}
                    self._send(fault.status, body_out, headers)
                    return
                status, answer = self._route(path, query, body)
                record.status = status
                self._send(status, answer)

            def _fault(self, path: str, query: dict[str, list[str]]) -> Fault | None:
                with state.lock:
                    if state.fail_always is not None:
                        return state.fail_always
                    for fault in state.fail_matching:
                        if fault.matches(self.command, path, query):
                            return fault
                    for fault in list(state.faults):
                        if fault.matches(self.command, path, query):
                            state.faults.remove(fault)
                            return fault
                return None

            # ----------------------------------------------------------------------------- the API
            def _route(self, path: str, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
                with state.lock:
                    if self.command == "POST" and path == "/clusters:batchCreate":
                        return _batch_create(state, body)
                    if self.command == "GET" and path == "/clusters:batchGet":
                        return _batch_get(state, query)
                    match = re.fullmatch(r"/clusters/([^/:]+)", path)
                    if match and self.command in ("GET", "DELETE"):
                        cluster = state.clusters.get(match.group(1))
                        if cluster is None:
                            return 404, {"code": 5, "message": f"cluster {match.group(1)} not found", "details": []}
                        if self.command == "DELETE":
                            cluster.state = "DELETING"
                            state.deleted[cluster.cluster_id] = state.clusters.pop(cluster.cluster_id)
                        return 200, cluster.to_json()
                return 404, {"code": 5, "message": "Not Found", "details": []}

            def do_GET(self) -> None:
                self._handle()

            def do_POST(self) -> None:
                self._handle()

            def do_DELETE(self) -> None:
                self._handle()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{BASE_PATH}"
        # A short poll interval: shutdown() waits for it, once per test.
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    # --------------------------------------------------------------------------------------- test helpers
    def script(self, *faults: Fault) -> None:
        """Answer the next matching authenticated requests with these faults, in order."""
        with self.state.lock:
            self.state.faults.extend(faults)

    def api_requests(self, method: str | None = None, path: str | None = None) -> list[Recorded]:
        """Authenticated requests (the ones the API acted on or faulted), optionally filtered."""
        return [
            r
            for r in self.state.requests
            if r.authenticated and (method is None or r.method == method) and (path is None or r.path == path)
        ]

    def activate(self, *cluster_ids: str) -> None:
        """Make clusters ACTIVE now (all when none are named)."""
        with self.state.lock:
            for cluster in self.state.clusters.values():
                if not cluster_ids or cluster.cluster_id in cluster_ids:
                    cluster.state = "ACTIVE"

    def __enter__(self) -> TidbCloudStub:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


def _bad(message: str) -> tuple[int, Any]:
    return 400, {"code": 3, "message": message, "details": []}


def _batch_create(state: TidbCloudState, body: Any) -> tuple[int, Any]:
    requests = body.get("requests") if isinstance(body, dict) else None
    if not isinstance(requests, list) or not 1 <= len(requests) <= 20:
        return _bad("requests must hold 1 to 20 items")
    specs = []
    for item in requests:
        cluster = item.get("cluster") if isinstance(item, dict) else None
        if not isinstance(cluster, dict):
            return _bad("each request needs a cluster")
        name = cluster.get("displayName")
        region = (cluster.get("region") or {}).get("name")
        password = cluster.get("rootPassword")
        labels = cluster.get("labels") or {}
        if not isinstance(name, str) or not DISPLAY_NAME.match(name):
            return _bad("invalid displayName")
        if not isinstance(region, str) or not region.startswith("regions/"):
            return _bad("invalid region.name")
        if not isinstance(password, str) or not 8 <= len(password) <= 64:
            return _bad("rootPassword must be 8 to 64 characters")
        if not labels.get("tidb.cloud/project"):
            return _bad("labels must name tidb.cloud/project")
        specs.append(cluster)
    if state.create_limit is not None:
        specs = specs[: state.create_limit]
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    created = []
    for spec in specs:
        cluster_id = str(next(_ids))
        prefix = secrets.token_hex(4)[:7]
        created_cluster = StubCluster(
            cluster_id=cluster_id,
            display_name=spec["displayName"],
            region=spec["region"]["name"],
            labels=dict(spec["labels"]),
            spending_limit=dict(spec.get("spendingLimit") or {}),
            root_password=spec["rootPassword"],
            user_prefix=prefix,
            host=f"gateway01.{spec['region']['name'].removeprefix('regions/')}.prod.aws.tidbcloud.com",
            create_time=now,
        )
        if state.polls_until_active == 0:
            created_cluster.state = "ACTIVE"
        state.clusters[cluster_id] = created_cluster
        created.append(created_cluster.to_json())
    return 200, {"clusters": created}


def _batch_get(state: TidbCloudState, query: dict[str, list[str]]) -> tuple[int, Any]:
    ids = query.get("clusterIds") or []
    view = (query.get("view") or ["BASIC"])[0]
    if not 1 <= len(ids) <= 20:
        return _bad("clusterIds must hold 1 to 20 ids")
    if view not in ("BASIC", "FULL"):
        return _bad("invalid view")
    found = []
    for cluster_id in ids:
        cluster = state.clusters.get(cluster_id)
        if cluster is None or cluster_id in state.hidden:
            continue
        if cluster.state == "CREATING":
            cluster.polls += 1
            if state.polls_until_active is not None and cluster.polls > state.polls_until_active:
                cluster.state = "ACTIVE"
        endpoints = view == "FULL" or state.basic_view_endpoints
        found.append(cluster.to_json(view=view, endpoints=endpoints))
    return 200, {"clusters": found}
