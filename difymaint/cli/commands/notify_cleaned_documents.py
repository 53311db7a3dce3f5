"""``difymaint notify-cleaned-documents``."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from difymaint.cli import options as o
from difymaint.jobs import JOBS

NAME = "notify-cleaned-documents"
DEFAULT_BATCH_SIZE = 100  # workspaces per page


def register(app: typer.Typer) -> None:
    info = JOBS[NAME]
    app.command(
        NAME,
        help=f"{info.summary}\n\nReplaces Dify's {info.dify_task} beat job (schedule {info.schedule}, switch "
        f"{info.dify_switch}). Reads the dataset_auto_disable_logs that clean-unused-datasets wrote, mails each "
        "non-sandbox workspace's owner once (MAIL_TYPE smtp or resend, Dify's settings), and marks that "
        "workspace's logs notified right after its mail was accepted. With BILLING_ENABLED=false every "
        "workspace is sandbox: no mail is sent and the logs are only marked (Dify's behaviour). MAIL_TYPE unset: "
        "nothing is sent or marked. No confirmation is needed unless --purge-notified-older-than deletes rows.",
        short_help=info.summary,
    )(notify_cleaned_documents)


@o.job_command
def notify_cleaned_documents(
    common: o.Common,
    purge_notified_older_than: Annotated[
        int | None,
        typer.Option(
            "--purge-notified-older-than",
            metavar="DAYS",
            min=1,
            help="Also delete logs already notified and older than DAYS (Dify never prunes them).",
        ),
    ] = None,
    console_web_url: Annotated[
        str | None,
        typer.Option(
            "--console-web-url",
            metavar="URL",
            help="Console base URL for the link in the mail; overrides CONSOLE_WEB_URL.",
        ),
    ] = None,
    tenant_ids: o.TenantIds = None,
    batch_size: Annotated[
        int | None,
        typer.Option("--batch-size", metavar="N", min=1, max=10000, help="Workspaces per page.", rich_help_panel=o.RUN),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            "-n",
            help="Render the mails on stdout (stderr with --json) instead of sending; mark nothing.",
            rich_help_panel=o.RUN,
        ),
    ] = False,
) -> int:
    import sys

    from difymaint.cli.runner import execute
    from difymaint.core.context import Context
    from difymaint.core.settings import Settings
    from difymaint.jobs.notify_cleaned_documents import NotifyParams

    overrides: dict[str, object] = {"CONSOLE_WEB_URL": console_web_url}

    def build(settings: Settings, ctx: Context) -> NotifyParams:
        return NotifyParams(
            run=common.run_options(batch_size=batch_size or DEFAULT_BATCH_SIZE),
            tenant_ids=o.id_filter(tenant_ids, "--tenant-ids"),
            purge_notified_older_than=purge_notified_older_than,
            preview=sys.stderr if common.json else sys.stdout,  # keep stdout for the one JSON line
        )

    def confirmation(settings: Settings, ctx: Context, params: Any) -> str | None:
        if params.purge_notified_older_than is None:
            return None  # mails and flags only: nothing is deleted
        return (
            f"Send the notification mails and delete notified dataset_auto_disable_logs older than "
            f"{params.purge_notified_older_than} days from {o.database_description(settings)}?"
        )

    return execute(NAME, common, overrides=overrides, build_params=build, confirmation=confirmation)
