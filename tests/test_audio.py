"""probe() and extract_audio() with the real ffmpeg on real and broken media."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from voxtrace.errors import AudioExtractionError, MediaTooLong, ProcessingTimeout
from voxtrace.pipeline.audio import SAMPLE_RATE, extract_audio, extract_audio_streams, probe


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


# ------------------------------------------------------- inputs that name other files


def _hls(dest: Path, segment: Path) -> Path:
    dest.write_text(
        "#EXTM3U\n#EXT-X-TARGETDURATION:20\n#EXTINF:20.0,\n" + str(segment) + "\n#EXT-X-ENDLIST\n"
    )
    return dest


def test_a_playlist_naming_a_local_file_is_refused(data_dir: Path, tmp_path: Path) -> None:
    """ffmpeg's HLS demuxer follows the paths a playlist names: an unrestricted probe and
    decode of this 100-byte ".mp4" returns the local .ts file's audio."""
    secret = tmp_path / "secret.ts"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(data_dir / "jfk.flac"),
         "-c:a", "aac", "-f", "mpegts", str(secret)],
        check=True,
    )  # fmt: skip
    playlist = _hls(tmp_path / "download.mp4", secret.resolve())
    with pytest.raises(AudioExtractionError):
        probe(playlist, timeout_s=30)
    with pytest.raises(AudioExtractionError):
        extract_audio(playlist, tmp_path / "work", timeout_s=30, max_duration_s=60)
    with pytest.raises(AudioExtractionError):  # even when told the container outright
        extract_audio(playlist, tmp_path / "work", 30, 60, demuxer="hls")


def test_ffconcat_list_is_refused(data_dir: Path, tmp_path: Path) -> None:
    listing = tmp_path / "list.mp4"
    listing.write_text("ffconcat version 1.0\nfile 'sample.mp4'\n")
    (tmp_path / "sample.mp4").symlink_to((data_dir / "sample.mp4").resolve())
    with pytest.raises(AudioExtractionError):
        probe(listing, timeout_s=30)
    with pytest.raises(AudioExtractionError):
        extract_audio(listing, tmp_path / "work", timeout_s=30, max_duration_s=60)


def test_a_file_name_that_looks_like_a_protocol_is_read_as_a_file(
    data_dir: Path, tmp_path: Path
) -> None:
    """The input is `file:<absolute path>`: a name like `concat:a|b` stays a name."""
    odd = tmp_path / "concat:x.mp4"
    odd.symlink_to((data_dir / "sample.mp4").resolve())
    info = probe(odd, timeout_s=30)
    assert info.demuxer == "mov" and info.audio_streams == 1
    assert extract_audio(odd, tmp_path / "work", 60, 60, info.demuxer).size > SAMPLE_RATE


def test_every_audio_stream_is_decoded_on_request(data_dir: Path, tmp_path: Path) -> None:
    """A file whose first track is silence and second is speech: both come back, in order."""
    two = tmp_path / "two.mkv"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i",
         "anullsrc=r=16000:cl=mono", "-i", str(data_dir / "jfk.flac"), "-map", "0:a",
         "-map", "1:a", "-shortest", "-c:a", "flac", str(two)],
        check=True,
    )  # fmt: skip
    info = probe(two, timeout_s=30)
    assert info.audio_streams == 2 and info.demuxer == "matroska"
    first, second = extract_audio_streams(two, tmp_path / "w", 60, 60, info.demuxer, 2)
    assert float(np.abs(first).max()) == 0.0
    assert float(np.abs(second).max()) > 0.1
