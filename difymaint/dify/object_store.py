"""Where workflow-run archives go: a local directory, or S3-compatible storage (Dify's ARCHIVE_STORAGE_*).

Both stores have the same tiny interface (:class:`ObjectStore`: put / get / exists, plus a start-up check).
The S3 client is a few dozen lines of AWS Signature Version 4 over httpx, path-style like Dify's boto3 client
(``{endpoint}/{bucket}/{key}``), with ``Content-MD5`` on every PUT so the server rejects a corrupted upload.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol
from urllib.parse import quote

import httpx

from difymaint.core.errors import ConfigError, DifymaintError
from difymaint.core.settings import Settings

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
S3_SETTINGS = (
    "ARCHIVE_STORAGE_ENDPOINT",
    "ARCHIVE_STORAGE_ARCHIVE_BUCKET",
    "ARCHIVE_STORAGE_ACCESS_KEY",
    "ARCHIVE_STORAGE_SECRET_KEY",
)


class ArchiveStorageError(DifymaintError):
    """The archive storage refused or failed a request."""

    reference = "archive-storage"


class ObjectNotFound(ArchiveStorageError):
    reference = "archive-object-missing"


class ObjectStore(Protocol):
    @property
    def description(self) -> str:
        """Where the objects go, for logs and questions (no secrets)."""

    def check(self) -> None:
        """Fail early (ConfigError) when the store cannot be used."""

    def put(self, key: str, data: bytes) -> None: ...

    def get(self, key: str) -> bytes:
        """The object's bytes; raises :class:`ObjectNotFound`."""

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None:
        """Remove the object; a missing one is not an error."""

    def close(self) -> None: ...


def content_md5(data: bytes) -> str:
    """The ``Content-MD5`` header value: base64 of the binary MD5 digest."""
    return base64.b64encode(hashlib.md5(data).digest()).decode()  # integrity, not security


# --- a local directory -------------------------------------------------------------------------------------


class LocalDirStore:
    """Objects as files under ``root``; the key's ``/`` separators become directories.

    ``create``: :meth:`check` creates a missing root (archiving); otherwise a missing root is an error
    (restoring from a mistyped path must not look like "every archive is missing").
    """

    def __init__(self, root: Path, *, create: bool = True) -> None:
        self.root = root
        self.create = create

    @property
    def description(self) -> str:
        return f"directory {self.root}"

    def path(self, key: str) -> Path:
        parts = key.split("/")
        if not key or key.startswith("/") or "\\" in key or any(part in ("", ".", "..") for part in parts):
            raise ArchiveStorageError(f"invalid object key {key!r}")
        return self.root.joinpath(*parts)

    def check(self) -> None:
        if not self.create:
            if not self.root.is_dir():
                raise ConfigError(f"the archive directory {self.root} does not exist")
            return
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create the archive directory {self.root}: {exc.strerror}") from None
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise ConfigError(f"the archive directory {self.root} is not writable")

    def put(self, key: str, data: bytes) -> None:
        path = self.path(key)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(temporary, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)  # readers never see a half-written archive
        except OSError as exc:
            temporary.unlink(missing_ok=True)
            raise ArchiveStorageError(f"cannot write {path}: {exc.strerror}") from None

    def get(self, key: str) -> bytes:
        path = self.path(key)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise ObjectNotFound(f"archive object not found: {path}") from None
        except OSError as exc:
            raise ArchiveStorageError(f"cannot read {path}: {exc.strerror}") from None

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def delete(self, key: str) -> None:
        """Remove the object; a missing one is fine (S3 semantics)."""
        try:
            self.path(key).unlink(missing_ok=True)
        except OSError as exc:
            raise ArchiveStorageError(f"cannot delete {self.path(key)}: {exc.strerror}") from None

    def close(self) -> None:
        return None


# --- S3-compatible storage (AWS Signature Version 4) ---------------------------------------------------------


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode(), hashlib.sha256).digest()


