"""Dify's storage settings through OpenDAL, against a real directory and the real S3 server: each STORAGE_TYPE
difymaint serves, ordered resumable listings, deletes of missing objects, and the one-line refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from difymaint.core.errors import ConfigError
from difymaint.core.settings import load_settings
from difymaint.dify.storage import Storage, dify_storage, opendal_scheme_options
from tests.conftest import make_settings
from tests.s3_server import S3Bucket

KEYS = [
    "image_files/t/a.png",
    "privkeys/t/private.pem",
    "tools/t/0af.bin",
    "upload_files.txt",
    "upload_files/t-2/x.png",
    "upload_files/t/a.b/c.png",
    "upload_files/t/a/c.png",
    "upload_files/t/a0.png",
    "upload_files/t/b.png",
    "upload_files_backup/t/z.png",
]


def fill(storage: Storage) -> None:
    for key in KEYS:
        storage.put(key, key.encode())


def check_listing(storage: Storage) -> None:
    under = sorted(k for k in KEYS if k.startswith("upload_files/"))
    assert [o.key for o in storage.list("upload_files/")] == under  # byte order, nothing outside the prefix
    assert all(o.size == len(o.key) and o.last_modified is not None for o in storage.list("upload_files/"))
    for index, cursor in enumerate(under):
        assert [o.key for o in storage.list("upload_files/", start_after=cursor)] == under[index + 1 :]
    assert [o.key for o in storage.list("upload_files/", start_after="image_files/z")] == under
    assert list(storage.list("upload_files/", start_after="zzz")) == []
    assert list(storage.list("missing/")) == []
    info = storage.stat("upload_files/t/b.png")
    assert info is not None and info.size == len("upload_files/t/b.png")
    assert storage.stat("upload_files/t/nope.png") is None
    storage.delete("upload_files/t/b.png")
    storage.delete("upload_files/t/b.png")  # a missing object is not an error
    assert storage.stat("upload_files/t/b.png") is None


def test_opendal_fs_and_local(tmp_path: Path) -> None:
    root = tmp_path / "storage"
    root.mkdir()
    storage = dify_storage(make_settings(STORAGE_TYPE="opendal", OPENDAL_SCHEME="fs", OPENDAL_FS_ROOT=str(root)))
    storage.check()
    fill(storage)
    check_listing(storage)
    local = dify_storage(make_settings(STORAGE_TYPE="local", STORAGE_LOCAL_PATH=str(root)))
    assert local.get("privkeys/t/private.pem") == b"privkeys/t/private.pem"
    with pytest.raises(ConfigError, match="not mounted"):
        dify_storage(make_settings(STORAGE_TYPE="opendal", OPENDAL_FS_ROOT=str(tmp_path / "typo")))
    assert not (tmp_path / "typo").exists()  # never created


def test_s3(s3_bucket: S3Bucket) -> None:
    storage = dify_storage(make_settings(**s3_bucket.dify_storage_settings()))
    storage.check()
    fill(storage)
    check_listing(storage)
    assert s3_bucket.name in storage.description and s3_bucket.secret_key not in storage.description


def test_opendal_s3_takes_difys_option_variables(
    s3_bucket: S3Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OPENDAL_S3_<OPTION> → option <option>, the process environment over the env file (Dify's rule)."""
    env_file = tmp_path / ".env"
    env_file.write_text(
        "STORAGE_TYPE=opendal\nOPENDAL_SCHEME=s3\n"
        f"OPENDAL_S3_BUCKET=wrong-bucket\nOPENDAL_S3_ENDPOINT={s3_bucket.endpoint}\nOPENDAL_S3_REGION=us-east-1\n"
        f"OPENDAL_S3_ACCESS_KEY_ID={s3_bucket.access_key}\nOPENDAL_S3_SECRET_ACCESS_KEY={s3_bucket.secret_key}\n"
        "OPENDAL_S3_ROOT=\n"
    )
    monkeypatch.setenv("OPENDAL_S3_BUCKET", s3_bucket.name)
    settings = load_settings(env_file, {})
    assert opendal_scheme_options(settings, "s3")["bucket"] == s3_bucket.name
    assert "root" not in opendal_scheme_options(settings, "s3")  # empty = unset
    assert s3_bucket.secret_key in settings.secret_values()
    storage = dify_storage(settings)
    storage.check()
    fill(storage)
    check_listing(storage)
    assert s3_bucket.stored_keys() >= {"privkeys/t/private.pem"}


def test_s3_managed_iam_takes_the_aws_environment(s3_bucket: S3Bucket, monkeypatch: pytest.MonkeyPatch) -> None:
    """S3_USE_AWS_MANAGED_IAM: keys and endpoint from the AWS chain (here its variables), S3_ENDPOINT ignored."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_bucket.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_bucket.secret_key)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_bucket.endpoint)
    settings = make_settings(
        STORAGE_TYPE="s3",
        S3_USE_AWS_MANAGED_IAM=True,
        S3_BUCKET_NAME=s3_bucket.name,
        S3_ENDPOINT="http://127.0.0.1:1",  # ignored in this mode, as in Dify
        S3_REGION="us-east-1",
    )
    storage = dify_storage(settings)
    storage.put("upload_files/t/iam.png", b"x")
    assert s3_bucket.stored_keys() == {"upload_files/t/iam.png"}


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"STORAGE_TYPE": "minio"}, "unknown STORAGE_TYPE='minio'"),
        ({"STORAGE_TYPE": "azure-blob"}, "STORAGE_TYPE=azure-blob is not supported by difymaint"),
        ({"STORAGE_TYPE": "google-storage"}, "STORAGE_TYPE=google-storage is not supported"),
        ({"STORAGE_TYPE": "opendal", "OPENDAL_SCHEME": "azblob"}, "OPENDAL_SCHEME=azblob is not supported"),
        ({"STORAGE_TYPE": "s3"}, "STORAGE_TYPE=s3 needs S3_BUCKET_NAME"),
        ({"STORAGE_TYPE": "s3", "S3_BUCKET_NAME": "b", "S3_ENDPOINT": "ftp://x"}, "is not an http"),
    ],
)
def test_refusals_are_one_line(settings: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        dify_storage(make_settings(**settings))
    assert message in refused.value.message and "\n" not in refused.value.message and refused.value.hint is None
