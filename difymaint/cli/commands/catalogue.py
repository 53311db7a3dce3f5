"""``difymaint jobs``: the job catalogue, and one job's parameters and exit codes (``jobs show JOB``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated

import typer

from difymaint.cli.commands._common import check_job, command_group, print_json
from difymaint.cli.options import Color, Json
from difymaint.cli.session import guarded, make_consoles
from difymaint.jobs import JobInfo

WIDE = 160  # columns from which the catalogue shows Dify's task, switch and lock too


def register(app: typer.Typer, jobs: Mapping[str, JobInfo], run_job: Callable[..., int]) -> None:
    group = command_group(
        "jobs",
        help="The job catalogue: every job, what it does, the Dify job it replaces, its schedule, switch and lock. "
        "'difymaint jobs show JOB' lists the job's parameters (type, default, the Dify setting behind each) and "
        "the exit codes it can return.",
        short_help="List the jobs, or show one job's parameters (jobs show JOB).",
    )

    @group.command("list", help="Every job, one per row (the default of 'difymaint jobs').")
    def list_jobs(json: Json = False, color: Color = None) -> None:
        from rich.table import Table

        from difymaint.ops.console import job_catalogue

        consoles = make_consoles(color)
        with guarded(consoles):
            rows = [job_catalogue(info) for info in jobs.values()]
            if json:
                print_json(consoles, rows)
                return
            table = Table(show_edge=False, pad_edge=False)
            # Names and schedules never break mid-word; on a narrow terminal only they and the summary show.
            wide = consoles.out.width >= WIDE
            table.add_column("job", no_wrap=True)
            table.add_column("what it does", overflow="fold", ratio=1)
            table.add_column("schedule (UTC)", no_wrap=True)
            if wide:
                for column in ("replaces (Dify)", "Dify switch", "lock"):
                    table.add_column(column, overflow="fold")
            for row in rows:
                cells = [row["name"], row["summary"], row["schedule"] or "manual"]
                if wide:
                    switches = " + ".join(s["name"] for s in row["switches"]) or "-"
                    cells += [row["dify_task"], switches, row["lock"]]
                table.add_row(*cells)
            consoles.out.print(table)

    @group.command("show", help="One job: its parameters (type, default, the setting behind each) and exit codes.")
    def show_job(job: Annotated[str, typer.Argument(metavar="JOB")], json: Json = False, color: Color = None) -> None:
        from rich.table import Table

        from difymaint.ops.console import exit_codes_of, job_catalogue, job_parameters

        consoles = make_consoles(color)
        with guarded(consoles):
            check_job(job, jobs)
            info = jobs[job]
            data = {
                **job_catalogue(info),
                "parameters": job_parameters(info),
                "exit_codes": [{"code": c, "meaning": m} for c, m in exit_codes_of(info)],
            }
            if json:
                print_json(consoles, data)
                return
            consoles.out.print(f"[b]{info.name}[/b] — {info.summary}")
            consoles.out.print(
                f"replaces {info.dify_task}; schedule {data['schedule'] or 'manual'}; lock {info.lock_key}"
            )
            params = Table(title="parameters", title_justify="left", show_edge=False, pad_edge=False)
            for column in ("flag", "type", "default", "setting / env var", "meaning"):
                params.add_column(column, overflow="fold")
            for p in data["parameters"]:
                params.add_row(
                    ", ".join(p["flags"]) or "-", p["type"], p["default"] or "-", p["setting"] or "-", p["help"]
                )
            consoles.out.print(params)
            codes = Table(title="exit codes", title_justify="left", show_edge=False, pad_edge=False)
            codes.add_column("code", justify="right")
            codes.add_column("meaning")
            for code in data["exit_codes"]:
                codes.add_row(str(code["code"]), code["meaning"])
            consoles.out.print(codes)

    app.add_typer(group)
