"""What is specific to Dify on MySQL (DB_TYPE=mysql), on the MariaDB 10.11 that scripts/test starts: Dify's
variables build Dify's URL, the session settings, the keyset inside one DATETIME second, the named lock, and
the one-line refusals (docs/mysql.md). The jobs' own fidelity tests run on both engines in their modules."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from difymaint.core.context import Context
from difymaint.core.database import create_engine, database_url
from difymaint.core.errors import ConfigError
from difymaint.core.locking import MYSQL_LOCK_NAME_MAX, MySQLNamedLock, mysql_lock_name
from difymaint.core.settings import load_settings
from difymaint.demo.builders import Builder, new_id
from difymaint.dify import tables as t
from difymaint.dify.cascades import MESSAGE_CASCADE_TABLES, MESSAGE_CHILDREN
from difymaint.engine.options import RunOptions
from difymaint.jobs import clean_embeddings, clean_messages, clean_workflow_runs
from difymaint.jobs.execute import run_job
from tests.conftest import NOW, make_context
from tests.scenario import child_rows_by_message, remaining_messages
from tests.test_cli import invoke_assert_code, run_cli


def dify_env(url: str, **extra: str) -> dict[str, str]:
    """Dify's own variables for the MariaDB database behind ``url`` (no DIFYMAINT_DATABASE_URL)."""
    parsed = make_url(url)
    return {
        "DB_TYPE": "mysql",
        "DB_HOST": str(parsed.host),
        "DB_PORT": str(parsed.port),
        "DB_USERNAME": str(parsed.username),
        "DB_PASSWORD": parsed.password or "",
        "DB_DATABASE": str(parsed.database),
        "DIFYMAINT_USE_REDIS": "false",
        **extra,
    }


def test_difys_variables_build_difys_mysql_url() -> None:
    settings = load_settings(
        None,
        {
            "DB_TYPE": "mysql",
            "DB_HOST": "db",
            "DB_PORT": 3306,
            "DB_USERNAME": "root",
            "DB_PASSWORD": "p@ss/word",
            "DB_DATABASE": "dify",
            "DB_CHARSET": "utf8mb4",
            "DB_EXTRAS": "ssl_verify_cert=true",
        },
    )
    url = database_url(settings)
    assert url.drivername == "mysql+pymysql"  # Dify's scheme for mysql, oceanbase and seekdb
    assert (url.host, url.port, url.username, url.password, url.database) == ("db", 3306, "root", "p@ss/word", "dify")
    # DB_CHARSET is the connection character set on MySQL (Dify's client_encoding is a libpq name).
    assert dict(url.query) == {"charset": "utf8mb4", "ssl_verify_cert": "true"}


@pytest.mark.parametrize("db_type", ["oceanbase", "seekdb"])
def test_oceanbase_and_seekdb_run_as_mysql_with_a_warning(db_type: str, caplog: pytest.LogCaptureFixture) -> None:
    settings = load_settings(None, {"DB_TYPE": db_type, "DB_HOST": "ob", "DB_PORT": 2881})
    assert database_url(settings).drivername == "mysql+pymysql"
    create_engine(settings).dispose()  # no connection yet: only the warning
    assert any(f"DB_TYPE={db_type}" in r.message and "MariaDB 10.11 only" in r.message for r in caplog.records)


@pytest.mark.parametrize("job", ["sweep-files", "storage-report"])
def test_postgresql_only_jobs_refuse_mysql_before_connecting(job: str) -> None:
    """Their reference scan and statistics are PostgreSQL's: DB_TYPE=mysql is one line and exit 2, with no
    server behind the settings (the refusal comes before any connection)."""
    env = {"DB_TYPE": "mysql", "DB_HOST": "127.0.0.1", "DB_PORT": "1"}
    result = invoke_assert_code([job, "--dry-run"], 2, env=env)
    assert "needs PostgreSQL" in result.stderr and "not MySQL" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) <= 2


def test_an_unknown_db_type_or_driver_is_one_line_exit_2() -> None:
    result = invoke_assert_code(["clean-embeddings", "--dry-run"], 2, env={"DB_TYPE": "mssql"})
    assert "DB_TYPE" in result.stderr and "postgresql, mysql, oceanbase, seekdb" in result.stderr
    assert "Traceback" not in result.stderr
    with pytest.raises(ConfigError, match="driver 'mysqldb' is not supported"):
        create_engine(load_settings(None, {"DIFYMAINT_DATABASE_URL": "mysql+mysqldb://u@h:3306/d"}))


