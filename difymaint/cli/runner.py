"""Running one job from the CLI: output set up, the run (:mod:`difymaint.ops.runner`), the summary rendered.

What the CLI touches outside itself (streams, whether stdin is a terminal, how a job is dispatched) is an
injected :class:`Environment`, so tests drive the CLI in-process.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, fields, replace
from typing import IO, TYPE_CHECKING, Any

import typer

from difymaint.cli.options import Common
from difymaint.cli.render import (
    ConsoleReporter,
    Consoles,
    error_line,
    render_summary,
    root_output,
    setup_logging,
)
from difymaint.core.redact import dumps_masked, register_secrets, scrub, secrets_in
from difymaint.core.reporter import log_context
from difymaint.core.stop import handle_stop_signals
from difymaint.core.summary import Outcome, RunSummary
from difymaint.jobs import JobInfo
from difymaint.ops.runner import Declined, Dispatch, JobExecution, RunIO, RunRequest

if TYPE_CHECKING:
    from difymaint.core.context import Context

log = logging.getLogger("difymaint")


@dataclass
class Environment:
    """The world outside the CLI. ``None`` streams mean the process's own, looked up when used (so that
    Typer's test runner, which swaps ``sys.stdout``, sees the output)."""

    stdout: IO[str] | None = None
    stderr: IO[str] | None = None
    stdin_isatty: bool | None = None
    context_factory: Callable[..., Context] | None = None  # default: Context
    dispatch: Dispatch | None = None  # default: difymaint.jobs.execute.run_job
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
    root = root_output()
    common = replace(common, verbose=common.verbose + root.verbose, quiet=common.quiet + root.quiet)
    consoles = Consoles.create(common.color, out=env.out, err=env.err)
    setup_logging(consoles, verbosity=common.verbose - common.quiet, log_format=common.log_format.value)
    log_context.set({"job": info.name, "dry_run": common.dry_run})
    reporter = ConsoleReporter(
        consoles, show_progress=consoles.err.is_terminal and not common.json and common.quiet == 0
    )
    # Before anything can fail: secrets from the environment and the URL flags, so that even an error about
    # loading the settings cannot print them (the settings' own are added once they load).
    register_secrets(secrets_in(dict(os.environ)) | secrets_in(common.overrides()))
    defaults = Common()
    given = {f.name: getattr(common, f.name) for f in fields(Common)}
    request = RunRequest(
        info=info,
        values=values,
        settings_overrides={**common.overrides(), **(settings_overrides or {})},
        env_file=common.env_file,
        options=common.run_options(),
        max_runtime=common.max_runtime,
        debug=common.debug,
        history_args={name: value for name, value in given.items() if value != getattr(defaults, name)},
    )
    io = RunIO(
        reporter=reporter,
        output=env.err if common.json else env.out,  # stdout stays the JSON line's
        error_line=lambda message, hint: error_line(consoles, message, hint),
        debug_stream=env.err,
        confirm=lambda question: typer.confirm(question, err=True),
        isatty=env.isatty,
        context_factory=env.context_factory,
        dispatch=env.dispatch,
        params_seen=env.params_seen,
    )
    run = JobExecution(request, io)
    # Signals are ours from here to the last byte of output: one arriving while settings load or connections
    # open stops the job before its first batch (exit 143/130 with a summary); one arriving after the
    # outcome is decided changes nothing (the default handler would kill the process with 143 after "done").
    summary: RunSummary | None = None
    with handle_stop_signals(run.stop):
        try:
            common.check()
            summary = run.run()
        except Declined:
            summary = None  # the operator said no at the confirmation: nothing ran
            raise typer.Abort() from None
        finally:
            reporter.close()
            run.finish(summary)
        return _finish(summary, common, consoles, env, summary_sink)


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
    # Masked as data (by key and by whole value), never by substituting inside the JSON text: it stays valid.
    line = dumps_masked(summary.to_dict(), separators=(",", ":"))
    if summary_sink is not None:
        summary_sink(line)
    if common.json:
        env.out.write(line + "\n")
        env.out.flush()
    elif (
        summary.outcome
        not in (Outcome.FAILED, Outcome.REFUSED, Outcome.SKIPPED_LOCKED, Outcome.DISABLED, Outcome.PAUSED)
        and common.quiet < 2
    ):
        for warning in summary.warnings:
            log.debug("warning: %s", warning)
        render_summary(consoles, summary)
    return int(summary.exit_code)
