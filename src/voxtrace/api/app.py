"""The HTTP API's factory: one FastAPI app over one job store.

deps.py       typed `Annotated` dependencies (store, settings, rate limit, API key,
              the data dir guard)
routes.py     the routes (an APIRouter)
handlers.py   every error in the contract's envelope
admission.py  queue bound, disk floor, `estimated_time`
limits.py     rate limiter, body size and time
serving.py    the HTTP server around the app (connection guards)
"""

from __future__ import annotations

from fastapi import FastAPI

from voxtrace import __version__
from voxtrace.api.deps import DataDirGuard
from voxtrace.api.handlers import install_error_handlers
from voxtrace.api.limits import BodySizeLimit, TokenBucketLimiter
from voxtrace.api.routes import SUBMIT_PATH, router
from voxtrace.config import Settings
from voxtrace.store.base import JobStore

__all__ = ["create_app"]


def create_app(settings: Settings, store: JobStore) -> FastAPI:
    app = FastAPI(
        title="voxtrace",
        version=__version__,
        description=(
            "ML server: turns a video into a speaker-attributed, word-timed transcript "
            "with loudness, pitch and emotion, delivered by HTTP callbacks."
        ),
    )
    app.state.settings = settings
    app.state.store = store
    app.state.limiter = TokenBucketLimiter(
        settings.rate_limit_per_minute, settings.rate_limit_burst
    )
    app.state.data_dir = DataDirGuard(settings.data_dir)
    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.max_body_bytes,
        route_limits={SUBMIT_PATH: min(settings.submit_max_body_bytes, settings.max_body_bytes)},
        body_timeout_s=settings.body_timeout_s,
    )
    install_error_handlers(app)
    app.include_router(router)
    return app
