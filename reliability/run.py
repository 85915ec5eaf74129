"""Run the fault scenarios repeatedly and write `docs/reliability.md`.

    .venv/bin/python -m reliability                      # everything, default counts
    .venv/bin/python -m reliability --sections kills --kills 20
    .venv/bin/python -m reliability --sections machines --out /tmp/machines.md  # PostgreSQL
    .venv/bin/python -m reliability --quick              # one of each, a smoke run

Each section is a function `(Context) -> str` (markdown) registered in `SECTIONS`; add
a section (load, soak, ...) by writing one and listing it there.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import os
import platform
import random
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx

from reliability.scenarios import (
    FAILOVER_MOMENTS,
    POLLING_ENV,
    ROOT,
    STAGES,
    FailoverOutcome,
    FailoverRig,
    KillOutcome,
    NeighbourOutcome,
    PolicyOutcome,
    Rig,
    Tmpfs,
    backend_fault,
    big_bodies,
    connection_flood,
    failover,
    hostile_callback,
    kill_after,
    kill_during,
    kill_during_callback,
    models_dir,
    neighbour_playlist,
    signature,
    terminal_calls,
)
from testing.helpers import SECRET, GatedFileServer, ServeProcess, Server, free_port
from testing.hostile_servers import HostileBackend, HostileServer
from voxtrace.devbackend import DevBackend, ServerThread

DATA = ROOT / "tests" / "data"
KILL_STAGES = [s for s in STAGES if s not in ("init", "assemble")]


@dataclass
class Context:
    """What every section gets: a scratch directory, the models, the counts asked for."""

    work: Path
    whisper_models: Path
    kills: int = 10
    hostile_reps: int = 3
    backend_reps: int = 3
    disk_reps: int = 1
    failover_reps: int = 1
    burst: int = 16
    seed: int = 1
    log: Callable[[str], None] = print
    notes: list[str] = field(default_factory=list)

    def scratch(self, name: str) -> Path:
        path = self.work / f"{name}-{time.time_ns()}"
        path.mkdir(parents=True)
        return path


@contextmanager
def _backend() -> Iterator[tuple[DevBackend, ServerThread]]:
    receiver = DevBackend(secret=SECRET)
    thread = ServerThread(receiver.app).start()
    try:
        yield receiver, thread
    finally:
        thread.stop()


@contextmanager
def _files(root: Path, **kwargs: Any) -> Iterator[HostileServer]:
    server = HostileServer(root, **kwargs).start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def _server(data_dir: Path, backend_url: str, models: Path, **env: str) -> Iterator[Server]:
    srv = Server(data_dir, backend_url, models, **{**POLLING_ENV, **env}).start()
    try:
        yield srv
    finally:
        srv.stop()


def _pct(n: int, total: int) -> str:
    return f"{n}/{total}" if total else "0/0"


def _seconds(values: list[float]) -> str:
    values = [v for v in values if v >= 0]
    if not values:
        return "-"
    return f"median {statistics.median(values):.1f} s, max {max(values):.1f} s"


# ------------------------------------------------------------------------- kills


def section_kills(ctx: Context) -> str:
    """kill -9 of the server / of a worker: in every stage, at random moments, and while
    the terminal callback is in flight."""
    rng = random.Random(ctx.seed)
    root = ctx.scratch("kill-files")
    (root / "sample.mp4").write_bytes((DATA / "sample.mp4").read_bytes())
    models, diarizer = models_dir(ctx.whisper_models, ctx.scratch("kill-models"))
    outcomes: list[KillOutcome] = []
    with _files(root, slow_bytes_per_s=50_000) as files, _backend() as (receiver, thread):
        data_dir = ctx.scratch("kill-serve")
        with _server(data_dir, thread.url, models) as srv:
            rig = Rig(srv, files, receiver, data_dir)
            url = files.url("slow", "sample.mp4")
            started = time.monotonic()
            job_id = rig.submit(url)
            (end,) = terminal_calls(rig.wait_terminal(job_id))
            run_s = time.monotonic() - started
            baseline = signature(end.body["result"])
            ctx.log(f"kills: baseline run {run_s:.1f} s, {len(baseline)} segments")
            for target in ("serve", "worker"):
                for stage in KILL_STAGES:
                    outcome = kill_during(rig, url, stage, target, baseline)
                    ctx.log(f"kills: {target} in {stage}: {outcome}")
                    outcomes.append(outcome)
                    srv.wait_ready(90)
            for i in range(ctx.kills):
                target = "serve" if i % 2 == 0 else "worker"
                delay = rng.uniform(0.0, 0.8 * run_s)  # run_s includes the wait for a worker
                outcome = kill_after(rig, url, delay, target, baseline)
                ctx.log(f"kills: {target} after {delay:.1f} s: {outcome}")
                outcomes.append(outcome)
                srv.wait_ready(90)
            for _ in range(2):
                outcome = kill_during_callback(rig, url, baseline)
                ctx.log(f"kills: during callback: {outcome}")
                outcomes.append(outcome)
                srv.wait_ready(90)
    lines = [
        "## kill -9 (server and worker)",
        "",
        f"Input: `tests/data/sample.mp4` (18.7 s, served at 50 kB/s so that the audio stage "
        f"lasts ~2.5 s); diarizer {'loaded' if diarizer else 'absent (speakers stage is instant)'}"
        f". Baseline: one undisturbed run; every disturbed run is compared with it "
        "(segment text, speaker, word start/end).",
        "",
        "| target | wanted | hit (progress) | status | terminal callbacks (distinct) "
        "| identical | attempts | temp files left | kill → terminal |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        lines.append(
            f"| {o.target} | {o.stage_wanted} | {o.stage_hit} ({o.progress_at_kill}) "
            f"| {o.status} | {o.terminal_calls} ({o.distinct_terminal}) "
            f"| {'yes' if o.identical else '**NO**'} | {o.attempts} "
            f"| {'none' if o.work_empty else '**yes**'} | {o.recovery_s:.1f} s |"
        )
    total = len(outcomes)
    one = sum(o.distinct_terminal == 1 for o in outcomes)
    exactly = sum(o.terminal_calls == 1 for o in outcomes)
    same = sum(o.identical for o in outcomes)
    clean = sum(o.work_empty for o in outcomes)
    missed = sum(o.stage_hit == "-" for o in outcomes)
    lines += [
        "",
        f"- exactly one terminal outcome (one distinct terminal body): **{_pct(one, total)}**",
        f"- exactly one terminal callback received: {_pct(exactly, total)} (the rest: the "
        "same callback repeated after a kill during its delivery; at-least-once, same "
        "bytes and Idempotency-Key, answered `already_completed`)",
        f"- result identical to the undisturbed run: **{_pct(same, total)}**",
        f"- no temp file left in `data_dir/work`: **{_pct(clean, total)}**",
        f"- kills that came too late (job already finished): {missed}",
        f"- kill → terminal callback: {_seconds([o.recovery_s for o in outcomes])}",
        "",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------------- hostile


def _corpus_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "make_hostile_corpus", ROOT / "scripts" / "make_hostile_corpus.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def section_hostile(ctx: Context) -> str:
    """Every corpus file and every hostile server behaviour, through the real server."""
    script = _corpus_script()
    corpus = ctx.scratch("corpus")
    script.make_corpus(corpus)
    cases: list[tuple[str, str, str]] = []  # (kind, name, expected)
    for item in script.ITEMS:
        expected = item.error_code or item.outcome
        if item.needs_short_cap:
            expected = "completed"  # the server runs with the default 60 min cap
        cases.append(("file", item.name, expected))
    cases += [
        ("reset", "speech.wav", "DOWNLOAD_ERROR"),
        ("short", "speech.wav", "DOWNLOAD_ERROR"),
        ("endless", "", "DOWNLOAD_ERROR"),
        ("trickle", "speech.wav", "DOWNLOAD_ERROR"),
        ("headtrickle", "speech.wav", "DOWNLOAD_ERROR"),
        ("gzipbomb", "", "DOWNLOAD_ERROR"),
    ]
    env = {
        "VOXTRACE_DOWNLOAD_TIMEOUT_S": "2",
        "VOXTRACE_DOWNLOAD_TOTAL_TIMEOUT_S": "4",
        "VOXTRACE_MAX_DOWNLOAD_BYTES": str(4 * 1024 * 1024),
        "VOXTRACE_JOB_TIMEOUT_S": "30",
    }
    with _files(corpus) as files, _backend() as (receiver, thread):
        data_dir = ctx.scratch("hostile-serve")
        with _server(data_dir, thread.url, ctx.whisper_models, **env) as srv:
            rig = Rig(srv, files, receiver, data_dir)
            speech = frozenset(i.name for i in script.ITEMS if i.speech)
            rows = _run_cases(ctx, rig, cases, ctx.hostile_reps, speech)
    lines = [
        "## Hostile media and hostile file servers (through `voxtrace serve`)",
        "",
        "Corpus: `scripts/make_hostile_corpus.py` (ffmpeg-generated at run time). Server "
        "settings: download inactivity timeout 2 s, total download deadline 4 s, max download "
        "4 MB, job time limit 30 s, "
        "media cap 60 min (default).",
        "",
        *_case_table(cases, rows),
    ]
    return "\n".join(lines)


_Rows = dict[tuple[str, str], list[tuple[str, float, bool, int]]]


def _run_cases(
    ctx: Context,
    rig: Rig,
    cases: list[tuple[str, str, str]],
    reps: int,
    speech: frozenset[str] = frozenset(),
) -> _Rows:
    """Each (kind, name) of the file server through the real server, `reps` times. A
    file in `speech` counts as completed only when its result has words."""
    rows: _Rows = {}
    for rep in range(reps):
        for kind, name, _expected in cases:
            started = time.time()
            job_id = rig.submit(rig.files.url(kind, name))
            ends = terminal_calls(rig.wait_terminal(job_id, 240))
            got = ends[0].body.get("error_code") or ends[0].body["status"]
            if got == "completed" and name in speech and not _has_words(ends[0].body):
                got = "completed without words"
            rows.setdefault((kind, name), []).append(
                (got, ends[0].at - started, rig.work_empty(), len(ends))
            )
            ctx.log(f"hostile {rep}: {kind}/{name}: {got}")
        rig.srv.wait_ready(90)
    return rows


def _has_words(body: dict[str, Any]) -> bool:
    segments = (body.get("result") or {}).get("segments") or []
    return any(seg.get("words") for seg in segments)


def _case_table(cases: list[tuple[str, str, str]], rows: _Rows) -> list[str]:
    lines = [
        "| input | expected | got (each run) | right | terminal callbacks | temp files left "
        "| submit → terminal |",
        "|---|---|---|---|---|---|---|",
    ]
    right_total = runs_total = 0
    for kind, name, expected in cases:
        runs = rows.get((kind, name), [])
        got = [g for g, _, _, _ in runs]
        right = sum(g in expected.split("|") for g in got)
        right_total += right
        runs_total += len(runs)
        left = sum(not clean for _, _, clean, _ in runs)
        n_ends = {n for _, _, _, n in runs}
        lines.append(
            f"| {kind}/{name} | {expected} | {', '.join(sorted(set(got)))} "
            f"| {_pct(right, len(runs))} | {sorted(n_ends)} | {left} "
            f"| {_seconds([t for _, t, _, _ in runs])} |"
        )
    return [*lines, "", f"- right outcome: **{_pct(right_total, runs_total)}**", ""]


# ------------------------------------------------------------------------- media


_MEDIA_ATTACKS = (
    "hls_absolute.mp4",
    "hls_relative.mp4",
    "hls_nested.mp4",
    "hls_live.mp4",
    "dash.mp4",
    "ffconcat.mp4",
    "concat_relative.mp4",
    "sdp.mp4",
    "second_track.mp4",
)


def section_media(ctx: Context) -> str:
    """Issue 12's media half through the real server (two workers): inputs that make
    ffmpeg read other files, a playlist naming a running neighbour job's download, a
    gzip bomb, a header trickle and speech on a second audio track."""
    script = _corpus_script()
    corpus = ctx.scratch("corpus")
    script.make_corpus(corpus)
    by_name = {item.name: item for item in script.ITEMS}
    cases = [("file", n, by_name[n].error_code or by_name[n].outcome) for n in _MEDIA_ATTACKS]
    cases += [("headtrickle", "speech.wav", "DOWNLOAD_ERROR"), ("gzipbomb", "", "DOWNLOAD_ERROR")]
    victim = "victim_faststart.mp4"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(DATA / "sample.mp4"), "-c", "copy",
         "-movflags", "+faststart", str(corpus / victim)],
        check=True,
    )  # fmt: skip
    env = {
        "VOXTRACE_WORKERS": "2",
        "VOXTRACE_DOWNLOAD_TIMEOUT_S": "2",
        "VOXTRACE_DOWNLOAD_TOTAL_TIMEOUT_S": "4",
        "VOXTRACE_MAX_DOWNLOAD_BYTES": str(4 * 1024 * 1024),
        "VOXTRACE_JOB_TIMEOUT_S": "60",
    }
    neighbours: list[NeighbourOutcome] = []
    with _files(corpus, bomb_decoded_bytes=256 * 1024**2) as files, _backend() as backend:
        receiver, thread = backend
        data_dir = ctx.scratch("media-serve")
        files.bomb()  # compressed once, before any timing
        with _server(data_dir, thread.url, ctx.whisper_models, **env) as srv:
            rig = Rig(srv, files, receiver, data_dir)
            speech = frozenset(i.name for i in script.ITEMS if i.speech)
            rows = _run_cases(ctx, rig, cases, ctx.hostile_reps, speech)
            for rep in range(ctx.hostile_reps):
                neighbours.append(neighbour_playlist(rig, victim))
                ctx.log(f"media {rep}: neighbour playlist: {neighbours[-1]}")
            bomb_wire = len(files.bomb())
            identity = sum(h.get("accept-encoding") == "identity" for h in files.headers)
            requests = len(files.headers)
    lines = [
        "## Media that names other files, compressed and stalled downloads (issue 12)",
        "",
        "The corpus' playlist, manifest, list and SDP files name local files (the absolute "
        "ones name the corpus' own speech clip), served as `.mp4`; `second_track.mp4` has "
        "its speech only on the 2nd audio track (counted right only when its result has "
        "words). Server: two workers, download inactivity "
        "timeout 2 s, total download deadline 4 s, max download 4 MB, job time limit 60 s. "
        f"The gzip bomb is {bomb_wire / 1024:.0f} KB on the wire, 256 MB decoded.",
        "",
        *_case_table(cases, rows),
        f"- requests to the file server asking `Accept-Encoding: identity`: {identity}/{requests}",
        "",
        "A running neighbour job: while a victim job (18 s of speech) is past its download, "
        "another job submits an HLS playlist naming `../<the victim's real work dir>/"
        "download.mp4` (read from disk: more than an attacker can know).",
        "",
        "| run | playlist job | words leaked | victim job | victim dir guessable "
        "| terminal callbacks |",
        "|---|---|---|---|---|---|",
    ]
    for i, n in enumerate(neighbours, 1):
        lines.append(
            f"| {i} | {n.attacker} | {n.leaked_words} | {n.victim} "
            f"| {'yes' if n.victim_dir_guessable else 'no'} | {list(n.terminal_callbacks)} |"
        )
    return "\n".join([*lines, ""])


# ------------------------------------------------------------------------- backend


def section_backend(ctx: Context) -> str:
    """Callback delivery against a backend that is down, slow, flapping or answers
    500/429/404."""
    modes = ["500", "429", "flapping", "slow", "404", "down"]
    root = ctx.scratch("backend-files")
    (root / "silence.mp4").write_bytes((DATA / "silence.mp4").read_bytes())
    results: list[PolicyOutcome] = []
    with _files(root) as files, _backend() as (receiver, thread):
        dead = f"http://127.0.0.1:{free_port()}"
        data_dir = ctx.scratch("backend-serve")
        env = {
            "VOXTRACE_SEND_PROGRESS": "false",
            "VOXTRACE_CALLBACK_TIMEOUT_S": "1",
            "VOXTRACE_CALLBACK_RETRY_WINDOW_S": "6",
            "VOXTRACE_CALLBACK_ALLOWLIST": dead,
        }
        with _server(data_dir, thread.url, ctx.whisper_models, **env) as srv:
            rig = Rig(srv, files, receiver, data_dir)
            for _ in range(ctx.backend_reps):
                for mode in modes:
                    outcome = backend_fault(rig, files.url("file", "silence.mp4"), mode, dead)
                    ctx.log(f"backend: {outcome}")
                    results.append(outcome)
    policy = {
        "500": "retried (5xx), then delivered",
        "429": "retried, then delivered",
        "flapping": "503 then OK: retried, delivered",
        "slow": "timeouts (answer after 2 s > 1 s timeout) retried; delivered once it recovers",
        "404": "given up after one attempt",
        "down": "connection refused: retried with backoff until the 6 s window closes",
    }
    lines = [
        "## Callback delivery against a misbehaving backend",
        "",
        "Server: progress callbacks off (faults hit the terminal callback), callback timeout "
        "1 s, retry window 6 s, backoff base 0.2 s cap 1 s. The job stays `completed` in "
        "`GET /api/jobs/{id}` whatever the delivery; `callbacks[]` shows the delivery.",
        "",
        "| mode | expected | states | attempts | last_error | backend received "
        "| backend's job state |",
        "|---|---|---|---|---|---|---|",
    ]
    for mode in modes:
        runs = [r for r in results if r.mode == mode]
        lines.append(
            f"| {mode} | {policy[mode]} | {', '.join(sorted({r.state for r in runs}))} "
            f"| {sorted({r.attempts for r in runs})} "
            f"| {', '.join(sorted({str(r.last_error) for r in runs}))} "
            f"| {sorted({r.received for r in runs})} "
            f"| {', '.join(sorted({r.backend_status for r in runs}))} |"
        )
    completed = sum(r.job_status == "completed" for r in results)
    lines += [
        "",
        f"- job status unaffected by delivery: {_pct(completed, len(results))}",
        "- `slow`: every timed-out request was still processed by the backend, so it "
        "received the terminal callback several times (same bytes, same Idempotency-Key; "
        "the validated endpoint answers the repeats `already_completed`).",
        "",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------------- disk


def section_disk(ctx: Context) -> str:
    """A nearly full data directory (a real 40 MB tmpfs)."""
    import subprocess

    lines = ["## Disk nearly full (data directory on a 40 MB tmpfs)", ""]
    disk = Tmpfs(ctx.scratch("disk") / "data", size_mb=40)
    why_not = disk.mount()
    if why_not:
        return "\n".join([*lines, f"Skipped: {why_not}.", ""])
    root = ctx.scratch("disk-files")
    for name in ("sample.mp4", "silence.mp4"):
        (root / name).write_bytes((DATA / name).read_bytes())
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
         "anullsrc=r=8000:cl=mono", "-t", "1800", "-c:a", "flac", str(root / "long.flac")],
        check=True,
    )  # fmt: skip
    rows: list[str] = []
    try:
        with _files(root) as files, _backend() as (receiver, thread):
            env = {"VOXTRACE_MIN_FREE_DISK_MB": "10"}
            with _server(disk.path, thread.url, ctx.whisper_models, **env) as srv:
                rig = Rig(srv, files, receiver, disk.path)
                for _ in range(ctx.disk_reps):
                    for label, leave_mb, name in (
                        ("5 MB free (< 10 MB floor)", 5.0, "sample.mp4"),
                        ("14 MB free; decoding needs ~58 MB", 14.0, "long.flac"),
                        ("space freed", -1.0, "silence.mp4"),
                    ):
                        (disk.path / "filler.bin").unlink(missing_ok=True)
                        if leave_mb >= 0:
                            disk.fill(leave_mb)
                        ok = httpx.get(f"{srv.url}/health", timeout=5).status_code
                        job_id = f"disk-{time.time_ns()}"
                        receiver.register(job_id)
                        answer = srv.submit(job_id, files.url("file", name))
                        if answer.status_code != 200:  # below the floor: refused at once
                            code = answer.json()["error"]["code"]
                            got = f"refused at submit: {answer.status_code} {code}"
                            rows.append(f"| {label} | {name} | {got} | 0 | 0 | none | {ok} |")
                            ctx.log(f"disk: {label}: {got}")
                            continue
                        ends = terminal_calls(rig.wait_terminal(job_id, 120))
                        job = rig.job(job_id)
                        got = ends[0].body.get("error_code") or ends[0].body["status"]
                        rows.append(
                            f"| {label} | {name} | {got} | {job['attempts']} "
                            f"| {len(ends)} | {'none' if rig.work_empty() else '**yes**'} "
                            f"| {ok} |"
                        )
                        ctx.log(f"disk: {label}: {got}")
    finally:
        disk.unmount()
    lines += [
        "`VOXTRACE_MIN_FREE_DISK_MB=10`. A filler file leaves the stated free space.",
        "",
        "| disk | input | outcome | attempts | terminal callbacks | temp files left | /health |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------ several machines


def section_machines(ctx: Context) -> str:
    """Two machines on one PostgreSQL store; the one running the job is killed -9 whole."""
    from psycopg import sql

    from testing import postgres as pg

    title = "## Several machines on one PostgreSQL store"
    missing = pg.postgres_missing()
    if missing:
        return f"{title}\n\nSkipped: {missing}.\n"
    root = ctx.scratch("failover-files")
    (root / "sample.mp4").write_bytes((DATA / "sample.mp4").read_bytes())
    models, diarizer = models_dir(ctx.whisper_models, ctx.scratch("failover-models"))
    schema = f"vt_reliability_{time.time_ns()}"
    pg.admin(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    files = GatedFileServer(root).start()
    outcomes: list[FailoverOutcome] = []
    try:
        with _backend() as (receiver, thread):
            rig = FailoverRig(
                ctx.scratch("failover"), pg.in_schema(schema), receiver, thread.url, files, models
            )
            for _ in range(ctx.failover_reps):
                for moment in FAILOVER_MOMENTS:
                    outcome = failover(rig, moment)
                    ctx.log(f"machines: kill m2 at {moment}: {outcome}")
                    outcomes.append(outcome)
    finally:
        files.stop()
        pg.admin(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))

    def claim_s(o: FailoverOutcome) -> str:
        return f"{o.takeover_s:.1f} s" if o.takeover_s is not None else "- (not rerun)"

    lines = [
        title,
        "",
        "Node m2 (`voxtrace worker`, one worker) takes the job alone; node m1 (`voxtrace "
        "serve`, one worker) joins the same schema; then m2's whole process group "
        "(supervisor, workers, ffmpeg) is killed -9, as a machine losing power. Lease "
        f"{rig.lease_s:g} s, heartbeat {rig.heartbeat_s:g} s; input `tests/data/sample.mp4` "
        "(the file server holds m2's download until m1 is ready); diarizer "
        f"{'loaded' if diarizer else 'absent'}. Moments: `download` (m2 still downloading), "
        "a stage (m2's progress in its range), `callback` (m2 finished; the terminal "
        "callback, sent by m2's dispatcher, is unanswered by a backend that takes 3 s).",
        "",
        "| killed at | hit (progress) | status | attempts | worker first → last "
        "| terminal callbacks (distinct) | contract | progress monotonic "
        "| m2 processes left | dispatcher before → terminal sent by | kill → m1 claims "
        "| kill → terminal |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        lines.append(
            f"| {o.moment_wanted} | {o.moment_hit} ({o.progress_at_kill}) | {o.status} "
            f"| {o.attempts} | {o.first_worker.split('/')[0]} → {o.final_worker.split('/')[0]} "
            f"| {o.terminal_calls} ({o.distinct_terminal}) "
            f"| {'ok' if not o.violations else '**' + str(len(o.violations)) + ' violations**'} "
            f"| {'yes' if o.monotonic else '**NO**'} | {len(o.m2_left) or 'none'} "
            f"| {o.dispatcher_before} → {'m1' if o.terminal_by_m1 else '**not m1**'} "
            f"| {claim_s(o)} | {o.recovery_s:.1f} s |"
        )
    total = len(outcomes)
    one = sum(
        o.distinct_terminal == 1 and o.status == "completed" and not o.violations for o in outcomes
    )
    repeats = sorted({o.terminal_calls for o in outcomes if o.moment_hit == "callback"})
    rerun = [o for o in outcomes if o.moment_hit not in ("callback", "-")]
    by_m1 = sum(o.final_worker.startswith("m1/") and o.attempts == 2 for o in rerun)
    trouble = sum(len(o.m1_trouble) for o in outcomes)
    clean_kill = sum(not o.m2_left for o in outcomes)
    lines += [
        "",
        f"- completed, one distinct terminal body, no contract violation: **{_pct(one, total)}**",
        f"- jobs killed mid-run taken over by m1 as attempt 2: **{_pct(by_m1, len(rerun))}**",
        f"- progress never decreased, as queued and as received: "
        f"**{_pct(sum(o.monotonic for o in outcomes), total)}** (a second attempt starts "
        "from the stored progress and holds it until the pipeline passes it)",
        f"- nothing of m2 alive after the kill: **{_pct(clean_kill, total)}**",
        f"- m1 took over callback delivery and sent the terminal callback: "
        f"**{_pct(sum(o.m1_took_delivery and o.terminal_by_m1 for o in outcomes), total)}**",
        f"- ERROR lines or tracebacks in m1's log: {trouble}",
        f"- kill → m1 claims: {_seconds([o.takeover_s for o in rerun if o.takeover_s is not None])}"
        f" (the lease lapses within {rig.lease_s:g} s of m2's last heartbeat; a supervisor "
        "releases lapsed leases every 5 s)",
        f"- kill → terminal callback: {_seconds([o.recovery_s for o in outcomes])}",
        f"- `callback`: terminal callbacks received {repeats}, one distinct body: m2's, "
        "answered after m2 was gone, and m1's repeat (at-least-once: same bytes and "
        "Idempotency-Key, answered `already_completed`); the job ran once.",
        "- On one host, kill -9 closes m2's database sessions at once, so m1's dispatcher "
        "takes the delivery lock within its 0.5 s poll. A machine that loses power leaves "
        "its sessions open until the server's TCP keepalives give up (about a minute as "
        "configured; not measured here): the job is still taken over once its lease "
        "lapses, but callbacks wait for that minute.",
        "",
    ]
    return "\n".join(lines)


@dataclass
class _BurstRound:
    codes: Counter[int]
    accepted: int
    one_terminal: int
    completed: int
    drained_s: float
    ratios: list[float]  # estimated_time / actual time to the terminal callback


def _burst_round(
    srv: Server, receiver: DevBackend, files: HostileServer, media: list[str]
) -> _BurstRound:
    from concurrent.futures import ThreadPoolExecutor

    jobs = [f"burst-{i}-{time.time_ns()}" for i in range(len(media))]
    for job_id in jobs:
        receiver.register(job_id)
    t0 = time.monotonic()
    with ThreadPoolExecutor(len(jobs)) as pool:
        pending = [
            pool.submit(srv.submit, job_id, files.url("file", name))
            for job_id, name in zip(jobs, media, strict=True)
        ]
        answers = [p.result() for p in pending]
    estimates = {a.json()["job_id"]: a.json()["estimated_time"] for a in answers if a.is_success}
    ended: dict[str, float] = {}
    for job_id in estimates:
        receiver.wait_for(job_id, {"completed", "failed"}, 900)
        ended[job_id] = time.monotonic() - t0
    time.sleep(1)  # a second terminal callback would arrive here
    ends = {j: [c.body["status"] for c in terminal_calls(receiver.calls_for(j))] for j in estimates}
    return _BurstRound(
        codes=Counter(a.status_code for a in answers),
        accepted=len(estimates),
        one_terminal=sum(1 for e in ends.values() if len(e) == 1),
        completed=sum(1 for e in ends.values() if e == ["completed"]),
        drained_s=max(ended.values(), default=0.0),
        ratios=[estimates[j] / ended[j] for j in estimates if ended[j] > 0],
    )


def section_burst(ctx: Context) -> str:
    """The deployed backend's burst: N submissions at once to a server with two workers.

    Each must be accepted (the backend fails a refused job for good) and end in exactly
    one terminal callback; `estimated_time` is compared with when each job really ended,
    on a fresh server (no job time known yet) and again once jobs have completed.
    """
    root = ctx.scratch("burst-files")
    media = (["jfk.flac", "sample.mp4"] + ["silence.mp4"] * ctx.burst)[: ctx.burst]
    for name in set(media):
        (root / name).write_bytes((DATA / name).read_bytes())
    with (
        _backend() as (receiver, thread),
        _files(root) as files,
        _server(ctx.scratch("burst"), thread.url, ctx.whisper_models, VOXTRACE_WORKERS="2") as srv,
    ):
        rounds = [_burst_round(srv, receiver, files, media) for _ in range(2)]
    lines = [
        f"## A burst of {len(media)} submissions at once",
        "",
        "Two workers, default admission settings (`VOXTRACE_MAX_QUEUED_JOBS=1000`, "
        "`VOXTRACE_MAX_CONCURRENT_JOBS=10`); media from tests/data "
        f"({', '.join(f'{media.count(n)} x {n}' for n in sorted(set(media)))}). The second "
        "burst follows the first on the same server, so its estimates know the job time.",
        "",
        "| burst | answers | accepted | one terminal callback | completed | drained after |"
        " estimated / actual time (median, min, max) |",
        "|---|---|---|---|---|---|---|",
    ]
    for n, r in enumerate(rounds, 1):
        spread = (
            f"{statistics.median(r.ratios):.2f}, {min(r.ratios):.2f}, {max(r.ratios):.2f}"
            if r.ratios
            else "-"
        )
        lines.append(
            f"| {n} | {dict(sorted(r.codes.items()))} | **{r.accepted}/{len(media)}** | "
            f"**{r.one_terminal}/{r.accepted}** | {r.completed}/{r.accepted} | "
            f"{r.drained_s:.0f} s | {spread} |"
        )
    lines += [
        "",
        "The first burst's estimates use the 60-s default job time (no job had completed).",
        "",
    ]
    return "\n".join(lines)


def section_load(ctx: Context) -> str:
    from reliability.load import run_load

    return run_load()


def section_soak(ctx: Context) -> str:
    from reliability.soak import run_soak

    return run_soak(models_dir=ctx.whisper_models)


# ------------------------------------------------------------------------- edge


def section_edge(ctx: Context) -> str:
    """Hostile peers at the HTTP edge: callback endpoints that trickle or answer 200 MB,
    a flood of unfinished connections, many big bodies at once."""
    kinds = ("trickle-body", "trickle-head", "huge")
    root = ctx.scratch("edge-files")
    (root / "silence.mp4").write_bytes((DATA / "silence.mp4").read_bytes())
    callbacks = []
    with (
        _files(root) as files,
        _backend() as (receiver, thread),
        HostileBackend(interval_s=5.0) as hostile,
    ):
        env = {
            "VOXTRACE_SEND_PROGRESS": "false",
            "VOXTRACE_CALLBACK_TIMEOUT_S": "10",
            "VOXTRACE_CALLBACK_RETRY_WINDOW_S": "30",
            "VOXTRACE_CALLBACK_ALLOWLIST": ",".join(f"{hostile.url}/{k}" for k in kinds),
        }
        data_dir = ctx.scratch("edge-serve")
        with _server(data_dir, thread.url, ctx.whisper_models, **env) as srv:
            rig = Rig(srv, files, receiver, data_dir)
            for _ in range(ctx.backend_reps):
                for kind in kinds:
                    outcome = hostile_callback(
                        rig, files.url("file", "silence.mp4"), hostile.url, kind
                    )
                    ctx.log(f"edge: {outcome}")
                    callbacks.append(outcome)
    floods = []
    bodies = []
    for _ in range(ctx.backend_reps):
        with ServeProcess(ctx.scratch("edge-flood"), **POLLING_ENV) as api:
            floods.append(connection_flood(api, 2000))
            ctx.log(f"edge: {floods[-1]}")
            bodies.append(big_bodies(api, 8, 49))
            ctx.log(f"edge: {bodies[-1]}")
    lines = [
        "## Hostile peers at the HTTP edge",
        "",
        "Callbacks: `voxtrace serve` with one worker; a job whose callback endpoint (an "
        "allowlisted `fastapi_base_url`) misbehaves, then a job for the healthy backend. "
        "`trickle-body`: 200, then one body byte every 5 s; `trickle-head`: the status line, "
        "then one header byte every 5 s (never idle for the 10-s timeout); `huge`: a 200 "
        "whose body is 200 MB. Attempt deadline 10 s (`VOXTRACE_CALLBACK_TIMEOUT_S`), retry "
        "window 30 s, progress callbacks off.",
        "",
        "| endpoint | healthy job's callback | submit → healthy callback | hostile callback "
        "| attempts | last_error | serve peak RSS growth |",
        "|---|---|---|---|---|---|---|",
    ]
    for o in callbacks:
        lines.append(
            f"| {o.kind} | {o.healthy_status} | {o.healthy_s:.1f} s | {o.hostile_state} "
            f"| {o.hostile_attempts} | {o.hostile_error or '-'} | {o.serve_rss_growth_mb:.1f} MB |"
        )
    lines += [
        "",
        "Connection flood: `voxtrace serve` (API only, defaults: header timeout 10 s, at most "
        "256 connections waiting for headers, oldest closed first); 2,000 connections, half "
        "sending a partial request line and headers, half nothing; then `/health` and a "
        "submit from a normal client.",
        "",
        "| connections | /health | /health latency | submit | serve fds during "
        "| closed by the server | all closed after | tracebacks in log |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for f in floods:
        lines.append(
            f"| {f.connections} | {f.health_status} | {f.health_s * 1000:.0f} ms "
            f"| {f.submit_status} | {f.serve_fds_during} | {f.closed_by_server} "
            f"| {f.closed_s:.1f} s | {f.log_tracebacks} |"
        )
    lines += [
        "",
        "Big bodies: eight 49-MB submit bodies at once (four with Content-Length, four "
        "chunked) against the 64-KiB submit limit (`VOXTRACE_SUBMIT_MAX_BODY_BYTES`).",
        "",
        "| bodies | answers | serve RSS before | serve peak RSS | /health after |",
        "|---|---|---|---|---|",
    ]
    for b in bodies:
        answers = ", ".join(f"{b.statuses.count(s)}× `{s}`" for s in sorted(set(b.statuses)))
        lines.append(
            f"| {b.bodies} × {b.body_mb} MB | {answers} | {b.rss_before_mb:.0f} MB "
            f"| {b.rss_peak_mb:.0f} MB | {b.health_s * 1000:.0f} ms |"
        )
    lines.append("")
    return "\n".join(lines)


SECTIONS: dict[str, Callable[[Context], str]] = {
    "kills": section_kills,
    "hostile": section_hostile,
    "media": section_media,
    "backend": section_backend,
    "disk": section_disk,
    "machines": section_machines,
    "burst": section_burst,
    "edge": section_edge,
    "load": section_load,
    "soak": section_soak,
}


def _whisper_models(work: Path) -> Path:
    bundled = ROOT / "data" / "models"
    if (bundled / "whisper-base").is_dir():
        return bundled
    from voxtrace.models import ensure_bundled_whisper_base

    path = work / "models"
    ensure_bundled_whisper_base(path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reliability", description=__doc__)
    parser.add_argument("--sections", default=",".join(SECTIONS))
    parser.add_argument("--kills", type=int, default=10, help="random-moment kills")
    parser.add_argument("--hostile-reps", type=int, default=3)
    parser.add_argument("--backend-reps", type=int, default=3)
    parser.add_argument("--disk-reps", type=int, default=1)
    parser.add_argument("--failover-reps", type=int, default=1, help="rounds of each moment")
    parser.add_argument("--burst", type=int, default=16, help="submissions at once")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="one of each")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "reliability.md")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.sections.split(",") if n.strip()]
    unknown = set(names) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {sorted(unknown)}")
    if args.quick:
        args.kills, args.hostile_reps, args.backend_reps, args.disk_reps = 2, 1, 1, 1
    given = argv if argv is not None else sys.argv[1:]
    command = " ".join([".venv/bin/python -m reliability", *map(shlex.quote, given)])
    with tempfile.TemporaryDirectory(prefix="voxtrace-reliability-") as tmp:
        work = Path(tmp)
        ctx = Context(
            work=work,
            whisper_models=_whisper_models(work),
            kills=args.kills,
            hostile_reps=args.hostile_reps,
            backend_reps=args.backend_reps,
            disk_reps=args.disk_reps,
            failover_reps=args.failover_reps,
            burst=args.burst,
            seed=args.seed,
        )
        started = time.monotonic()
        parts = []
        for name in names:
            t0 = time.monotonic()
            body = SECTIONS[name](ctx)
            parts.append(body + f"\n_Section `{name}` took {time.monotonic() - t0:.0f} s._\n")
    header = [
        "# Reliability",
        "",
        "Fault injection against the real `voxtrace serve` (real models, real subprocesses, "
        "kill -9, a real tmpfs), repeated. Produced by:",
        "",
        "```",
        command,
        "```",
        "",
        f"Run {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()}, "
        f"{os.cpu_count()} CPU cores, Python {platform.python_version()}; "
        f"took {time.monotonic() - started:.0f} s. The scenarios are in "
        "`reliability/scenarios.py`, shared with `tests/test_faults.py`.",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(header) + "\n" + "\n".join(parts))
    print(f"wrote {args.out}")
    return 0
