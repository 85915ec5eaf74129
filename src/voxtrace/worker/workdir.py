"""Each job attempt works in a private directory no other job can name."""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path

__all__ = ["job_of_work_dir", "job_work_dir", "remove_job_dirs"]


def job_work_dir(work_path: Path, job_id: str) -> Path:
    """A fresh private directory for one attempt of a job: `<job id>.<128 random bits>`,
    mode 0700, inside a 0700 `work_path`.

    The name cannot be guessed from the job id (which `/api/queue` once showed), so a
    hostile file cannot name another job's media by `../<job id>/download.mp4`, and other
    local users cannot list or read it. Directories of this job's earlier attempts (an
    orphaned decoder may still write there) are removed first.
    """
    work_path.mkdir(parents=True, exist_ok=True, mode=0o700)
    work_path.chmod(0o700)
    remove_job_dirs(work_path, job_id)
    path = work_path / f"{job_id}.{secrets.token_hex(16)}"
    path.mkdir(mode=0o700)
    path.chmod(0o700)  # whatever the umask
    return path


def job_of_work_dir(path: Path) -> str:
    """The job id a `job_work_dir` belongs to ("" for anything else)."""
    job_id, dot, token = path.name.rpartition(".")
    return job_id if dot and len(token) == 32 else ""


def remove_job_dirs(work_path: Path, job_id: str) -> None:
    """Remove every work directory of `job_id` (all attempts)."""
    if not work_path.is_dir():
        return
    for child in work_path.iterdir():
        if job_of_work_dir(child) == job_id:
            shutil.rmtree(child, ignore_errors=True)
