"""Command line: the only place that configures logging and builds settings.

voxtrace serve    API + workers + callback delivery (SQLite store by default: one machine)
voxtrace worker   workers without the API, for more machines on one PostgreSQL store
                  (VOXTRACE_STORE_URL); each delivers callbacks too, one at a time
voxtrace process  run the pipeline on one file or URL, print JSON/SRT/VTT
voxtrace job      ask a running server for a job's state
voxtrace emotion  classify lines of text from stdin (debugging the classifier)
voxtrace setup    assemble the bundled models (idempotent)
voxtrace demo     start everything locally and process the bundled sample video
"""

from __future__ import annotations

import argparse
import json
import logging
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
    configure_logging(args.log_level, settings.secret_values())
    return settings


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from voxtrace.api import create_app
    from voxtrace.store import open_store
    from voxtrace.worker import Supervisor

    settings = _settings(args, host=args.host, port=args.port, workers=args.workers)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = open_store(settings.store_location)
    supervisor = Supervisor(settings, store, log_level=args.log_level)
    supervisor.start()
    log.info(
        "serving on http://%s:%d with %d worker(s)", settings.host, settings.port, settings.workers
    )
    try:
        uvicorn.run(
            create_app(settings, store),
            host=settings.host,
            port=settings.port,
            log_level=args.log_level.lower(),
            access_log=False,
            timeout_graceful_shutdown=5,
        )
    finally:
        supervisor.stop()
        store.close()
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from voxtrace.store import MemoryJobStore, SqliteJobStore, open_store
    from voxtrace.worker import Supervisor

    settings = _settings(args, workers=args.workers)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = open_store(settings.store_location)
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
        settings.workers,
        type(store).__name__,
    )
    stop.wait()
    supervisor.stop()
    store.close()
    return 0


def cmd_process(args: argparse.Namespace) -> int:
    import tempfile

    from voxtrace.domain import JobOptions
    from voxtrace.models import load_models, pipeline_options
    from voxtrace.pipeline.assemble import result_to_contract
    from voxtrace.pipeline.captions import CaptionRules
    from voxtrace.pipeline.formats import to_srt, to_vtt
    from voxtrace.pipeline.runner import run_pipeline

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

    def report(progress: int, message: str) -> None:
        print(f"[{progress:3d}%] {message}", file=sys.stderr, flush=True)

    source = args.source
    if "://" not in source and not Path(source).is_file():
        print(f"voxtrace: no such file: {source}", file=sys.stderr)
        return 2
    try:
        models = load_models(settings)
        with tempfile.TemporaryDirectory(prefix="voxtrace-") as work:
            result = run_pipeline(
                source, Path(work), models, pipeline_options(settings), options, report
            )
    except Exception as exc:
        error = classify_exception(exc)
        if error.code == "INTERNAL_ERROR":
            log.exception("processing failed")
        print(f"voxtrace: {error.code}: {error.message}", file=sys.stderr)
        return 1
    rules = CaptionRules.for_language(result.language).with_overrides(options.to_dict())
    if args.format == "srt":
        text = to_srt(result, rules)
    elif args.format == "vtt":
        text = to_vtt(result, rules)
    else:
        text = json.dumps(result_to_contract(result), ensure_ascii=False, indent=2) + "\n"
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


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
    from voxtrace.models.emotion import emotion_json_lines, load_emotion_model

    model = load_emotion_model()
    for line in emotion_json_lines((raw.rstrip("\n") for raw in sys.stdin), model):
        print(line, flush=True)
    return 0


def cmd_setup(args: argparse.Namespace) -> int:
    from voxtrace.models import prepare_models

    settings = _settings(args)
    for name, path in prepare_models(settings.models_path).items():
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

    p = sub.add_parser("process", help="process one local file or URL")
    p.add_argument("source", help="a video/audio file or an http(s) URL")
    p.add_argument("-o", "--output", help="write here instead of stdout")
    p.add_argument("--format", choices=["json", "srt", "vtt"], default="json")
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
    p.set_defaults(func=cmd_emotion)

    p = sub.add_parser("setup", help="assemble the bundled models")
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
