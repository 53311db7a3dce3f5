"""Bad input → one line, exit 2, nothing touched: hypothesis feeds garbage to every option of every command and
to the environment variables every command reads.

A garbage value is drawn for the option's kind (numbers outside the declared range or not numbers at all, inf
and nan, ids that are not UUIDs, choices outside the list, dates that are not dates, URLs with a wrong scheme
or port). Each command first proves it exits 0 with the same base arguments, so a 2 is the garbage's doing.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from difymaint.core.settings import DB_TYPES
from difymaint.core.window import MAX_DAYS
from difymaint.dify.tables import metadata
from difymaint.jobs import JOBS
from difymaint.jobs.spec import Opt
from tests.conftest import _need
from tests.job_args import RUN_ARGS
from tests.test_cli import app as cli_app
from tests.test_cli import invoke_assert_code, runner

FAST = settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
    database=None,  # no .hypothesis/ state between runs: the same examples in CI and locally
    derandomize=True,
)
# What a dry run of each command needs besides the database (the garbage must be the only thing wrong).
BASE = RUN_ARGS
# Options whose every value is acceptable (free text, or an output path the dry run does not open): there is no
# garbage to feed them. Each says why.
NO_GARBAGE = {
    "--console-web-url": "a base URL Dify only puts into mail links",
    "--archive-dir": "created on demand; an unusable directory fails at first write (exit 1, tested per job)",
    "--orphan-manifest": "an output path",
    "--emit-index-removals": "an output path",
    "--broker-url": "checked when --enqueue-index-removal uses it (tests/test_clean_unused_datasets.py)",
    "--leak-file": "an output path (created on the first leak)",
    "--queue": "a queue name is free text; an unknown queue is simply empty",
    "--alert-emails": "addresses are checked by the mail service that receives them",
}


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("db") / "dify.sqlite"
    engine = sa.create_engine(f"sqlite:///{path}")
    metadata.create_all(engine)
    engine.dispose()
    return f"sqlite:///{path}"


# Jobs that reach Redis or the broker, or need TiDB Cloud settings, even on a dry run with nothing to do.
REDIS_OPTION = {"flush-api-token-usage": "--redis-url", "monitor-queue": "--broker-url"}
BASE_ENV: dict[str, dict[str, str]] = {
    "update-tidb-status": {
        "TIDB_API_URL": "http://127.0.0.1:1",
        "TIDB_PUBLIC_KEY": "public",
        "TIDB_PRIVATE_KEY": "private-key",
        "TIDB_PROJECT_ID": "1",
    },
}


def _base(job: str, database: str, tmp: Path) -> list[str]:
    (tmp / "archive").mkdir(exist_ok=True)
    args = [job, "--database-url", database, "--dry-run", *(part.format(tmp=tmp) for part in BASE.get(job, []))]
    if job in REDIS_OPTION:
        args += [REDIS_OPTION[job], _need("DIFYMAINT_TEST_REDIS_URL", "Redis")]
    return args


def _not_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return True
    return False


def _not_shard(text: str) -> bool:
    from difymaint.core.errors import UsageError
    from difymaint.engine.shard import parse_shard

    try:
        parse_shard(text)
    except UsageError:
        return True
    return False


def _not_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return True
    return False


def _not_ids(text: str) -> bool:
    pieces = [piece.strip() for piece in text.split(",") if piece.strip()]
    if not pieces:
        return True
    try:
        for piece in pieces:
            uuid.UUID(piece)
    except ValueError:
        return True
    return False


JUNK = st.text(max_size=30)
NON_FINITE = st.sampled_from(["inf", "-inf", "nan", "1e400", "Infinity", "NaN"])


def _int_garbage(low: int | None, high: int | None) -> st.SearchStrategy[str]:
    parts = [JUNK.filter(_not_int), NON_FINITE, st.sampled_from(["1.5", "1e3", "0x10", "", " "])]
    if low is not None:
        parts.append(st.integers(max_value=low - 1).map(str))
    if high is not None:
        parts.append(st.integers(min_value=high + 1).map(str))
    return st.one_of(parts)


def _url_garbage(schemes: tuple[str, ...]) -> st.SearchStrategy[str]:
    host = st.sampled_from(["127.0.0.1", "h", "db.example"])
    wrong = [scheme for scheme in ("http", "https", "ftp", "mysql", "file", "x") if scheme not in schemes]
    bad_scheme = st.tuples(st.sampled_from(wrong), host).map(lambda t: f"{t[0]}://{t[1]}:5432/x")
    bad_port = st.tuples(
        st.sampled_from(schemes),
        host,
        st.one_of(
            JUNK.filter(lambda p: not p.isdigit() and "/" not in p and "@" not in p),
            st.integers(min_value=65536).map(str),
        ),
    ).map(lambda t: f"{t[0]}://u:p@{t[1]}:{t[2]}/0")
    return st.one_of(
        bad_scheme, bad_port.filter(lambda u: ":" in u.split("@")[1]), JUNK.filter(lambda t: "://" not in t)
    )


def garbage_for(opt: Opt) -> st.SearchStrategy[str] | None:
    if opt.kind == "flag" or opt.flag in NO_GARBAGE:
        return None
    if opt.kind in ("ids", "repeated_ids"):
        return JUNK.filter(_not_ids)
    if opt.choices:
        return JUNK.filter(lambda text: text not in opt.choices)
    if opt.type is int:
        return _int_garbage(opt.min, opt.max)
    if opt.type is float:
        return st.one_of(NON_FINITE, JUNK.filter(_not_float), st.sampled_from(["-1", "0", "-0.5"]))
    if opt.name == "shard":
        return st.one_of(JUNK.filter(_not_shard), st.sampled_from(["2/2", "-1/2", "0/0", "1/2/3"]))
    if opt.name == "window_start":
        return st.one_of(JUNK.filter(lambda t: not t.strip().isdigit()), st.sampled_from(["2026-13-01T00:00"]))
    if opt.name in ("start_from", "end_before"):
        return st.one_of(
            JUNK, st.sampled_from(["2026-13-01", "0000-01-01", "99999-01-01", "0001-01-01T00:00:00+01:00"])
        )
    raise AssertionError(f"no garbage strategy for {opt.flag}: add one, or list it in NO_GARBAGE with a reason")


# The shared options (declared in cli/options.py::Common) that take a value.
COMMON: dict[str, st.SearchStrategy[str]] = {
    "--max-runtime": st.one_of(
        NON_FINITE,
        st.floats(max_value=0.999).map(repr),
        st.integers(min_value=31 * 86400 + 1).map(str),
        JUNK.filter(lambda t: not t.strip().replace(".", "", 1).isdigit()),
    ),
    "--max-batches": _int_garbage(1, 2**31 - 1),
    "--lock-ttl": _int_garbage(10, 7 * 86400),
    "--database-url": _url_garbage(("postgresql", "mysql", "sqlite")),
    "--redis-url": _url_garbage(("redis", "rediss")),
    "--log-format": JUNK.filter(lambda text: text not in ("text", "json")),
}


def _assert_usage_error(result: Any, where: str) -> None:
    output = result.stdout + result.stderr
    assert result.exit_code == 2, (where, result.exit_code, output)
    assert "Traceback" not in output, (where, output)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("difymaint: error:"), (where, result.stderr)


def _invoke(args: list[str], env: dict[str, str] | None = None) -> Any:
    result = runner.invoke(cli_app, args, env={"NO_COLOR": "1", "COLUMNS": "200", **(env or {})})
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


# Jobs that need PostgreSQL (the module's database is SQLite): their base run is the one-line refusal.
POSTGRES_ONLY = {"sweep-files", "storage-report"}


@pytest.mark.parametrize("job", list(JOBS))
def test_base_arguments_run(job: str, database: str, tmp_path: Path) -> None:
    if job in POSTGRES_ONLY:
        _assert_usage_error(_invoke(_base(job, database, tmp_path)), job)
        assert "needs PostgreSQL" in _invoke(_base(job, database, tmp_path)).stderr
        return
    invoke_assert_code(_base(job, database, tmp_path), 0, env=BASE_ENV.get(job))


@pytest.mark.parametrize("job", list(JOBS))
def test_garbage_in_any_option_is_exit_2(job: str, database: str, tmp_path: Path) -> None:
    pairs = {opt.flag: strategy for opt in JOBS[job].all_options() if (strategy := garbage_for(opt)) is not None}
    pairs.update(COMMON)
    flags = sorted(pairs)

    @FAST
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        flag = data.draw(st.sampled_from(flags), label="option")
        value = data.draw(pairs[flag], label="value")
        args = [*_base(job, database, tmp_path), f"{flag}={value}"]
        _assert_usage_error(_invoke(args, BASE_ENV.get(job)), f"{job} {flag}={value!r}")

    check()


ENV_GARBAGE: dict[str, st.SearchStrategy[str]] = {
    "DB_PORT": _int_garbage(1, 65535),
    "REDIS_PORT": _int_garbage(1, 65535),
    "DIFYMAINT_LOCK_TTL": _int_garbage(10, 7 * 86400),
    "SANDBOX_EXPIRED_RECORDS_RETENTION_DAYS": _int_garbage(1, MAX_DAYS),
    "WORKFLOW_LOG_RETENTION_DAYS": _int_garbage(1, MAX_DAYS),
    "DIFYMAINT_BILLING_TIMEOUT": NON_FINITE,
    "DIFYMAINT_STATEMENT_TIMEOUT": _int_garbage(0, None),
    "DB_EXTRAS": st.text(min_size=1, max_size=20).filter(lambda t: "\x00" not in t and _bad_query(t)),
    "DB_SESSION_TIMEZONE_OVERRIDE": st.sampled_from(["Mars/Olympus", "UTC+", "../../etc/passwd", "x" * 40, "Europe/"]),
    "DIFYMAINT_REDIS_URL": _url_garbage(("redis", "rediss")),
    "DB_TYPE": JUNK.filter(lambda t: "\x00" not in t and t.strip() and t.strip() not in DB_TYPES),
}


def _bad_query(text: str) -> bool:
    try:
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        return True
    return not pairs or any(not key for key, _ in pairs)


def test_garbage_in_any_environment_variable_is_exit_2(database: str, tmp_path: Path) -> None:
    names = sorted(ENV_GARBAGE)

    @FAST
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(names), label="variable")
        value = data.draw(ENV_GARBAGE[name].filter(lambda v: "\x00" not in v and v.strip() != ""), label="value")
        job = data.draw(st.sampled_from(list(JOBS)), label="job")
        args = _base(job, database, tmp_path)
        if name == "DIFYMAINT_REDIS_URL" or name.startswith("DB_"):
            # These only matter on the paths that read them: take the URL flag away.
            args = [arg for arg in args if arg not in ("--database-url", database)]
            env = {name: value} if name.startswith("DB_") else {name: value, "DIFYMAINT_DATABASE_URL": database}
        else:
            env = {name: value}
        _assert_usage_error(_invoke(args, env), f"{job} {name}={value!r}")

    check()


@pytest.mark.parametrize(
    ("content", "needle"),
    [(b"\x00\x01\x02binary", "not a text file"), (b"\xff\xfe\x00", "not UTF-8 text"), (b"A=1\x00", "not a text file")],
)
def test_env_file_must_be_text(tmp_path: Path, database: str, content: bytes, needle: str) -> None:
    env_file = tmp_path / "dify.env"
    env_file.write_bytes(content)
    result = _invoke(["clean-messages", "--database-url", database, "--dry-run", "--env-file", str(env_file)])
    _assert_usage_error(result, "binary env file")
    assert needle in result.stderr
    missing = _invoke(["clean-messages", "--dry-run", "--env-file", str(tmp_path / "absent.env")])
    _assert_usage_error(missing, "missing env file")


@pytest.mark.parametrize(
    "body",
    [
        '{"default": {"plan": 7}}',
        '{"default": {"pln": "sandbox"}}',
        '{"default": "sandbox"}',
        '{"tenants": {"t": {"plan": "team", "expiration_date": "soon"}}}',
        '{"whitelist": "t1"}',
        '{"defaults": {"plan": "sandbox"}}',
        "[]",
        "{not json",
    ],
)
def test_malformed_plan_file_is_exit_2(tmp_path: Path, database: str, body: str) -> None:
    plans = tmp_path / "plans.json"
    plans.write_text(body)
    result = _invoke(["clean-messages", "--database-url", database, "--dry-run"], {"DIFYMAINT_PLAN_FILE": str(plans)})
    _assert_usage_error(result, body)
    assert "DIFYMAINT_PLAN_FILE" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["--days", "100000000000000000000"],
        ["--days", "1000000"],
        ["--max-runtime", "inf"],
        ["--max-runtime", "nan"],
        ["--sleep-ms", "99999999"],
        ["--start-from", "0001-01-01T00:00:00+01:00", "--end-before", "2020-01-01"],
    ],
)
def test_issue_inputs_are_exit_2(args: list[str], database: str) -> None:
    _assert_usage_error(_invoke(["clean-messages", "--database-url", database, "--dry-run", *args]), str(args))


@pytest.mark.parametrize(
    "env",
    [
        {"DB_PORT": "70000"},
        {"REDIS_PORT": "70000", "REDIS_HOST": "127.0.0.1"},
        {"DB_EXTRAS": "=&="},
        {"DB_SESSION_TIMEZONE_OVERRIDE": "Mars/Olympus"},
        {"DIFYMAINT_LOCK_TTL": "2"},
        {"DIFYMAINT_REDIS_URL": "http://127.0.0.1:6379/0"},
        {"DIFYMAINT_DATABASE_URL": "postgresql://u:p@h:port/d"},
    ],
)
def test_issue_settings_are_exit_2(env: dict[str, str]) -> None:
    _assert_usage_error(_invoke(["clean-messages", "--dry-run"], env), str(env))
