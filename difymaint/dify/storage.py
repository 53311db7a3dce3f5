"""Dify's file storage and the workflow-run archive storage, through Apache OpenDAL (``opendal``).

Dify itself serves its default storage with OpenDAL, so the same library with the same option names reads
the same bytes. One :class:`Storage` class covers every backend difymaint supports; what differs is only how
Dify's settings become an OpenDAL operator (docs/jobs/storage-report.md#storage-backends):

* ``STORAGE_TYPE=opendal``: scheme ``OPENDAL_SCHEME`` (``fs`` by default), options from every
  ``OPENDAL_<SCHEME>_<OPTION>`` variable (``OPENDAL_FS_ROOT`` → ``root``), as Dify builds them;
* ``STORAGE_TYPE=local`` (deprecated in Dify): ``fs`` rooted at ``STORAGE_LOCAL_PATH``;
* ``STORAGE_TYPE=s3``: OpenDAL's ``s3`` with ``S3_ENDPOINT``, ``S3_BUCKET_NAME``, ``S3_ACCESS_KEY``,
  ``S3_SECRET_KEY``, ``S3_REGION``, ``S3_ADDRESS_STYLE``; with ``S3_USE_AWS_MANAGED_IAM`` the credentials (and
  endpoint) come from the AWS environment chain, and ``S3_ENDPOINT`` is ignored, as in Dify.

The other backends Dify ships are refused with one line naming them (exit 2): difymaint has no server to test
them against here, and a storage sweep must not run on a backend nobody has seen it work on.

Listings are in key order and resumable (``start_after``): natively where the service supports it (S3), by a
sorted directory walk elsewhere (fs), so a cursor saved by one run means the same position in the next.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import opendal
from opendal import exceptions as odx
from opendal import layers

from difymaint.core.errors import ConfigError, DifymaintError
from difymaint.core.settings import OPENDAL_PREFIX, Settings

# Dify's STORAGE_TYPE values (api/configs/middleware/__init__.py); the ones difymaint serves come first.
SUPPORTED_TYPES = ("opendal", "local", "s3")
REFUSED_TYPES = (
    "azure-blob",
    "google-storage",
    "aliyun-oss",
    "tencent-cos",
    "huawei-obs",
    "volcengine-tos",
    "oci-storage",
    "baidu-obs",
    "supabase",
    "clickzetta-volume",
)
SUPPORTED_OPENDAL_SCHEMES = ("fs", "s3")
ARCHIVE_S3_SETTINGS = (
    "ARCHIVE_STORAGE_ENDPOINT",
    "ARCHIVE_STORAGE_ARCHIVE_BUCKET",
    "ARCHIVE_STORAGE_ACCESS_KEY",
    "ARCHIVE_STORAGE_SECRET_KEY",
)
LIST_PAGE = 1000  # entries per listing request where the service pages (S3's maximum)


class StorageError(DifymaintError):
    """The storage refused or failed a request."""

    reference = "storage"


class ObjectNotFound(StorageError):
    reference = "storage-object-missing"


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    last_modified: datetime | None  # aware UTC; None when the service does not say


def check_key(key: str) -> str:
    """Refuse keys that could leave the storage's root or name a directory: every key difymaint reads, writes
    or deletes is a plain relative path (Dify's keys always are)."""
    parts = key.split("/")
    if not key or key.startswith("/") or "\\" in key or any(part in ("", ".", "..") for part in parts):
        raise StorageError(f"invalid object key {key!r}")
    return key


def _fail(exc: Exception, what: str) -> StorageError:
    """One line from an OpenDAL error (its text has a multi-line context block we do not want)."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    cls = ObjectNotFound if isinstance(exc, odx.NotFound) else StorageError
    return cls(f"storage {what} failed: {first}")


class Storage:
    """A bucket or directory through one OpenDAL operator.

    ``description`` names it for logs and questions (never a secret); ``identity`` is a stable name of the same
    place (scheme, endpoint, bucket or root), under which a run's listing cursor is saved.
    """

    def __init__(
        self,
        operator: opendal.Operator,
        *,
        scheme: str,
        description: str,
        identity: str,
        fs_root: Path | None = None,
        create_root: bool = False,
    ) -> None:
        self.operator = operator
        self.scheme = scheme
        self.description = description
        self.identity = identity
        self.fs_root = fs_root
        self.create_root = create_root
        self.native_order = operator.capability().list_with_start_after

    # --- set-up ---------------------------------------------------------------------------------------------

    def check(self) -> None:
        """Fail early (ConfigError) when the storage cannot be used: a directory that is not there (never
        created here unless this is an archive being written), a bucket that does not exist, bad credentials."""
        if self.fs_root is not None:
            if not self.fs_root.is_dir():
                raise ConfigError(f"the storage directory {self.fs_root} does not exist (not mounted here?)")
            if self.create_root and not os.access(self.fs_root, os.W_OK | os.X_OK):
                raise ConfigError(f"the directory {self.fs_root} is not writable")
            return
        try:
            for _ in self.operator.list("", limit=1):
                break
        except odx.NotFound as exc:
            raise ConfigError(f"{self.description}: the bucket does not exist ({_fail(exc, 'list').message})") from None
        except odx.PermissionDenied:
            raise ConfigError(f"{self.description}: access denied (check the access key, secret and region)") from None
        except Exception as exc:  # network errors, TLS, a bad endpoint: OpenDAL raises its own classes
            raise ConfigError(f"{self.description}: {_fail(exc, 'list').message}") from None

    def close(self) -> None:
        return None  # the operator holds no connection that outlives a request

    # --- objects --------------------------------------------------------------------------------------------

    def put(self, key: str, data: bytes) -> None:
        """Write the object; on services that return a plain MD5 ETag, check it against the bytes sent."""
        check_key(key)
        try:
            self.operator.write(key, data)
            meta = self.operator.stat(key)
        except Exception as exc:
            raise _fail(exc, f"write {key}") from None
        if meta.content_length != len(data):
            raise StorageError(f"storage write {key}: stored {meta.content_length} bytes of {len(data)}")
        etag = (meta.etag or "").strip('"')
        expected = hashlib.md5(data).hexdigest()  # integrity, not security
        if len(etag) == 32 and all(c in "0123456789abcdef" for c in etag) and etag != expected:
            raise StorageError(f"storage write {key}: ETag {etag} does not match MD5 {expected}")

    def get(self, key: str) -> bytes:
        """The object's bytes; raises :class:`ObjectNotFound`."""
        check_key(key)
        try:
            return bytes(self.operator.read(key))
        except Exception as exc:
            raise _fail(exc, f"read {key}") from None

    def stat(self, key: str) -> ObjectInfo | None:
        """Size and last-modified time, or None when there is no such object."""
        check_key(key)
        try:
            meta = self.operator.stat(key)
        except odx.NotFound:
            return None
        except Exception as exc:
            raise _fail(exc, f"stat {key}") from None
        if meta.is_dir:
            return None
        return ObjectInfo(key, int(meta.content_length), _utc(meta.last_modified))

    def exists(self, key: str) -> bool:
        return self.stat(key) is not None

    def delete(self, key: str) -> None:
        """Remove the object; a missing one is not an error."""
        check_key(key)
        try:
            self.operator.delete(key)
        except odx.NotFound:
            return
        except Exception as exc:
            raise _fail(exc, f"delete {key}") from None

    def list(self, prefix: str, *, start_after: str | None = None) -> Iterator[ObjectInfo]:
        """Every object under ``prefix`` (which ends in ``/``), in key order, after ``start_after`` when given.

        Directory entries are not objects and are skipped (an S3 "folder" marker included)."""
        if not prefix.endswith("/"):
            raise StorageError(f"listing prefix {prefix!r} must end with '/'")
        if start_after is not None and not start_after.startswith(prefix) and start_after >= prefix:
            return  # the cursor is past everything under this prefix
        try:
            if self.native_order:
                yield from self._list_native(prefix, start_after)
            else:
                yield from self._walk(prefix, start_after)
        except StorageError:
            raise
        except Exception as exc:
            raise _fail(exc, f"list {prefix}") from None

    def _list_native(self, prefix: str, start_after: str | None) -> Iterator[ObjectInfo]:
        after = start_after if start_after is not None and start_after > prefix else None
        for entry in self.operator.list(prefix, recursive=True, start_after=after, limit=LIST_PAGE):
            if entry.path.endswith("/"):
                continue
            yield self._info(entry)

    def _walk(self, directory: str, start_after: str | None) -> Iterator[ObjectInfo]:
        """Depth first, each directory's entries sorted by their path (a directory's with its trailing
        ``/``): that visits the keys in exactly their byte order, so ``start_after`` can prune whole
        subtrees that lie before it."""
        try:
            entries = sorted(
                (e for e in self.operator.list(directory) if e.path != directory), key=lambda e: e.path.encode()
            )
        except odx.NotFound:
            return
        for entry in entries:
            path = entry.path
            if path.endswith("/"):
                if start_after is not None and path < start_after and not start_after.startswith(path):
                    continue  # every key below sorts before the cursor
                yield from self._walk(path, start_after)
            elif start_after is None or path > start_after:
                yield self._info(entry)

    def _info(self, entry: Any) -> ObjectInfo:
        meta = entry.metadata
        modified = _utc(meta.last_modified)
        if modified is None:  # older bindings list without metadata: ask for it
            found = self.stat(entry.path)
            if found is not None:
                return found
        return ObjectInfo(entry.path, int(meta.content_length), modified)


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _operator(scheme: str, timeout_s: float, **options: str) -> opendal.Operator:
    try:
        operator = opendal.Operator(scheme, **options)
    except Exception as exc:
        raise ConfigError(f"cannot configure OpenDAL {scheme} storage: {_fail(exc, 'set-up').message}") from None
    # Dify retries 3 times with backoff; the timeout keeps a stalled connection from hanging a run.
    operator = operator.layer(layers.RetryLayer(max_times=3, factor=2.0, jitter=True, min_delay=0.2, max_delay=10.0))
    return operator.layer(layers.TimeoutLayer(timeout=timeout_s, io_timeout=timeout_s))


def fs_storage(root: Path | str, *, timeout_s: float = 60.0, create: bool = False, label: str = "") -> Storage:
    """A directory (OpenDAL ``fs``). ``create``: make a missing root (archives being written); otherwise a
    missing root is a ConfigError, never silently created."""
    path = Path(root).absolute()
    # OpenDAL's fs service creates a missing root as it starts: look first, so that a mistyped or unmounted
    # path is an error here, never an empty directory that makes every file look missing.
    if create:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create the directory {path}: {exc.strerror}") from None
    elif not path.is_dir():
        raise ConfigError(f"the storage directory {path} does not exist (not mounted here?)")
    return Storage(
        _operator("fs", timeout_s, root=str(path)),
        scheme="fs",
        description=f"directory {path}{label}",
        identity=f"fs:{path}",
        fs_root=path,
        create_root=create,
    )


def s3_storage(
    *,
    bucket: str,
    endpoint: str | None,
    region: str | None,
    access_key: str | None,
    secret_key: str | None,
    address_style: str = "auto",
    ambient_credentials: bool = False,
    timeout_s: float = 60.0,
    setting: str = "S3_ENDPOINT",
) -> Storage:
    """An S3 bucket (OpenDAL ``s3``). ``ambient_credentials``: keys (and endpoint) from the AWS environment
    chain (AWS_* variables, web identity, instance metadata), as boto3 finds them for Dify's IAM mode."""
    options: dict[str, str] = {"bucket": bucket, "region": region or "us-east-1"}
    if endpoint:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"{setting} {endpoint!r} is not an http(s) URL (e.g. https://s3.amazonaws.com)")
        options["endpoint"] = endpoint.rstrip("/")
    if not ambient_credentials:
        options.update(disable_config_load="true", disable_ec2_metadata="true")
        if access_key and secret_key:
            options.update(access_key_id=access_key, secret_access_key=secret_key)
        else:
            options["allow_anonymous"] = "true"
    # In the AWS-chain mode the endpoint may come from the environment too (AWS_ENDPOINT_URL[_S3], as boto3).
    ambient = (
        (os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")) if ambient_credentials else None
    )
    if _virtual_host(address_style, endpoint or ambient):
        options["enable_virtual_host_style"] = "true"
    where = endpoint or "AWS"
    return Storage(
        _operator("s3", timeout_s, **options),
        scheme="s3",
        description=f"s3://{bucket} at {where}",
        identity=f"s3:{where}/{bucket}",
    )


def _virtual_host(style: str, endpoint: str | None) -> bool:
    """boto3's addressing: ``virtual`` and ``path`` as said; ``auto`` is virtual-hosted on AWS itself and path
    style on any other endpoint (MinIO, Ceph, … serve path style; docs/jobs/storage-report.md#s3)."""
    if style == "virtual":
        return True
    if style == "path":
        return False
    host = urlsplit(endpoint).hostname or "" if endpoint else "amazonaws.com"
    return host == "amazonaws.com" or host.endswith(".amazonaws.com")


def dify_storage(settings: Settings) -> Storage:
    """Dify's file storage from its STORAGE_TYPE settings; ConfigError (exit 2, one line) for a type difymaint
    does not know or does not serve, or incomplete settings. Call :meth:`Storage.check` before relying on it."""
    kind = settings.STORAGE_TYPE.strip().lower()
    timeout = settings.DIFYMAINT_STORAGE_TIMEOUT
    if kind == "local":
        return fs_storage(settings.STORAGE_LOCAL_PATH, timeout_s=timeout, label=" (STORAGE_TYPE=local)")
    if kind == "opendal":
        return _opendal_storage(settings, timeout)
    if kind == "s3":
        if not settings.S3_BUCKET_NAME:
            raise ConfigError("STORAGE_TYPE=s3 needs S3_BUCKET_NAME")
        iam = settings.S3_USE_AWS_MANAGED_IAM
        secret = settings.S3_SECRET_KEY.get_secret_value() if settings.S3_SECRET_KEY is not None else None
        return s3_storage(
            bucket=settings.S3_BUCKET_NAME,
            endpoint=None if iam else settings.S3_ENDPOINT,  # Dify's IAM mode ignores S3_ENDPOINT
            region=settings.S3_REGION,
            access_key=settings.S3_ACCESS_KEY,
            secret_key=secret,
            address_style=settings.S3_ADDRESS_STYLE,
            ambient_credentials=iam,
            timeout_s=timeout,
        )
    if kind in REFUSED_TYPES:
        raise ConfigError(
            f"STORAGE_TYPE={kind} is not supported by difymaint (untested here; supported: opendal with "
            f"OPENDAL_SCHEME fs or s3, local, s3; see docs/jobs/storage-report.md#storage-backends)"
        )
    raise ConfigError(
        f"unknown STORAGE_TYPE={settings.STORAGE_TYPE!r} (Dify's values: {', '.join(SUPPORTED_TYPES + REFUSED_TYPES)})"
    )


def opendal_scheme_options(settings: Settings, scheme: str) -> dict[str, str]:
    """Dify's rule: every ``OPENDAL_<SCHEME>_<NAME>`` variable is the operator option ``<name>``."""
    prefix = f"{OPENDAL_PREFIX}{scheme.upper()}_"
    found = settings.opendal_options.items()
    return {name[len(prefix) :].lower(): value for name, value in found if name.startswith(prefix)}


def _opendal_storage(settings: Settings, timeout: float) -> Storage:
    scheme = settings.OPENDAL_SCHEME.strip().lower()
    options = opendal_scheme_options(settings, scheme)
    if scheme == "fs":
        options.pop("root", None)
        if options:
            raise ConfigError(f"OPENDAL_FS_* options other than OPENDAL_FS_ROOT are not supported: {sorted(options)}")
        return fs_storage(settings.OPENDAL_FS_ROOT, timeout_s=timeout, label=" (OPENDAL_SCHEME=fs)")
    if scheme == "s3":
        if not options.get("bucket"):
            raise ConfigError("OPENDAL_SCHEME=s3 needs OPENDAL_S3_BUCKET")
        where = options.get("endpoint") or "AWS"
        root = options.get("root", "").strip("/")
        return Storage(
            _operator("s3", timeout, **options),
            scheme="s3",
            description=f"s3://{options['bucket']}/{root} at {where} (OPENDAL_SCHEME=s3)".replace("/ at", " at"),
            identity=f"s3:{where}/{options['bucket']}/{root}",
        )
    raise ConfigError(
        f"OPENDAL_SCHEME={scheme} is not supported by difymaint (untested here; supported: "
        f"{', '.join(SUPPORTED_OPENDAL_SCHEMES)}; see docs/jobs/storage-report.md#storage-backends)"
    )


def archive_store(settings: Settings, archive_dir: Path | None = None, *, writing: bool = True) -> Storage:
    """The workflow-run archive destination: ``archive_dir`` (or DIFYMAINT_ARCHIVE_DIR), else Dify's
    ARCHIVE_STORAGE_* S3. ``writing=False`` (a restore): a local directory must already exist."""
    directory = archive_dir or settings.DIFYMAINT_ARCHIVE_DIR
    timeout = settings.DIFYMAINT_ARCHIVE_STORAGE_TIMEOUT
    if directory is not None:
        if not writing and not Path(directory).is_dir():
            raise ConfigError(f"the archive directory {directory} does not exist")
        return fs_storage(directory, timeout_s=timeout, create=writing)
    present = [name for name in ARCHIVE_S3_SETTINGS if getattr(settings, name)]
    if not present:
        raise ConfigError(
            "no archive destination configured",
            hint="pass --archive-dir PATH (or set DIFYMAINT_ARCHIVE_DIR), or set Dify's "
            + ", ".join(ARCHIVE_S3_SETTINGS),
        )
    missing = [name for name in ARCHIVE_S3_SETTINGS if name not in present]
    if missing:
        raise ConfigError(f"S3 archive storage is incomplete: {', '.join(missing)} not set")
    secret = settings.ARCHIVE_STORAGE_SECRET_KEY
    return s3_storage(
        bucket=str(settings.ARCHIVE_STORAGE_ARCHIVE_BUCKET),
        endpoint=str(settings.ARCHIVE_STORAGE_ENDPOINT),
        region=settings.ARCHIVE_STORAGE_REGION,
        access_key=settings.ARCHIVE_STORAGE_ACCESS_KEY,
        secret_key=secret.get_secret_value() if secret is not None else None,
        address_style="path",  # Dify's archive client is path-style
        timeout_s=timeout,
        setting="ARCHIVE_STORAGE_ENDPOINT",
    )
