"""Running one job from the CLI: settings → context → params → job → rendered summary.

Split as pip splits ``main``/``_main``/``_run_wrapper``: :func:`execute` sets up output and renders, the run
itself (:class:`_JobRun`) only does the work, and :func:`_outcome_of` is the one ladder that turns an
exception into an outcome, an exit code and one line on stderr. What the CLI touches outside itself (streams,
whether stdin is a terminal, how a job is dispatched) is an injected :class:`Environment`, as in httpie, so
tests drive the CLI in-process.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import IO, Any

import typer
from sqlalchemy import exc as sa_exc

from difymaint.cli.options import Common
from difymaint.cli.render import (
    ConsoleReporter,
    Consoles,
    error_line,
    log_context,
    render_summary,
    setup_logging,
)
from difymaint.core.context import Context
from difymaint.core.errors import DatabaseUnavailable, DifymaintError, LockHeld, UsageError
from difymaint.core.exit_codes import ExitCode
from difymaint.core.redact import register_secrets, scrub, secrets_in
from difymaint.core.settings import Settings, load_settings
from difymaint.core.stop import Interrupted, StopToken, handle_stop_signals, runtime_deadline
from difymaint.core.summary import Outcome, RunSummary
from difymaint.dify.switches import switch_state
from difymaint.jobs import JobInfo
from difymaint.ops.history import HistoryStore, Pause, RunRecorder, history_enabled
from difymaint.ops.observe import Observers, observers

log = logging.getLogger("difymaint")

Dispatch = Callable[[JobInfo, Context, Any], RunSummary]


def dispatch_job(info: JobInfo, ctx: Context, params: Any) -> RunSummary:
    summary: RunSummary = info.load().run(ctx, params)
    return summary


@dataclass
class Environment:
    """The world outside the CLI. ``None`` streams mean the process's own, looked up when used (so that
    Typer's test runner, which swaps ``sys.stdout``, sees the output)."""

    stdout: IO[str] | None = None
    stderr: IO[str] | None = None
    stdin_isatty: bool | None = None
    context_factory: Callable[[Settings], Context] = Context
    dispatch: Dispatch = dispatch_job
    params_seen: list[Any] = field(default_factory=list)  # every params object built (for tests)

    @property
    def out(self) -> IO[str]:
        return self.stdout or sys.stdout

    @property
    def err(self) -> IO[str]:
        return self.stderr or sys.stderr

    def isatty(self) -> bool:
        return sys.stdin.isatty() if self.stdin_isatty is None else self.stdin_isatty


_environment: ContextVar[Environment | None] = ContextVar("difymaint_environment", default=None)


def current_environment() -> Environment:
    return _environment.get() or Environment()


@contextmanager
def use_environment(env: Environment) -> Iterator[Environment]:
    """Run CLI invocations inside this block against ``env`` (tests)."""
    token = _environment.set(env)
    try:
        yield env
    finally:
        _environment.reset(token)


def execute(
    info: JobInfo,
    common: Common,
    values: dict[str, Any],
    *,
    settings_overrides: dict[str, object] | None = None,
    summary_sink: Callable[[str], None] | None = None,
) -> int:
    """Run one job and return its exit code."""
    env = current_environment()
    consoles = Consoles.create(common.color, out=env.out, err=env.err)
    setup_logging(consoles, verbosity=common.verbose - common.quiet, log_format=common.log_format.value)
    log_context.set({"job": info.name, "dry_run": common.dry_run})
    reporter = ConsoleReporter(
        consoles, show_progress=consoles.err.is_terminal and not common.json and common.quiet == 0
    )
    run = _JobRun(info, common, values, env, reporter, settings_overrides or {})
    # Before anything can fail: secrets from the environment and the URL flags, so that even an error about
    # loading the settings cannot print them (the settings' own are added once they load).
    register_secrets(secrets_in(dict(os.environ)) | secrets_in(common.overrides()))
    # Signals are ours from here to the last byte of output: one arriving while settings load or connections
    # open stops the job before its first batch (exit 143/130 with a summary); one arriving after the
    # outcome is decided changes nothing (the default handler would kill the process with 143 after "done").
    summary: RunSummary | None = None
    with handle_stop_signals(run.stop):
        try:
            summary = run.execute()
        except (typer.Abort, typer.Exit):
            summary = None  # the operator said no at the confirmation: nothing ran
            raise
        except (Exception, Interrupted) as exc:  # the one ladder: every failure becomes a summary and an exit code
            summary = _outcome_of(exc, run, consoles)
        finally:
            run.stop.closed = True
            reporter.close()
            on_partial_ok = run.settings is not None and run.settings.DIFYMAINT_ON_PARTIAL == "ok"
            if summary is not None and summary.outcome == Outcome.PARTIAL and on_partial_ok:
                summary.exit_code_override = ExitCode.OK  # the next run continues; the outcome still says partial
            try:
                # An aborted run still closes its history record, so that it never looks like a crashed one.
                run.finish_history(summary or run.bare_summary(Outcome.FAILED, "aborted before it started"))
            finally:
                run.close()
        if run.observers is not None:
            run.observers.finished(summary)
        return _finish(summary, common, consoles, env, summary_sink)


