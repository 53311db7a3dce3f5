"""The ``difymaint`` command: one subcommand per job, registered from difymaint.jobs.JOBS."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Annotated, Any

import typer
from typer._click.exceptions import NoArgsIsHelpError  # Typer vendors Click and exports no public name for it
from typer.core import TyperGroup

from difymaint import __version__
from difymaint.cli.commands import register_all
from difymaint.cli.render import GlobalOutput, global_output
from difymaint.core.exit_codes import ExitCode
from difymaint.jobs import JOBS, JobInfo


class DifymaintGroup(TyperGroup):
    """Turns usage errors into one line on stderr (exit 2) instead of a multi-line usage box."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        standalone_mode = bool(kwargs.pop("standalone_mode", True))
        try:
            kwargs["standalone_mode"] = False  # we render errors ourselves, below
            result = super().main(*args, **kwargs)
        except typer.exceptions.TyperException as exc:  # Click's UsageError/BadParameter/…
            if isinstance(exc, NoArgsIsHelpError):  # bare `difymaint`: the help, not an error
                sys.stdout.write(exc.format_message() + "\n")
                if standalone_mode:
                    sys.exit(ExitCode.OK)
                return ExitCode.OK
            ctx = getattr(exc, "ctx", None)
            where = f"see '{ctx.command_path} --help'" if ctx is not None else "see 'difymaint --help'"
            message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
            sys.stderr.write(f"difymaint: error: {message} ({where})\n")
            code = int(getattr(exc, "exit_code", ExitCode.USAGE))
            if standalone_mode:
                sys.exit(code)
            raise
        except typer.Abort:
            sys.stderr.write("Aborted.\n")
            if standalone_mode:
                sys.exit(ExitCode.FAILED)
            raise
        if standalone_mode:
            sys.exit(result if isinstance(result, int) else 0)
        return result


def _version(value: bool) -> None:
    if value:
        typer.echo(f"difymaint {__version__}")
        raise typer.Exit(0)


def root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
    verbose: Annotated[
        int, typer.Option("--verbose", "-v", count=True, help="More log output, for every command.")
    ] = 0,
    quiet: Annotated[int, typer.Option("--quiet", "-q", count=True, help="Less output, for every command.")] = 0,
) -> None:
    """Dify's periodic maintenance jobs, run from cron or Kubernetes CronJobs."""
    global_output.set(GlobalOutput(verbose=verbose, quiet=quiet))


def create_app(jobs: Mapping[str, JobInfo] | None = None) -> typer.Typer:
    """The ``difymaint`` command with one subcommand per registry job (``jobs``: the registry, for tests)."""
    application = typer.Typer(
        name="difymaint",
        cls=DifymaintGroup,
        help="Dify's periodic maintenance jobs, run from cron or Kubernetes CronJobs.\n\n"
        "Settings come from Dify's own environment variables (or --env-file pointing at Dify's .env).\n\n"
        "Exit codes: 0 done, 1 failed, 2 usage/config error, 3 threshold exceeded, 4 partial (budget hit), "
        "5 skipped (locked), 130/143 interrupted.",
        no_args_is_help=True,
        add_completion=True,  # --install-completion / --show-completion (bash, zsh, fish, PowerShell)
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
        context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    )
    application.callback()(root)
    register_all(application, JOBS if jobs is None else jobs)
    return application


app = create_app()


def main() -> None:
    app(prog_name="difymaint")  # also under `python -m difymaint`: completion and usage lines name the command
