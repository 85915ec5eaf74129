"""The whole pipeline on a real video, progress reporting, and model configuration."""

from __future__ import annotations

import functools
import json
import os
import re
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jiwer
import pytest

from voxtrace.domain import JobOptions, Result
from voxtrace.errors import AudioExtractionError
from voxtrace.models import ModelBundle, load_whisper, resolve_whisper_model
from voxtrace.pipeline.assemble import result_to_contract
from voxtrace.pipeline.fetch import FetchOptions
from voxtrace.pipeline.runner import STAGES, PipelineOptions, ProgressReporter, run_pipeline


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s']", " ", text.lower().replace("mr.", "mister")).split())


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def file_server(data_dir: Path) -> Iterator[str]:
    handler = functools.partial(_QuietHandler, directory=str(data_dir))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def video_run(
    file_server: str, bundle: ModelBundle, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Result, list[tuple[int, str]]]:
    reports: list[tuple[int, str]] = []
    opts = PipelineOptions(fetch=FetchOptions(allow_http_hosts=("127.0.0.1",)))
    result = run_pipeline(
        f"{file_server}/sample.mp4?X-Amz-Signature=abc",
        tmp_path_factory.mktemp("work"),
        bundle,
        opts,
        JobOptions(language="en"),
        lambda progress, message: reports.append((progress, message)),
    )
    return result, reports


@pytest.mark.slow
def test_video_url_to_contract(
    video_run: tuple[Result, list[tuple[int, str]]], data_dir: Path
) -> None:
    result, _ = video_run
    contract: dict[str, Any] = json.loads(json.dumps(result_to_contract(result), allow_nan=False))
    meta = contract["metadata"]
    assert meta["filename"] == "sample.mp4"
    assert 18.0 < meta["duration"] < 19.5
    assert meta["total_segments"] == len(contract["segments"]) >= 2
    assert meta["unique_speakers"] == 1 and meta["language"] == "en"
    hypothesis = " ".join(s["text"] for s in contract["segments"])
    reference = (data_dir / "sample.txt").read_text()
    assert jiwer.wer(normalise(reference), normalise(hypothesis)) <= 0.05
    previous_end = 0.0
    for seg in contract["segments"]:
        assert seg["speaker"] == {"speaker_id": "SPEAKER_00"}
        assert seg["start_time"] >= previous_end - 0.5 and seg["end_time"] >= seg["start_time"]
        previous_end = seg["end_time"]
        assert seg["words"] and 0.0 <= seg["confidence"] <= 1.0
        for w in seg["words"]:
            assert w["word"] and w["word"] == w["word"].strip()
            assert seg["start_time"] <= w["start"] <= w["end"] <= seg["end_time"]
            assert -60.0 <= w["volume_db"] <= 0.0 and 100.0 <= w["pitch_hz"] <= 1000.0


@pytest.mark.slow
def test_progress_is_integer_monotonic_and_follows_the_table(
    video_run: tuple[Result, list[tuple[int, str]]],
) -> None:
    _, reports = video_run
    values = [p for p, _ in reports]
    assert all(type(v) is int for v in values)
    assert values == sorted(values)
    for name in ("audio", "vad", "speakers", "transcript", "analysis", "assemble"):
        assert STAGES[name][0] in values
    inside_transcript = [v for v in values if 60 < v <= 75]
    assert inside_transcript  # the decoder's stream moved the bar
    assert all(message for _, message in reports)


@pytest.mark.slow
def test_silence_gives_no_segments(data_dir: Path, bundle: ModelBundle, tmp_path: Path) -> None:
    result = run_pipeline(
        str(data_dir / "empty-8s.wav"),
        tmp_path,
        bundle,
        PipelineOptions(),
        JobOptions(),
        lambda p, m: None,
    )
    contract = result_to_contract(result)
    assert contract["segments"] == []
    assert contract["metadata"]["total_segments"] == 0
    assert contract["metadata"]["unique_speakers"] == 0
    assert contract["metadata"]["filename"] == "empty-8s.wav"


def test_missing_local_file(bundle: ModelBundle, tmp_path: Path) -> None:
    with pytest.raises(AudioExtractionError) as info:
        run_pipeline(
            str(tmp_path / "nope.mp4"), tmp_path, bundle, PipelineOptions(), JobOptions(),
            lambda p, m: None,
        )  # fmt: skip
    assert "nope" not in info.value.message


def test_progress_reporter_never_goes_back() -> None:
    seen: list[int] = []
    progress = ProgressReporter(lambda p, m: seen.append(p))
    progress.stage("vad")
    progress.within("transcript", 0.5)
    progress.stage("speakers")  # late or out of order: ignored
    progress.within("transcript", 2.0)
    progress.within("transcript", 1.0)  # same value, same message: not repeated
    progress.stage("analysis")  # same value, new stage: said
    progress.emit(99.7, "x")
    assert seen == [25, 67, 75, 75, 99]


def test_a_model_directory_works_by_configuration_alone(models_path: Path, tmp_path: Path) -> None:
    bundled = Path(resolve_whisper_model("base", models_path))
    custom = tmp_path / "my-whisper"
    custom.mkdir()
    for name in ("model.bin", "config.json", "tokenizer.json", "vocabulary.json"):
        os.symlink(bundled / name, custom / name)
    assert resolve_whisper_model(str(custom), tmp_path / "unused") == str(custom)
    model = load_whisper(str(custom), tmp_path / "unused", "cpu", "int8", 1)
    assert model.model.is_multilingual
    assert not (tmp_path / "unused").exists()  # nothing assembled for a custom dir


def test_incomplete_or_missing_model_dirs_are_refused(tmp_path: Path) -> None:
    (tmp_path / "model.bin").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"tokenizer\.json"):
        resolve_whisper_model(str(tmp_path), tmp_path)
    with pytest.raises(ValueError, match="not an existing directory"):
        resolve_whisper_model(str(tmp_path / "absent"), tmp_path)
    assert resolve_whisper_model("Systran/faster-whisper-small", tmp_path) == (
        "Systran/faster-whisper-small"
    )


def test_bundled_model_assembly_is_idempotent(models_path: Path) -> None:
    target = models_path / "whisper-base"
    before = (target / "model.bin").stat().st_mtime_ns
    assert resolve_whisper_model("base", models_path) == str(target)
    assert (target / "model.bin").stat().st_mtime_ns == before
    assert (target / "model.bin").stat().st_size == 145_217_607


def test_diarizing_beside_transcription_keeps_progress_in_table_order() -> None:
    """The transcript's progress waits until the speakers stage is done, then starts at
    the transcript stage's own start; a failed transcription stops the diarizer."""
    from voxtrace.pipeline.runner import _Cancelled, _TwoStages

    reports: list[tuple[int, str]] = []
    both = _TwoStages(ProgressReporter(lambda p, m: reports.append((p, m))))
    both.transcript(0.5)  # Whisper ahead of the diarizer: not shown yet
    both.speakers(0.5)
    both.transcript(0.8)
    assert both.run_speakers(lambda on_progress: on_progress(0.9) or []) == []
    both.transcript(1.0)
    assert [p for p, _ in reports] == [40, 50, 58, 60, 72, 75]
    assert reports[2][1] == STAGES["speakers"][2] and reports[3][1] == STAGES["transcript"][2]
    both.cancel()
    with pytest.raises(_Cancelled):
        both.speakers(0.1)
