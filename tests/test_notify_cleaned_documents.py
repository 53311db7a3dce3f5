"""notify-cleaned-documents against a real PostgreSQL, a real SMTP server (aiosmtpd) and a Resend stub."""

from __future__ import annotations

import io
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from difymaint.core.errors import ConfigError
from difymaint.core.settings import load_settings
from difymaint.core.summary import Outcome
from difymaint.dify.mail import Mail, MailError, SmtpSender, mail_sender
from difymaint.engine.options import RunOptions
from difymaint.jobs import notify_cleaned_documents
from difymaint.jobs.execute import run_job
from difymaint.jobs.notify_cleaned_documents import SUBJECT, NotifyParams
from tests.conftest import NOW, make_context
from tests.dataset_scenario import notified_ids, seed_notify
from tests.stubs.resend import ResendStub
from tests.stubs.sendgrid import SendGridStub
from tests.stubs.smtp import SmtpStub

pytestmark = pytest.mark.postgres

CONSOLE = "https://console.dify.example"


@pytest.fixture
def smtp() -> Iterator[SmtpStub]:
    with SmtpStub() as server:
        yield server


def settings(billing: Any | None, mail: dict[str, Any] | None, **extra: Any) -> dict[str, Any]:
    result: dict[str, Any] = {"CONSOLE_WEB_URL": CONSOLE, **(mail or {}), **extra}
    if billing is not None:
        result.update(BILLING_ENABLED=True, BILLING_API_URL=billing.url, BILLING_API_SECRET_KEY="test-secret")
    return result


def params(**kwargs: Any) -> NotifyParams:
    kwargs.setdefault("run", RunOptions(batch_size=2))
    return NotifyParams(**kwargs)


def test_paid_owner_gets_one_mail_sandbox_is_marked_others_wait(
    db_engine: Any, db_url: str, billing: Any, smtp: SmtpStub
) -> None:
    sc = seed_notify(db_engine, NOW)
    billing.state.plans = sc.plans()
    summary = run_job(notify_cleaned_documents, make_context(db_url, **settings(billing, smtp.settings())), params())

    assert summary.outcome is Outcome.DONE
    assert [r.rcpt_tos for r in smtp.received] == [["a@example.com"], ["b@example.com"]]
    first = smtp.received[0]
    assert first.message["Subject"] == SUBJECT == "Dify Knowledge base auto disable notification"
    assert first.message["From"] == "Dify <no-reply@dify.example>"
    text, html = first.body("plain"), first.body("html")
    assert "Dear a@example.com" in text  # Dify greets the owner by address
    assert "Knowledge base Handbook: 3 documents" in text  # log rows per dataset
    assert "Knowledge base Recipes & <Tips>: 1 documents" in text
    assert "Recipes &amp; &lt;Tips&gt;" in html and "<Tips>" not in html  # HTML is escaped
    assert text.count("Knowledge base") == 2  # the deleted dataset is left out
    assert f"{CONSOLE}/datasets" in text and f'href="{CONSOLE}/datasets"' in html
    assert "past 30 days" in text and "past 30 days" in html

    # Mailed and sandbox workspaces are marked; no owner / unknown plan stay unmarked for the next run.
    assert notified_ids(db_engine) == sc.unnotified("paid_a", "paid_b", "sandbox") | set(sc.already_notified)
    assert summary.tables == {"dataset_auto_disable_logs": 9}
    assert summary.details["workspaces"] == {
        "mailed": 2,
        "sandbox_marked_without_mail": 1,
        "skipped_no_owner": 1,
        "skipped_unknown_plan": 1,
    }
    assert summary.details["mails_sent"] == 2

    # A second run finds only the two waiting workspaces and sends nothing new.
    again = run_job(notify_cleaned_documents, make_context(db_url, **settings(billing, smtp.settings())), params())
    assert len(smtp.received) == 2 and again.tables == {"dataset_auto_disable_logs": 0}


