"""The one run wrapper: settings → context → job → rendered summary, and every exception → an exit code.

Like pip's ``_run_wrapper``: operator errors print one line on stderr; tracebacks only with ``--debug``.
"""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Callable
from typing import Any

import typer

from difymaint.cli.options import Common
from difymaint.cli.render import ConsoleReporter, Consoles, error_line, render_summary, setup_logging
from difymaint.core.context import Context
from difymaint.core.errors import DifymaintError, LockHeld, UsageError
from difymaint.core.exit_codes import ExitCode
from difymaint.core.settings import Settings, load_settings
from difymaint.core.stop import Interrupted, handle_stop_signals
from difymaint.core.summary import Outcome, RunSummary
from difymaint.core.switches import switch_state
from difymaint.jobs import JOBS

log = logging.getLogger("difymaint")

# (settings, context) → the job's params. May raise UsageError (bad window, bad ids).
ParamsBuilder = Callable[[Settings, Context], Any]
# (settings, context, params) → the confirmation question, or None when no confirmation is needed.
Confirmation = Callable[[Settings, Context, Any], str | None]


def execute(
    job_name: str,
    common: Common,
    *,
    overrides: dict[str, object],
    build_params: ParamsBuilder,
    confirmation: Confirmation | None = None,
    context_factory: Callable[[Settings], Context] | None = None,
    summary_sink: Callable[[str], None] | None = None,
) -> int:
    """Run one job and return its exit code."""
    consoles = Consoles.create(common.color)
    setup_logging(consoles, verbosity=common.verbose - common.quiet, log_format=common.log_format)
    if common.log_format not in (None, "text", "json"):
        error_line(consoles, f"--log-format must be text or json, not {common.log_format!r}")
        return ExitCode.USAGE
    info = JOBS[job_name]
    reporter = ConsoleReporter(
        consoles, show_progress=consoles.err.is_terminal and not common.json and common.quiet == 0
    )
    ctx: Context | None = None
    summary: RunSummary | None = None
    try:
        settings = load_settings(common.env_file, {**common.overrides(), **overrides})
        switch = switch_state(settings, job_name, info.switches)
        if not switch.enabled and settings.DIFYMAINT_SCHEDULED:
            # Before the context exists: a job Dify would not run touches nothing and needs no other settings.
            message = f"skipped: {job_name} is off for scheduled runs because {switch.reason}"
            log.info("%s", message)
            summary = _bare_summary(job_name, common, Outcome.DISABLED, None)
            summary.details["switch"] = switch.reason
            summary.stop_reason = "disabled"
            return _finish(summary, common, consoles, summary_sink)
        ctx = (context_factory or Context)(settings)
        ctx.reporter = reporter
        with handle_stop_signals(ctx.stop):
            params = build_params(settings, ctx)
            if confirmation is not None and not common.dry_run:
                question = confirmation(settings, ctx, params)
                if question is not None and not settings.DIFYMAINT_ASSUME_YES:
                    _confirm(question)
            summary = info.load().run(ctx, params)
            if not switch.enabled:  # said after the run, so that an error stays the only line on stderr
                summary.details["switch"] = switch.reason
                log.info(
                    "note: %s, so scheduled runs (--scheduled) skip %s; this run was started by hand",
                    switch.reason,
                    job_name,
                )
    except LockHeld as exc:
        on_locked = ctx.settings.DIFYMAINT_ON_LOCKED if ctx else "skip"
        log.warning(exc.message)
        summary = _bare_summary(job_name, common, Outcome.SKIPPED_LOCKED, exc.message)
        summary.exit_code_override = {
            "skip": ExitCode.SKIPPED_LOCKED,
            "fail": ExitCode.FAILED,
            "ok": ExitCode.OK,
        }[on_locked]
    except DifymaintError as exc:
        if common.debug:
            traceback.print_exc()
        error_line(consoles, exc.message, exc.hint)
        summary = _failed_summary(exc, job_name, common, exc.message)
        summary.exit_code_override = exc.exit_code
    except Interrupted as exc:
        error_line(consoles, "interrupted twice: the open batch was rolled back")
        summary = _failed_summary(exc, job_name, common, "interrupted")
        summary.outcome = Outcome.INTERRUPTED
        summary.exit_code_override = ExitCode.INTERRUPTED_SIGINT if exc.signum == 2 else ExitCode.INTERRUPTED_SIGTERM
    except (typer.Abort, typer.Exit):
        raise
    except Exception as exc:  # the last line of defence: one line, no secrets, no traceback
        if common.debug:
            raise
        error_line(
            consoles,
            f"unexpected {type(exc).__name__}: {_first_line(exc)}",
            "re-run with --debug for the traceback",
        )
        summary = _failed_summary(exc, job_name, common, f"{type(exc).__name__}: {_first_line(exc)}")
    finally:
        reporter.close()
        if ctx is not None:
            ctx.close()
    return _finish(summary, common, consoles, summary_sink)


def _finish(summary: RunSummary, common: Common, consoles: Consoles, summary_sink: Callable[[str], None] | None) -> int:
    """Print the summary (JSON on stdout, or the human table) and return the exit code."""
    if summary_sink is not None:
        summary_sink(summary.to_json())
    if common.json:
        sys.stdout.write(summary.to_json() + "\n")
        sys.stdout.flush()
    elif summary.outcome not in (Outcome.FAILED, Outcome.SKIPPED_LOCKED, Outcome.DISABLED) and common.quiet < 2:
        for warning in summary.warnings:
            log.debug("warning: %s", warning)
        render_summary(consoles, summary)
    return int(summary.exit_code)


def _confirm(question: str) -> None:
    if not sys.stdin.isatty():
        raise UsageError(
            "refusing to delete without confirmation in a non-interactive run",
            hint="add --yes (or DIFYMAINT_ASSUME_YES=true), or try --dry-run first",
        )
    typer.confirm(question, abort=True, err=True)


def _bare_summary(job: str, common: Common, outcome: Outcome, error: str | None) -> RunSummary:
    from datetime import UTC, datetime

    summary = RunSummary(job=job, dry_run=common.dry_run, started_at=datetime.now(UTC), outcome=outcome)
    summary.error = error
    return summary


def _failed_summary(exc: BaseException, job: str, common: Common, error: str) -> RunSummary:
    summary: RunSummary | None = getattr(exc, "difymaint_summary", None)
    if summary is None:
        summary = _bare_summary(job, common, Outcome.FAILED, error)
    summary.outcome = Outcome.FAILED
    summary.error = error
    return summary


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""