@pytest.mark.mysql
def test_a_job_on_difys_db_variables_alone(mysql_url: str) -> None:
    """The interface operators rely on: DB_TYPE=mysql and Dify's DB_* names, nothing of difymaint's."""
    engine = sa.create_engine(mysql_url)
    old = NOW.replace(tzinfo=None) - timedelta(days=40)
    with engine.begin() as conn:
        conn.execute(
            sa.insert(t.embeddings),
            [
                {"id": str(uuid.uuid4()), "hash": f"h{i}", "embedding": b"x", "provider_name": "p", "created_at": old}
                for i in range(7)
            ],
        )
    result = run_cli(["clean-embeddings", "--json", "--yes", "--days", "30"], env=dify_env(mysql_url))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["tables"] == {"embeddings": 7} and summary["outcome"] == "done"
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM embeddings")).scalar_one() == 0
    engine.dispose()


@pytest.mark.mysql
def test_bad_db_extras_is_one_line(mysql_url: str) -> None:
    result = run_cli(["clean-embeddings", "--dry-run"], env=dify_env(mysql_url, DB_EXTRAS="no_such_argument=1"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "refused a connection parameter" in result.stderr


@pytest.mark.mysql
def test_session_settings(mysql_url: str) -> None:
    ctx = make_context(mysql_url, DIFYMAINT_LOCK_TIMEOUT=3, DIFYMAINT_STATEMENT_TIMEOUT=60)
    with ctx.engine.connect() as conn:
        zone, lock_wait, statement = conn.execute(
            sa.text("SELECT @@session.time_zone, @@session.innodb_lock_wait_timeout, @@session.max_statement_time")
        ).one()
    assert (zone, int(lock_wait), float(statement)) == ("+00:00", 3, 60.0)
    ctx.close()


def _burst(engine: Engine, count: int, second: datetime) -> set[str]:
    """``count`` embeddings created in the same DATETIME second (whole seconds on MySQL)."""
    ids = {str(uuid.uuid4()) for _ in range(count)}
    rows = [{"id": i, "hash": i[:8], "embedding": b"x", "provider_name": i, "created_at": second} for i in ids]
    with engine.begin() as conn:
        conn.execute(sa.insert(t.embeddings), rows)
    return ids


@pytest.mark.mysql
@pytest.mark.parametrize("dry_run", [True, False])
def test_keyset_resumes_exactly_inside_one_second(mysql_url: str, dry_run: bool) -> None:
    """More rows in one second than in a batch: the written-out (created_at, id) comparison resumes at the
    right row, so nothing is skipped or counted twice (the bounded dry run walks the same batches)."""
    engine = sa.create_engine(mysql_url)
    second = NOW.replace(tzinfo=None, microsecond=0) - timedelta(days=40)
    doomed = _burst(engine, 23, second) | _burst(engine, 5, second + timedelta(seconds=1))
    kept = _burst(engine, 4, NOW.replace(tzinfo=None) - timedelta(days=1))
    ctx = make_context(mysql_url, DIFYMAINT_TARGET_BATCH_MS=0)
    run = RunOptions(dry_run=dry_run, batch_size=4, max_batches=1000)
    summary = run_job(clean_embeddings, ctx, clean_embeddings.Params(window=_window(30), run=run))
    assert summary.tables == {"embeddings": len(doomed)} and summary.batches == 7  # 28 rows, 4 a batch
    with engine.connect() as conn:
        left = {str(row[0]) for row in conn.execute(sa.select(t.embeddings.c.id))}
    assert left == (doomed | kept if dry_run else kept)
    engine.dispose()


def _window(days: int) -> Any:
    from difymaint.core.window import TimeWindow

    return TimeWindow(end_before=NOW - timedelta(days=days))


@pytest.mark.mysql
def test_partial_cascades_delete_exactly_their_pages_inside_one_second(mysql_url: str) -> None:
    """A batch's steps are joined to its page's key range on MySQL (engine/cascade.py): with every parent in one
    DATETIME second, two batches of 4 take exactly the first 8 parents in (created_at, id) order with their
    children, grandchildren through a parent step included (offloads through node executions); the rest keep
    every row."""
    engine = sa.create_engine(mysql_url)
    second = NOW.replace(tzinfo=None, microsecond=0) - timedelta(days=40)
    with engine.begin() as conn:
        build = Builder(conn, NOW)
        tenant = build.tenant()
        app = build.app(tenant)
        conversation = build.conversation(app, second)
        messages = [build.message(app, conversation, second) for _ in range(11)]
        runs = [build.workflow_run(tenant, app, app, second) for _ in range(11)]
        for run_id in runs:
            node = build.node_execution(tenant, app, app, run_id, second)
            build.node_offload(tenant, app, node, new_id())
    ctx = make_context(mysql_url, DIFYMAINT_TARGET_BATCH_MS=0)
    partial = RunOptions(batch_size=4, max_batches=2)
    kept_messages = sorted(messages)[8:]
    summary = run_job(clean_messages, ctx, clean_messages.CleanMessagesParams(window=_window(30), run=partial))
    assert summary.tables == {name: 8 for name in MESSAGE_CASCADE_TABLES}
    assert remaining_messages(engine) == set(kept_messages)
    assert child_rows_by_message(engine) == dict.fromkeys(kept_messages, len(MESSAGE_CHILDREN))

    kept_runs = sorted(runs)[8:]
    params = clean_workflow_runs.CleanWorkflowRunsParams(window=_window(30), run=partial)
    summary = run_job(clean_workflow_runs, make_context(mysql_url, DIFYMAINT_TARGET_BATCH_MS=0), params)
    assert {name: summary.tables[name] for name in ("workflow_runs", "workflow_node_executions")} == {
        "workflow_runs": 8,
        "workflow_node_executions": 8,
    }
    assert summary.tables["workflow_node_execution_offload"] == 8
    nodes, offloads = t.workflow_node_executions, t.workflow_node_execution_offload
    with engine.connect() as conn:
        assert {str(r) for r in conn.scalars(sa.select(t.workflow_runs.c.id))} == set(kept_runs)
        assert {str(r) for r in conn.scalars(sa.select(nodes.c.workflow_run_id))} == set(kept_runs)
        joined = sa.select(nodes.c.workflow_run_id).join(offloads, offloads.c.node_execution_id == nodes.c.id)
        assert {str(r) for r in conn.scalars(joined)} == set(kept_runs)
        assert conn.scalar(sa.select(sa.func.count()).select_from(offloads)) == len(kept_runs)
    engine.dispose()


@pytest.mark.mysql
def test_named_lock_is_per_database_and_dies_with_its_session(mysql_url: str) -> None:
    engine = sa.create_engine(mysql_url)
    first, second = (
        MySQLNamedLock(engine, "retention:clean_messages"),
        MySQLNamedLock(engine, "retention:clean_messages"),
    )
    assert first.acquire() and not second.acquire()
    first.renew()  # still ours
    assert first.name == f"{engine.url.database}:retention:clean_messages"
    with engine.connect() as conn:  # the holder's session ends (a restart, a KILL): the lock goes with it
        holder = conn.execute(sa.text("SELECT IS_USED_LOCK(:n)"), {"n": first.name}).scalar_one()
        conn.execute(sa.text(f"KILL CONNECTION {int(holder)}"))
    with pytest.raises(Exception, match="named lock"):
        first.renew()
    assert second.acquire()
    second.release()
    first.release()
    engine.dispose()


def test_long_lock_names_fit_mysqls_64_characters() -> None:
    long = mysql_lock_name("dify_production_database", "retention:clean_workflow_runs:shard-1023-of-1024")
    assert len(long) <= MYSQL_LOCK_NAME_MAX and long.startswith("dify_production_database:retention")
    assert long != mysql_lock_name("dify_production_database", "retention:clean_workflow_runs:shard-1022-of-1024")
    assert mysql_lock_name("dify", "retention:clean_messages") == "dify:retention:clean_messages"


@pytest.mark.mysql
def test_context_picks_the_named_lock_without_redis(mysql_url: str) -> None:
    ctx: Context = make_context(mysql_url)
    assert isinstance(ctx.job_lock("retention:clean_messages"), MySQLNamedLock)
    ctx.close()


@pytest.mark.mysql
def test_a_batch_splits_its_statements_under_max_allowed_packet(
    mysql_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch's DELETEs travel together in one query, split where max_allowed_packet would be exceeded."""
    from difymaint.core import database
    from difymaint.dify.cascades import MESSAGE_CASCADE
    from tests.scenario import seed

    ctx = make_context(mysql_url)
    scenario = seed(ctx.engine, NOW)
    ids = sorted(scenario.all_old())
    queries: list[str] = []
    run_multi = database._run_multi
    monkeypatch.setattr(database, "_run_multi", lambda conn, query: queries.append(query) or run_multi(conn, query))
    with ctx.engine.begin() as conn:
        dry = MESSAGE_CASCADE.delete(conn, ids, dry_run=True)
        assert len(queries) == 1  # every count in one SELECT
        real = MESSAGE_CASCADE.delete(conn, ids, dry_run=False)
        assert len(queries) == 2  # every DELETE in one query
        conn.connection.info["difymaint_max_packet"] = 8192  # as if the server allowed 8 KB queries
        again = MESSAGE_CASCADE.delete(conn, ids, dry_run=False)
    assert len(queries) > 3 and all(len(query) <= 4096 for query in queries[3:])
    assert dry == real and real["messages"] == len(ids) and set(again.values()) == {0}
    with ctx.engine.connect() as conn:
        left = {str(row[0]) for row in conn.execute(sa.select(t.messages.c.id))}
    assert left.isdisjoint(ids)
    ctx.close()
