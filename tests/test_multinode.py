"""Two machines on one PostgreSQL schema, end to end: `voxtrace serve` as node m1 (the
API and its worker) and `voxtrace worker` as node m2, real models, a real backend.

Both nodes take jobs from the one queue; every job ends in exactly one terminal
callback that satisfies the contract; and one dispatcher delivers them all, although
both nodes run one (the store elects it). A machine that vanishes mid-job loses nothing:
the other takes the job over once its lease lapses, and the callback delivery with it
(`reliability` repeats that scenario at other moments).
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from reliability.scenarios import FailoverRig, failover
from testing.helpers import FileServer, GatedFileServer, Server, WorkerProcess, terminal
from testing.postgres import in_schema
from voxtrace.devbackend import DevBackend, ServerThread, contract_violations
from voxtrace.store import open_store

DATA = Path(__file__).parent / "data"
VIDEOS = ["sample.mp4", "silence.mp4", "silence.mp4", "sample.mp4", "silence.mp4", "silence.mp4"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FileServer]:
    root = tmp_path_factory.mktemp("files")
    for name in set(VIDEOS):
        (root / name).write_bytes((DATA / name).read_bytes())
    server = FileServer(root).start()
    yield server
    server.stop()


def _delivered(log: str) -> int:
    return len(re.findall(r"voxtrace\.callbacks: callback \S+ \(\w+\) delivered", log))


def test_two_nodes_share_one_queue_and_one_dispatcher(
    pg_schema: str,
    tmp_path: Path,
    backend: tuple[DevBackend, ServerThread],
    files: FileServer,
    models_path: Path,
) -> None:
    receiver, thread = backend
    url = in_schema(pg_schema)
    m1 = Server(
        tmp_path / "m1", thread.url, models_path, VOXTRACE_STORE_URL=url, VOXTRACE_NODE_ID="m1"
    )
    m2 = WorkerProcess(
        tmp_path / "m2", thread.url, models_path, VOXTRACE_STORE_URL=url, VOXTRACE_NODE_ID="m2"
    )
    store = open_store(url)
    try:
        m1.start(wait=False)
        m2.start(wait=False)  # both load their models at once
        m1.wait_ready()
        m2.wait_ready()

        job_ids = [str(uuid.uuid4()) for _ in VIDEOS]
        for job_id, video in zip(job_ids, VIDEOS, strict=True):
            receiver.register(job_id)
            answer = m1.submit(job_id, files.url(video))
            assert answer.status_code == 200, answer.text
        for job_id in job_ids:
            receiver.wait_for(job_id, {"completed", "failed"}, 180)
        time.sleep(1)  # anything sent after a terminal callback would show up here

        nodes: set[str] = set()
        for job_id, video in zip(job_ids, VIDEOS, strict=True):
            calls = receiver.calls_for(job_id)
            ends = terminal(calls)
            assert [c.body["status"] for c in ends] == ["completed"], (video, calls)
            assert calls[-1] is ends[0]  # nothing after the terminal callback
            progress = [c.body["progress"] for c in calls]
            assert progress == sorted(progress) and progress[-1] == 100
            result = ends[0].body["result"]
            assert contract_violations(result) == []
            assert (len(result["segments"]) > 0) == (video == "sample.mp4")
            job = m1.job(job_id)  # the API on m1 answers for every job, wherever it ran
            assert (job["status"], job["attempts"]) == ("completed", 1)
            stored = store.get(job_id)
            assert stored is not None and stored.worker_id is not None
            nodes.add(stored.worker_id.split("/", 1)[0])
        assert receiver.violations == []
        assert nodes == {"m1", "m2"}  # both machines took jobs from the one queue

        # Both nodes run a dispatcher; the store let one of them deliver everything.
        logs = [m1.log.read_text(errors="replace"), m2.log.read_text(errors="replace")]
        elected = [log.count("this process now delivers the callbacks") for log in logs]
        assert sorted(elected) == [0, 1], elected
        delivered = [_delivered(log) for log in logs]
        received = sum(len(receiver.calls_for(job_id)) for job_id in job_ids)
        assert min(delivered) == 0 and max(delivered) == received, (delivered, received)
    finally:
        m2.stop()
        m1.stop()
        store.close()


def test_a_machine_that_vanishes_mid_job_loses_nothing(
    pg_schema: str,
    tmp_path: Path,
    backend: tuple[DevBackend, ServerThread],
    models_path: Path,
) -> None:
    """m2 (`voxtrace worker`, alone) is downloading the job's video when m1 (`voxtrace
    serve`) joins and m2's whole process group is killed -9 (its workers would die with
    their supervisor anyway: PR_SET_PDEATHSIG). m1 releases the lapsed lease, runs the
    job again and, m2 having been the elected dispatcher, delivers the callbacks."""
    receiver, thread = backend
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "sample.mp4").write_bytes((DATA / "sample.mp4").read_bytes())
    files = GatedFileServer(tmp_path / "files").start()
    rig = FailoverRig(
        work=tmp_path,
        store_url=in_schema(pg_schema),
        receiver=receiver,
        backend_url=thread.url,
        files=files,
        models=models_path,
        lease_s=6,
        heartbeat_s=2,
    )
    try:
        run = failover(rig, "download")
    finally:
        files.stop()

    assert run.moment_hit == "audio" and run.progress_at_kill < 25, run  # mid-download
    assert run.m2_left == []  # nothing of m2 survived
    assert run.first_worker.startswith("m2/") and run.final_worker.startswith("m1/"), run
    assert (run.status, run.attempts) == ("completed", 2)
    assert run.takeover_s is not None and run.takeover_s <= 6 + 5 + 3, run  # lease + reaper
    assert (run.terminal_calls, run.distinct_terminal, run.violations) == (1, 1, [])
    assert receiver.violations == []
    # The contract: progress never decreases within a job, across attempts too.
    assert run.monotonic, (run.progress_received, run.progress_queued)
    assert run.progress_received[-1] == 100
    assert (run.dispatcher_before, run.m1_took_delivery, run.terminal_by_m1) == ("m2", True, True)
    assert run.m1_trouble == []