@dataclass(frozen=True)
class SigV4Signer:
    """Signs a request with AWS Signature Version 4 (header-based, for S3 and S3-compatible stores)."""

    access_key: str
    secret_key: str
    region: str
    service: str = "s3"

    def headers(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str],
        *,
        payload_sha256: str,
        now: datetime,
        query: Sequence[tuple[str, str]] = (),
    ) -> dict[str, str]:
        """``headers`` (which must hold ``host``) plus ``x-amz-date``, ``x-amz-content-sha256`` and
        ``authorization``. ``path`` is the already URI-encoded request path (S3 encodes it once)."""
        moment = now.astimezone(UTC)
        amz_date, day = moment.strftime("%Y%m%dT%H%M%SZ"), moment.strftime("%Y%m%d")
        signed = {name.lower(): " ".join(value.strip().split()) for name, value in headers.items()}
        signed.update({"x-amz-date": amz_date, "x-amz-content-sha256": payload_sha256})
        names = sorted(signed)
        canonical_query = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(query))
        canonical_request = "\n".join(
            [
                method.upper(),
                path,
                canonical_query,
                "".join(f"{name}:{signed[name]}\n" for name in names),
                ";".join(names),
                payload_sha256,
            ]
        )
        scope = f"{day}/{self.region}/{self.service}/aws4_request"
        string_to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, _sha256_hex(canonical_request.encode())])
        key = _hmac(("AWS4" + self.secret_key).encode(), day)
        for part in (self.region, self.service, "aws4_request"):
            key = _hmac(key, part)
        signature = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
        signed["authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={self.access_key}/{scope}, SignedHeaders={';'.join(names)}, "
            f"Signature={signature}"
        )
        return signed


