"""The shared core every job runs on: settings, database, Redis, lock, plans, batching, run contract.

Nothing in here imports typer or rich (see the import-linter contracts in pyproject.toml).
"""
