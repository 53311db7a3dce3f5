"""difymaint: Dify's periodic maintenance jobs as a cron- and CronJob-friendly command-line tool."""

__version__ = "0.1.0"
