"""The real S3-protocol server scripts/test starts (moto's server mode, signatures checked): a fresh bucket per
test, the settings that point Dify's storage or the archive storage at it, and direct object access through boto3
(so a test sees the bucket as S3 has it, not as difymaint's own client does)."""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

_counter = itertools.count()


@dataclass
class S3Bucket:
    endpoint: str
    access_key: str
    secret_key: str
    name: str = ""
    region: str = "us-east-1"
    client: Any = field(default=None, repr=False)

    @classmethod
    def create(cls, endpoint: str, access_key: str, secret_key: str, region: str = "us-east-1") -> S3Bucket:
        import boto3

        bucket = cls(endpoint, access_key, secret_key, name=f"dm-{os.getpid()}-{next(_counter)}", region=region)
        bucket.client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            region_name="us-east-1",
        )
        bucket.client.create_bucket(Bucket=bucket.name)
        return bucket

    def archive_settings(self) -> dict[str, Any]:
        """Dify's ARCHIVE_STORAGE_* settings pointing at this bucket."""
        return {
            "ARCHIVE_STORAGE_ENABLED": True,
            "ARCHIVE_STORAGE_ENDPOINT": self.endpoint,
            "ARCHIVE_STORAGE_ARCHIVE_BUCKET": self.name,
            "ARCHIVE_STORAGE_ACCESS_KEY": self.access_key,
            "ARCHIVE_STORAGE_SECRET_KEY": self.secret_key,
            "ARCHIVE_STORAGE_REGION": self.region,
        }

    def dify_storage_settings(self) -> dict[str, Any]:
        """Dify's main storage settings (STORAGE_TYPE=s3, S3_*) pointing at this bucket."""
        return {
            "STORAGE_TYPE": "s3",
            "S3_ENDPOINT": self.endpoint,
            "S3_BUCKET_NAME": self.name,
            "S3_ACCESS_KEY": self.access_key,
            "S3_SECRET_KEY": self.secret_key,
            "S3_REGION": self.region,
            "S3_ADDRESS_STYLE": "path",
        }

    def env(self) -> dict[str, str]:
        """The same as environment variables, for the CLI."""
        return {key: str(value) for key, value in self.dify_storage_settings().items()}

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.name, Key=key, Body=data)

    def objects(self) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name):
            for item in page.get("Contents", []):
                found[item["Key"]] = self.client.get_object(Bucket=self.name, Key=item["Key"])["Body"].read()
        return found

    def stored_keys(self) -> set[str]:
        keys: set[str] = set()
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name):
            keys.update(item["Key"] for item in page.get("Contents", []))
        return keys

    def modified(self, key: str) -> datetime:
        moment: datetime = self.client.head_object(Bucket=self.name, Key=key)["LastModified"]
        return moment