class S3Store:
    """Path-style S3 requests (``{endpoint}/{bucket}/{key}``), as Dify's archive storage client makes them."""

    def __init__(
        self,
        endpoint: str,
        bucket: str,
        access_key: str,
        secret_key: str,
        *,
        region: str = "auto",
        timeout_s: float = 60.0,
        now: Callable[[], datetime] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.endpoint = httpx.URL(endpoint.rstrip("/"))
        if self.endpoint.scheme not in ("http", "https") or not self.endpoint.host:
            raise ConfigError(
                f"ARCHIVE_STORAGE_ENDPOINT {endpoint!r} is not an http(s) URL", hint="e.g. https://s3.amazonaws.com"
            )
        self.bucket = bucket
        self.signer = SigV4Signer(access_key, secret_key, region or "us-east-1")
        self._now = now or (lambda: datetime.now(UTC))
        self._client = httpx.Client(timeout=timeout_s, transport=transport or httpx.HTTPTransport(retries=2))

    @property
    def description(self) -> str:
        return f"s3://{self.bucket} at {self.endpoint}"

    def _path(self, key: str | None) -> str:
        base = self.endpoint.path.rstrip("/")
        tail = self.bucket if key is None else f"{self.bucket}/{key}"
        return quote(f"{base}/{tail}", safe="/-_.~")

    def _request(
        self, method: str, key: str | None, body: bytes = b"", headers: Mapping[str, str] | None = None
    ) -> httpx.Response:
        path = self._path(key)
        host = self.endpoint.netloc.decode()
        signed = self.signer.headers(
            method, path, {"host": host, **(headers or {})}, payload_sha256=_sha256_hex(body), now=self._now()
        )
        url = self.endpoint.copy_with(raw_path=path.encode())
        where = f"{method} {self.bucket}/{key}" if key is not None else f"{method} bucket {self.bucket}"
        try:
            return self._client.request(method, url, content=body or None, headers=signed)
        except httpx.HTTPError as exc:
            raise ArchiveStorageError(f"archive storage {where} failed: {exc!r}") from None

    @staticmethod
    def _fail(response: httpx.Response, what: str) -> ArchiveStorageError:
        code = ""
        if b"<Code>" in response.content:
            code = response.content.split(b"<Code>", 1)[1].split(b"</Code>", 1)[0].decode(errors="replace")
        detail = f" ({code})" if code else ""
        return ArchiveStorageError(f"archive storage {what} answered HTTP {response.status_code}{detail}")

    def check(self) -> None:
        """Dify's start-up check (head_bucket): the bucket exists and the credentials may use it."""
        response = self._request("HEAD", None)
        if response.status_code == 404:
            raise ConfigError(f"archive bucket {self.bucket!r} does not exist at {self.endpoint}")
        if response.status_code == 403:
            raise ConfigError(
                f"access denied to archive bucket {self.bucket!r}",
                hint="check ARCHIVE_STORAGE_ACCESS_KEY / ARCHIVE_STORAGE_SECRET_KEY / ARCHIVE_STORAGE_REGION",
            )
        if response.status_code >= 300:
            raise self._fail(response, f"HEAD bucket {self.bucket}")

    def put(self, key: str, data: bytes) -> None:
        response = self._request("PUT", key, data, {"content-md5": content_md5(data)})
        if response.status_code >= 300:
            raise self._fail(response, f"PUT {key}")
        etag = response.headers.get("etag", "").strip('"')
        expected = hashlib.md5(data).hexdigest()  # integrity, not security
        if len(etag) == 32 and etag != expected:  # a plain (single-part, unencrypted) ETag is the MD5
            raise ArchiveStorageError(f"archive storage PUT {key}: ETag {etag} does not match MD5 {expected}")

    def get(self, key: str) -> bytes:
        response = self._request("GET", key)
        if response.status_code == 404:
            raise ObjectNotFound(f"archive object not found: {self.bucket}/{key}")
        if response.status_code >= 300:
            raise self._fail(response, f"GET {key}")
        return response.content

    def exists(self, key: str) -> bool:
        response = self._request("HEAD", key)
        if response.status_code == 404:
            return False
        if response.status_code >= 300:
            raise self._fail(response, f"HEAD {key}")
        return True

    def delete(self, key: str) -> None:
        """DELETE the object (S3 answers 204 whether or not it existed)."""
        response = self._request("DELETE", key)
        if response.status_code >= 300 and response.status_code != 404:
            raise self._fail(response, f"DELETE {key}")

    def close(self) -> None:
        self._client.close()


def archive_store(
    settings: Settings,
    archive_dir: Path | None = None,
    *,
    now: Callable[[], datetime] | None = None,
    writing: bool = True,
) -> ObjectStore:
    """The archive destination: ``archive_dir`` (or DIFYMAINT_ARCHIVE_DIR), else Dify's ARCHIVE_STORAGE_* S3.

    ``writing=False`` (a restore): a local directory must already exist.
    """
    directory = archive_dir or settings.DIFYMAINT_ARCHIVE_DIR
    if directory is not None:
        return LocalDirStore(directory, create=writing)
    present = [name for name in S3_SETTINGS if getattr(settings, name)]
    if not present:
        raise ConfigError(
            "no archive destination configured",
            hint="pass --archive-dir PATH (or set DIFYMAINT_ARCHIVE_DIR), or set Dify's " + ", ".join(S3_SETTINGS),
        )
    missing = [name for name in S3_SETTINGS if name not in present]
    if missing:
        raise ConfigError(f"S3 archive storage is incomplete: {', '.join(missing)} not set")
    secret = settings.ARCHIVE_STORAGE_SECRET_KEY
    return S3Store(
        str(settings.ARCHIVE_STORAGE_ENDPOINT),
        str(settings.ARCHIVE_STORAGE_ARCHIVE_BUCKET),
        str(settings.ARCHIVE_STORAGE_ACCESS_KEY),
        secret.get_secret_value() if secret is not None else "",
        region=settings.ARCHIVE_STORAGE_REGION,
        timeout_s=settings.DIFYMAINT_ARCHIVE_STORAGE_TIMEOUT,
        now=now,
    )


def dify_storage(settings: Settings) -> tuple[ObjectStore | None, str]:
    """Dify's own file storage (``STORAGE_TYPE``), where it can be reached from here, with a description.

    Supported: ``s3`` (S3_ENDPOINT, S3_BUCKET_NAME, S3_ACCESS_KEY, S3_SECRET_KEY, path-style) and the
    local file system (``opendal`` with OPENDAL_SCHEME=fs and OPENDAL_FS_ROOT, or the legacy ``local`` with
    STORAGE_LOCAL_PATH), which only works where that directory is mounted. Anything else returns None and the
    reason: the caller then lists the objects instead of deleting them.
    """
    kind = settings.STORAGE_TYPE.lower()
    if kind == "s3":
        secret = settings.S3_SECRET_KEY
        if not (settings.S3_ENDPOINT and settings.S3_BUCKET_NAME and settings.S3_ACCESS_KEY and secret):
            return None, "STORAGE_TYPE=s3 without S3_ENDPOINT, S3_BUCKET_NAME, S3_ACCESS_KEY and S3_SECRET_KEY"
        try:
            store = S3Store(
                settings.S3_ENDPOINT,
                settings.S3_BUCKET_NAME,
                settings.S3_ACCESS_KEY,
                secret.get_secret_value(),
                region=settings.S3_REGION,
                timeout_s=settings.DIFYMAINT_ARCHIVE_STORAGE_TIMEOUT,
            )
        except ConfigError as exc:
            return None, exc.message
        return store, store.description
    root = None
    if kind == "opendal" and settings.OPENDAL_SCHEME.lower() == "fs":
        root = settings.OPENDAL_FS_ROOT
    elif kind == "local":
        root = settings.STORAGE_LOCAL_PATH
    if root is None:
        return None, f"STORAGE_TYPE={settings.STORAGE_TYPE} is not supported by difymaint"
    local = LocalDirStore(Path(root), create=False)
    if not local.root.is_dir():
        return None, f"Dify's storage directory {root} is not mounted here"
    return local, local.description
