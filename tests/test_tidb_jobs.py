"""create-tidb and update-tidb-status against the Digest-authenticating TiDB Cloud tidb_stub and a real PostgreSQL."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from difymaint.core.context import Context
from difymaint.core.errors import ConfigError, DifymaintError, LockHeld
from difymaint.core.reporter import RecordingReporter
from difymaint.core.settings import load_settings
from difymaint.core.stop import Interrupted
from difymaint.core.summary import Outcome
from difymaint.dify import tables as t
from difymaint.dify.tidb_cloud import TidbCloudUnavailable, TidbCreateOutcomeUnknown
from difymaint.engine.options import RunOptions
from difymaint.jobs import JOBS, create_tidb, update_tidb_status
from difymaint.jobs.create_tidb import CreateTidbParams
from difymaint.jobs.execute import run_job
from difymaint.jobs.tidb_pool import read_leaks
from difymaint.jobs.update_tidb_status import UpdateTidbStatusParams
from tests.conftest import NOW, FixedClock, holding_db_lock, is_mysql_url, make_context
from tests.stubs.tidb_cloud import Fault, TidbCloudStub
from tests.test_cli import CLEAN_ENV
from tests.tidb_support import PROJECT, FakeClock

pytestmark = [pytest.mark.postgres, pytest.mark.usefixtures("no_tidb_env")]


@pytest.fixture
def leak_file(tmp_path: Path) -> Path:
    return tmp_path / "leaks.jsonl"


def tidb_env(tidb_stub: TidbCloudStub, **extra: Any) -> dict[str, Any]:
    return {
        "TIDB_API_URL": tidb_stub.url,
        "TIDB_PUBLIC_KEY": tidb_stub.state.public_key,
        "TIDB_PRIVATE_KEY": tidb_stub.state.private_key,
        "TIDB_PROJECT_ID": PROJECT,
        "CREATE_TIDB_SERVICE_JOB_ENABLED": True,
        **extra,
    }


def context(db_url: str, tidb_stub: TidbCloudStub, clock: FixedClock | None = None, **extra: Any) -> Context:
    return make_context(db_url, clock or FakeClock(), **tidb_env(tidb_stub, **extra))


def create_params(target: int, leak_file: Path, **run: Any) -> CreateTidbParams:
    return CreateTidbParams(target=target, leak_file=leak_file, run=RunOptions(**run))


def status_params(leak_file: Path, **kwargs: Any) -> UpdateTidbStatusParams:
    run = RunOptions(batch_size=20, **kwargs.pop("run", {}))
    return UpdateTidbStatusParams(leak_file=leak_file, run=run, **kwargs)


def bindings(engine: Engine) -> list[dict[str, Any]]:
    table = t.tidb_auth_bindings
    with engine.connect() as conn:
        rows = conn.execute(sa.select(table).order_by(table.c.created_at, table.c.id)).all()
    return [dict(row._mapping) for row in rows]


def idle(engine: Engine) -> int:
    return sum(1 for row in bindings(engine) if not row["active"])


def seed_bindings(engine: Engine, n: int, *, active: bool = False, status: str = "ACTIVE") -> None:
    """Bindings that exist without any cluster in the tidb_stub (assigned or long since active)."""
    rows = [
        {
            "id": t.new_id(),
            "tenant_id": t.new_id() if active else None,
            "cluster_id": f"seeded-{i}",
            "cluster_name": f"seeded{i:028d}",
            "active": active,
            "status": status,
            "account": "p.root",
            "password": "SeededPassw0rd",
            "created_at": datetime(2026, 1, 1) + timedelta(minutes=i),
        }
        for i in range(n)
    ]
    with engine.begin() as conn:
        conn.execute(sa.insert(t.tidb_auth_bindings), rows)


def passwords(tidb_stub: TidbCloudStub) -> set[str]:
    clusters = [*tidb_stub.state.clusters.values(), *tidb_stub.state.deleted.values()]
    return {cluster.root_password for cluster in clusters}


def create_calls(tidb_stub: TidbCloudStub) -> list[int]:
    """Clusters asked for per authenticated batchCreate request."""
    return [len(r.body["requests"]) for r in tidb_stub.api_requests("POST", "/clusters:batchCreate")]


# ------------------------------------------------------------------------------------------------ create-tidb


def test_create_fills_the_idle_pool_to_exactly_the_target(
    tidb_stub: TidbCloudStub, db_url: str, db_engine: Engine, leak_file: Path
) -> None:
    seed_bindings(db_engine, 3)  # idle and ACTIVE: counted
    seed_bindings(db_engine, 4, active=True)  # assigned to workspaces: not counted
    ctx = context(db_url, tidb_stub)
    summary = run_job(create_tidb, ctx, create_params(45, leak_file))

    assert summary.outcome is Outcome.DONE and summary.exit_code == 0
    assert idle(db_engine) == 45 and summary.details["idle_before"] == 3 and summary.details["idle_after"] == 45
    assert create_calls(tidb_stub) == [20, 20, 2]  # never more than 20 per call
    assert summary.tables == {"tidb_auth_bindings": 42} and summary.batches == 3 and summary.rows_remaining == 0
    first = tidb_stub.state.requests[0]
    assert (first.status, first.authenticated) == (401, False)  # the Digest challenge came first
    created = {row["cluster_id"]: row for row in bindings(db_engine) if not row["cluster_id"].startswith("seeded")}
    assert set(created) == set(tidb_stub.state.clusters)
    for cluster_id, row in created.items():
        cluster = tidb_stub.state.clusters[cluster_id]
        assert row["password"] == cluster.root_password and row["cluster_name"] == cluster.display_name
        assert (row["account"], row["status"], row["active"], row["tenant_id"]) == ("root", "CREATING", False, None)
        assert cluster.labels == {"tidb.cloud/project": PROJECT} and cluster.region == "regions/aws-us-east-1"
    infos = "\n".join(ctx.reporter.infos)  # type: ignore[attr-defined]
    assert all(cluster_id in infos for cluster_id in created)  # every created clusterId was reported
    assert not leak_file.exists()

    again = run_job(create_tidb, context(db_url, tidb_stub), create_params(45, leak_file))
    assert again.outcome is Outcome.DONE and again.tables == {"tidb_auth_bindings": 0}
    assert create_calls(tidb_stub) == [20, 20, 2]  # a full pool calls nothing


def test_create_is_off_unless_create_tidb_service_job_enabled(
    tidb_stub: TidbCloudStub, pg_url: str, leak_file: Path
) -> None:
    ctx = context(pg_url, tidb_stub, CREATE_TIDB_SERVICE_JOB_ENABLED=False)
    summary = run_job(create_tidb, ctx, create_params(5, leak_file))
    assert summary.outcome is Outcome.DISABLED and summary.exit_code == 0
    assert "CREATE_TIDB_SERVICE_JOB_ENABLED is set to false" in summary.details["switch"]
    assert any("nothing created" in line for line in ctx.reporter.infos)  # type: ignore[attr-defined]
    assert tidb_stub.state.requests == []


def test_create_dry_run_calls_no_api(tidb_stub: TidbCloudStub, db_url: str, db_engine: Engine, leak_file: Path) -> None:
    seed_bindings(db_engine, 2)
    summary = run_job(create_tidb, context(db_url, tidb_stub), create_params(47, leak_file, dry_run=True))
    assert summary.outcome is Outcome.DONE and summary.tables == {"tidb_auth_bindings": 45}
    assert summary.details["planned_calls"] == 3
    limited = run_job(
        create_tidb, context(db_url, tidb_stub), create_params(47, leak_file, dry_run=True, max_batches=2)
    )
    assert limited.outcome is Outcome.PARTIAL and limited.tables == {"tidb_auth_bindings": 40}
    assert tidb_stub.state.requests == [] and idle(db_engine) == 2


def test_create_max_batches_stops_early_with_exit_4(
    tidb_stub: TidbCloudStub, db_url: str, db_engine: Engine, leak_file: Path
) -> None:
    summary = run_job(create_tidb, context(db_url, tidb_stub), create_params(50, leak_file, max_batches=1))
    assert summary.outcome is Outcome.PARTIAL and summary.exit_code == 4 and summary.stop_reason == "max-batches"
    assert idle(db_engine) == 20 and summary.rows_remaining == 30


def _second_signal_after_the_first_batch(ctx: Context) -> None:
    def interrupt(_progress: object) -> None:
        raise Interrupted(int(signal.SIGTERM))  # what the second SIGTERM raises wherever the run is

    ctx.reporter.batch = interrupt  # type: ignore[method-assign]


def test_create_counts_what_is_left_after_a_second_signal(
    tidb_stub: TidbCloudStub, pg_url: str, pg_engine: Engine, leak_file: Path
) -> None:
    ctx = context(pg_url, tidb_stub)
    _second_signal_after_the_first_batch(ctx)
    with pytest.raises(Interrupted) as caught:
        run_job(create_tidb, ctx, create_params(45, leak_file))
    summary = caught.value.difymaint_summary  # type: ignore[attr-defined]
    assert idle(pg_engine) == 20 and summary.rows_remaining == 25  # not null: 25 clusters still to create


def test_status_counts_what_is_left_after_a_second_signal(
    tidb_stub: TidbCloudStub, pg_url: str, pg_engine: Engine, leak_file: Path
) -> None:
    run_job(create_tidb, context(pg_url, tidb_stub), create_params(45, leak_file))
    run_job(
        update_tidb_status, context(pg_url, tidb_stub), status_params(leak_file)
    )  # the tidb_stub reports them active now
    ctx = context(pg_url, tidb_stub)
    _second_signal_after_the_first_batch(ctx)
    with pytest.raises(Interrupted) as caught:
        run_job(update_tidb_status, ctx, status_params(leak_file))
    summary = caught.value.difymaint_summary  # type: ignore[attr-defined]
    still_creating = sum(1 for row in bindings(pg_engine) if row["status"] == "CREATING")
    assert still_creating == 25 and summary.rows_remaining == still_creating


def test_create_retries_429_and_network_errors_then_succeeds(
    tidb_stub: TidbCloudStub, pg_url: str, pg_engine: Engine, leak_file: Path
) -> None:
    tidb_stub.script(
        Fault(429, retry_after="2", method="POST"),
        Fault(429, method="POST"),
    )
    clock = FakeClock()
    summary = run_job(create_tidb, context(pg_url, tidb_stub, clock), create_params(3, leak_file))
    assert summary.outcome is Outcome.DONE and idle(pg_engine) == 3
    assert [r.status for r in tidb_stub.api_requests("POST")] == [429, 429, 200]
    assert clock.slept[0] >= 2  # Retry-After honoured
    assert summary.details["api_failed_requests"] == 2


def test_create_5xx_is_never_retried_and_the_submitted_names_go_to_the_leak_file(
    tidb_stub: TidbCloudStub, pg_url: str, pg_engine: Engine, leak_file: Path
) -> None:
    tidb_stub.script(Fault(503, method="POST"))
    with pytest.raises(TidbCreateOutcomeUnknown) as caught:
        run_job(create_tidb, context(pg_url, tidb_stub), create_params(7, leak_file))
    assert caught.value.exit_code == 1
    assert create_calls(tidb_stub) == [7]  # not retried: a retry could create a second set
    leaks = read_leaks(leak_file)
    assert [entry.display_name for entry in leaks] == list(caught.value.display_names)
    assert all(entry.cluster_id is None for entry in leaks) and len(leaks) == 7
    assert idle(pg_engine) == 0


def test_create_partial_batches_still_reach_the_target(
    tidb_stub: TidbCloudStub, pg_url: str, pg_engine: Engine, leak_file: Path
) -> None:
    tidb_stub.state.create_limit = 5  # TiDB Cloud creates only 5 of each request's clusters
    summary = run_job(create_tidb, context(pg_url, tidb_stub), create_params(12, leak_file))
    assert summary.outcome is Outcome.DONE and idle(pg_engine) == 12
    assert create_calls(tidb_stub) == [12, 7, 2]
    leaks = read_leaks(leak_file)  # the names a batchCreate answer left out may exist: listed, without ids
    assert len(leaks) == 7 + 2 and all(entry.cluster_id is None for entry in leaks)
    assert {entry.display_name for entry in leaks}.isdisjoint(c.display_name for c in tidb_stub.state.clusters.values())


def test_create_that_creates_nothing_ends_the_run(tidb_stub: TidbCloudStub, pg_url: str, leak_file: Path) -> None:
    tidb_stub.state.create_limit = 0
    with pytest.raises(DifymaintError, match="without creating any of 4 clusters"):
        run_job(create_tidb, context(pg_url, tidb_stub), create_params(4, leak_file))
    assert create_calls(tidb_stub) == [4]  # Dify would loop here without a pause


def test_persistently_failing_api_ends_create_within_the_default_budget(
    tidb_stub: TidbCloudStub, pg_url: str, leak_file: Path
) -> None:
    tidb_stub.state.fail_always = Fault(429)
    clock = FakeClock()
    with pytest.raises(TidbCloudUnavailable) as caught:
        run_job(create_tidb, context(pg_url, tidb_stub, clock), create_params(500, leak_file))
    assert caught.value.exit_code == 1
    assert len(tidb_stub.api_requests()) <= 10 and clock.t <= 30  # the defaults: 10 requests, 30 s


@pytest.mark.parametrize(("job", "fault"), [("create-tidb", 429), ("update-tidb-status", 503)])
def test_persistently_failing_api_ends_a_real_run_in_bounded_time(
    tidb_stub: TidbCloudStub, pg_url: str, leak_file: Path, job: str, fault: int
) -> None:
    tidb_stub.state.fail_always = Fault(fault)
    started = time.monotonic()
    result = cli(
        [job, "--max-failing-seconds", "3", "--json"],
        pg_url,
        tidb_stub,
        leak_file,
        seed=lambda engine: seed_bindings(engine, 30, status="CREATING"),
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 1, result.stderr
    assert elapsed < 15  # 3 s of failing, plus interpreter start-up
    assert 1 <= len(tidb_stub.api_requests()) <= 10
    summary = json.loads(result.stdout)
    assert summary["outcome"] == "failed" and "failure budget" in summary["error"]
    assert len(result.stderr.strip().splitlines()) <= 15  # a warning per retry, one error line, no traceback
    assert "Traceback" not in result.stderr


def test_insert_failure_leaks_to_the_file_and_the_reaper_deletes_them(
    tidb_stub: TidbCloudStub, db_url: str, db_engine: Engine, leak_file: Path
) -> None:
    with db_engine.begin() as conn:
        if is_mysql_url(db_url):
            conn.execute(
                sa.text(
                    "CREATE TRIGGER refuse BEFORE INSERT ON tidb_auth_bindings FOR EACH ROW "
                    "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'refused by test'"
                )
            )
        else:
            conn.execute(
                sa.text(
                    "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
                    "$$ BEGIN RAISE EXCEPTION 'refused by test'; END $$"
                )
            )
            conn.execute(
                sa.text(
                    "CREATE TRIGGER refuse BEFORE INSERT ON tidb_auth_bindings FOR EACH ROW EXECUTE FUNCTION refuse()"
                )
            )
    ctx = context(db_url, tidb_stub)
    with pytest.raises(DifymaintError) as caught:
        run_job(create_tidb, ctx, create_params(3, leak_file))
    message = caught.value.message
    assert "leak file" in message and all(secret not in message for secret in passwords(tidb_stub))
    leaks = read_leaks(leak_file)
    assert {entry.cluster_id for entry in leaks} == set(tidb_stub.state.clusters) and len(leaks) == 3
    assert all(password not in leak_file.read_text() for password in passwords(tidb_stub))
    assert create_calls(tidb_stub) == [3]  # the failed write stops the run: no second set

    young = run_job(
        update_tidb_status,
        context(db_url, tidb_stub, FakeClock(NOW + timedelta(minutes=30))),
        status_params(leak_file, reap_older_than_hours=1),
    )
    assert young.details["leaked_reaped"] == [] and len(read_leaks(leak_file)) == 3  # not old enough
    dry = run_job(
        update_tidb_status,
        context(db_url, tidb_stub, FakeClock(NOW + timedelta(hours=2))),
        status_params(leak_file, reap_older_than_hours=1, run={"dry_run": True}),
    )
    assert sorted(dry.details["leaked_would_reap"]) == sorted(tidb_stub.state.clusters)
    assert tidb_stub.api_requests("DELETE") == [] and len(read_leaks(leak_file)) == 3
    reaped = run_job(
        update_tidb_status,
        context(db_url, tidb_stub, FakeClock(NOW + timedelta(hours=2))),
        status_params(leak_file, reap_older_than_hours=1),
    )
    assert reaped.outcome is Outcome.DONE and len(reaped.details["leaked_reaped"]) == 3
    assert tidb_stub.state.clusters == {} and len(tidb_stub.state.deleted) == 3
    assert read_leaks(leak_file) == []


def test_the_database_guard_stops_a_second_create_even_when_the_redis_lock_is_free(
    tidb_stub: TidbCloudStub, db_url: str, db_engine: Engine, redis_url: str, leak_file: Path
) -> None:
    with holding_db_lock(db_engine, "maintenance:create_tidb_serverless:database"):
        ctx = context(db_url, tidb_stub, DIFYMAINT_USE_REDIS=True, DIFYMAINT_REDIS_URL=redis_url)
        with pytest.raises(LockHeld):
            run_job(create_tidb, ctx, create_params(5, leak_file))
    assert tidb_stub.state.requests == [] and idle(db_engine) == 0


@pytest.mark.parametrize("lock", ["redis", "database"])
def test_two_concurrent_create_runs_never_exceed_the_target(
    tidb_stub: TidbCloudStub, db_url: str, db_engine: Engine, redis_url: str, tmp_path: Path, lock: str
) -> None:
    env = cli_env(db_url, tidb_stub, tmp_path / "leaks.jsonl", TIDB_SERVERLESS_NUMBER="100")
    if lock == "redis":
        env["DIFYMAINT_REDIS_URL"] = redis_url
    command = [sys.executable, "-m", "difymaint", "create-tidb", "--json"]
    runs = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in "ab"]
    results = [(run.wait(timeout=120), *run.communicate()) for run in runs]
    codes = sorted(code for code, _, _ in results)
    assert codes in ([0, 0], [0, 5]), results  # the loser skipped (5) or found the pool already full (0)
    assert idle(db_engine) == 100 and sum(create_calls(tidb_stub)) == 100 and len(tidb_stub.state.clusters) == 100


# ---------------------------------------------------------------------------------------- update-tidb-status


def test_status_promotes_clusters_once_tidb_cloud_reports_them_active(
    tidb_stub: TidbCloudStub, db_url: str, db_engine: Engine, leak_file: Path
) -> None:
    run_job(create_tidb, context(db_url, tidb_stub), create_params(45, leak_file))
    first = run_job(update_tidb_status, context(db_url, tidb_stub), status_params(leak_file))
    assert first.outcome is Outcome.DONE and first.tables == {"tidb_auth_bindings": 0}  # still CREATING
    gets = tidb_stub.api_requests("GET", "/clusters:batchGet")
    assert [len(r.query["clusterIds"]) for r in gets] == [20, 20, 5]
    assert {r.query["view"][0] for r in gets} == {"BASIC"}
    order = [cluster_id for r in gets for cluster_id in r.query["clusterIds"]]
    assert order == [row["cluster_id"] for row in bindings(db_engine)]  # paged in created_at order

    second = run_job(update_tidb_status, context(db_url, tidb_stub), status_params(leak_file))
    assert second.outcome is Outcome.DONE and second.tables == {"tidb_auth_bindings": 45} and second.batches == 3
    for row in bindings(db_engine):
        cluster = tidb_stub.state.clusters[row["cluster_id"]]
        assert row["status"] == "ACTIVE" and row["account"] == f"{cluster.user_prefix}.root"
        assert row["qdrant_endpoint"] == f"https://qdrant-{cluster.host}"
        assert row["password"] == cluster.root_password and row["active"] is False
    third = run_job(update_tidb_status, context(db_url, tidb_stub), status_params(leak_file))
    assert third.batches == 0 and len(tidb_stub.api_requests("GET", "/clusters:batchGet")) == 6


def test_status_fetches_the_endpoint_when_the_batch_answer_lacks_it(
    tidb_stub: TidbCloudStub, pg_url: str, pg_engine: Engine, leak_file: Path
) -> None:
    tidb_stub.state.basic_view_endpoints = False
    run_job(create_tidb, context(pg_url, tidb_stub), create_params(3, leak_file))
    run_job(update_tidb_status, context(pg_url, tidb_stub), status_params(leak_file))  # still CREATING
    summary = run_job(update_tidb_status, context(pg_url, tidb_stub), status_params(leak_file))
    assert summary.tables == {"tidb_auth_bindings": 3}
    assert len([r for r in tidb_stub.api_requests("GET") if r.path.startswith("/clusters/")]) == 3  # Dify's fallback
    assert all(row["qdrant_endpoint"].startswith("https://qdrant-gateway01.") for row in bindings(pg_engine))


def test_status_dry_run_writes_nothing(
    tidb_stub: TidbCloudStub, db_url: str, db_engine: Engine, leak_file: Path
) -> None:
    tidb_stub.state.polls_until_active = 0
    run_job(create_tidb, context(db_url, tidb_stub), create_params(4, leak_file))
    summary = run_job(update_tidb_status, context(db_url, tidb_stub), status_params(leak_file, run={"dry_run": True}))
    assert summary.tables == {"tidb_auth_bindings": 4} and summary.dry_run
    assert {row["status"] for row in bindings(db_engine)} == {"CREATING"}


def test_status_continues_past_a_failing_chunk_and_exits_1_at_the_end(
    tidb_stub: TidbCloudStub, pg_url: str, pg_engine: Engine, leak_file: Path
) -> None:
    tidb_stub.state.polls_until_active = 0
    run_job(create_tidb, context(pg_url, tidb_stub), create_params(45, leak_file))
    tidb_stub.script(
        Fault(500, method="GET"),  # retried within the chunk
        Fault(400, method="GET", path_prefix="/clusters:batchGet"),  # chunk 1 fails for good
    )
    with pytest.raises(DifymaintError) as caught:
        run_job(update_tidb_status, context(pg_url, tidb_stub), status_params(leak_file))
    assert caught.value.exit_code == 1 and "1 chunk(s) failed" in caught.value.message
    summary = caught.value.difymaint_summary  # type: ignore[attr-defined]
    assert summary.tables == {"tidb_auth_bindings": 25} and summary.batches == 3
    statuses = [row["status"] for row in bindings(pg_engine)]
    assert statuses[:20] == ["CREATING"] * 20 and statuses[20:] == ["ACTIVE"] * 25  # chunks 2 and 3 went through
    retry = run_job(update_tidb_status, context(pg_url, tidb_stub), status_params(leak_file))
    assert retry.outcome is Outcome.DONE and retry.tables == {"tidb_auth_bindings": 20}


def test_status_reports_and_reaps_clusters_stuck_in_creating(
    tidb_stub: TidbCloudStub, db_url: str, db_engine: Engine, leak_file: Path
) -> None:
    tidb_stub.state.polls_until_active = None  # they never come up
    run_job(create_tidb, context(db_url, tidb_stub), create_params(5, leak_file))
    table = t.tidb_auth_bindings
    stuck = [row["cluster_id"] for row in bindings(db_engine)][:3]
    with db_engine.begin() as conn:
        conn.execute(
            sa.update(table).where(table.c.cluster_id.in_(stuck)).values(created_at=datetime(2026, 11, 22, 12, 0))
        )
        conn.execute(sa.update(table).where(table.c.cluster_id.notin_(stuck)).values(created_at=datetime(2026, 11, 24)))
    gone_remotely = stuck[0]
    tidb_stub.state.clusters.pop(gone_remotely)  # deleted in the console meanwhile: 404 counts as gone

    report = run_job(update_tidb_status, context(db_url, tidb_stub), status_params(leak_file, stuck_after_hours=24))
    assert report.outcome is Outcome.DONE and report.details["stuck_clusters"] == 3
    assert sorted(report.details["stuck_cluster_ids"]) == sorted(stuck)
    assert any("still CREATING more than 24 h" in warning for warning in report.warnings)

    dry = run_job(
        update_tidb_status,
        context(db_url, tidb_stub),
        status_params(leak_file, reap_older_than_hours=36, run={"dry_run": True}),
    )
    assert sorted(dry.details["would_reap_clusters"]) == sorted(stuck) and tidb_stub.api_requests("DELETE") == []
    assert len(bindings(db_engine)) == 5

    reaped = run_job(update_tidb_status, context(db_url, tidb_stub), status_params(leak_file, reap_older_than_hours=36))
    assert reaped.outcome is Outcome.DONE and sorted(reaped.details["reaped_clusters"]) == sorted(stuck)
    assert sorted(r.path for r in tidb_stub.api_requests("DELETE")) == sorted(f"/clusters/{c}" for c in stuck)
    assert set(tidb_stub.state.deleted) == set(stuck[1:])
    assert {row["cluster_id"] for row in bindings(db_engine)}.isdisjoint(stuck) and len(bindings(db_engine)) == 2


def test_persistently_failing_api_ends_status_within_the_default_budget(
    tidb_stub: TidbCloudStub, pg_url: str, pg_engine: Engine, leak_file: Path
) -> None:
    seed_bindings(pg_engine, 100, status="CREATING")  # 5 chunks: more than the budget's 10 tries set aside 3 each
    tidb_stub.state.fail_always = Fault(502)
    clock = FakeClock()
    with pytest.raises(TidbCloudUnavailable):
        run_job(update_tidb_status, context(pg_url, tidb_stub, clock), status_params(leak_file))
    assert len(tidb_stub.api_requests()) <= 10 and clock.t <= 30


def _batch_gets_naming(tidb_stub: TidbCloudStub, cluster_id: str) -> int:
    return sum(1 for r in tidb_stub.api_requests("GET", "/clusters:batchGet") if cluster_id in r.query["clusterIds"])


def test_status_sets_a_poison_chunk_aside_and_promotes_every_other_cluster(
    tidb_stub: TidbCloudStub, pg_url: str, pg_engine: Engine, leak_file: Path
) -> None:
    tidb_stub.state.polls_until_active = 0
    run_job(create_tidb, context(pg_url, tidb_stub), create_params(65, leak_file))  # 4 chunks: 20, 20, 20, 5
    order = [row["cluster_id"] for row in bindings(pg_engine)]
    poison = order[20:40]  # the second chunk answers HTTP 500 every time it is asked for
    tidb_stub.state.fail_matching.append(
        Fault(500, method="GET", path_prefix="/clusters:batchGet", cluster_id=poison[7])
    )

    result = cli(["update-tidb-status", "--json"], pg_url, tidb_stub, leak_file)

    assert result.returncode == 1, result.stderr
    summary = json.loads(result.stdout)
    assert summary["outcome"] == "failed" and summary["details"]["skipped_chunks"] == [poison]
    assert summary["rows_remaining"] == 20 and summary["tables"] == {"tidb_auth_bindings": 45}
    status = {row["cluster_id"]: row["status"] for row in bindings(pg_engine)}
    assert {cluster_id for cluster_id, value in status.items() if value != "ACTIVE"} == set(poison)
    assert _batch_gets_naming(tidb_stub, poison[0]) == 3  # its own small budget, not the run's 10
    errors = [line for line in result.stderr.splitlines() if line.startswith("difymaint: error:")]
    assert len(errors) == 1 and all(cluster_id in errors[0] for cluster_id in poison), result.stderr
    assert "1 chunk(s) failed" in errors[0] and "Traceback" not in result.stderr


def test_status_retries_a_chunk_that_fails_twice_then_answers(
    tidb_stub: TidbCloudStub, pg_url: str, pg_engine: Engine, leak_file: Path
) -> None:
    tidb_stub.state.polls_until_active = 0
    run_job(create_tidb, context(pg_url, tidb_stub), create_params(45, leak_file))
    flaky = bindings(pg_engine)[25]["cluster_id"]
    tidb_stub.script(*[Fault(502, method="GET", path_prefix="/clusters:batchGet", cluster_id=flaky)] * 2)
    clock = FakeClock()
    summary = run_job(update_tidb_status, context(pg_url, tidb_stub, clock), status_params(leak_file))
    assert summary.outcome is Outcome.DONE and summary.tables == {"tidb_auth_bindings": 45}
    assert summary.rows_remaining == 0 and "skipped_chunks" not in summary.details
    assert summary.details["api_failed_requests"] == 2 and _batch_gets_naming(tidb_stub, flaky) == 3
    assert len(clock.slept) == 2  # the existing jittered backoff between the tries
    assert {row["status"] for row in bindings(pg_engine)} == {"ACTIVE"}


def test_status_sets_aside_a_cluster_whose_endpoint_lookup_keeps_failing(
    tidb_stub: TidbCloudStub, pg_url: str, pg_engine: Engine, leak_file: Path
) -> None:
    tidb_stub.state.basic_view_endpoints = False  # every promotion needs Dify's per-cluster GET
    run_job(create_tidb, context(pg_url, tidb_stub), create_params(4, leak_file))
    run_job(update_tidb_status, context(pg_url, tidb_stub), status_params(leak_file))  # still CREATING
    broken = bindings(pg_engine)[1]["cluster_id"]
    tidb_stub.state.fail_matching.append(Fault(503, method="GET", path_prefix="/clusters/", cluster_id=broken))
    with pytest.raises(DifymaintError) as caught:
        run_job(update_tidb_status, context(pg_url, tidb_stub), status_params(leak_file))
    summary = caught.value.difymaint_summary  # type: ignore[attr-defined]
    assert summary.details["skipped_clusters"] == [broken] and summary.rows_remaining == 1
    assert summary.tables == {"tidb_auth_bindings": 3} and broken in caught.value.message
    assert len([r for r in tidb_stub.api_requests("GET") if r.path == f"/clusters/{broken}"]) == 3


# ----------------------------------------------------------------------------------------------------- CLI


def cli_env(db_url: str, tidb_stub: TidbCloudStub, leak_file: Path, **extra: str) -> dict[str, str]:
    values = {key: str(value) for key, value in tidb_env(tidb_stub).items()}
    return {
        **CLEAN_ENV,
        "NO_COLOR": "1",
        "DIFYMAINT_DATABASE_URL": db_url,
        "DIFYMAINT_TIDB_LEAK_FILE": str(leak_file),
        **values,
        **extra,
    }


def cli(
    args: list[str],
    db_url: str,
    tidb_stub: TidbCloudStub,
    leak_file: Path,
    seed: Any = None,
    **extra: str,
) -> subprocess.CompletedProcess[str]:
    if seed is not None:
        engine = sa.create_engine(db_url)
        seed(engine)
        engine.dispose()
    return subprocess.run(
        [sys.executable, "-m", "difymaint", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=cli_env(db_url, tidb_stub, leak_file, **extra),
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize("job", ["create-tidb", "update-tidb-status"])
@pytest.mark.parametrize("missing", ["TIDB_API_URL", "TIDB_PUBLIC_KEY", "TIDB_PRIVATE_KEY", "TIDB_PROJECT_ID"])
def test_missing_tidb_setting_is_one_line_and_exit_2(
    tidb_stub: TidbCloudStub, pg_url: str, leak_file: Path, job: str, missing: str
) -> None:
    env = cli_env(pg_url, tidb_stub, leak_file)
    del env[missing]
    result = subprocess.run(
        [sys.executable, "-m", "difymaint", job], capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL
    )
    assert result.returncode == 2, result.stderr
    assert missing in result.stderr and "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("difymaint: error: TiDB Cloud is not configured")
    assert tidb_stub.state.requests == []
    with pytest.raises(ConfigError):  # and the same in-process, before the database is touched
        run_job(
            create_tidb,
            Context(load_settings(None, {**tidb_env(tidb_stub), missing: ""}), reporter=RecordingReporter()),
            create_params(1, leak_file),
        )


def test_disabled_create_says_so_and_exits_0(tidb_stub: TidbCloudStub, pg_url: str, leak_file: Path) -> None:
    manual = cli(["create-tidb"], pg_url, tidb_stub, leak_file, CREATE_TIDB_SERVICE_JOB_ENABLED="false")
    assert manual.returncode == 0 and "CREATE_TIDB_SERVICE_JOB_ENABLED is set to false" in manual.stderr
    scheduled = cli(["create-tidb", "--scheduled", "--json"], pg_url, tidb_stub, leak_file)
    assert scheduled.returncode == 0 and json.loads(scheduled.stdout)["outcome"] == "disabled"
    assert "ENABLE_CREATE_TIDB_SERVERLESS_TASK" in json.loads(scheduled.stdout)["details"]["switch"]
    assert tidb_stub.state.requests == []


def test_no_password_in_any_output(tidb_stub: TidbCloudStub, pg_url: str, leak_file: Path) -> None:
    tidb_stub.state.polls_until_active = 0
    outputs = []
    for args in (
        ["create-tidb", "-vv", "--json", "--target", "25"],
        ["create-tidb", "-vv", "--target", "25"],
        ["update-tidb-status", "-vv", "--json"],
        ["update-tidb-status", "--log-format", "json", "--json", "--reap-older-than", "1", "--yes"],
    ):
        result = cli(args, pg_url, tidb_stub, leak_file, TIDB_SERVERLESS_NUMBER="25")
        assert result.returncode == 0, result.stderr
        outputs += [result.stdout, result.stderr]
    created = json.loads(outputs[0])
    assert created["outcome"] == "done" and created["tables"] == {"tidb_auth_bindings": 25}
    promoted = json.loads(outputs[4])
    assert promoted["tables"] == {"tidb_auth_bindings": 25}
    assert all(cluster_id in outputs[1] for cluster_id in tidb_stub.state.clusters)  # ids logged, not passwords
    secrets = passwords(tidb_stub) | {tidb_stub.state.private_key}
    assert len(secrets) == 26
    for text in outputs:
        for secret in secrets:
            assert secret not in text


def test_no_password_when_the_insert_fails(
    tidb_stub: TidbCloudStub, db_url: str, db_engine: Engine, leak_file: Path
) -> None:
    with db_engine.begin() as conn:  # a password column too short for the generated password
        if is_mysql_url(db_url):  # strict mode (the default) refuses a longer value
            conn.execute(sa.text("ALTER TABLE tidb_auth_bindings MODIFY password varchar(4) NOT NULL"))
        else:
            conn.execute(sa.text("ALTER TABLE tidb_auth_bindings ALTER COLUMN password TYPE varchar(4)"))
    result = cli(["create-tidb", "-vv", "--json", "--target", "2"], db_url, tidb_stub, leak_file)
    assert result.returncode == 1
    summary = json.loads(result.stdout)
    assert summary["outcome"] == "failed" and "leak file" in summary["error"]
    assert {entry.cluster_id for entry in read_leaks(leak_file)} == set(tidb_stub.state.clusters)
    for secret in passwords(tidb_stub):
        assert secret not in result.stdout and secret not in result.stderr
        assert secret not in leak_file.read_text()
    assert "Traceback" not in result.stderr


def test_sigterm_finishes_the_open_batch_and_records_it(
    tidb_stub: TidbCloudStub, pg_url: str, pg_engine: Engine, leak_file: Path
) -> None:
    tidb_stub.state.delay_s = 0.4  # each batchCreate takes a while
    proc = subprocess.Popen(
        [sys.executable, "-m", "difymaint", "create-tidb", "--json", "--target", "200"],
        env=cli_env(pg_url, tidb_stub, leak_file),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not tidb_stub.api_requests("POST") and time.monotonic() < deadline:
        time.sleep(0.05)  # the first batchCreate is in flight
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    summary = json.loads(out)
    assert summary["outcome"] == "interrupted" and summary["stop_reason"].startswith("signal")
    created = sum(create_calls(tidb_stub))
    assert created == 20 * len(create_calls(tidb_stub)) and created < 200
    assert idle(pg_engine) == created == summary["tables"]["tidb_auth_bindings"]  # the open batch was recorded
    assert not leak_file.exists()


def test_registry_entries() -> None:
    create, status = JOBS["create-tidb"], JOBS["update-tidb-status"]
    assert (create.schedule, create.dify_task, create.lock_key) == (
        "0 * * * *",
        "create_tidb_serverless_task",
        "maintenance:create_tidb_serverless",
    )
    assert [switch.name for switch in create.switches] == [
        "ENABLE_CREATE_TIDB_SERVERLESS_TASK",
        "CREATE_TIDB_SERVICE_JOB_ENABLED",
    ]
    assert (status.schedule, status.dify_task, status.lock_key) == (
        "*/10 * * * *",
        "update_tidb_serverless_status_task",
        "maintenance:update_tidb_serverless_status",
    )
    assert [switch.name for switch in status.switches] == ["ENABLE_UPDATE_TIDB_SERVERLESS_STATUS_TASK"]
    assert create.load() is create_tidb and status.load() is update_tidb_status
