"""A job store outage through the real `voxtrace worker` on PostgreSQL: the database
refuses every connection for a while (as in a restart or a failover), then comes back.

The worker process waits it out with its models loaded (no crash, no restart, no model
reload), the job it was running goes on and its outcome is written once the store is
back: exactly one terminal callback. The worker process logs the outage once, not per
try, and without a stack trace.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from psycopg import sql

from testing.helpers import WorkerProcess, terminal
from testing.hostile_servers import HostileServer
from testing.postgres import POSTGRES_URL, admin, postgres_missing
from voxtrace.devbackend import DevBackend, ServerThread
from voxtrace.domain import JobStatus, NewJob
from voxtrace.store.base import JobStore

DATA = Path(__file__).parent / "data"
OUTAGE_S = 10.0  # longer than the job has left to run, shorter than its lease
LEASE_S = "30"

pytestmark = pytest.mark.slow


@pytest.fixture
def database() -> Iterator[str]:
    """A throwaway database of its own: the test turns connections to it off and on."""
    missing = postgres_missing()
    if missing:
        pytest.skip(missing)
    name = f"vt_outage_{uuid.uuid4().hex[:12]}"
    admin(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield name
    finally:
        admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _url(database: str) -> str:
    return urlunsplit(urlsplit(POSTGRES_URL)._replace(path=f"/{database}"))


def _connections(database: str, allowed: bool) -> None:
    """Refuse (and end) every session to `database`, as a server going away does; or
    accept them again."""
    allow = sql.SQL("true" if allowed else "false")
    admin(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS {}").format(sql.Identifier(database), allow))
    if not allowed:
        admin(
            sql.SQL(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()"
            ),
            database,
        )


def _wait(condition: Callable[[], object], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def _worker(store: JobStore) -> dict[str, object]:
    (info,) = store.live_workers(since=0)
    return info


def _traced(log: str) -> list[str]:
    """The log records that came with a stack trace (their first line)."""
    records: list[str] = []
    last = ""
    for line in log.splitlines():
        if re.match(r"\d{4}-\d\d-\d\d ", line):
            last = line
        elif line.startswith("Traceback") and last:
            records.append(last)
    return records


def test_a_worker_waits_out_a_store_outage_with_its_models_loaded(
    database: str,
    tmp_path: Path,
    backend: tuple[DevBackend, ServerThread],
    models_path: Path,
) -> None:
    from voxtrace.store.postgres import PostgresJobStore

    receiver, thread = backend
    url = _url(database)
    store = PostgresJobStore(url)  # the API's side of the store: submits and reads
    node = WorkerProcess(
        tmp_path / "node",
        thread.url,
        models_path,
        VOXTRACE_STORE_URL=url,
        VOXTRACE_NODE_ID="solo",
        VOXTRACE_LEASE_S=LEASE_S,
    )
    root = tmp_path / "files"
    root.mkdir()
    (root / "silence.mp4").write_bytes((DATA / "silence.mp4").read_bytes())
    # ~5 s to download: the outage starts inside the job, and the job ends inside it
    with HostileServer(root, slow_bytes_per_s=8_000) as files:
        try:
            node.start()
            before = _worker(store)
            assert before["models_loaded"]

            job_id = str(uuid.uuid4())
            receiver.register(job_id)
            video = files.url("slow", "silence.mp4")
            store.submit(NewJob(job_id, video, thread.url), 10, time.time())
            _wait(lambda: (j := store.get(job_id)) and j.progress > 0, 30, "job never started")

            _connections(database, allowed=False)
            time.sleep(OUTAGE_S)  # the download, the pipeline, their writes fail meanwhile
            assert node.proc is not None and node.proc.poll() is None
            back_at = time.time()
            _connections(database, allowed=True)

            receiver.wait_for(job_id, {"completed", "failed"}, 60)
            time.sleep(1)  # anything sent after the terminal callback would show up here
            ends = terminal(receiver.calls_for(job_id))
            assert [c.body["status"] for c in ends] == ["completed"]
            job = store.get(job_id)
            assert job is not None and job.status is JobStatus.COMPLETED
            assert job.attempts == 1  # the job went on through the outage: not run again
            assert job.finished_at is not None and job.finished_at >= back_at
            assert [e["terminal"] for e in store.callback_log(job_id)].count(True) == 1

            # the same worker, still loaded, takes the next job
            second = str(uuid.uuid4())
            receiver.register(second)
            store.submit(
                NewJob(second, files.url("file", "silence.mp4"), thread.url), 10, time.time()
            )
            receiver.wait_for(second, {"completed", "failed"}, 60)
            assert [c.body["status"] for c in terminal(receiver.calls_for(second))] == ["completed"]
            after = _worker(store)
            assert (after["worker_id"], after["pid"]) == (before["worker_id"], before["pid"])
            assert node.proc.poll() is None
        finally:
            node.stop()
            store.close()

    log = node.log.read_text(errors="replace")
    assert log.count("started worker") == 1  # never restarted
    assert len(node.ready_lines()) == 1  # models loaded once
    worker_lines = [line for line in log.splitlines() if "voxtrace-worker-0 " in line]
    # once per outage, not per try: by the worker, and by its store
    for said in (
        "job store unavailable (",
        "reachable again after",
        "unavailable: ",
        "is reachable",
    ):
        assert sum(said in line for line in worker_lines) == 1, (said, log)
    traced = [r for r in _traced(log) if "voxtrace." in r]
    assert traced == [], log  # the worker, its store and the callback dispatcher alike
    dispatcher = [line for line in log.splitlines() if "callback dispatcher: job store un" in line]
    assert len(dispatcher) <= 1, dispatcher  # at most once (it may not have tried meanwhile)
