"""Wiring: settings -> the objects that run, built in one place for the worker and the CLI.

    load_models(settings)                the models a worker holds (see `voxtrace.models`)
    pipeline_options(settings)           the option records the pipeline runs with
    callback_dispatcher(settings, store) the outbox's delivery loop and its HTTP client

The pipeline knows nothing of settings and the models package nothing of the pipeline:
this module is the only one that knows all three, so no import circle is needed.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx

from voxtrace.callbacks import CallbackDispatcher, new_callback_client
from voxtrace.config import Settings
from voxtrace.models import load_models
from voxtrace.pipeline.audio import AudioOptions
from voxtrace.pipeline.fetch import FetchOptions
from voxtrace.pipeline.runner import PipelineOptions
from voxtrace.pipeline.s3 import S3Options
from voxtrace.pipeline.transcribe import TranscribeOptions
from voxtrace.store.base import JobStore

__all__ = ["callback_dispatcher", "load_models", "pipeline_options"]


def pipeline_options(settings: Settings) -> PipelineOptions:
    """The pipeline's option records, built once from the settings."""
    # The S3 endpoint is a host the operator named: it may be plain http and private.
    trusted = tuple(settings.allow_http_hosts)
    endpoint_host = urlsplit(settings.s3_endpoint_url or "").hostname
    if endpoint_host and endpoint_host not in trusted:
        trusted += (endpoint_host,)
    secret = settings.s3_secret_access_key
    return PipelineOptions(
        fetch=FetchOptions(
            max_bytes=settings.max_download_bytes,
            connect_timeout_s=min(10.0, settings.download_timeout_s),
            read_timeout_s=settings.download_timeout_s,
            total_timeout_s=settings.download_total_timeout_s,
            max_redirects=settings.max_redirects,
            allow_http_hosts=trusted,
            allow_download_hosts=tuple(settings.allow_download_hosts),
            s3=S3Options(
                region=settings.s3_region,
                endpoint_url=settings.s3_endpoint_url,
                access_key_id=settings.s3_access_key_id,
                secret_access_key=secret.get_secret_value() if secret else None,
            ),
        ),
        audio=AudioOptions(
            ffmpeg_timeout_s=settings.ffmpeg_timeout_s,
            max_duration_s=settings.max_media_duration_s,
        ),
        transcribe=TranscribeOptions(
            beam_size=settings.beam_size,
            candidate_languages=tuple(code.lower() for code in settings.languages),
        ),
    )


def callback_dispatcher(
    settings: Settings, store: JobStore
) -> tuple[CallbackDispatcher, httpx.Client]:
    """The outbox's dispatcher and the HTTP client it sends with (the caller closes it)."""
    http = new_callback_client()
    dispatcher = CallbackDispatcher(
        store,
        http,
        path=settings.callback_path,
        secret=settings.callback_secret.get_secret_value() if settings.callback_secret else None,
        retry_window_s=settings.callback_retry_window_s,
        timeout_s=settings.callback_timeout_s,
        backoff_base_s=settings.callback_backoff_base_s,
        backoff_cap_s=settings.callback_backoff_cap_s,
        per_destination=settings.callback_concurrency,
        redirect_destinations=(settings.backend_url, *settings.callback_allowlist),
    )
    return dispatcher, http