@dataclass
class _JobRun:
    info: JobInfo
    common: Common
    values: dict[str, Any]
    env: Environment
    reporter: ConsoleReporter
    settings_overrides: dict[str, object]
    settings: Settings | None = None
    ctx: Context | None = None
    observers: Observers | None = None
    recorder: RunRecorder | None = None
    history_warnings: list[str] = field(default_factory=list)
    stop: StopToken = field(default_factory=StopToken)

    def execute(self) -> RunSummary:
        from difymaint.jobs.resolve import build_params, setting_overrides

        self.common.check()
        overrides = {**self.common.overrides(), **setting_overrides(self.info, self.values), **self.settings_overrides}
        self.settings = settings = load_settings(self.common.env_file, overrides)
        register_secrets(settings.secret_values())
        self.observers = observers(settings, self.info.schedule, self.info.dify_task)
        log_context.set({"job": self.info.name, "run_id": self.observers.run_id, "dry_run": self.common.dry_run})
        self.observers.started(self.info.name)
        switch = switch_state(settings, self.info.name, self.info.switches)
        if not switch.enabled and settings.DIFYMAINT_SCHEDULED:
            # Before any connection: a job Dify would not run touches nothing and needs no other setting.
            log.info("skipped: %s is off for scheduled runs because %s", self.info.name, switch.reason)
            summary = self.bare_summary(Outcome.DISABLED)
            summary.details["switch"] = switch.reason
            summary.stop_reason = "disabled"
            return summary
        self.ctx = ctx = self.env.context_factory(settings)
        ctx.stop = self.stop  # the token the signal handlers (installed in execute) set
        ctx.reporter = self.reporter
        ctx.output = self.env.err if self.common.json else self.env.out  # stdout stays the JSON line's
        # --max-runtime backed on the client too: a database that stops answering cannot hold the run.
        with runtime_deadline(self.common.max_runtime, settings.DIFYMAINT_DEADLINE_GRACE_S, self.stop):
            pause = self.start_history(ctx)
            if pause is not None:
                # A kill switch that needs no redeploy: touch nothing, exit 0 with its own outcome.
                log.info(
                    "skipped: %s is paused since %s by %s%s; `difymaint resume %s` lifts it",
                    self.info.name,
                    pause.paused_at.isoformat(timespec="seconds"),
                    pause.paused_by,
                    f" ({pause.reason})" if pause.reason else "",
                    self.info.name,
                )
                summary = self.bare_summary(Outcome.PAUSED)
                summary.stop_reason = "paused"
                summary.details["pause"] = {"reason": pause.reason, "paused_at": pause.paused_at.isoformat()}
                return summary
            params = build_params(self.info, self.values, ctx, self.common.run_options())
            self.env.params_seen.append(params)
        if not self.common.dry_run:
            self.confirm(ctx, params)  # outside the deadline: a person may take their time to answer
        with runtime_deadline(self.common.max_runtime, settings.DIFYMAINT_DEADLINE_GRACE_S, self.stop):
            summary = self.env.dispatch(self.info, ctx, params)
        if not switch.enabled:  # said after the run, so that an error stays the only line on stderr
            summary.details["switch"] = switch.reason
            log.info(
                "note: %s, so scheduled runs (--scheduled) skip %s; this run was started by hand",
                switch.reason,
                self.info.name,
            )
        return summary

    def start_history(self, ctx: Context) -> Pause | None:
        """Open the run's history record (unless DIFYMAINT_HISTORY=off) and return the job's pause, if any."""
        if not history_enabled(ctx.settings):
            return None
        if self.info.needs_database:
            engine = ctx.engine  # an unreachable database is the job's own error, reported once by the job's path
        else:
            settings = ctx.settings
            if not (settings.DIFYMAINT_DATABASE_URL or settings.explicitly_set("DB_HOST")):
                return None  # no database configured for a job that needs none: nothing to record into
            try:
                engine = ctx.engine
            except DatabaseUnavailable:
                log.info("note: run history not recorded: the database is unreachable")
                return None
        given = {f.name: getattr(self.common, f.name) for f in fields(Common)}
        defaults = Common()
        args = {name: value for name, value in given.items() if value != getattr(defaults, name)}
        self.recorder = RunRecorder(
            HistoryStore(engine),
            job=self.info.name,
            args={**args, **self.values},
            dry_run=self.common.dry_run,
            now=ctx.clock.now,
            warn=self.history_warning,
            run_id=self.observers.run_id if self.observers is not None else None,
        )
        self.recorder.start()
        ctx.batch_hooks.append(self.recorder.on_batch)
        return self.recorder.paused()

    def history_warning(self, message: str) -> None:
        log.warning("%s", message)
        self.history_warnings.append(message)

    def finish_history(self, summary: RunSummary) -> None:
        if self.recorder is not None:
            self.recorder.finish(summary, int(summary.exit_code))
        summary.warnings.extend(w for w in self.history_warnings if w not in summary.warnings)

    def confirm(self, ctx: Context, params: Any) -> None:
        question_for = getattr(self.info.load(), "confirmation", None)
        question = question_for(ctx, params) if question_for is not None else None
        if question is None or ctx.settings.DIFYMAINT_ASSUME_YES:
            return
        if not self.env.isatty():
            raise UsageError(
                "refusing to delete without confirmation in a non-interactive run",
                hint="add --yes (or DIFYMAINT_ASSUME_YES=true), or try --dry-run first",
            )
        typer.confirm(question, abort=True, err=True)

    def bare_summary(self, outcome: Outcome, error: str | None = None) -> RunSummary:
        summary = RunSummary(
            job=self.info.name, dry_run=self.common.dry_run, started_at=datetime.now(UTC), outcome=outcome
        )
        summary.error = error
        return summary

    def close(self) -> None:
        if self.ctx is not None:
            self.ctx.close()


