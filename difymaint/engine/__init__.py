"""The batch engine and the run contract: a job's run (lock, batches each committed on their own, budgets,
signals, adaptive size, pacing, the replica-lag throttle), keyset cursors, the parent scan, cascades as data,
single-table sweeps, the orphan manifest, shards, the live-schema check and PostgreSQL health facts.

Generic: nothing here names a Dify table (that is :mod:`difymaint.dify`).
"""
