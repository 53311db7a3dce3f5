"""Shared fixtures: a fresh PostgreSQL or MariaDB database per test, a Redis server, SQLite, a billing stub,
helpers.

The PostgreSQL, MariaDB and Redis servers are the ones scripts/test starts (DIFYMAINT_TEST_PG_URL /
DIFYMAINT_TEST_MYSQL_URL / DIFYMAINT_TEST_REDIS_URL). Under CI (or DIFYMAINT_TEST_REQUIRE_SERVICES) a missing
server fails the test; only a developer running bare pytest sees a skip.

``db_url`` / ``db_engine`` run a test once per engine (``[postgresql]`` and ``[mysql]``): a job's fidelity tests
use them; ``pg_url`` / ``pg_engine`` stay for what only PostgreSQL has (docs/mysql.md#tests).
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from difymaint.core.context import Context
from difymaint.core.reporter import RecordingReporter
from difymaint.core.settings import Settings, load_settings
from difymaint.dify.tables import metadata
from tests.celery_worker import _celery_workers, celery_worker, celery_worker_factory, sentinel_broker
from tests.s3_server import S3Bucket
from tests.stubs.billing import BillingStub
from tests.stubs.tidb_cloud import TidbCloudStub

# Fixtures defined in tests/celery_worker.py, made visible to every test module.
__all__ = ["_celery_workers", "celery_worker", "celery_worker_factory", "sentinel_broker"]

NOW = datetime(2026, 11, 24, 12, 0, 0, tzinfo=UTC)
_REQUIRE = bool(os.environ.get("CI") or os.environ.get("DIFYMAINT_TEST_REQUIRE_SERVICES"))
_counter = itertools.count()


def _need(var: str, what: str) -> str:
    value = os.environ.get(var)
    if not value:
        message = f"{what} is not available ({var} unset); run the suite with scripts/test"
        if _REQUIRE:
            pytest.fail(message)
        pytest.skip(message)
    return value


class FixedClock:
    def __init__(self, now: datetime = NOW) -> None:
        self._now = now
        self._mono = 0.0
        self.slept: list[float] = []

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        self._mono += 0.001
        return self._mono

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    return _need("DIFYMAINT_TEST_PG_URL", "PostgreSQL")


@pytest.fixture(scope="session")
def pg_template(pg_admin_url: str) -> str:
    """A template database holding Dify's tables, created once per session."""
    name = f"difymaint_tpl_{os.getpid()}"
    admin = sa.create_engine(pg_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine = sa.create_engine(make_url(pg_admin_url).set(database=name))
    with engine.begin() as conn:
        conn.execute(sa.text('CREATE EXTENSION IF NOT EXISTS "uuid-ossp"'))
    metadata.create_all(engine)
    engine.dispose()
    admin.dispose()
    return name


@pytest.fixture
def pg_url(pg_admin_url: str, pg_template: str) -> Iterator[str]:
    """A fresh database (copied from the template) for one test."""
    name = f"difymaint_t{os.getpid()}_{next(_counter)}"
    admin = sa.create_engine(pg_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"'))
    url = make_url(pg_admin_url).set(database=name).render_as_string(hide_password=False)
    yield url
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def pg_engine(pg_url: str) -> Iterator[Engine]:
    engine = sa.create_engine(pg_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def mysql_admin_url() -> str:
    return _need("DIFYMAINT_TEST_MYSQL_URL", "MariaDB")


@pytest.fixture(scope="session")
def mysql_template(mysql_admin_url: str) -> Iterator[str]:
    """A database holding Dify's tables as Dify creates them on MySQL, built once per session from the same
    declarations (difymaint/dify/tables.py has the MySQL types)."""
    name = f"difymaint_tpl_{os.getpid()}"
    admin = sa.create_engine(mysql_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{name}`"))
        conn.execute(sa.text(f"CREATE DATABASE `{name}`"))
    engine = sa.create_engine(make_url(mysql_admin_url).set(database=name))
    metadata.create_all(engine)
    engine.dispose()
    yield name
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{name}`"))
    admin.dispose()


@pytest.fixture
def mysql_url(mysql_admin_url: str, mysql_template: str) -> Iterator[str]:
    """A fresh MariaDB database for one test: the template's tables copied with CREATE TABLE … LIKE (MySQL
    has no template databases; this takes ~0.2 s)."""
    name = f"difymaint_t{os.getpid()}_{next(_counter)}"
    admin = sa.create_engine(mysql_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE `{name}`"))
        for table in metadata.sorted_tables:
            conn.execute(sa.text(f"CREATE TABLE `{name}`.`{table.name}` LIKE `{mysql_template}`.`{table.name}`"))
    yield make_url(mysql_admin_url).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{name}`"))
    admin.dispose()


@pytest.fixture(params=["postgresql", "mysql"])
def db_url(request: pytest.FixtureRequest) -> str:
    """A fresh database on each engine in turn: the test runs once on PostgreSQL, once on MariaDB."""
    return str(request.getfixturevalue("pg_url" if request.param == "postgresql" else "mysql_url"))


@pytest.fixture
def db_engine(db_url: str) -> Iterator[Engine]:
    engine = sa.create_engine(db_url)
    yield engine
    engine.dispose()


@dataclass(frozen=True)
class LoginRole:
    name: str
    url: str  # the database as this role
    admin: Engine  # the test's superuser, autocommit


@contextmanager
def login_role(pg_url: str, prefix: str, *grants: str) -> Iterator[LoginRole]:
    """A throwaway LOGIN role on ``pg_url``'s database with the given statements run for it (``{role}`` and
    ``{database}`` filled in); dropped with everything it owns afterwards."""
    role = f"{prefix}_{uuid.uuid4().hex[:8]}"
    database = make_url(pg_url).database
    admin = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE ROLE {role} LOGIN PASSWORD 'pw'"))
        for grant in grants:
            conn.execute(sa.text(grant.format(role=role, database=database)))
    url = make_url(pg_url).set(username=role, password="pw").render_as_string(hide_password=False)
    try:
        yield LoginRole(role, url, admin)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP OWNED BY {role}"))
            conn.execute(sa.text(f"DROP ROLE {role}"))
        admin.dispose()


def is_mysql_url(url: str) -> bool:
    return url.startswith("mysql")


def stored(url: str, value: datetime) -> datetime:
    """``value`` as the engine keeps it: MariaDB's DATETIME (Dify's MySQL type) drops the microseconds."""
    return value.replace(microsecond=0) if is_mysql_url(url) else value


@contextmanager
def holding_db_lock(engine: Engine, key: str) -> Iterator[None]:
    """Hold the database lock a run without Redis takes for ``key`` (advisory on PostgreSQL, GET_LOCK on
    MySQL), from another session, for the duration of the block."""
    from difymaint.core.locking import advisory_key, mysql_lock_name

    with engine.connect() as holder:
        if engine.dialect.name == "mysql":
            name = mysql_lock_name(engine.url.database, key)
            assert holder.execute(sa.text("SELECT GET_LOCK(:n, 0)"), {"n": name}).scalar() == 1
            yield
            holder.execute(sa.text("SELECT RELEASE_LOCK(:n)"), {"n": name})
        else:
            holder.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": advisory_key(key)})
            yield
            holder.execute(sa.text("SELECT pg_advisory_unlock_all()"))


@pytest.fixture
def sqlite_url(tmp_path: Any) -> str:
    url = f"sqlite:///{tmp_path / 'dify.sqlite'}"
    engine = sa.create_engine(url)
    metadata.create_all(engine)
    engine.dispose()
    return url


@pytest.fixture
def redis_url() -> Iterator[str]:
    url = _need("DIFYMAINT_TEST_REDIS_URL", "Redis")
    import redis

    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


@pytest.fixture
def pushgateway_url() -> Iterator[str]:
    """The real Pushgateway scripts/test starts, emptied before and after the test."""
    import httpx

    url = _need("DIFYMAINT_TEST_PUSHGATEWAY_URL", "the Prometheus Pushgateway")
    httpx.put(f"{url}/api/v1/admin/wipe", timeout=5).raise_for_status()
    yield url
    httpx.put(f"{url}/api/v1/admin/wipe", timeout=5)


@pytest.fixture
def s3_bucket() -> S3Bucket:
    """A fresh bucket on the real S3-protocol server scripts/test starts (moto, signatures checked)."""
    endpoint = _need("DIFYMAINT_TEST_S3_ENDPOINT", "the S3 server")
    return S3Bucket.create(
        endpoint, os.environ["DIFYMAINT_TEST_S3_ACCESS_KEY"], os.environ["DIFYMAINT_TEST_S3_SECRET_KEY"]
    )


@pytest.fixture
def signed_s3_bucket() -> S3Bucket:
    """A fresh bucket on the second S3 server, which refuses requests not signed with its one key."""
    endpoint = _need("DIFYMAINT_TEST_S3_AUTH_ENDPOINT", "the signature-checking S3 server")
    return S3Bucket.create(
        endpoint, os.environ["DIFYMAINT_TEST_S3_AUTH_ACCESS_KEY"], os.environ["DIFYMAINT_TEST_S3_AUTH_SECRET_KEY"]
    )


@pytest.fixture
def billing() -> Iterator[BillingStub]:
    with BillingStub() as stub:
        yield stub


@pytest.fixture
def tidb_stub() -> Iterator[TidbCloudStub]:
    with TidbCloudStub() as server:
        yield server


@pytest.fixture
def no_tidb_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The machine's TiDB variables cannot leak into a TiDB test."""
    from tests.tidb_support import TIDB_VARS

    for name in TIDB_VARS:
        monkeypatch.delenv(name, raising=False)


def make_settings(**settings: Any) -> Settings:
    """Settings from overrides only (no environment file), for storage and settings tests."""
    return load_settings(None, settings)


def make_context(database_url: str, clock: FixedClock | None = None, **settings: Any) -> Context:
    """A context for calling a job directly, with settings overrides and a recording reporter."""
    base: dict[str, Any] = {
        "DIFYMAINT_DATABASE_URL": database_url,
        "DIFYMAINT_USE_REDIS": False,
        "DIFYMAINT_BILLING_RETRY_SECONDS": 0,
        "DIFYMAINT_BILLING_RETRY_WAIT": 0,
    }
    base.update(settings)
    return Context(load_settings(None, base), clock=clock or FixedClock(), reporter=RecordingReporter())


def row_counts(engine: Engine, tables: list[str]) -> dict[str, int]:
    with engine.connect() as conn:
        return {name: int(conn.execute(sa.text(f"SELECT count(*) FROM {name}")).scalar_one()) for name in tables}


# The fast tier (`scripts/test --fast`, or `pytest -m "not servers"`) runs what needs no server at all.
SERVER_FIXTURES = frozenset(
    {"pg_admin_url", "mysql_admin_url", "db_url", "redis_url", "pushgateway_url", "s3_bucket", "signed_s3_bucket"}
)
# They start (and restart) clusters of their own: a primary and its streaming replica for the replica-lag tests.
OWN_SERVER_MODULES = frozenset({"test_server_restarts", "test_replica_throttle"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        module = getattr(item, "module", None)
        own = module is not None and module.__name__.rpartition(".")[2] in OWN_SERVER_MODULES
        fixtures = set(getattr(item, "fixturenames", ()))
        if own or SERVER_FIXTURES & fixtures:
            item.add_marker(pytest.mark.servers)
        # `-m mysql` selects every test that runs on MariaDB (the [mysql] half of a db_url test too).
        callspec = getattr(item, "callspec", None)
        if "mysql_admin_url" in fixtures or (callspec is not None and callspec.params.get("db_url") == "mysql"):
            item.add_marker(pytest.mark.mysql)
