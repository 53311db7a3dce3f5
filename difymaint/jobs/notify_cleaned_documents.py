"""notify-cleaned-documents: mail owners which knowledge bases were auto-disabled
(docs/jobs/notify-cleaned-documents.md).

:class:`_Notifier` reads the logs a page of workspaces at a time, with owners, dataset names and plans in
bulk, and handles one workspace at a time: mail (or none, for a sandbox plan), then mark its logs
``notified`` and commit at once. Committing per workspace makes the run at-least-once per workspace: a later
failure never re-sends a mail already accepted, and a workspace left unmarked (no owner, unknown plan, failed
mail) is retried by the next run. :func:`check` refuses a real run without usable mail settings before any
connection; a dry run renders the mails instead of sending them.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import timedelta
from typing import IO

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from difymaint.core.clock import naive_utc
from difymaint.core.context import Context
from difymaint.core.database import as_str, count_or_unknown, ids_in
from difymaint.core.errors import ConfigError
from difymaint.dify import tables as t
from difymaint.dify.billing import SANDBOX, PlanLookup, plan_lookup
from difymaint.dify.mail import Mail, MailError, MailSender, PreviewSender, mail_sender, render
from difymaint.engine.keyset import Cursor, after
from difymaint.engine.options import RunOptions
from difymaint.engine.run import JobRun
from difymaint.engine.schema import Need, check_schema
from difymaint.jobs.confirm import database_description

JOB = "notify-cleaned-documents"
SUBJECT = "Dify Knowledge base auto disable notification"
HTML_TEMPLATE = "clean_document_notify.html"
TEXT_TEMPLATE = "clean_document_notify.txt"
MARKED = "dataset_auto_disable_logs"
PURGED = "dataset_auto_disable_logs (purged)"
MAX_FAILURES_IN_A_ROW = 3


@dataclass(frozen=True)
class NotifyParams:
    run: RunOptions = field(default_factory=RunOptions)
    tenant_ids: tuple[str, ...] = ()
    purge_notified_older_than: int | None = None  # days
    preview: IO[str] | None = None  # dry run: where rendered mails go (default stdout)
    sender: MailSender | None = None  # default: the one MAIL_TYPE selects


def needs(params: NotifyParams) -> list[Need]:
    return [
        Need("dataset_auto_disable_logs", ("id", "tenant_id", "dataset_id", "notified", "created_at")),
        Need("datasets", ("id", "name")),
        Need("tenants", ("id",)),
        Need("tenant_account_joins", ("tenant_id", "account_id", "role")),
        Need("accounts", ("id", "email")),
    ]


def mail_not_configured() -> ConfigError:
    return ConfigError(
        "MAIL_TYPE is not set: mail is disabled, so nothing is sent and no log is marked notified (as in Dify)",
        hint="set MAIL_TYPE=smtp or resend with Dify's SMTP_* / RESEND_* settings, or do not schedule this job; "
        "--dry-run previews the mails without it",
    )


def check(ctx: Context, params: NotifyParams) -> None:
    """A real run needs working mail settings: refused (exit 2) before any connection."""
    if not params.run.dry_run and (params.sender or mail_sender(ctx.settings)) is None:
        raise mail_not_configured()


def run(job: JobRun, params: NotifyParams) -> None:
    ctx = job.ctx
    dry_run = params.run.dry_run
    mail_problem: str | None = None
    try:
        configured = params.sender or mail_sender(ctx.settings)  # a misconfigured MAIL_TYPE fails here
    except ConfigError as exc:
        if not dry_run:
            raise
        # A preview needs no working mail settings (Dify's stock .env has MAIL_TYPE=resend and no sender);
        # it says what a real run would refuse.
        configured, mail_problem = None, f"{exc.message}: a real run would exit 2 before sending anything"
    sender: MailSender
    if dry_run:
        sender = PreviewSender(params.preview or ctx.output)
    elif configured is None:
        raise mail_not_configured()
    else:
        sender = configured
    schema = check_schema(ctx.engine, needs(params), job=JOB)
    tables = [MARKED] + ([PURGED] if params.purge_notified_older_than is not None else [])
    job.use_tables(tables)
    if mail_problem is not None:
        job.warn(mail_problem)
    elif configured is None:
        job.warn("MAIL_TYPE is not set: a real run would exit without sending or marking anything")
    lookup = plan_lookup(ctx.settings, ctx.clock, ctx.redis, ctx.keys)
    if not lookup.billing_enabled:
        warning = (
            "BILLING_ENABLED is false: every workspace's plan is sandbox, so NO mail is sent; the logs are "
            "only marked notified (Dify's behaviour). Set DIFYMAINT_PLAN_FILE to mail chosen workspaces"
        )
        job.warn(warning)
    job.summary.details.update(
        mail=configured.name if configured is not None else None,
        plans=lookup.description,
        tenant_filter=list(params.tenant_ids) or None,
        alembic_version=schema.alembic_version,
    )
    notifier = _Notifier(ctx, job, params, lookup, sender)
    job.remaining = notifier.remaining
    if params.purge_notified_older_than is not None:
        # First, so that a dry run and a real run see the same notified rows.
        notifier.purge(params.purge_notified_older_than)
    notifier.notify()
    job.summary.details.update(
        workspaces=dict(notifier.decisions),
        mails_sent=notifier.mails if not dry_run else 0,
        mails_rendered=notifier.mails if dry_run else 0,
        **lookup.stats(),
    )
    job.settle_remaining()
    if notifier.failures:
        raise MailError(
            f"{notifier.failures} workspace(s) could not be mailed ({notifier.last_failure}); their logs stay "
            "unmarked and are retried by the next run",
            hint="check MAIL_TYPE and the SMTP_* / RESEND_* settings",
        )


@dataclass
class _Owner:
    email: str
    name: str | None


class _Notifier:
    def __init__(self, ctx: Context, job: JobRun, params: NotifyParams, lookup: PlanLookup, sender: MailSender) -> None:
        self.ctx, self.job, self.params, self.lookup, self.sender = ctx, job, params, lookup, sender
        self.decisions: Counter[str] = Counter()
        self.mails = 0
        self.failures = 0
        self.failures_in_a_row = 0
        self.last_failure = ""
        self.url = f"{ctx.settings.CONSOLE_WEB_URL}/datasets"
        # Where the run stands, for the backlog count: the last workspace handled, and the purge's progress.
        self.after_tenant: str | None = None
        self.purge_left: sa.ColumnElement[bool] | None = None  # the rows the purge has yet to reach

    def remaining(self) -> int:
        """Log rows the run has not reached: unmarked logs of the workspaces after the last one handled, plus
        the notified logs an unfinished purge has still to delete. -1 when the count timed out."""
        logs = t.dataset_auto_disable_logs
        unmarked = [logs.c.notified == sa.false()]
        if self.after_tenant is not None:
            unmarked.append(logs.c.tenant_id > sa.literal(self.after_tenant, logs.c.tenant_id.type))
        with self.ctx.engine.connect() as conn:
            if self.params.tenant_ids:
                unmarked.append(ids_in(logs.c.tenant_id, self.params.tenant_ids, conn.dialect.name))
            pending = sa.and_(*unmarked)
            if self.purge_left is not None:
                pending = sa.or_(pending, self.purge_left)
            return count_or_unknown(conn, sa.select(sa.func.count()).select_from(logs).where(pending))

    # --- notifications -----------------------------------------------------------------------------------

    def notify(self) -> None:
        logs = t.dataset_auto_disable_logs
        while self.job.keep_going():
            after_tenant = self.after_tenant
            with self.ctx.engine.connect() as conn:
                query = (
                    sa.select(logs.c.tenant_id)
                    .where(logs.c.notified == sa.false())
                    .group_by(logs.c.tenant_id)
                    .order_by(logs.c.tenant_id)
                    .limit(self.job.batch_size)
                )
                if after_tenant is not None:
                    query = query.where(logs.c.tenant_id > sa.literal(after_tenant, logs.c.tenant_id.type))
                if self.params.tenant_ids:
                    query = query.where(ids_in(logs.c.tenant_id, self.params.tenant_ids, conn.dialect.name))
                page = [as_str(row.tenant_id) for row in conn.execute(query)]
                if not page:
                    return
                pending = self._pending_logs(conn, page)
                owners = self._owners(conn, page)
                names = self._dataset_names(conn, {d for items in pending.values() for _, d in items})
            plans = self.lookup.plans(page)
            for tenant_id in page:
                if not self.job.keep_going():
                    return
                self._tenant(tenant_id, pending.get(tenant_id, []), plans.get(tenant_id), owners.get(tenant_id), names)
                self.after_tenant = tenant_id

    def _pending_logs(self, conn: Connection, tenant_ids: list[str]) -> dict[str, list[tuple[str, str]]]:
        logs = t.dataset_auto_disable_logs
        result: dict[str, list[tuple[str, str]]] = defaultdict(list)
        rows = conn.execute(
            sa.select(logs.c.id, logs.c.tenant_id, logs.c.dataset_id).where(
                logs.c.notified == sa.false(), ids_in(logs.c.tenant_id, tenant_ids, conn.dialect.name)
            )
        )
        for row in rows:
            result[as_str(row.tenant_id)].append((as_str(row.id), as_str(row.dataset_id)))
        return result

    def _owners(self, conn: Connection, tenant_ids: list[str]) -> dict[str, _Owner]:
        joins, accounts, tenants = t.tenant_account_joins, t.accounts, t.tenants
        rows = conn.execute(
            sa.select(joins.c.tenant_id, accounts.c.email, accounts.c.name)
            .join(accounts, accounts.c.id == joins.c.account_id)
            .join(tenants, tenants.c.id == joins.c.tenant_id)
            .where(joins.c.role == "owner", ids_in(joins.c.tenant_id, tenant_ids, conn.dialect.name))
            .order_by(joins.c.tenant_id, joins.c.created_at, joins.c.id)
        )
        owners: dict[str, _Owner] = {}
        for row in rows:
            owners.setdefault(as_str(row.tenant_id), _Owner(email=row.email, name=row.name))
        return owners

    def _dataset_names(self, conn: Connection, dataset_ids: set[str]) -> dict[str, str]:
        if not dataset_ids:
            return {}
        d = t.datasets
        rows = conn.execute(sa.select(d.c.id, d.c.name).where(ids_in(d.c.id, sorted(dataset_ids), conn.dialect.name)))
        return {as_str(row.id): row.name for row in rows}

    def _tenant(
        self,
        tenant_id: str,
        pending: list[tuple[str, str]],
        plan: str | None,
        owner: _Owner | None,
        names: dict[str, str],
    ) -> None:
        if not pending:
            return
        if plan is None:
            self.decisions["skipped_unknown_plan"] += 1  # fail closed: neither mail nor mark; next run retries
            return
        if plan == SANDBOX:
            self.decisions["sandbox_marked_without_mail"] += 1
        else:
            if owner is None:
                self.decisions["skipped_no_owner"] += 1  # Dify skips it too, so it is retried next time
                return
            per_dataset = Counter(dataset_id for _, dataset_id in pending)  # log rows, as Dify counts
            details = sorted(
                f"Knowledge base {names[dataset_id]}: {count} documents"
                for dataset_id, count in per_dataset.items()
                if dataset_id in names  # a deleted dataset is left out of the list, as in Dify
            )
            if details:
                if not self._send(tenant_id, owner, details):
                    return
                self.decisions["mailed"] += 1
            else:
                self.decisions["marked_without_mail_datasets_gone"] += 1
        self._mark(tenant_id, [log_id for log_id, _ in pending])

    def _send(self, tenant_id: str, owner: _Owner, details: list[str]) -> bool:
        context = {
            "userName": owner.email,  # Dify greets the owner by e-mail address
            "knowledge_details": details,
            "url": self.url,
            "clean_days": self.ctx.settings.PLAN_SANDBOX_CLEAN_DAY_SETTING,
            "application_title": "Dify",
            "subject": SUBJECT,
        }
        mail = Mail(
            to=owner.email,
            subject=SUBJECT,
            html=render(HTML_TEMPLATE, **context),
            text=render(TEXT_TEMPLATE, **context),
        )
        try:
            self.sender.send(mail)
        except MailError as exc:
            self.failures += 1
            self.failures_in_a_row += 1
            self.last_failure = exc.message
            self.decisions["mail_failed"] += 1
            self.ctx.reporter.warning(f"{JOB}: workspace {tenant_id}: {exc.message}; left unmarked")
            if self.failures_in_a_row >= MAX_FAILURES_IN_A_ROW:
                raise MailError(
                    f"{MAX_FAILURES_IN_A_ROW} mails in a row failed, stopping ({exc.message}); the workspaces "
                    "not yet marked are retried by the next run",
                    hint="check MAIL_TYPE and the SMTP_* / RESEND_* settings",
                ) from None
            return False
        self.failures_in_a_row = 0
        self.mails += 1
        return True

    def _mark(self, tenant_id: str, log_ids: list[str]) -> None:
        logs = t.dataset_auto_disable_logs
        while True:
            with self.job.batch() as batch:
                with batch.transaction() as conn:
                    where = sa.and_(ids_in(logs.c.id, log_ids, conn.dialect.name), logs.c.notified == sa.false())
                    if self.job.dry_run:
                        marked = int(
                            conn.execute(sa.select(sa.func.count()).select_from(logs).where(where)).scalar_one()
                        )
                    else:
                        marked = conn.execute(sa.update(logs).where(where).values(notified=True)).rowcount
                batch.record(scanned=len(log_ids), affected=marked, rows={MARKED: marked})
            if not batch.rolled_back:
                return  # committed: this workspace is done even if a later one fails

    # --- purge ---------------------------------------------------------------------------------------------

    def purge(self, days: int) -> None:
        logs = t.dataset_auto_disable_logs
        cutoff = naive_utc(self.ctx.clock.now()) - timedelta(days=days)
        self.job.summary.details["purge_cutoff"] = cutoff.isoformat()
        cursor: Cursor | None = None

        def purgeable(cursor: Cursor | None) -> sa.ColumnElement[bool]:
            where = [logs.c.notified == sa.true(), logs.c.created_at < cutoff]
            where.append(after(logs.c.created_at, logs.c.id, cursor))
            if self.params.tenant_ids:
                where.append(ids_in(logs.c.tenant_id, self.params.tenant_ids, self.ctx.engine.dialect.name))
            return sa.and_(*where)

        while self.job.keep_going():
            self.purge_left = purgeable(cursor)
            with self.ctx.engine.connect() as conn:
                query = (
                    sa.select(logs.c.id, logs.c.created_at)
                    .where(self.purge_left)
                    .order_by(logs.c.created_at, logs.c.id)
                    .limit(self.job.batch_size)
                )
                rows = conn.execute(query).all()
            if not rows:
                self.purge_left = None  # through
                return
            ids = [as_str(row.id) for row in rows]
            with self.job.batch() as batch:
                with batch.transaction() as conn:
                    where = sa.and_(ids_in(logs.c.id, ids, conn.dialect.name), logs.c.notified == sa.true())
                    if self.job.dry_run:
                        gone = int(conn.execute(sa.select(sa.func.count()).select_from(logs).where(where)).scalar_one())
                    else:
                        gone = conn.execute(sa.delete(logs).where(where)).rowcount
                batch.record(scanned=len(rows), affected=gone, rows={PURGED: gone})
            if not batch.rolled_back:
                cursor = Cursor.of(rows[-1])
                self.purge_left = purgeable(cursor)


Params = NotifyParams


def confirmation(ctx: Context, params: NotifyParams) -> str | None:
    if params.purge_notified_older_than is None:
        return None  # mails and flags only: nothing is deleted
    return (
        f"Send the notification mails and delete notified dataset_auto_disable_logs older than "
        f"{params.purge_notified_older_than} days from {database_description(ctx.settings)}?"
    )
