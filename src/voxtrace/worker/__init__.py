"""Workers run jobs; the supervisor keeps workers alive and enforces the limits.

The one place that wires the job store, the pipeline and the callbacks together:

    ids.py         WorkerId: `<node_id>/<supervisor pid>/<slot>.<generation>`
    job.py         JobRunner (one attempt: pipeline -> complete | requeue | fail), fail_job
    hooks.py       beside a running job: ProgressSink, LeaseKeeper
    process.py     worker_main (the worker process), Presence, dying with the supervisor
    supervisor.py  Supervisor with its TimeLimit, MemoryCap and RestartPolicy
    workdir.py     each attempt's private work directory
"""

from voxtrace.worker.hooks import LostOwnership
from voxtrace.worker.ids import WorkerId
from voxtrace.worker.job import JobRunner, fail_job
from voxtrace.worker.process import worker_main
from voxtrace.worker.supervisor import Supervisor
from voxtrace.worker.workdir import job_of_work_dir, job_work_dir, remove_job_dirs

__all__ = [
    "JobRunner",
    "LostOwnership",
    "Supervisor",
    "WorkerId",
    "fail_job",
    "job_of_work_dir",
    "job_work_dir",
    "remove_job_dirs",
    "worker_main",
]
