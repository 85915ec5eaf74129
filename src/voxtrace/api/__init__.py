"""HTTP API: request -> job store. Never imports the pipeline."""

from voxtrace.api.app import create_app

__all__ = ["create_app"]
