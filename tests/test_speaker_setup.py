"""Speakers are part of the install: `voxtrace setup`, refusals, diarization off, RTTM, batch.

These run the real CLI in subprocesses on fresh data directories, as a new user would.
The one-time torch export itself is exercised by `make setup`; here `voxtrace setup`
copies the verified export that `make setup` made (`--speaker-models-from`), which is
the same install path minus the minutes of torch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from voxtrace.config import get_settings
from voxtrace.domain import Result, SpeakerTurn
from voxtrace.models import ModelsNotReady, load_models, missing_models
from voxtrace.models.speaker_export import MANIFEST_FILE, verified_export
from voxtrace.pipeline.formats import merge_turns, to_rttm

DATA = Path(__file__).parent / "data"
REPO_ROOT = Path(__file__).resolve().parent.parent


def _setup_models() -> Path:
    path = get_settings().models_path
    return path if path.is_absolute() else REPO_ROOT / path


def _voxtrace(*args: str, data_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("VOXTRACE_")}
    return subprocess.run(
        [sys.executable, "-m", "voxtrace.cli", *args],
        env={**clean, "VOXTRACE_DATA_DIR": str(data_dir), "VOXTRACE_CPU_THREADS": "2", **env},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


# ------------------------------------------------------------------ pure logic


def test_rttm_joins_each_speakers_pieces_and_keeps_overlap() -> None:
    turns = (
        SpeakerTurn(0.0, 2.0, "SPEAKER_00"),
        SpeakerTurn(1.5, 2.5, "SPEAKER_01", dominant=False),
        SpeakerTurn(2.0, 3.0, "SPEAKER_00", dominant=False),  # continues its first turn
        SpeakerTurn(2.5, 4.0, "SPEAKER_01"),
        SpeakerTurn(5.0, 6.25, "SPEAKER_00"),
    )
    assert merge_turns(turns) == [
        SpeakerTurn(0.0, 3.0, "SPEAKER_00"),
        SpeakerTurn(1.5, 4.0, "SPEAKER_01"),
        SpeakerTurn(5.0, 6.25, "SPEAKER_00"),
    ]
    result = Result("team call.mp4", 6.5, "en", (), turns)
    assert to_rttm(result).splitlines() == [
        "SPEAKER team_call 1 0.000 3.000 <NA> <NA> SPEAKER_00 <NA> <NA>",
        "SPEAKER team_call 1 1.500 2.500 <NA> <NA> SPEAKER_01 <NA> <NA>",
        "SPEAKER team_call 1 5.000 1.250 <NA> <NA> SPEAKER_00 <NA> <NA>",
    ]


def test_missing_speaker_models_stop_the_load_with_a_fix(tmp_path: Path) -> None:
    settings = get_settings(data_dir=tmp_path)
    assert any("speaker models" in m for m in missing_models(settings))
    with pytest.raises(ModelsNotReady, match="voxtrace setup") as caught:
        load_models(settings)
    assert "VOXTRACE_DIARIZATION=off" in str(caught.value)
    assert missing_models(get_settings(data_dir=tmp_path, diarization=False)) == []


# ------------------------------------------------------------------ the real CLI


def test_a_fresh_data_dir_refuses_to_process_or_serve_with_a_fix(tmp_path: Path) -> None:
    done = _voxtrace("process", str(DATA / "sample.mp4"), data_dir=tmp_path)
    assert done.returncode == 2
    assert "speaker models" in done.stderr and "voxtrace setup" in done.stderr
    assert "VOXTRACE_DIARIZATION=off" in done.stderr
    assert "Traceback" not in done.stderr
    for command in ("serve", "worker"):
        refused = _voxtrace(command, data_dir=tmp_path, VOXTRACE_WORKERS="1")
        assert refused.returncode != 0, command
        assert "voxtrace setup" in refused.stderr, command


def test_setup_refuses_a_folder_that_is_no_verified_export(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus"
    bogus.mkdir()
    (bogus / "campplus.onnx").write_bytes(b"not a model")
    done = _voxtrace("setup", "--speaker-models-from", str(bogus), data_dir=tmp_path / "d")
    assert done.returncode == 1
    assert "no verified speaker export" in done.stderr
    assert not (tmp_path / "d" / "models" / "speaker" / "campplus.onnx").exists()


@pytest.fixture(scope="module")
def fresh_install(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir filled by `voxtrace setup` alone (Whisper assembled, speakers copied)."""
    source = _setup_models() / "speaker"
    if not verified_export(source):
        pytest.fail(f"no verified speaker export in {source}: run `make setup` first")
    data_dir = tmp_path_factory.mktemp("fresh-data")
    done = _voxtrace("setup", "--speaker-models-from", str(source), data_dir=data_dir)
    assert done.returncode == 0, done.stderr
    assert f"speaker: {data_dir / 'models' / 'speaker'}" in done.stdout
    return data_dir


