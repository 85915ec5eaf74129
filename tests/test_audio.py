"""probe() and extract_audio() with the real ffmpeg on real and broken media."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from voxtrace.errors import AudioExtractionError, MediaTooLong, ProcessingTimeout
from voxtrace.pipeline.audio import SAMPLE_RATE, extract_audio, probe


@pytest.fixture(scope="module")
def video_only(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("media") / "silent-film.mp4"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i",
         "testsrc=duration=1:size=64x48:rate=5", "-c:v", "libx264", str(path)],
        check=True,
    )  # fmt: skip
    return path


def test_probe_reads_duration_and_audio(data_dir: Path) -> None:
    info = probe(data_dir / "sample.mp4", timeout_s=30)
    assert info.has_audio
    assert info.audio_codec == "aac"
    assert info.duration_s is not None and 18.0 < info.duration_s < 19.5


def test_extract_audio_gives_16k_mono_float32(data_dir: Path, tmp_path: Path) -> None:
    samples = extract_audio(data_dir / "sample.mp4", tmp_path, timeout_s=60, max_duration_s=60)
    assert samples.dtype == np.float32
    assert samples.ndim == 1
    assert abs(samples.shape[0] / SAMPLE_RATE - 18.7) < 0.2
    assert float(np.abs(samples).max()) <= 1.0
    assert float(np.sqrt(np.mean(samples**2))) > 0.01  # real speech, not silence
    assert list(tmp_path.iterdir()) == []  # the temporary PCM file is gone


def test_extract_audio_resamples_and_downmixes(data_dir: Path, tmp_path: Path) -> None:
    samples = extract_audio(data_dir / "jfk.flac", tmp_path, timeout_s=60, max_duration_s=60)
    assert abs(samples.shape[0] / SAMPLE_RATE - 11.0) < 0.1


def test_video_without_audio(video_only: Path, tmp_path: Path) -> None:
    assert probe(video_only).has_audio is False
    with pytest.raises(AudioExtractionError, match="no audio stream") as info:
        extract_audio(video_only, tmp_path, timeout_s=30, max_duration_s=60)
    assert str(video_only) not in str(info.value)


def test_corrupt_file_is_a_generic_error(tmp_path: Path) -> None:
    junk = tmp_path / "secret-name.mp4"
    junk.write_bytes(np.random.default_rng(0).bytes(50_000))
    for call in (
        lambda: probe(junk),
        lambda: extract_audio(junk, tmp_path, timeout_s=30, max_duration_s=60),
    ):
        with pytest.raises(AudioExtractionError) as info:
            call()
        assert "secret-name" not in info.value.message
        assert info.value.message.startswith("Audio extraction failed")


def test_too_long_media(data_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(MediaTooLong):
        extract_audio(data_dir / "sample.mp4", tmp_path, timeout_s=60, max_duration_s=5)


def test_ffmpeg_timeout(data_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ProcessingTimeout):
        extract_audio(data_dir / "sample.mp4", tmp_path, timeout_s=0.001, max_duration_s=60)
