"""`--shard K/N`: N runs split one database's work by a stable hash of the app id, each under a lock of its own.

On the real PostgreSQL: the shards are disjoint and together cover exactly what one unsharded run covers; two
runs of the same shard exclude each other, different shards do not; the Indexed-Job manifests validate.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import kubernetes_validate
import pytest
import sqlalchemy as sa
import yaml

from difymaint.core.errors import UsageError
from difymaint.core.exit_codes import ExitCode
from difymaint.dify import tables as t
from difymaint.engine.shard import Shard, parse_shard, shard_of, shard_predicate
from tests.conftest import NOW
from tests.scenario import remaining_messages, seed
from tests.test_cli import invoke_assert_code, run_cli

K8S_VERSION = "1.31"


@pytest.mark.parametrize(("raw", "shard"), [("0/1", Shard(0, 1)), ("3/4", Shard(3, 4)), (" 1 / 2 ", Shard(1, 2))])
def test_parse_shard(raw: str, shard: Shard) -> None:
    assert parse_shard(raw) == shard


@pytest.mark.parametrize("raw", ["", "1", "2/2", "-1/2", "0/0", "a/b", "0/2000", "1/2/3", "0.5/2"])
def test_parse_shard_refuses(raw: str) -> None:
    with pytest.raises(UsageError, match="K/N"):
        parse_shard(raw)


@pytest.mark.postgres
def test_database_and_python_agree_on_every_ids_shard(db_engine: Any) -> None:
    ids = [str(uuid.uuid4()) for _ in range(300)]
    column = sa.column("id", sa.Uuid(as_uuid=False))
    if db_engine.dialect.name == "mysql":  # no VALUES list as a table on MySQL 8.0 and MariaDB alike
        values = sa.union_all(*(sa.select(sa.literal(value).label("id")) for value in ids)).subquery("ids")
        rows = sa.select(values.c.id)
        column = values.c.id
    else:
        rows = sa.select(column).select_from(sa.values(column, name="ids").data([(value,) for value in ids]))
    with db_engine.connect() as conn:
        for k in range(3):
            found = {str(row[0]) for row in conn.execute(rows.where(shard_predicate(column, Shard(k, 3))))}
            assert found == {value for value in ids if shard_of(value, 3) == k}
            assert 60 < len(found) < 140  # a hash, not a partition by prefix


@pytest.mark.postgres
def test_two_shards_delete_exactly_what_one_run_would(db_engine: Any, db_url: str) -> None:
    seed(db_engine, NOW, per_tenant=30)
    env = {"DIFYMAINT_DATABASE_URL": db_url, "SANDBOX_EXPIRED_RECORDS_CLEAN_BATCH_MAX_INTERVAL": "0"}
    base = ["clean-messages", "--json", "--batch-size", "7"]

    def tables(args: list[str]) -> dict[str, int]:
        result = run_cli([*base, *args], env=env)
        assert result.returncode == 0, result.stderr
        summary: dict[str, Any] = json.loads(result.stdout)
        return summary["tables"]

    whole = tables(["--dry-run"])
    shards = [tables(["--dry-run", "--shard", f"{k}/2"]) for k in range(2)]
    assert whole["messages"] > 0 and all(shard["messages"] > 0 for shard in shards)
    assert {name: shards[0][name] + shards[1][name] for name in whole} == whole  # disjoint, and they cover it

    with db_engine.connect() as conn:
        apps = {str(r.id): str(r.app_id) for r in conn.execute(sa.select(t.messages.c.id, t.messages.c.app_id))}
    before = remaining_messages(db_engine)
    deleted_by_first = tables(["--yes", "--shard", "0/2"])
    gone = before - remaining_messages(db_engine)
    assert len(gone) == deleted_by_first["messages"] and {shard_of(apps[m], 2) for m in gone} == {0}
    tables(["--yes", "--shard", "1/2"])
    assert tables(["--dry-run"])["messages"] == 0  # nothing left that one unsharded run would delete
    assert len(before - remaining_messages(db_engine)) == whole["messages"]


@pytest.mark.postgres
def test_each_shard_has_its_own_lock(pg_engine: Any, pg_url: str, redis_url: str) -> None:
    import redis

    seed(pg_engine, NOW)
    client = redis.Redis.from_url(redis_url)
    client.set("retention:clean_messages:shard-0-of-2", "another pod", ex=60)
    env = {"DIFYMAINT_DATABASE_URL": pg_url, "DIFYMAINT_REDIS_URL": redis_url}
    same = run_cli(["clean-messages", "--yes", "--json", "--shard", "0/2"], env=env)
    assert same.returncode == ExitCode.SKIPPED_LOCKED, same.stderr
    other = run_cli(["clean-messages", "--yes", "--json", "--shard", "1/2"], env=env)
    assert other.returncode == 0, other.stderr
    client.close()


def test_shard_needs_postgresql_and_a_valid_form(sqlite_url: str) -> None:
    result = invoke_assert_code(["clean-workflow-runs", "--dry-run", "--database-url", sqlite_url, "--shard", "0/2"], 2)
    assert "needs PostgreSQL or MySQL" in result.stderr
    result = invoke_assert_code(["clean-workflow-logs", "--dry-run", "--database-url", sqlite_url, "--shard", "2/2"], 2)
    assert "K/N" in result.stderr
    # only the jobs that can split their work take it
    invoke_assert_code(["clean-embeddings", "--dry-run", "--database-url", sqlite_url, "--shard", "0/2"], 2)


@pytest.mark.slow
def test_indexed_cronjobs_for_the_shardable_jobs() -> None:
    result = invoke_assert_code(["schedule", "render", "--format", "k8s", "--shards", "3"], 0)
    docs = {doc["metadata"]["name"]: doc for doc in yaml.safe_load_all(result.stdout) if doc}
    for name, doc in docs.items():
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        spec = doc["spec"]["jobTemplate"]["spec"]
        (container,) = spec["template"]["spec"]["containers"]
        sharded = any(job in name for job in ("clean-messages", "clean-workflow-runs", "clean-workflow-logs"))
        if sharded:
            assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"] == 3
            assert "--shard=$(JOB_COMPLETION_INDEX)/3" in container["args"]
        else:
            assert "completionMode" not in spec and not any(a.startswith("--shard") for a in container["args"])
    assert sum("completionMode" in doc["spec"]["jobTemplate"]["spec"] for doc in docs.values()) == 3
    invoke_assert_code(["schedule", "render", "--format", "crontab", "--shards", "2"], 2)
