"""Settings -> models, pipeline options and dispatcher are wired in one module, and the
models package no longer reaches into the pipeline (the old import circle)."""

from __future__ import annotations

import ast
from pathlib import Path

from voxtrace.config import get_settings
from voxtrace.pipeline.audio import AudioOptions
from voxtrace.store import MemoryJobStore
from voxtrace.wiring import callback_dispatcher, pipeline_options


def test_the_models_package_imports_no_pipeline_module() -> None:
    """Not at import, not inside a function, not for type checking: the pipeline imports
    the models (ModelBundle), never the other way round."""
    import voxtrace.models

    found = {}
    for source in Path(voxtrace.models.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            bad = [n for n in names if n.startswith(("voxtrace.pipeline", "voxtrace.wiring"))]
            if bad:
                found[source.name] = bad
    assert found == {}


def test_pipeline_options_come_from_the_settings() -> None:
    settings = get_settings(max_media_duration_s=120, beam_size=3, allow_http_hosts="127.0.0.1")
    options = pipeline_options(settings)
    assert options.audio == AudioOptions(
        ffmpeg_timeout_s=settings.ffmpeg_timeout_s, max_duration_s=120
    )
    assert options.transcribe.beam_size == 3
    assert options.fetch.allow_http_hosts == ("127.0.0.1",)


def test_the_dispatcher_sends_with_a_client_that_never_follows_redirects() -> None:
    """httpx follows no redirect: the dispatcher decides (allowed destinations only)."""
    _dispatcher, http = callback_dispatcher(get_settings(), MemoryJobStore())
    try:
        assert http.follow_redirects is False
    finally:
        http.close()