def test_smtp_failure_for_the_second_workspace_keeps_the_first_marked(
    pg_engine: Any, pg_url: str, billing: Any
) -> None:
    sc = seed_notify(pg_engine, NOW)
    billing.state.plans = sc.plans()
    with SmtpStub(reject={"b@example.com"}) as smtp, pytest.raises(MailError, match="1 workspace") as caught:
        run_job(notify_cleaned_documents, make_context(pg_url, **settings(billing, smtp.settings())), params())
    assert [r.rcpt_tos for r in smtp.received] == [["a@example.com"]]
    # paid_a was committed right after its mail; paid_b stays unmarked and is retried; the run went on.
    assert notified_ids(pg_engine) == sc.unnotified("paid_a", "sandbox") | set(sc.already_notified)
    summary = caught.value.difymaint_summary  # type: ignore[attr-defined]
    assert summary.outcome is Outcome.FAILED and summary.tables["dataset_auto_disable_logs"] == 8
    assert summary.details["workspaces"]["mail_failed"] == 1


def test_unreachable_smtp_server_marks_no_mailed_workspace(pg_engine: Any, pg_url: str, billing: Any) -> None:
    sc = seed_notify(pg_engine, NOW)
    billing.state.plans = sc.plans()
    with SmtpStub() as smtp:
        mail = smtp.settings()
    with pytest.raises(MailError):  # the server is gone now
        run_job(notify_cleaned_documents, make_context(pg_url, **settings(billing, mail)), params())
    assert notified_ids(pg_engine) == sc.unnotified("sandbox") | set(sc.already_notified)


def test_mail_not_configured_marks_nothing(pg_engine: Any, pg_url: str, billing: Any) -> None:
    seed_notify(pg_engine, NOW)
    before = notified_ids(pg_engine)
    with pytest.raises(ConfigError, match="MAIL_TYPE is not set"):
        run_job(notify_cleaned_documents, make_context(pg_url, **settings(billing, None)), params())
    assert notified_ids(pg_engine) == before


def test_billing_off_sends_nothing_and_marks_every_workspace(db_engine: Any, db_url: str, smtp: SmtpStub) -> None:
    sc = seed_notify(db_engine, NOW)
    summary = run_job(notify_cleaned_documents, make_context(db_url, **settings(None, smtp.settings())), params())
    assert smtp.received == []
    assert notified_ids(db_engine) == sc.unnotified(*sc.tenants) | set(sc.already_notified)
    assert any("NO mail is sent" in warning for warning in summary.warnings)
    assert summary.rows_remaining == 0  # a complete run: a number, never null (issue 13 item 9)


def test_partial_run_counts_the_logs_left(db_engine: Any, db_url: str, smtp: SmtpStub) -> None:
    sc = seed_notify(db_engine, NOW)
    mail = settings(None, smtp.settings(), DIFYMAINT_TARGET_BATCH_MS=0)
    first = run_job(notify_cleaned_documents, make_context(db_url, **mail), params(run=RunOptions(max_batches=1)))
    assert first.outcome is Outcome.PARTIAL and first.tables["dataset_auto_disable_logs"] > 0
    second = run_job(notify_cleaned_documents, make_context(db_url, **mail), params())
    assert notified_ids(db_engine) == sc.unnotified(*sc.tenants) | set(sc.already_notified)
    assert first.rows_remaining == second.tables["dataset_auto_disable_logs"] > 0
    assert second.rows_remaining == 0


def test_second_signal_during_the_purge_still_counts_the_backlog(pg_engine: Any, pg_url: str, smtp: SmtpStub) -> None:
    from difymaint.core.stop import Interrupted
    from tests.test_signal_cancel import _interrupt_at_batch

    sc = seed_notify(pg_engine, NOW)
    ctx = make_context(pg_url, **settings(None, smtp.settings()))
    ctx.batch_hooks.append(_interrupt_at_batch(1))
    with pytest.raises(Interrupted) as caught:
        run_job(notify_cleaned_documents, ctx, params(purge_notified_older_than=30))
    summary = caught.value.difymaint_summary  # type: ignore[attr-defined]
    # The purge's one old notified log is gone; every unmarked log is still to do.
    assert summary.tables["dataset_auto_disable_logs (purged)"] == 1
    assert summary.rows_remaining == len(sc.unnotified(*sc.tenants))


