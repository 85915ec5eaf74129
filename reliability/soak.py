"""Soak: many real jobs through one `voxtrace serve` process with one worker.

Real models on a real video, served from a local file server on 127.0.0.1, results
called back to the dev backend (`voxtrace.devbackend`) on its validated endpoint.
After every job it samples resident memory and open file descriptors of the API
process and of the worker process (/proc), so a leak shows as a slope, and it counts
the terminal callbacks of every job (the contract: exactly one each).

    python -m reliability.soak          # prints the markdown section (~5-8 min)
"""

from __future__ import annotations

import functools
import http.server
import math
import os
import shutil
import statistics
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from reliability.load import ServeProcess, open_fds, rss_mb
from voxtrace.devbackend import DevBackend, ServerThread

__all__ = ["Sample", "run_soak", "soak"]

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
SETUP_MODELS = Path(__file__).resolve().parent.parent / "data" / "models"  # `make setup`
SECRET = "soak-secret"
RESULT_PATH = "/api/upload-video/result"
SUBMIT = "/api/upload-video/process-video"
TERMINAL = {"completed", "failed"}


def fd_kinds(pid: int) -> dict[str, int]:
    """Open descriptors by kind: socket, pipe, anon_inode, or the file's name."""
    kinds: Counter[str] = Counter()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        kinds[Path(target).name if target.startswith("/") else target.split(":", 1)[0]] += 1
    return dict(sorted(kinds.items()))


@dataclass(frozen=True)
class Sample:
    job: int
    status: str
    job_s: float
    api_rss_mb: float
    api_fds: int
    worker_pid: int
    worker_rss_mb: float
    worker_fds: int
    worker_fd_kinds: dict[str, int]


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


