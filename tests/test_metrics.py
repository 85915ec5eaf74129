"""The metrics' own logic: a scrape during a store outage, and which stages get timed."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from voxtrace import metrics
from voxtrace.api.admission import QueueSnapshot
from voxtrace.config import get_settings
from voxtrace.pipeline.runner import ProgressReporter


def _unavailable() -> QueueSnapshot:
    raise ConnectionError("the database went away")


def test_a_scrape_during_a_store_outage_says_so_instead_of_failing() -> None:
    body, content_type = metrics.render(_unavailable, get_settings())
    assert content_type.startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    assert [s.value for s in families["voxtrace_store_up"].samples] == [0]
    assert "voxtrace_jobs" not in families  # no made-up numbers


def test_each_finished_stage_is_timed_once_and_a_failed_one_not() -> None:
    timed: list[str] = []
    progress = ProgressReporter(lambda p, m: None, lambda stage, s: timed.append(stage))
    progress.stage("audio")
    progress.within("audio", 0.5)
    progress.stage("vad")
    progress.stage("speakers")
    # the job fails inside "speakers": run_pipeline never calls finish()
    assert timed == ["audio", "vad"]
    progress.finish()
    progress.finish()
    assert timed == ["audio", "vad", "speakers"]