def test_dry_run_renders_and_writes_nothing(db_engine: Any, db_url: str, billing: Any, smtp: SmtpStub) -> None:
    sc = seed_notify(db_engine, NOW)
    billing.state.plans = sc.plans()
    before = notified_ids(db_engine)
    preview = io.StringIO()
    dry = run_job(
        notify_cleaned_documents,
        make_context(db_url, **settings(billing, smtp.settings(), PLAN_SANDBOX_CLEAN_DAY_SETTING=45)),
        params(run=RunOptions(dry_run=True, batch_size=1), preview=preview, purge_notified_older_than=30),
    )
    assert notified_ids(db_engine) == before and smtp.received == []
    rendered = preview.getvalue()
    assert rendered.count(f"Subject: {SUBJECT}") == 2
    assert "To: a@example.com" in rendered and "To: b@example.com" in rendered
    assert "past 45 days" in rendered  # the configured setting, not Dify's hard-coded 30
    assert dry.details["mails_rendered"] == 2 and dry.details["mails_sent"] == 0
    real = run_job(
        notify_cleaned_documents,
        make_context(db_url, **settings(billing, smtp.settings())),
        params(purge_notified_older_than=30),
    )
    assert dry.tables == real.tables == {"dataset_auto_disable_logs": 9, "dataset_auto_disable_logs (purged)": 1}
    assert len(smtp.received) == 2


def test_dry_run_without_mail_configured_still_previews(pg_engine: Any, pg_url: str, billing: Any) -> None:
    sc = seed_notify(pg_engine, NOW)
    billing.state.plans = sc.plans()
    preview = io.StringIO()
    summary = run_job(
        notify_cleaned_documents,
        make_context(pg_url, **settings(billing, None)),
        params(run=RunOptions(dry_run=True), preview=preview),
    )
    assert preview.getvalue().count("--- mail") == 2
    assert any("a real run would exit" in warning for warning in summary.warnings)


def test_purge_keeps_unnotified_and_recent(db_engine: Any, db_url: str, smtp: SmtpStub) -> None:
    sc = seed_notify(db_engine, NOW)
    old, recent = sc.already_notified
    summary = run_job(
        notify_cleaned_documents,
        make_context(db_url, **settings(None, smtp.settings())),
        params(purge_notified_older_than=30),
    )
    logs = sa.table("dataset_auto_disable_logs", sa.column("id"))
    with db_engine.connect() as conn:
        left = {str(row[0]) for row in conn.execute(sa.select(logs.c.id))}
    assert old not in left and recent in left
    assert sc.unnotified(*sc.tenants) <= left  # freshly marked this run: kept until a later run
    assert summary.tables["dataset_auto_disable_logs (purged)"] == 1


def test_resend(pg_engine: Any, pg_url: str, billing: Any) -> None:
    sc = seed_notify(pg_engine, NOW)
    billing.state.plans = sc.plans()
    with ResendStub(api_key="re_secret") as resend:
        mail = {
            "MAIL_TYPE": "resend",
            "MAIL_DEFAULT_SEND_FROM": "no-reply@dify.example",
            "RESEND_API_KEY": "re_secret",
            "RESEND_API_URL": resend.url,
        }
        summary = run_job(notify_cleaned_documents, make_context(pg_url, **settings(billing, mail)), params())
    assert [request["to"] for request in resend.requests] == ["a@example.com", "b@example.com"]
    first = resend.requests[0]
    assert first["from"] == "no-reply@dify.example" and first["subject"] == SUBJECT
    assert "Knowledge base Handbook: 3 documents" in first["html"]
    assert summary.details["mails_sent"] == 2
    assert notified_ids(pg_engine) == sc.unnotified("paid_a", "paid_b", "sandbox") | set(sc.already_notified)


def test_resend_refusal_is_a_mail_error() -> None:
    from difymaint.dify.mail import ResendSender

    with ResendStub() as resend:
        resend.fail_status = 422
        sender = ResendSender(api_key="re_test", sender="x@example.com", api_url=resend.url)
        with pytest.raises(MailError, match="HTTP 422"):
            sender.send(Mail(to="a@example.com", subject="s", html="<p>h</p>"))
        with pytest.raises(MailError, match="401"):
            ResendSender(api_key="wrong", sender="x@example.com", api_url=resend.url).send(
                Mail(to="a@example.com", subject="s", html="h")
            )


