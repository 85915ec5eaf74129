"""Callback bodies: moved to `voxtrace.contract`; this name stays for older imports."""

from voxtrace.contract import completed_payload, failed_payload, progress_payload

__all__ = ["completed_payload", "failed_payload", "progress_payload"]
