"""Secrets never appear in any output: every job, failing against unreachable servers, with secrets planted in
environment variables and in URL flags, in every output mode (text, --json, --log-format json, --debug).

Each (job, placement) pair runs once in a subprocess, the output mode rotating so that every job and every
placement meet several modes; the runs go through a small thread pool to stay well under a minute.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from difymaint.core.redact import (
    MASK,
    RedactingFilter,
    clear_secrets,
    mask_urls,
    register_secrets,
    scrub,
    secrets_in,
    url_password,
)
from difymaint.core.settings import load_settings
from difymaint.jobs import JOBS
from tests.job_args import RUN_ARGS
from tests.test_cli import run_cli

# Distinct, greppable values; one has characters a URL must encode.
SECRETS = {
    "DB_PASSWORD": "dbpw-Zq81xv",
    "REDIS_PASSWORD": "redispw-Hh27",
    "REDIS_SENTINEL_PASSWORD": "sentinelpw-Kk90",
    "BILLING_API_SECRET_KEY": "billkey-Pp55",
    "SMTP_PASSWORD": "smtppw-Mm31",
    "RESEND_API_KEY": "re_resendkey-Yy42",
    "TIDB_PRIVATE_KEY": "tidbkey-Ww63",
    "ARCHIVE_STORAGE_SECRET_KEY": "s3secret-Tt14",
    "SENDGRID_API_KEY": "SG.sendgridkey-Rr26",
    # A dead-man ping URL carries its check's key in the path: the whole URL is the secret.
    "DIFYMAINT_PING_URL": "http://127.0.0.1:1/pingkey-Gg12/{job}",
}
CELERY_PW = "celerypw-Bb77"
FLAG_REDIS_PW = "flagredis-p@ss/w:rd"  # raw "@", "/" and ":" inside, percent-encoded in the URL
FLAG_DB_PW = "flagdbpw-Cc36"
ENV_URL_PW = "envurlpw-Dd48"
ALL_SECRETS = [*SECRETS.values(), CELERY_PW, FLAG_REDIS_PW, FLAG_DB_PW, ENV_URL_PW, "brokerflagpw-Ee59", "pingkey-Gg12"]

# The arguments a job needs to get as far as its connections (otherwise it stops at a usage error first).
EXTRA: dict[str, list[str]] = {
    **RUN_ARGS,
    # Index removal through Dify's Celery broker, its password in a flag this time.
    "clean-unused-datasets": ["--enqueue-index-removal", "--broker-url", "redis://:brokerflagpw-Ee59@127.0.0.1:1/2"],
}
MODES: list[list[str]] = [
    [],
    ["--json"],
    ["--log-format", "json", "-v"],
    ["--debug", "-v"],
    ["--json", "--log-format", "json", "--debug"],
]


def _env_secrets(**more: str) -> dict[str, str]:
    env = {
        **SECRETS,
        "DB_HOST": "127.0.0.1",
        "DB_PORT": "1",
        "BILLING_ENABLED": "true",
        "BILLING_API_URL": "http://127.0.0.1:1",
        "MAIL_TYPE": "smtp",
        "SMTP_SERVER": "127.0.0.1",
        "SMTP_PORT": "1",
        "MAIL_DEFAULT_SEND_FROM": "Dify <no-reply@example.com>",
        "CELERY_BROKER_URL": f"redis://:{CELERY_PW}@127.0.0.1:1/1",
        # TiDB Cloud configured and create-tidb enabled, so it gets as far as its connections too.
        "CREATE_TIDB_SERVICE_JOB_ENABLED": "true",
        "TIDB_API_URL": "http://127.0.0.1:1",
        "TIDB_PUBLIC_KEY": "tidb-public",
        "TIDB_PROJECT_ID": "1",
    }
    env.update(more)
    return env


def placements(sqlite_url: str) -> dict[str, tuple[dict[str, str], list[str]]]:
    """Where the secrets are, and which server refuses first (a reachable SQLite database lets Redis fail)."""
    return {
        # The lock's Redis fails; its password is in the flag, percent-encoded.
        "redis-url-flag": (
            _env_secrets(),
            ["--redis-url", "redis://:flagredis-p%40ss%2Fw%3Ard@127.0.0.1:1/0", "--database-url", sqlite_url],
        ),
        # Redis from REDIS_* variables, unreachable.
        "redis-env": (_env_secrets(REDIS_HOST="127.0.0.1", REDIS_PORT="1", DIFYMAINT_DATABASE_URL=sqlite_url), []),
        # The database fails: its password in the URL flag.
        "database-url-flag": (_env_secrets(), ["--database-url", f"postgresql://dify:{FLAG_DB_PW}@127.0.0.1:1/dify"]),
        # The database fails: DB_* variables with DB_PASSWORD.
        "database-env": (_env_secrets(DIFYMAINT_USE_REDIS="false"), []),
        # A URL that does not even parse (bad port) in a variable: the settings error quotes it.
        "bad-url-env": (
            _env_secrets(
                DIFYMAINT_REDIS_URL=f"redis://:{ENV_URL_PW}@127.0.0.1:notaport/0", DIFYMAINT_DATABASE_URL=sqlite_url
            ),
            [],
        ),
    }


def _cases() -> list[tuple[str, str, list[str]]]:
    """Each job with two placements (every placement meets several jobs), the output mode rotating."""
    names = list(placements("sqlite://"))
    cases = []
    for i, job in enumerate(JOBS):
        for k, placement in enumerate((names[i % len(names)], names[(i + 2) % len(names)])):
            cases.append((job, placement, MODES[(2 * i + k) % len(MODES)]))
    return cases


def _run(case: tuple[str, str, list[str]], tmp: Path, sqlite_url: str) -> tuple[tuple[str, str, list[str]], Any]:
    job, placement, mode = case
    env, flags = placements(sqlite_url)[placement]
    extra = [part.format(tmp=tmp) for part in EXTRA.get(job, [])]
    return case, run_cli([job, "--yes", *extra, *flags, *mode], env=env)


@pytest.mark.slow
def test_no_secret_in_any_output_of_any_job(tmp_path: Path, sqlite_url: str) -> None:
    cases = _cases()
    assert {job for job, _, _ in cases} == set(JOBS) and len({tuple(m) for _, _, m in cases}) == len(MODES)
    assert {placement for _, placement, _ in cases} == set(placements("sqlite://"))
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda case: _run(case, tmp_path, sqlite_url), cases))
    for (job, placement, mode), result in results:
        where = f"{job} [{placement}] {' '.join(mode)}"
        output = result.stdout + result.stderr
        assert result.returncode in (1, 2), (where, result.returncode, output)
        assert output.strip(), where  # it said something, or the check below proves nothing
        for secret in ALL_SECRETS:
            assert secret not in output, (where, secret, output)
        assert "flagredis-p%40ss" not in output, (where, output)
        if "--debug" not in mode:
            assert "Traceback" not in output, (where, output)
        if placement.startswith("redis"):
            # it got as far as the lock (monitor-queue's only server is the broker)
            reached = "cannot reach the Celery broker" if job == "monitor-queue" else "cannot reach Redis"
            if job in ("sweep-files", "storage-report"):
                reached = "needs PostgreSQL"  # they refuse the SQLite database before any server
            assert reached in output, (where, output)


@pytest.mark.slow
def test_redis_url_password_masked_in_the_error_line(sqlite_url: str) -> None:
    env, flags = placements(sqlite_url)["redis-url-flag"]
    result = run_cli(["clean-messages", "--dry-run", *flags, "--json"], env=env)
    assert result.returncode == 1
    assert "cannot reach Redis at redis://:***@127.0.0.1:1/0" in result.stderr
    assert json.loads(result.stdout)["error"].startswith("cannot reach Redis at redis://:***@127.0.0.1:1/0")


# --- the library ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("redis://:pw@h:1/0", "redis://:***@h:1/0"),
        ("rediss://user:pw@h:1/0", "rediss://user:***@h:1/0"),
        (
            "at postgresql+psycopg2://dify:p@ss@db:5432/dify: refused",
            "at postgresql+psycopg2://dify:***@db:5432/dify: refused",
        ),
        ("amqp://guest:guest@rabbit:5672//", "amqp://guest:***@rabbit:5672//"),
        (
            "sentinel://:pw@s1:26379/mymaster;sentinel://:pw@s2:26379",
            "sentinel://:***@s1:26379/mymaster;sentinel://:***@s2:26379",
        ),
        ("url='redis://:pw@h:1/0'", "url='redis://:***@h:1/0'"),
        ("redis://h:6379/0 and http://example.com:80/x", "redis://h:6379/0 and http://example.com:80/x"),
    ],
)
def test_mask_urls(text: str, expected: str) -> None:
    assert mask_urls(text) == expected


def test_scrub_known_secrets_in_every_spelling() -> None:
    clear_secrets()
    try:
        # "x" (like Dify's stock TIDB_PRIVATE_KEY=dify) is too short to hide inside a text without garbling it;
        # substrings are masked from 8 characters on (core/redact.py).
        register_secrets(["a b/c@d!", "x"])
        assert scrub("pw a b/c@d!, a%20b%2Fc%40d%21, a+b%2Fc%40d%21") == f"pw {MASK}, {MASK}, {MASK}"
        assert scrub("x marks") == "x marks"
        assert scrub("k=zzzz-secret", ["zzzz-secret"]) == f"k={MASK}"
    finally:
        clear_secrets()


def test_secret_values_of_settings() -> None:
    settings = load_settings(
        None,
        {
            **SECRETS,
            "DIFYMAINT_DATABASE_URL": f"postgresql://u:{FLAG_DB_PW}@h/d",
            "CELERY_BROKER_URL": f"redis://:{CELERY_PW}@h:1/1",
            "DIFYMAINT_REDIS_URL": "redis://:flagredis-p%40ss%2Fw%3Ard@h:1/0",
            "REDIS_KEY_PREFIX": "not-a-secret",
        },
    )
    values = settings.secret_values()
    assert set(SECRETS.values()) | {FLAG_DB_PW, CELERY_PW, FLAG_REDIS_PW} <= values
    assert "not-a-secret" not in values and "postgresql" not in values
    assert url_password("redis://:p@h:notaport/0") == "p"
    # A secret-looking name Dify may add later: trusted only with a value long enough to be unambiguous.
    assert secrets_in({"SOME_API_KEY": "k-long-enough", "OTHER_API_KEY": "k", "HOST": "h"}) == {"k-long-enough"}


def test_log_records_are_scrubbed() -> None:
    clear_secrets()
    register_secrets(["hunter2-xyz"])
    try:
        record = logging.LogRecord(
            "difymaint", logging.INFO, __file__, 1, "got %s at %s", ("hunter2-xyz", "redis://:q@h"), None
        )
        record.fields = {"url": "postgresql://u:zz@h/d"}
        assert RedactingFilter().filter(record)
        assert record.getMessage() == f"got {MASK} at redis://:***@h"
        assert record.fields == {"url": "postgresql://u:***@h/d"}
    finally:
        clear_secrets()