class _FileServer:
    """Serves one directory on 127.0.0.1: where the worker downloads the video from."""

    def __init__(self, root: Path) -> None:
        handler = functools.partial(_Quiet, directory=str(root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> _FileServer:
        self._thread.start()
        return self

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _worker_pid(server: ServeProcess) -> int:
    workers = httpx.get(f"{server.url}/api/queue", timeout=10).json()["workers"]
    pids = [int(w["pid"]) for w in workers if w.get("pid")]
    if len(pids) != 1:
        raise RuntimeError(f"expected one live worker, saw {workers}")
    return pids[0]


def slope_per_job(samples: Sequence[Sample], value: str, skip: int = 5) -> float:
    """Least-squares slope of `value` over the job number, after `skip` warm-up jobs."""
    points = [(s.job, float(getattr(s, value))) for s in samples[skip:]]
    if len(points) < 2:
        return math.nan
    xs, ys = zip(*points, strict=True)
    return statistics.linear_regression(xs, ys).slope


def soak(
    jobs: int = 50,
    video: str = "sample.mp4",
    models_dir: Path | None = None,
    job_timeout_s: float = 180,
) -> tuple[list[Sample], dict[str, int], float]:
    """Run `jobs` real jobs one after another; returns the samples, the number of
    terminal callbacks per job id, and the server's start-up time (models loaded)."""
    from voxtrace.models import prepare_models

    with tempfile.TemporaryDirectory(prefix="voxtrace-soak-") as tmp:
        root = Path(tmp)
        files = root / "files"
        files.mkdir()
        shutil.copy(DATA / video, files / video)
        models = models_dir or root / "models"
        # a fresh models folder, filled as `voxtrace setup` does (speaker export copied)
        prepare_models(models, root / ".export-venv", speaker_source=SETUP_MODELS / "speaker")

        receiver = DevBackend(secret=SECRET)
        backend = ServerThread(receiver.app).start()
        server = ServeProcess(
            root / "serve",
            BACKEND_URL=backend.url,
            VOXTRACE_WORKERS=1,
            VOXTRACE_MODEL_DIR=str(models),
            VOXTRACE_ALLOW_HTTP_HOSTS="127.0.0.1",
            VOXTRACE_CALLBACK_PATH=RESULT_PATH,
            VOXTRACE_CALLBACK_SECRET=SECRET,
        )
        samples: list[Sample] = []
        ids: list[str] = []
        try:
            with _FileServer(files) as file_server:
                t0 = time.perf_counter()
                server.start(ready_timeout_s=300)
                startup_s = time.perf_counter() - t0
                with httpx.Client(base_url=server.url, timeout=30) as http:
                    for n in range(1, jobs + 1):
                        job_id = str(uuid.uuid4())
                        ids.append(job_id)
                        receiver.register(job_id)
                        started = time.perf_counter()
                        answer = http.post(
                            SUBMIT, json={"job_id": job_id, "video_url": file_server.url(video)}
                        )
                        if answer.status_code != 200:
                            raise RuntimeError(f"job {n} refused: {answer.text}")
                        done = receiver.wait_for(job_id, TERMINAL, job_timeout_s)
                        job_s = time.perf_counter() - started
                        time.sleep(0.2)  # let the worker settle back to idle
                        worker = _worker_pid(server)
                        samples.append(
                            Sample(
                                job=n,
                                status=done.status,
                                job_s=job_s,
                                api_rss_mb=rss_mb(server.pid),
                                api_fds=open_fds(server.pid),
                                worker_pid=worker,
                                worker_rss_mb=rss_mb(worker),
                                worker_fds=open_fds(worker),
                                worker_fd_kinds=fd_kinds(worker),
                            )
                        )
                time.sleep(2)  # a late, second terminal callback would arrive meanwhile
        finally:
            server.stop()
            backend.stop()
        terminals = {
            job_id: sum(1 for c in receiver.calls_for(job_id) if c.body.get("status") in TERMINAL)
            for job_id in ids
        }
        if receiver.violations:
            raise RuntimeError(f"contract violations: {receiver.violations[:5]}")
    return samples, terminals, startup_s


def _row(s: Sample) -> str:
    return (
        f"| {s.job} | {s.status} | {s.job_s:.1f} | {s.api_rss_mb:.1f} | {s.api_fds} | "
        f"{s.worker_rss_mb:.1f} | {s.worker_fds} |"
    )


def run_soak(jobs: int = 50, video: str = "sample.mp4", models_dir: Path | None = None) -> str:
    """The soak as a markdown section."""
    t0 = time.perf_counter()
    samples, terminals, startup_s = soak(jobs, video, models_dir)
    wall_s = time.perf_counter() - t0
    first, last = samples[0], samples[-1]
    statuses = {s.status for s in samples}
    pids = sorted({s.worker_pid for s in samples})
    exactly_one = sum(1 for n in terminals.values() if n == 1)
    api_slope = slope_per_job(samples, "api_rss_mb")
    worker_slope = slope_per_job(samples, "worker_rss_mb")
    after_warmup = samples[min(5, len(samples) - 1)]
    worker_growth = last.worker_rss_mb - after_warmup.worker_rss_mb
    api_growth = last.api_rss_mb - after_warmup.api_rss_mb
    fds_flat = last.api_fds <= first.api_fds + 2 and last.worker_fds <= first.worker_fds + 2
    # Stable: after warm-up, less than 0.5 MB a job and under 5 % in total, fds flat.
    criteria = {
        "API RSS slope": abs(api_slope) < 0.5,
        "worker RSS slope": abs(worker_slope) < 0.5,
        "worker RSS growth": worker_growth < 0.05 * after_warmup.worker_rss_mb,
        "API RSS growth": api_growth < 0.05 * after_warmup.api_rss_mb,
        "descriptors flat": fds_flat,
        "one worker": len(pids) == 1,
    }
    stable = all(criteria.values())
    failed = ", ".join(name for name, ok in criteria.items() if not ok)
    shown = [s for s in samples if s.job in (1, last.job) or s.job % 5 == 0]
    worst_worker = max(samples, key=lambda s: s.worker_rss_mb)
    worst_api = max(samples, key=lambda s: s.api_rss_mb)
    lines = [
        "## Soak: consecutive real jobs in one server",
        "",
        f"{jobs} jobs, one after another, of `tests/data/{video}` through one "
        "`voxtrace serve` process with one worker (real models), downloaded from a local "
        "file server, results called back (signed) to `voxtrace.devbackend` on "
        f"`{RESULT_PATH}`. Server start-up with model loading: {startup_s:.1f} s; "
        f"whole soak {wall_s / 60:.1f} min. Memory is VmRSS, descriptors are `/proc/<pid>/fd`, "
        "sampled after each job's terminal callback.",
        "",
        "| job | status | job s | API RSS MB | API fds | worker RSS MB | worker fds |",
        "|---|---|---|---|---|---|---|",
        *(_row(s) for s in shown),
        "",
        f"- First / last / max API RSS: {first.api_rss_mb:.1f} / {last.api_rss_mb:.1f} / "
        f"{worst_api.api_rss_mb:.1f} MB (max after job {worst_api.job}); slope after job 5: "
        f"{api_slope:+.3f} MB/job.",
        f"- First / last / max worker RSS: {first.worker_rss_mb:.1f} / {last.worker_rss_mb:.1f}"
        f" / {worst_worker.worker_rss_mb:.1f} MB (max after job {worst_worker.job}); slope "
        f"after job 5: {worker_slope:+.3f} MB/job; growth job 6 -> {last.job}: "
        f"{worker_growth:+.1f} MB.",
        f"- Open descriptors first -> last: API {first.api_fds} -> {last.api_fds}, worker "
        f"{first.worker_fds} -> {last.worker_fds}; worker's by kind, first: "
        f"{first.worker_fd_kinds}; last: {last.worker_fd_kinds}.",
        f"- Worker processes seen: {len(pids)} (a replaced worker would show here).",
        f"- Job time: median {statistics.median(s.job_s for s in samples):.1f} s, max "
        f"{max(s.job_s for s in samples):.1f} s; outcomes: "
        f"{', '.join(f'{st}: {sum(1 for s in samples if s.status == st)}' for st in statuses)}.",
        f"- Terminal callbacks: {exactly_one} of {len(terminals)} jobs got exactly one "
        f"(total {sum(terminals.values())}).",
        f"- Verdict: **{'stable' if stable else 'NOT stable: ' + failed}** (criteria: after "
        "job 5, |slope| < 0.5 MB/job and growth < 5 % for both processes, descriptors flat "
        "(at most +2), one worker).",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    print(run_soak())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
