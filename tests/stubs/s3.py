"""A local S3-compatible stand-in (path-style) that checks what a real S3 checks about a request.

Every request must carry a well-formed ``AWS4-HMAC-SHA256`` Authorization header whose signature matches the
request as it arrived on the wire (raw path, received header values), an ``x-amz-content-sha256`` equal to the
body's SHA-256, and every PUT a ``Content-MD5`` equal to the body's MD5 (S3 answers ``BadDigest`` otherwise).
"""

from __future__ import annotations

import base64
import hashlib
import re
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

from difymaint.dify.object_store import SigV4Signer

AUTHORIZATION = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<day>\d{8})/(?P<region>[^/]+)/s3/aws4_request, "
    r"SignedHeaders=(?P<signed>[a-z0-9-]+(?:;[a-z0-9-]+)*), Signature=(?P<signature>[0-9a-f]{64})$"
)


@dataclass
class S3State:
    bucket: str = "dify-archive"
    access_key: str = "AKIDIFYMAINTTEST"
    secret_key: str = "secret/key+for/tests"
    region: str = "auto"
    objects: dict[str, bytes] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)  # why requests were refused
    headers_seen: list[dict[str, str]] = field(default_factory=list)


class S3Stub:
    def __init__(self) -> None:
        self.state = S3State()
        state = self.state

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return None

            def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _error(self, status: int, code: str) -> None:
                self._send(status, f"<Error><Code>{code}</Code></Error>".encode())

            def _verify(self, body: bytes) -> str | None:
                """None when the request is acceptable, else why not."""
                headers = {name.lower(): value for name, value in self.headers.items()}
                state.headers_seen.append(headers)
                match = AUTHORIZATION.match(headers.get("authorization", ""))
                if match is None:
                    return "malformed Authorization header"
                if match["key"] != state.access_key or match["region"] != state.region:
                    return "wrong credential scope"
                signed = match["signed"].split(";")
                needed = {"host", "x-amz-date", "x-amz-content-sha256"} | (
                    {"content-md5"} if self.command == "PUT" else set()
                )
                if not needed <= set(signed) or signed != sorted(signed):
                    return f"SignedHeaders {signed} lack {sorted(needed - set(signed))} or are unsorted"
                amz_date = headers.get("x-amz-date", "")
                if not re.fullmatch(r"\d{8}T\d{6}Z", amz_date) or amz_date[:8] != match["day"]:
                    return "bad x-amz-date"
                if headers.get("x-amz-content-sha256") != hashlib.sha256(body).hexdigest():
                    return "x-amz-content-sha256 does not match the body"
                if self.command == "PUT":
                    expected_md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
                    if headers.get("content-md5") != expected_md5:
                        return "BadDigest"
                # Recompute the signature from what arrived, with the secret only the server knows.
                signer = SigV4Signer(state.access_key, state.secret_key, state.region)
                moment = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
                again = signer.headers(
                    self.command,
                    self.path.split("?", 1)[0],
                    {name: headers[name] for name in signed if name not in ("x-amz-date", "x-amz-content-sha256")},
                    payload_sha256=headers["x-amz-content-sha256"],
                    now=moment,
                )
                if again["authorization"] != headers["authorization"]:
                    return "SignatureDoesNotMatch"
                return None

            def _key(self) -> str | None:
                """The object key of a path-style request, None for the bucket itself."""
                path = self.path.split("?", 1)[0]
                prefix = f"/{state.bucket}"
                if path == prefix or path == prefix + "/":
                    return None
                if not path.startswith(prefix + "/"):
                    return "\x00wrong-bucket"
                return unquote(path[len(prefix) + 1 :])

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                state.requests.append((self.command, self.path))
                problem = self._verify(body)
                if problem is not None:
                    state.rejected.append(problem)
                    self._error(400 if problem == "BadDigest" else 403, problem.split()[0])
                    return
                key = self._key()
                if key == "\x00wrong-bucket":
                    self._error(404, "NoSuchBucket")
                    return
                if key is None:
                    self._send(200 if self.command == "HEAD" else 405)
                    return
                if self.command == "DELETE":  # S3 answers 204 whether or not the object existed
                    state.objects.pop(key, None)
                    self._send(204)
                elif self.command == "PUT":
                    state.objects[key] = body
                    self._send(200, headers={"ETag": f'"{hashlib.md5(body).hexdigest()}"'})
                elif key not in state.objects:
                    self._error(404, "NoSuchKey")
                else:
                    data = state.objects[key]
                    self._send(200, data, {"ETag": f'"{hashlib.md5(data).hexdigest()}"'})

            do_GET = do_PUT = do_HEAD = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def settings(self) -> dict[str, Any]:
        """Dify's ARCHIVE_STORAGE_* settings pointing at this stub."""
        return {
            "ARCHIVE_STORAGE_ENABLED": True,
            "ARCHIVE_STORAGE_ENDPOINT": self.url,
            "ARCHIVE_STORAGE_ARCHIVE_BUCKET": self.state.bucket,
            "ARCHIVE_STORAGE_ACCESS_KEY": self.state.access_key,
            "ARCHIVE_STORAGE_SECRET_KEY": self.state.secret_key,
            "ARCHIVE_STORAGE_REGION": self.state.region,
        }

    def dify_storage_settings(self) -> dict[str, Any]:
        """Dify's main storage settings (STORAGE_TYPE=s3, S3_*) pointing at this stub."""
        return {
            "STORAGE_TYPE": "s3",
            "S3_ENDPOINT": self.url,
            "S3_BUCKET_NAME": self.state.bucket,
            "S3_ACCESS_KEY": self.state.access_key,
            "S3_SECRET_KEY": self.state.secret_key,
            "S3_REGION": self.state.region,
        }

    def __enter__(self) -> S3Stub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
