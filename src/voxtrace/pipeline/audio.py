"""Probe media and decode its audio to 16 kHz mono float32 with ffmpeg.

ffmpeg runs as a subprocess with a timeout (a thread cannot interrupt it) and a decode
cap of `max_duration_s + 1` seconds, so a file that claims to be short but decodes for
hours cannot run away. ffmpeg's stderr may contain paths: it goes to debug logs only.

The file comes from the network, so ffprobe and ffmpeg read it as data, never as
instructions. ffmpeg has demuxers that open *other* inputs named inside the file: an HLS
or DASH playlist, a concat/ffconcat list, an SDP description, an image2 pattern. A
90-byte playlist naming `../<other job>/download.mp4` or `/etc/...` would hand a caller
another job's media or any local file. So both tools run with
`-format_whitelist` (only the ordinary media containers of `ALLOWED_DEMUXERS`) and
`-protocol_whitelist file`, the input is named `file:<absolute path>` (never parsed as
a URL), and ffmpeg decodes with `-f` pinned to the container ffprobe found.
"""

from __future__ import annotations

import errno
import json
import logging
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from voxtrace.errors import (
    AudioExtractionError,
    InsufficientResources,
    MediaTooLong,
    ProcessingTimeout,
)

__all__ = [
    "ALLOWED_DEMUXERS",
    "SAMPLE_RATE",
    "AudioOptions",
    "MediaInfo",
    "extract_audio",
    "extract_audio_streams",
    "probe",
]

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
_PCM_FILE = "audio.s16le"
_NO_SPACE_MARKERS = ("No space left on device", "Disk quota exceeded")
_NO_STREAM_MARKERS = ("does not contain any stream", "matches no streams")
# Containers a video or audio upload comes in, by ffmpeg demuxer name. None of them
# opens another input on its own (mov's external data references stay off, ffmpeg's
# default). Everything else is refused: hls, dash, concat, sdp, rtp, image2, tty, ...
ALLOWED_DEMUXERS: Final = (
    "mov",  # mp4, m4a, mov, 3gp
    "matroska",  # mkv, webm
    "avi",
    "flv",
    "mpegts",
    "mpeg",  # program stream (.mpg, .vob)
    "asf",  # wmv, wma
    "ogg",  # ogg, opus
    "wav",
    "w64",
    "mp3",
    "flac",
    "aac",
    "aiff",
    "caf",
    "amr",
    "ac3",
    "eac3",
    "wv",
)
_READ_GUARD: Final = (
    "-protocol_whitelist",
    "file",
    "-format_whitelist",
    ",".join(ALLOWED_DEMUXERS),
)
# A file with many audio tracks is decoded for at most this many of them.
MAX_AUDIO_STREAMS: Final = 4


@dataclass(frozen=True)
class AudioOptions:
    """Limits of the audio stage: ffmpeg's wall time, and the longest media accepted."""

    ffmpeg_timeout_s: float = 600.0
    max_duration_s: float = 60 * 60.0


@dataclass(frozen=True)
class MediaInfo:
    duration_s: float | None  # None when the container does not say
    has_audio: bool
    format_name: str
    audio_codec: str | None
    audio_streams: int = 0
    demuxer: str = ""  # the allowed demuxer ffprobe chose, for ffmpeg's `-f`


def _input_url(path: Path) -> str:
    """`file:` + the absolute path: a name such as `x:y.mp4` or `-i` stays a file name."""
    return "file:" + str(path.resolve())


def _allowed_demuxer(format_name: str) -> str | None:
    """The demuxer to pin, if ffprobe's choice is allowed (names come as "mov,mp4,...")."""
    return next((n for n in format_name.split(",") if n in ALLOWED_DEMUXERS), None)


def _with_parent(cmd: list[str]) -> list[str]:
    """Have the kernel kill ffmpeg when its worker dies (kill -9, time limit, memory cap):
    the timeout below lives in the worker, so an orphan would otherwise run unbounded."""
    setpriv = shutil.which("setpriv")
    if setpriv is None or shutil.which(cmd[0]) is None:
        return cmd  # (a missing ffmpeg must still read as FileNotFoundError)
    return [setpriv, "--pdeathsig", "KILL", "--", *cmd]