@pytest.mark.slow
def test_setup_fills_a_fresh_data_dir_and_is_idempotent(fresh_install: Path) -> None:
    speaker = fresh_install / "models" / "speaker"
    assert verified_export(speaker)
    assert json.loads((speaker / MANIFEST_FILE).read_text())["exported_with"] == "torch==2.13.0"
    again = _voxtrace("setup", data_dir=fresh_install)  # no source needed any more
    assert again.returncode == 0, again.stderr
    assert "copied" not in again.stderr and "exporting" not in again.stderr


@pytest.mark.slow
def test_batch_rttm_from_a_fresh_install_scores_with_pyannote_metrics(
    fresh_install: Path, tmp_path: Path
) -> None:
    """Two inputs, models loaded once, one RTTM each; each scores against its reference."""
    from pyannote.core import Segment, Timeline
    from pyannote.database.util import load_rttm
    from pyannote.metrics.diarization import DiarizationErrorRate

    inputs = [DATA / "pyannote-sample.wav", DATA / "ami-dev00.wav"]
    out = tmp_path / "out"
    done = _voxtrace(
        "process", *map(str, inputs), "-o", str(out), "--format", "rttm", data_dir=fresh_install
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("Loaded speaker models") == 1
    assert sorted(p.name for p in out.iterdir()) == ["ami-dev00.rttm", "pyannote-sample.rttm"]
    for source, limit in ((inputs[0], 0.10), (inputs[1], 0.40)):
        (hypothesis,) = load_rttm(str(out / f"{source.stem}.rttm")).values()
        (reference,) = load_rttm(str(DATA / f"{source.stem}.rttm")).values()
        assert len(hypothesis.labels()) == 2, source.name
        metric = DiarizationErrorRate(collar=0.5, skip_overlap=False)  # md-eval collar 0.25
        der = metric(reference, hypothesis, uem=Timeline([Segment(0.0, 30.0)]))
        assert der < limit, (source.name, der)


@pytest.mark.slow
def test_batch_json_writes_one_result_per_input_keeps_names_apart_and_goes_on_after_a_failure(
    fresh_install: Path, tmp_path: Path
) -> None:
    """The same file name twice gives two results, not one overwritten; an input that
    fails is reported and the next one still runs; the exit status says one failed."""
    other = tmp_path / "again"
    other.mkdir()
    copy = other / "pyannote-sample.wav"
    copy.write_bytes((DATA / "pyannote-sample.wav").read_bytes())
    out = tmp_path / "out"
    done = _voxtrace(
        "process", str(DATA / "pyannote-sample.wav"), str(DATA / "no_audio.mp4"), str(copy),
        "-o", str(out), data_dir=fresh_install,
    )  # fmt: skip
    assert done.returncode == 1
    assert "no_audio.mp4: AUDIO_EXTRACTION_ERROR" in done.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == ["pyannote-sample-2.json", "pyannote-sample.json"]
    for name in names:
        result = json.loads((out / name).read_text())
        speakers = {s["speaker"]["speaker_id"] for s in result["segments"]}
        assert speakers == {"SPEAKER_00", "SPEAKER_01"}


@pytest.mark.slow
def test_diarization_off_gives_one_speaker_and_says_so(tmp_path: Path) -> None:
    """No speaker models needed; the two-person call comes back as SPEAKER_00 alone."""
    models = tmp_path / "models"
    models.mkdir()
    (models / "whisper-base").symlink_to(_setup_models() / "whisper-base")
    done = _voxtrace(
        "process",
        str(DATA / "pyannote-sample.wav"),
        data_dir=tmp_path,
        VOXTRACE_MODEL_DIR=str(models),
        VOXTRACE_DIARIZATION="off",
    )
    assert done.returncode == 0, done.stderr
    assert "Diarization is off" in done.stderr
    result = json.loads(done.stdout)
    assert result["segments"]
    assert {s["speaker"]["speaker_id"] for s in result["segments"]} == {"SPEAKER_00"}
