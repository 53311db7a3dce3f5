"""The process and its connections: settings, context, database and Redis clients, locks, stop signals,
clock, time windows, id filters, errors, exit codes, redaction, the run summary and the progress reporter.

The bottom layer: it knows nothing of Dify, of jobs or of the CLI (the import-linter ``layers`` contract in
pyproject.toml), and never imports typer or rich.
"""
