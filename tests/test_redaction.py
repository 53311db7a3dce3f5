"""Redaction that is exact, with Dify's stock settings (tests/fixtures/dify-stock-secrets.env): short stock secrets
such as TIDB_PRIVATE_KEY=dify never mask ordinary words, numeric settings with secret-looking names are not
secrets, every --json output stays valid JSON, and the console commands hide secrets as the jobs do.

Complements tests/test_secrets.py (secrets planted everywhere never appear)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from difymaint.core.redact import (
    MASK,
    RedactingFilter,
    clear_secrets,
    dumps_masked,
    mask_data,
    register_secrets,
    scrub,
    secret_name,
    secrets_in,
)
from difymaint.core.settings import load_settings
from difymaint.ops.history import HistoryStore, redact
from tests.test_cli import run_cli

STOCK = Path(__file__).parent / "fixtures" / "dify-stock-secrets.env"
# Dify's hosts (db, redis) do not resolve here: the same settings, pointed at closed local ports.
UNREACHABLE = {"DB_HOST": "127.0.0.1", "DB_PORT": "1", "REDIS_HOST": "127.0.0.1", "REDIS_PORT": "1"}
LONG_ENV = "envsecret-Qx81vLm2"  # long enough to be hidden wherever it appears
LONG_FLAG = "flagsecret-Zr27kWp9"


@pytest.fixture(autouse=True)
def _fresh_registry() -> Any:
    clear_secrets()
    yield
    clear_secrets()


def stock() -> dict[str, str]:
    values: dict[str, str] = {}
    for line in STOCK.read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            values[name] = value
    return values


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def json_lines(text: str) -> list[Any]:
    """Every line of a --json stdout parsed (fails the test when one is not JSON)."""
    return [json.loads(line) for line in lines(text)]


# --- which settings are secrets ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("TIDB_PRIVATE_KEY", "listed"),
        ("DB_PASSWORD", "listed"),
        ("CELERY_SENTINEL_PASSWORD", "listed"),
        ("SECRET_KEY", "listed"),
        ("SENTRY_DSN", "listed"),
        ("OTLP_API_KEY", "listed"),
        ("SOME_FUTURE_API_KEY", "pattern"),
        ("TRIGGER_PROVIDER_CREDENTIAL_THRESHOLD_SECONDS", None),
        ("OAUTH_ACCESS_TOKEN_RETENTION_DAYS", None),
        ("ACCESS_TOKEN_EXPIRE_MINUTES", None),
        ("RESET_PASSWORD_TOKEN_EXPIRY_MINUTES", None),
        ("PLUGIN_BASED_TOKEN_COUNTING_ENABLED", None),
        ("INDEXING_MAX_SEGMENTATION_TOKENS_LENGTH", None),
        ("PLUGIN_MODEL_SCHEMA_CACHE_TTL", None),
        ("credential_threshold_s", None),  # a --json details key
        ("DB_HOST", None),
    ],
)
def test_secret_names(name: str, kind: str | None) -> None:
    assert secret_name(name) == kind


def test_secrets_of_the_stock_env() -> None:
    values = stock()
    found = secrets_in(values)
    assert {"dify", "difyai123456", values["SECRET_KEY"], "dify-sandbox", "admin", "xxx"} <= found
    assert not found & {"3600", "60", "30", "5", "4000", "false", "postgres", "db", "redis", "5432"}
    assert secrets_in({"NEW_SERVICE_API_KEY": "short", "OTHER_API_KEY": "long-enough-1"}) == {"long-enough-1"}
    settings = load_settings(STOCK)
    assert {"dify", "difyai123456"} <= settings.secret_values()
    assert "3600" not in settings.secret_values()


# --- text: short secrets only where they stand whole -------------------------------------------------------------


def test_short_stock_secrets_never_mask_words() -> None:
    register_secrets(secrets_in(stock()))
    url = "postgresql+psycopg2://postgres:difyai123456@db:5432/dify?application_name=difymaint"
    assert scrub(f"cannot connect to {url}") == (
        f"cannot connect to postgresql+psycopg2://postgres:{MASK}@db:5432/dify?application_name=difymaint"
    )
    path = '  File "/usr/lib/python3/site-packages/difymaint/core/database.py", line 122, in check_connection'
    assert scrub(path) == path
    assert scrub("redis://:dify@h:1/0 for dify-sandbox and admin") == f"redis://:{MASK}@h:1/0 for {MASK} and admin"
    assert scrub("window before-3600, threshold 3600") == "window before-3600, threshold 3600"


# --- data: masked by key and whole value, valid JSON --------------------------------------------------------------


def test_structured_output_is_masked_by_key_and_stays_json() -> None:
    register_secrets(secrets_in({**stock(), "DB_PASSWORD": LONG_ENV}))
    data = {
        "credential_threshold_s": 3600,
        "tables": {"oauth_access_tokens": 12345678},
        "password": "anything",
        "api_keys": ["a", "b"],
        "user": "dify",  # exactly a known secret: masked whole
        "database": "difymaint",
        "error": f"at redis://:p@h:1/0 with {LONG_ENV} near difymaint",
        "window": {"label": "before-3600"},
    }
    masked = mask_data(data)
    assert masked == {
        "credential_threshold_s": 3600,
        "tables": {"oauth_access_tokens": 12345678},
        "password": MASK,
        "api_keys": [MASK, MASK],
        "user": MASK,
        "database": "difymaint",
        "error": f"at redis://:{MASK}@h:1/0 with {MASK} near difymaint",
        "window": {"label": "before-3600"},
    }
    assert json.loads(dumps_masked(data)) == masked
    assert data["password"] == "anything"  # a copy: the summary itself is untouched


def test_log_fields_are_masked_by_key() -> None:
    register_secrets(["dify"])
    record = logging.LogRecord("difymaint", logging.INFO, __file__, 1, "difymaint ran with dify", (), None)
    record.fields = {"credential_threshold_s": 3600, "secret_key": "x", "host": "difymaint-pod"}
    assert RedactingFilter().filter(record)
    assert record.getMessage() == "difymaint ran with dify"  # short: never inside a text
    assert record.fields == {"credential_threshold_s": 3600, "secret_key": MASK, "host": "difymaint-pod"}


def test_history_arguments_use_the_same_names() -> None:
    args = {"credential_threshold_s": 3600, "access_token": "tok-123", "database_url": "postgresql://u:p@h/d"}
    assert redact(args) == {
        "credential_threshold_s": 3600,
        "access_token": MASK,
        "database_url": f"postgresql://u:{MASK}@h/d",
    }


# --- the CLI with Dify's stock .env -----------------------------------------------------------------------------


def test_error_line_and_traceback_keep_difymaint_intact() -> None:
    result = run_cli(["clean-messages", "--env-file", str(STOCK), "--dry-run", "--json", "--debug"], env=UNREACHABLE)
    assert result.returncode == 1, result.stderr
    summary = json.loads(result.stdout)
    expected = f"postgresql+psycopg2://postgres:{MASK}@127.0.0.1:1/dify?application_name=difymaint"
    assert expected in summary["error"]
    errors = [line for line in result.stderr.splitlines() if line.startswith("difymaint: error:")]
    assert len(errors) == 1 and expected in errors[0]
    assert "Traceback" in result.stderr and "/difymaint/core/database.py" in result.stderr  # --debug's frames
    assert "***maint" not in result.stderr + result.stdout and "difyai123456" not in result.stderr + result.stdout


def test_refresh_trigger_providers_json_parses_with_the_stock_env(sqlite_url: str) -> None:
    # As in a compose or Helm pod: Dify's settings are the process environment.
    result = run_cli(
        ["refresh-trigger-providers", "--database-url", sqlite_url, "--json"],
        env={**stock(), **UNREACHABLE, "DIFYMAINT_USE_REDIS": "false"},
    )
    (summary,) = json_lines(result.stdout)
    assert summary["details"]["credential_threshold_s"] == 3600, result.stderr
    assert summary["details"]["subscription_threshold_s"] == 3600


def test_days_label_is_not_masked_by_a_threshold_of_the_same_value(sqlite_url: str) -> None:
    result = run_cli(
        ["clean-messages", "--env-file", str(STOCK), "--database-url", sqlite_url, "--days", "3650", "--dry-run"]
        + ["--json"],
        env={**UNREACHABLE, "DIFYMAINT_USE_REDIS": "false", "TRIGGER_PROVIDER_CREDENTIAL_THRESHOLD_SECONDS": "3650"},
    )
    assert result.returncode == 0, result.stderr
    (summary,) = json_lines(result.stdout)
    assert summary["window"]["label"] == "before-3650"


# --- the console commands mask as the jobs do ---------------------------------------------------------------------


def _seed_history(url: str) -> str:
    engine = sa.create_engine(url)
    store = HistoryStore(engine)
    run_id = store.start(job="clean-messages", args={}, dry_run=False, started_at=datetime.now(UTC))
    # A record written by an older difymaint, or by a library that logged the secret in plain text.
    store.update(
        run_id,
        outcome="failed",
        exit_code=1,
        error=f"auth failed for {LONG_ENV} (flag {LONG_FLAG}) at application_name=difymaint",
        log_lines=[f"INFO difymaint: holding lock; password {LONG_ENV}", "INFO connected as dify to difymaint"],
    )
    engine.dispose()
    return run_id


def test_console_commands_hide_secrets_from_variables_and_flags(sqlite_url: str) -> None:
    run_id = _seed_history(sqlite_url)
    env = {**UNREACHABLE, "DB_PASSWORD": LONG_ENV, "DIFYMAINT_USE_REDIS": "false"}
    flag_url = f"postgresql://u:{LONG_FLAG}@127.0.0.1:1/d"
    outputs: list[str] = []
    for args in (
        ["history", "show", run_id, "--database-url", sqlite_url],
        ["history", "show", run_id, "--database-url", sqlite_url, "--json"],
        ["history", "--database-url", sqlite_url, "--json"],
        ["history", "--database-url", sqlite_url],
        ["status", "--database-url", sqlite_url, "--json"],
        ["run-due", "--list", "--database-url", sqlite_url, "--json"],
        ["status", "--database-url", flag_url],  # unreachable: the error line
    ):
        result = run_cli([*args, "--env-file", str(STOCK)], env=env)
        assert result.returncode in (0, 1), (args, result.stderr)
        if "--json" in args:
            json_lines(result.stdout)
        outputs.append(result.stdout + result.stderr)
    shown, shown_json = outputs[0], json.loads(outputs[1].splitlines()[0])
    assert f"auth failed for {MASK} (flag " in shown and "application_name=difymaint" in shown
    assert "connected as dify to difymaint" in shown  # a short stock secret stays a word
    assert shown_json["error"].startswith(f"auth failed for {MASK}") and "difymaint" in shown_json["error"]
    assert f"postgresql+psycopg2://u:{MASK}@127.0.0.1:1/d?application_name=difymaint" in outputs[-1]
    assert LONG_FLAG not in outputs[-1]
    for text in outputs:
        assert LONG_ENV not in text and "difyai123456" not in text and "***maint" not in text


def test_a_long_secret_never_appears_in_job_output(sqlite_url: str) -> None:
    env = {"DIFYMAINT_USE_REDIS": "false", "BILLING_API_SECRET_KEY": LONG_ENV, "TIDB_PRIVATE_KEY": "dify"}
    flag_url = f"postgresql://dify:{LONG_FLAG}@127.0.0.1:1/dify"
    for args in (
        ["clean-messages", "--database-url", flag_url, "--log-format", "json", "--json", "--debug", "--dry-run"],
        ["clean-messages", "--database-url", sqlite_url, "--log-format", "json", "-vv", "--json", "--dry-run"],
    ):
        result = run_cli(args, env=env)
        json_lines(result.stdout)
        if "--log-format" in args:
            for line in lines(result.stderr):
                if line.startswith("{"):
                    json.loads(line)
        for secret in (LONG_ENV, LONG_FLAG):
            assert secret not in result.stdout + result.stderr, (args, secret)
        assert "***maint" not in result.stdout + result.stderr