def _run(cmd: list[str], timeout_s: float, what: str) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(
            _with_parent(cmd), capture_output=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired:
        raise ProcessingTimeout(f"{what} took too long") from None
    except FileNotFoundError:
        logger.error("%s is not installed", cmd[0])
        raise AudioExtractionError("Audio extraction failed: decoder unavailable") from None


def _stderr_text(proc: subprocess.CompletedProcess[bytes]) -> str:
    return proc.stderr.decode("utf-8", errors="replace")[-4000:]


def probe(path: Path, timeout_s: float = 60.0) -> MediaInfo:
    """Read container duration and stream kinds with ffprobe."""
    cmd = [
        "ffprobe",
        "-v",
        "error",
        "-print_format",
        "json",
        "-show_format",
        "-show_streams",
        *_READ_GUARD,
        _input_url(path),
    ]
    proc = _run(cmd, timeout_s, "Media probe")
    if proc.returncode != 0:
        logger.debug("ffprobe failed (%d): %s", proc.returncode, _stderr_text(proc))
        raise AudioExtractionError("Audio extraction failed: unreadable or unsupported file")
    try:
        info = json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise AudioExtractionError("Audio extraction failed: unreadable file") from None
    streams = info.get("streams") or []
    fmt = info.get("format") or {}
    audio = [s for s in streams if s.get("codec_type") == "audio"]
    format_name = str(fmt.get("format_name", ""))
    demuxer = _allowed_demuxer(format_name)
    if demuxer is None:  # ffprobe enforces the list; this says so if it ever did not
        logger.warning("Refused media read by demuxer %r", format_name[:40])
        raise AudioExtractionError("Audio extraction failed: unreadable or unsupported file")
    duration = _as_duration(fmt.get("duration"))
    if duration is None and audio:
        duration = _as_duration(audio[0].get("duration"))
    return MediaInfo(
        duration_s=duration,
        has_audio=bool(audio),
        format_name=format_name,
        audio_codec=str(audio[0].get("codec_name")) if audio else None,
        audio_streams=len(audio),
        demuxer=demuxer,
    )


def _as_duration(value: object) -> float | None:
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return seconds if np.isfinite(seconds) and seconds >= 0 else None


def extract_audio(
    path: Path,
    work_dir: Path,
    timeout_s: float,
    max_duration_s: float,
    demuxer: str | None = None,
) -> npt.NDArray[np.float32]:
    """Decode the first audio stream to mono 16 kHz float32 samples in [-1, 1]."""
    return extract_audio_streams(path, work_dir, timeout_s, max_duration_s, demuxer, 1)[0]


def extract_audio_streams(
    path: Path,
    work_dir: Path,
    timeout_s: float,
    max_duration_s: float,
    demuxer: str | None = None,
    streams: int = 1,
) -> list[npt.NDArray[np.float32]]:
    """Decode the first `streams` audio streams (one ffmpeg pass, one output each) to
    mono 16 kHz float32 samples in [-1, 1].

    `demuxer` pins the container ffprobe found (`MediaInfo.demuxer`); without it ffmpeg
    probes again, within the same whitelist.
    """
    if demuxer is not None and demuxer not in ALLOWED_DEMUXERS:
        raise AudioExtractionError("Audio extraction failed: unreadable or unsupported file")
    count = max(1, min(streams, MAX_AUDIO_STREAMS))
    work_dir.mkdir(parents=True, exist_ok=True)
    pcm_paths = [work_dir / f"{_PCM_FILE}.{i}" for i in range(count)]
    cmd = [
        "ffmpeg",
        "-nostdin",
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        *_READ_GUARD,
        *(("-f", demuxer) if demuxer else ()),
        "-i",
        _input_url(path),
    ]
    for i, pcm_path in enumerate(pcm_paths):
        cmd += [
            "-map",
            f"0:a:{i}",
            "-vn",
            "-sn",
            "-dn",
            "-ac",
            "1",
            "-ar",
            str(SAMPLE_RATE),
            "-t",
            f"{max_duration_s + 1:.3f}",
            "-f",
            "s16le",
            str(pcm_path),
        ]
    try:
        proc = _run(cmd, timeout_s, "Audio extraction")
        if proc.returncode != 0:
            stderr = _stderr_text(proc)
            logger.debug("ffmpeg failed (%d): %s", proc.returncode, stderr)
            if any(marker in stderr for marker in _NO_SPACE_MARKERS):
                raise InsufficientResources("Out of disk space while extracting audio")
            if any(marker in stderr for marker in _NO_STREAM_MARKERS):
                raise AudioExtractionError("Audio extraction failed: no audio stream")
            raise AudioExtractionError("Audio extraction failed: unreadable or unsupported file")
        decoded = [np.fromfile(p, dtype="<i2") for p in pcm_paths]
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise InsufficientResources("Out of disk space while extracting audio") from None
        logger.debug("Audio extraction I/O error: %s", type(exc).__name__)
        raise AudioExtractionError() from None
    finally:
        for pcm_path in pcm_paths:
            pcm_path.unlink(missing_ok=True)
    if decoded[0].size == 0:
        raise AudioExtractionError("Audio extraction failed: no audio decoded")
    result: list[npt.NDArray[np.float32]] = []
    for pcm in decoded:
        if pcm.size > max_duration_s * SAMPLE_RATE:
            raise MediaTooLong()
        samples: npt.NDArray[np.float32] = pcm.astype(np.float32)
        samples /= 32768.0
        result.append(samples)
    return result
