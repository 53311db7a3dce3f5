"""The jobs: the registry (:mod:`difymaint.jobs.registry`, plain data: listing jobs imports no job module and
no SQLAlchemy), how a job declares its options (:mod:`~difymaint.jobs.spec`), how flags become a job's params
(:mod:`~difymaint.jobs.resolve`), the envelope every run is opened in (:mod:`~difymaint.jobs.execute`), and one
module per job: its ``Params`` and ``run(job, params)`` (see docs/design.md#one-declaration-per-job).
"""

from difymaint.jobs.registry import JOBS, JobInfo

__all__ = ["JOBS", "JobInfo"]
