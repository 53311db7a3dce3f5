"""Running one job, start to finish: settings → switch → context → params, checks and the question →
history and pause → confirmation → the job in its envelope → outcome. No terminal here: what the run needs
from the outside (asking a question, printing one error line, dispatching the job) comes in as
:class:`RunIO`, which the CLI fills.

:func:`failure_of` is the one ladder that turns an exception into an outcome, a message and a hint; the exit
code follows from the outcome alone (:func:`difymaint.core.summary.exit_code_of`).
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from difymaint.core.errors import ConfigError, DatabaseUnavailable, DifymaintError, LockHeld, UsageError
from difymaint.core.redact import register_secrets, scrub
from difymaint.core.reporter import Reporter, log_context
from difymaint.core.settings import Settings, load_settings
from difymaint.core.stop import Interrupted, StopToken, runtime_deadline
from difymaint.core.summary import ExitPolicy, Outcome, RunSummary
from difymaint.dify.switches import switch_state
from difymaint.jobs.registry import JobInfo
from difymaint.ops.observe import Observers, observers

if TYPE_CHECKING:
    from difymaint.core.context import Context
    from difymaint.engine.options import RunOptions
    from difymaint.ops.history import Pause, RunRecorder

# SQLAlchemy, Redis and the job modules are imported only once a run goes ahead: a scheduled run of a job
# whose switch is off (every minute, for some) costs the settings and nothing more.

log = logging.getLogger("difymaint")

Dispatch = Callable[[JobInfo, "Context", Any], RunSummary]
CONNECTION_LOST_CAUSES = "PostgreSQL restarted, failed over, or ended the session"


class Declined(BaseException):
    """The operator answered no to the confirmation question: nothing ran, and it is no failure of the run
    (BaseException, so that the run's own failure handling lets it through)."""


@dataclass(frozen=True)
class RunRequest:
    """One job run as the operator asked for it."""

    info: JobInfo
    values: dict[str, Any]  # the job's own option values (None = not given)
    settings_overrides: dict[str, object]  # settings the shared flags override (None = not given)
    env_file: Path | None
    options: RunOptions  # the shared run options (the job's batch size and pacing are filled in later)
    max_runtime: float | None
    debug: bool = False
    history_args: dict[str, Any] = field(default_factory=dict)  # the arguments the run history records


@dataclass
class RunIO:
    """What the run needs from its surroundings; the CLI fills it, tests replace parts."""

    reporter: Reporter
    output: IO[str]  # where a job prints data a person reads (dry-run mail previews)
    error_line: Callable[[str, str | None], None]  # one error line (and its hint) for the operator
    debug_stream: IO[str]  # where --debug writes tracebacks
    confirm: Callable[[str], bool]  # asks the question; False (no) ends the run as Declined
    isatty: Callable[[], bool]
    context_factory: Callable[..., Context] | None = None  # default: Context
    dispatch: Dispatch | None = None  # default: difymaint.jobs.execute.run_job
    params_seen: list[Any] = field(default_factory=list)  # every params object built (for tests)


@dataclass(frozen=True)
class Failure:
    outcome: Outcome
    message: str
    hint: str | None = None
    signum: int | None = None
    expected: bool = True  # False: a bug; --debug's traceback is the way to it


def failure_of(exc: BaseException, *, deadline_passed: bool = False) -> Failure:
    """The one place an exception becomes an outcome and the words an operator reads."""
    from sqlalchemy import exc as sa_exc

    if isinstance(exc, LockHeld):
        return Failure(Outcome.SKIPPED_LOCKED, exc.message, exc.hint)
    if isinstance(exc, ConfigError):
        return Failure(Outcome.REFUSED, exc.message, exc.hint)
    if isinstance(exc, DifymaintError):
        return Failure(Outcome.FAILED, exc.message, exc.hint)
    if isinstance(exc, Interrupted):
        return Failure(Outcome.INTERRUPTED, "interrupted twice: the open batch was rolled back", signum=exc.signum)
    if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError):
        # The database went away mid-run (restart, failover, pg_terminate_backend): not a bug to debug.
        if deadline_passed:
            return Failure(
                Outcome.FAILED,
                "the database did not answer within --max-runtime and DIFYMAINT_DEADLINE_GRACE_S: dropped",
                "the server rolls the open batch back; the next run continues",
            )
        reason = first_line(exc.orig if isinstance(exc, sa_exc.DBAPIError) and exc.orig is not None else exc)
        return Failure(
            Outcome.FAILED,
            f"lost the database connection mid-run: {reason} ({CONNECTION_LOST_CAUSES})",
            "the server rolled back the open batch; committed batches stay done and the next run continues",
        )
    if isinstance(exc, sa_exc.SQLAlchemyError):
        reason = first_line(getattr(exc, "orig", None) or exc) or type(exc).__name__
        return Failure(Outcome.FAILED, f"database error: {reason}", "re-run with --debug for the traceback")
    text = f"{type(exc).__name__}: {first_line(exc)}"
    return Failure(Outcome.FAILED, f"unexpected {text}", "re-run with --debug for the traceback", expected=False)


