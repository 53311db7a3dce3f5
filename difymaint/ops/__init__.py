"""What surrounds runs rather than doing them: run history and pauses, observability (metrics, pings,
Sentry, OpenTelemetry), lock inspection, cron schedules, the schedule manifests (CronJobs, crontab, systemd),
the operator console's logic and ``doctor``.

Above the jobs (it reads the registry) and below the CLI: no typer, no rich.
"""