def test_sendgrid(pg_engine: Any, pg_url: str, billing: Any) -> None:
    sc = seed_notify(pg_engine, NOW)
    billing.state.plans = sc.plans()
    with SendGridStub(api_key="SG.secret") as sendgrid:
        mail = {
            "MAIL_TYPE": "sendgrid",
            "MAIL_DEFAULT_SEND_FROM": "Dify <no-reply@dify.example>",
            "SENDGRID_API_KEY": "SG.secret",
            "DIFYMAINT_SENDGRID_API_URL": sendgrid.url,
        }
        summary = run_job(notify_cleaned_documents, make_context(pg_url, **settings(billing, mail)), params())
    to = [request["personalizations"][0]["to"][0]["email"] for request in sendgrid.requests]
    assert to == ["a@example.com", "b@example.com"]
    first = sendgrid.requests[0]
    assert first["from"] == {"email": "no-reply@dify.example", "name": "Dify"} and first["subject"] == SUBJECT
    assert first["content"][-1]["type"] == "text/html"
    assert "Knowledge base Handbook: 3 documents" in first["content"][-1]["value"]
    assert summary.details["mails_sent"] == 2


def test_sendgrid_refusal_is_a_mail_error_without_the_key() -> None:
    from difymaint.dify.mail import SendGridSender

    with SendGridStub(api_key="SG.right") as sendgrid:
        sender = SendGridSender(api_key="SG.wrong-key", sender="x@example.com", api_url=sendgrid.url)
        with pytest.raises(MailError, match="HTTP 401") as caught:
            sender.send(Mail(to="a@example.com", subject="s", html="<p>h</p>"))
    assert "SG.wrong-key" not in str(caught.value) and "SENDGRID_API_KEY" in (caught.value.hint or "")


def test_tenant_filter(pg_engine: Any, pg_url: str, billing: Any, smtp: SmtpStub) -> None:
    sc = seed_notify(pg_engine, NOW)
    billing.state.plans = sc.plans()
    run_job(
        notify_cleaned_documents,
        make_context(pg_url, **settings(billing, smtp.settings())),
        params(tenant_ids=(sc.tenants["paid_b"],)),
    )
    assert [r.rcpt_tos for r in smtp.received] == [["b@example.com"]]
    assert notified_ids(pg_engine) == sc.unnotified("paid_b") | set(sc.already_notified)


def test_sqlite_run(sqlite_url: str, smtp: SmtpStub, billing: Any) -> None:
    engine = sa.create_engine(sqlite_url)
    sc = seed_notify(engine, NOW)
    billing.state.plans = sc.plans()
    summary = run_job(
        notify_cleaned_documents, make_context(sqlite_url, **settings(billing, smtp.settings())), params()
    )
    assert len(smtp.received) == 2 and summary.tables == {"dataset_auto_disable_logs": 9}
    assert notified_ids(engine) == sc.unnotified("paid_a", "paid_b", "sandbox") | set(sc.already_notified)
    engine.dispose()