def first_line(exc: object) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


@dataclass
class JobExecution:
    request: RunRequest
    io: RunIO
    stop: StopToken = field(default_factory=StopToken)
    settings: Settings | None = None
    ctx: Context | None = None
    observers: Observers | None = None
    recorder: RunRecorder | None = None
    history_warnings: list[str] = field(default_factory=list)

    @property
    def info(self) -> JobInfo:
        return self.request.info

    def run(self) -> RunSummary:
        """The run's summary, whatever happened (an abort at the confirmation question propagates)."""
        try:
            summary = self._run()
        except (Exception, Interrupted) as exc:  # every failure becomes a summary
            summary = self._failed(exc)
        summary.policy = self.exit_policy()
        return summary

    def finish(self, summary: RunSummary | None) -> None:
        """Close the history record (an aborted run too, so it never looks like a crashed one), the
        connections, and tell the observers."""
        self.stop.closed = True
        try:
            if summary is not None and summary.outcome is Outcome.REFUSED:
                self._record_refusal()
            self._finish_history(summary or self.bare_summary(Outcome.FAILED, "aborted before it started"))
        finally:
            if self.ctx is not None:
                self.ctx.close()
        if self.observers is not None and summary is not None:
            self.observers.finished(summary)

    def exit_policy(self) -> ExitPolicy:
        if self.settings is None:
            return ExitPolicy()
        return ExitPolicy(on_locked=self.settings.DIFYMAINT_ON_LOCKED, on_partial=self.settings.DIFYMAINT_ON_PARTIAL)

    def _run(self) -> RunSummary:
        request, info = self.request, self.request.info
        overrides = {**request.settings_overrides, **info.setting_overrides(request.values)}
        self.settings = settings = load_settings(request.env_file, overrides)
        register_secrets(settings.secret_values())
        self.observers = observers(settings, info.schedule, info.dify_task)
        log_context.set({"job": info.name, "run_id": self.observers.run_id, "dry_run": request.options.dry_run})
        self.observers.started(info.name)
        switch = switch_state(settings, info.name, info.switches)
        if not switch.enabled and settings.DIFYMAINT_SCHEDULED:
            # Before any connection: a job Dify would not run touches nothing and needs no other setting.
            log.info("skipped: %s is off for scheduled runs because %s", info.name, switch.reason)
            summary = self.bare_summary(Outcome.DISABLED)
            summary.details["switch"] = switch.reason
            summary.stop_reason = "disabled"
            return summary
        from difymaint.core.context import Context
        from difymaint.jobs.execute import run_job
        from difymaint.jobs.resolve import build_params

        hooks: list[Callable[[Any], None]] = []
        self.ctx = ctx = (self.io.context_factory or Context)(
            settings, stop=self.stop, reporter=self.io.reporter, output=self.io.output, batch_hooks=hooks
        )
        # Every usage error (exit 2) is decided before any connection: the params, the job's own checks, and
        # whether a question would go unanswered.
        params = build_params(info, request.values, ctx, request.options)
        self.io.params_seen.append(params)
        question = None if request.options.dry_run else self._question(ctx, params)
        # --max-runtime backed on the client too: a database that stops answering cannot hold the run.
        with runtime_deadline(request.max_runtime, settings.DIFYMAINT_DEADLINE_GRACE_S, self.stop):
            pause = self._start_history(ctx, hooks)
        if pause is not None:
            # A kill switch that needs no redeploy: touch nothing, exit 0 with its own outcome.
            log.info(
                "skipped: %s is paused since %s by %s%s; `difymaint resume %s` lifts it",
                info.name,
                pause.paused_at.isoformat(timespec="seconds"),
                pause.paused_by,
                f" ({pause.reason})" if pause.reason else "",
                info.name,
            )
            summary = self.bare_summary(Outcome.PAUSED)
            summary.stop_reason = "paused"
            summary.details["pause"] = {"reason": pause.reason, "paused_at": pause.paused_at.isoformat()}
            return summary
        if question is not None and not self.io.confirm(question):  # outside the deadline: a person may be slow
            raise Declined
        with runtime_deadline(request.max_runtime, settings.DIFYMAINT_DEADLINE_GRACE_S, self.stop):
            summary = (self.io.dispatch or run_job)(info, ctx, params)
        if not switch.enabled:  # said after the run, so that an error stays the only line on stderr
            summary.details["switch"] = switch.reason
            log.info(
                "note: %s, so scheduled runs (--scheduled) skip %s; this run was started by hand",
                switch.reason,
                info.name,
            )
        return summary

    def _question(self, ctx: Context, params: Any) -> str | None:
        """The question a changing run must have answered (None: none, or --yes answered it); refused at once
        when nobody can answer it."""
        question_for = getattr(self.info.load(), "confirmation", None)
        question: str | None = question_for(ctx, params) if question_for is not None else None
        if question is None or ctx.settings.DIFYMAINT_ASSUME_YES:
            return None
        if not self.io.isatty():
            raise UsageError(
                "refusing to delete without confirmation in a non-interactive run",
                hint="add --yes (or DIFYMAINT_ASSUME_YES=true), or try --dry-run first",
            )
        return question

    def _start_history(self, ctx: Context, hooks: list[Callable[[Any], None]], *, quiet: bool = False) -> Pause | None:
        """Open the run's history record (unless DIFYMAINT_HISTORY=off) and return the job's pause, if any."""
        from difymaint.ops.history import HistoryStore, RunRecorder, history_enabled

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
                if not quiet:
                    log.info("note: run history not recorded: the database is unreachable")
                return None
        self.recorder = RunRecorder(
            HistoryStore(engine),
            job=self.info.name,
            args={**self.request.history_args, **self.request.values},
            dry_run=self.request.options.dry_run,
            now=ctx.clock.now,
            warn=self._history_warning,
            run_id=self.observers.run_id if self.observers is not None else None,
        )
        self.recorder.start()
        hooks.append(self.recorder.on_batch)
        return self.recorder.paused()

    def _record_refusal(self) -> None:
        """A run refused before its history record opened is still recorded (best effort: the refusal was
        decided without a connection, and a database that cannot be reached changes nothing about it)."""
        if self.recorder is not None or self.ctx is None:
            return
        try:
            self._start_history(self.ctx, [], quiet=True)
        except Exception as exc:  # nothing to record into; the refusal's own line already said what matters
            log.debug("refused run not recorded: %s", first_line(exc))

    def _history_warning(self, message: str) -> None:
        log.warning("%s", message)
        self.history_warnings.append(message)

    def _finish_history(self, summary: RunSummary) -> None:
        if self.recorder is not None:
            self.recorder.finish(summary, int(summary.exit_code))
        summary.warnings.extend(w for w in self.history_warnings if w not in summary.warnings)

    def _failed(self, exc: BaseException) -> RunSummary:
        deadline_passed = self.ctx is not None and self.ctx.stop.deadline_passed
        failure = failure_of(exc, deadline_passed=deadline_passed)
        if failure.outcome is Outcome.SKIPPED_LOCKED:
            log.warning(failure.message)
            return self.bare_summary(Outcome.SKIPPED_LOCKED, failure.message)
        if self.request.debug and not isinstance(exc, Interrupted):
            # --debug shows the traceback, scrubbed like every other line (frames quote URLs and arguments).
            self.io.debug_stream.write(scrub("".join(traceback.format_exception(exc))))
            self.io.debug_stream.flush()
        self.io.error_line(failure.message, None if self.request.debug and not failure.expected else failure.hint)
        # Keep what the committed batches did: a failed run still reports its per-table counts.
        summary: RunSummary = getattr(exc, "difymaint_summary", None) or self.bare_summary(failure.outcome)
        summary.outcome, summary.signum = failure.outcome, failure.signum
        summary.error = failure.message if failure.expected else failure.message.removeprefix("unexpected ")
        return summary

    def bare_summary(self, outcome: Outcome, error: str | None = None) -> RunSummary:
        summary = RunSummary(
            job=self.info.name, dry_run=self.request.options.dry_run, started_at=datetime.now(UTC), outcome=outcome
        )
        summary.verbs = self.info.verbs
        summary.error = error
        return summary