def _outcome_of(exc: BaseException, run: _JobRun, consoles: Consoles) -> RunSummary:
    """The one place an exception becomes an outcome, an exit code and (for failures) one line on stderr."""
    if isinstance(exc, LockHeld):
        log.warning(exc.message)
        summary = run.bare_summary(Outcome.SKIPPED_LOCKED, exc.message)
        on_locked = run.settings.DIFYMAINT_ON_LOCKED if run.settings is not None else "skip"
        summary.exit_code_override = {
            "skip": ExitCode.SKIPPED_LOCKED,
            "fail": ExitCode.FAILED,
            "ok": ExitCode.OK,
        }[on_locked]
        return summary
    if run.common.debug and not isinstance(exc, Interrupted):
        # --debug shows the traceback, scrubbed like every other line (frames quote URLs and arguments).
        run.env.err.write(scrub("".join(traceback.format_exception(exc))))
        run.env.err.flush()
    if isinstance(exc, DifymaintError):
        error_line(consoles, exc.message, exc.hint)
        summary = _failed(exc, run, exc.message)
        summary.exit_code_override = exc.exit_code
        return summary
    if isinstance(exc, Interrupted):
        error_line(consoles, "interrupted twice: the open batch was rolled back")
        summary = _failed(exc, run, "interrupted")
        summary.outcome = Outcome.INTERRUPTED
        summary.exit_code_override = ExitCode.INTERRUPTED_SIGINT if exc.signum == 2 else ExitCode.INTERRUPTED_SIGTERM
        return summary
    if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError):
        # The database went away mid-run (restart, failover, pg_terminate_backend): not a bug to debug.
        reason = _first_line(exc.orig if isinstance(exc, sa_exc.DBAPIError) and exc.orig is not None else exc)
        if run.ctx is not None and run.ctx.stop.deadline_passed:
            message = "the database did not answer within --max-runtime and DIFYMAINT_DEADLINE_GRACE_S: dropped"
            error_line(consoles, message, "the server rolls the open batch back; the next run continues")
            return _failed(exc, run, message)
        # Say what usually causes it, so a restart is not debugged as a bug (nor as a lock problem).
        message = f"lost the database connection mid-run: {reason} ({_CONNECTION_LOST_CAUSES})"
        error_line(
            consoles,
            message,
            "the server rolled back the open batch; committed batches stay done and the next run continues",
        )
        return _failed(exc, run, message)
    # The last line of defence: one line, no secrets, no traceback (--debug shows it above).
    text = f"{type(exc).__name__}: {_first_line(exc)}"
    error_line(consoles, f"unexpected {text}", None if run.common.debug else "re-run with --debug for the traceback")
    return _failed(exc, run, text)


_CONNECTION_LOST_CAUSES = "PostgreSQL restarted, failed over, or ended the session"


def _failed(exc: BaseException, run: _JobRun, error: str) -> RunSummary:
    summary: RunSummary = getattr(exc, "difymaint_summary", None) or run.bare_summary(Outcome.FAILED)
    summary.outcome = Outcome.FAILED
    summary.error = error
    return summary


def _finish(
    summary: RunSummary,
    common: Common,
    consoles: Consoles,
    env: Environment,
    summary_sink: Callable[[str], None] | None,
) -> int:
    """Print the summary (one JSON line on stdout, or the human table) and return the exit code."""
    summary.error = scrub(summary.error) if summary.error else summary.error
    summary.warnings = [scrub(warning) for warning in summary.warnings]
    if summary_sink is not None:
        summary_sink(scrub(summary.to_json()))
    if common.json:
        env.out.write(scrub(summary.to_json()) + "\n")
        env.out.flush()
    elif (
        summary.outcome not in (Outcome.FAILED, Outcome.SKIPPED_LOCKED, Outcome.DISABLED, Outcome.PAUSED)
        and common.quiet < 2
    ):
        for warning in summary.warnings:
            log.debug("warning: %s", warning)
        render_summary(consoles, summary)
    return int(summary.exit_code)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""