# --- the SMTP sender's TLS modes and the settings it is built from -----------------------------------------


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"]
        + ["-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    client = ssl.create_default_context(cafile=str(cert))
    return server, client


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
@pytest.mark.parametrize("mode", ["starttls", "implicit"])
def test_smtp_tls_modes_with_login(certificate: tuple[ssl.SSLContext, ssl.SSLContext], mode: str) -> None:
    server_ctx, client_ctx = certificate
    stub = SmtpStub(credentials=("mailer", "s3cret"))
    if mode == "starttls":
        stub.tls_context = server_ctx
    else:
        stub.implicit_tls = server_ctx
    with stub:
        sender = SmtpSender(
            server="127.0.0.1",
            port=stub.port,
            sender="no-reply@dify.example",
            username="mailer",
            password="s3cret",
            use_tls=True,
            opportunistic_tls=mode == "starttls",  # Dify: opportunistic → STARTTLS, else SMTP_SSL
            ssl_context=client_ctx,
            timeout_s=5,
        )
        sender.send(Mail(to="a@example.com", subject="hello", html="<p>hi</p>", text="hi"))
    assert stub.logins == ["mailer"] and stub.received[0].rcpt_tos == ["a@example.com"]


@pytest.mark.parametrize(
    ("env", "error"),
    [
        ({"MAIL_TYPE": "mailgun", "MAIL_DEFAULT_SEND_FROM": "a@b"}, "not supported"),
        ({"MAIL_TYPE": "sendgrid", "MAIL_DEFAULT_SEND_FROM": "a@b"}, "SENDGRID_API_KEY"),
        ({"MAIL_TYPE": "smtp"}, "MAIL_DEFAULT_SEND_FROM"),
        ({"MAIL_TYPE": "smtp", "MAIL_DEFAULT_SEND_FROM": "a@b"}, "SMTP_SERVER"),
        ({"MAIL_TYPE": "resend", "MAIL_DEFAULT_SEND_FROM": "a@b"}, "RESEND_API_KEY"),
        (
            {"MAIL_TYPE": "smtp", "MAIL_DEFAULT_SEND_FROM": "a@b", "SMTP_SERVER": "h", "SMTP_OPPORTUNISTIC_TLS": True},
            "SMTP_USE_TLS",
        ),
    ],
)
def test_mail_settings_errors(env: dict[str, Any], error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        mail_sender(load_settings(None, env))


def test_mail_settings_use_difys_names_and_defaults() -> None:
    settings = load_settings(None, {})
    assert settings.MAIL_TYPE is None and mail_sender(settings) is None
    assert settings.SMTP_PORT == 465 and settings.RESEND_API_URL == "https://api.resend.com"
    sender = mail_sender(
        load_settings(
            None,
            {"MAIL_TYPE": "SMTP", "MAIL_DEFAULT_SEND_FROM": "a@b", "SMTP_SERVER": "mx", "SMTP_USE_TLS": True},
        )
    )
    assert isinstance(sender, SmtpSender) and sender.port == 465 and sender.use_tls and not sender.opportunistic_tls


# --- the command line ------------------------------------------------------------------------------------


def test_cli_without_mail_type_is_a_one_line_config_error(sqlite_url: str) -> None:
    from tests.test_cli import run_cli

    result = run_cli(["notify-cleaned-documents", "--database-url", sqlite_url])
    assert result.returncode == 2, result.stderr
    assert "MAIL_TYPE is not set" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_cli_dry_run_json_keeps_stdout_for_the_summary(sqlite_url: str, tmp_path: Path) -> None:
    import json

    from tests.test_cli import run_cli

    engine = sa.create_engine(sqlite_url)
    sc = seed_notify(engine, NOW)
    plans = tmp_path / "plans.json"
    plans.write_text(json.dumps({"tenants": sc.plans()}))
    result = run_cli(
        ["notify-cleaned-documents", "--database-url", sqlite_url, "--dry-run", "--json"],
        env={"DIFYMAINT_PLAN_FILE": str(plans), "CONSOLE_WEB_URL": CONSOLE},
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)  # exactly one JSON document on stdout
    assert summary["tables"] == {"dataset_auto_disable_logs": 9} and summary["dry_run"]
    assert result.stderr.count(f"Subject: {SUBJECT}") == 2
    assert notified_ids(engine) == set(sc.already_notified)
    engine.dispose()


@pytest.mark.slow
def test_cli_purge_needs_yes_when_not_interactive(sqlite_url: str, smtp: SmtpStub) -> None:
    from tests.test_cli import run_cli

    env = {key: str(value) for key, value in smtp.settings().items()}
    result = run_cli(
        ["notify-cleaned-documents", "--database-url", sqlite_url, "--purge-notified-older-than", "30"], env=env
    )
    assert result.returncode == 2 and "--yes" in result.stderr
    result = run_cli(["notify-cleaned-documents", "--database-url", sqlite_url], env=env)
    assert result.returncode == 0, result.stderr  # mails and flags only: no confirmation needed
