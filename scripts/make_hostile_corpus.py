"""Generate the hostile media corpus: tiny files that each attack one assumption.

    .venv/bin/python scripts/make_hostile_corpus.py OUTDIR [--speech FILE]

Everything is made by ffmpeg at test time (nothing binary is committed) from one short
speech clip (default `tests/data/jfk.flac`). `OUTDIR/corpus.json` lists every file with
the outcome the pipeline owes it: `completed`, or `failed` with an error code. The tests
and the reliability runner read that manifest, so the expectations live in one place.

The "reads another file" attacks are text files that ffmpeg would follow to other inputs:
HLS playlists (absolute path, relative `../victim-job/download.mp4`, nested master →
media playlist, live without end tag), a DASH manifest, concat and ffconcat lists and an
SDP description. The absolute ones name `OUTDIR/secret.ts`/`secret.wav` (the speech
clip), so a run that reads them comes back with the clip's words: the leak, visible.

The served-over-HTTP attacks (a server that trickles, resets, lies about its length or
sends an endless body) are not files: they live in `testing/hostile_servers.py`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = [
    "BOMB_CLAIMED_S",
    "ITEMS",
    "SECRETS",
    "CorpusItem",
    "load_manifest",
    "make_corpus",
    "write_playlist",
]

DEFAULT_SPEECH = Path(__file__).resolve().parent.parent / "tests" / "data" / "jfk.flac"
# Four hours of silence: FLAC codes constant frames in a few bytes, so this is ~32 KB.
BOMB_CLAIMED_S = 4 * 3600


@dataclass(frozen=True)
class CorpusItem:
    name: str
    what: str
    outcome: str  # "completed" | "failed"
    error_code: str | None = None
    speech: bool = False  # completed with the speech clip's words
    needs_short_cap: bool = False  # only fails when max_duration_s is below its length


def _ffmpeg(*args: str) -> None:
    cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)


def _zero_flac_length(src: Path, dst: Path) -> None:
    """Copy a FLAC file with STREAMINFO's total-samples (and MD5) zeroed: "unknown
    length", so only decoding tells how long it is."""
    data = bytearray(src.read_bytes())
    if data[:4] != b"fLaC" or data[4] & 0x7F != 0:
        raise ValueError("expected a FLAC file starting with STREAMINFO")
    info = 8  # after "fLaC" and the 4-byte metadata block header
    data[info + 13] &= 0xF0  # high 4 bits of the 36-bit sample count
    data[info + 14 : info + 18] = b"\0\0\0\0"
    data[info + 18 : info + 34] = b"\0" * 16
    dst.write_bytes(bytes(data))


ITEMS: tuple[CorpusItem, ...] = (
    CorpusItem("zero.mp4", "zero-byte file", "failed", "DOWNLOAD_ERROR"),
    CorpusItem("page.mp4", "HTML page served as a video", "failed", "AUDIO_EXTRACTION_ERROR"),
    CorpusItem("speech_video.mp4", "ordinary video with speech (control)", "completed", None, True),
    CorpusItem("truncated.mp4", "mp4 cut short, moov missing", "failed", "AUDIO_EXTRACTION_ERROR"),
    CorpusItem("no_audio.mp4", "video without an audio stream", "failed", "AUDIO_EXTRACTION_ERROR"),
    CorpusItem("speech.wav", "audio only: WAV", "completed", None, True),
    CorpusItem("speech.mp3", "audio only: MP3", "completed", None, True),
    CorpusItem("speech.m4a", "audio only: M4A (AAC)", "completed", None, True),
    CorpusItem("mp3_named.mp4", "an MP3 named .mp4", "completed", None, True),
    CorpusItem(
        "second_track.mp4",
        "speech only in the 2nd audio track (1st silent)",
        "completed",
        None,
        True,
    ),
    CorpusItem("short.wav", "0.2 s of audio", "completed"),
    CorpusItem("silence.wav", "6 s of digital silence", "completed"),
    CorpusItem("noise.wav", "6 s of white noise", "completed"),
    CorpusItem("bomb.flac", "~32 KB whose header says 4 h", "failed", "MEDIA_TOO_LONG"),
    CorpusItem(
        "bomb_nolen.flac", "the same 4 h, header says 'length unknown'", "failed", "MEDIA_TOO_LONG"
    ),
    CorpusItem(
        "two_minutes.flac", "120 s against a 60 s cap", "failed", "MEDIA_TOO_LONG", False, True
    ),
    # Each of these, read by an unrestricted ffmpeg, returns a local file's speech.
    *(
        CorpusItem(name, what, "failed", "AUDIO_EXTRACTION_ERROR")
        for name, what in (
            ("hls_absolute.mp4", "HLS playlist naming an absolute local .ts"),
            ("hls_relative.mp4", "HLS playlist naming ../victim-job/download.mp4"),
            ("hls_nested.mp4", "HLS master playlist naming a local media playlist"),
            ("hls_live.mp4", "live HLS playlist (no end tag) naming a local .ts"),
            ("dash.mp4", "DASH manifest whose BaseURL is a local .ts"),
            ("ffconcat.mp4", "ffconcat list naming a local file"),
            ("concat_relative.mp4", "ffconcat list with a relative ../ path"),
            ("sdp.mp4", "SDP description: RTP over UDP from 127.0.0.1"),
        )
    ),
)
# The local files the "reads another file" attacks name (not themselves corpus items).
SECRETS = ("secret.ts", "secret.wav", "secret.m3u8")


def write_playlist(dest: Path, segment: str, *, live: bool = False) -> None:
    """An HLS media playlist of one 20-s segment named `segment` (a path or URL)."""
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-TARGETDURATION:20"]
    lines += ["#EXT-X-MEDIA-SEQUENCE:0", "#EXTINF:20.0,", segment]
    dest.write_text("\n".join([*lines, *([] if live else ["#EXT-X-ENDLIST"])]) + "\n")


def _reads_other_files(out: Path, speech: Path) -> None:
    """The playlist, manifest, list and SDP attacks, and the local files they name."""
    secret_ts, secret_wav = (out / "secret.ts").resolve(), (out / "secret.wav").resolve()
    _ffmpeg("-i", str(speech), "-c:a", "aac", "-b:a", "48k", "-f", "mpegts", str(secret_ts))
    _ffmpeg("-i", str(speech), "-ac", "1", "-ar", "16000", str(secret_wav))
    write_playlist(out / "hls_absolute.mp4", str(secret_ts))
    write_playlist(out / "hls_relative.mp4", "../victim-job/download.mp4")
    write_playlist(out / "secret.m3u8", str(secret_ts))
    (out / "hls_nested.mp4").write_text(
        "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=64000\n" + str((out / "secret.m3u8").resolve())
        + "\n"
    )  # fmt: skip
    write_playlist(out / "hls_live.mp4", str(secret_ts), live=True)
    (out / "dash.mp4").write_text(
        '<?xml version="1.0"?>\n<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" '
        'mediaPresentationDuration="PT11S" minBufferTime="PT1S" '
        'profiles="urn:mpeg:dash:profile:isoff-on-demand:2011">\n'
        '<Period><AdaptationSet mimeType="audio/mp4"><Representation id="a" '
        f'bandwidth="64000" codecs="mp4a.40.2"><BaseURL>{secret_ts}</BaseURL>'
        "</Representation></AdaptationSet></Period></MPD>\n"
    )
    (out / "ffconcat.mp4").write_text(f"ffconcat version 1.0\nfile '{secret_wav}'\n")
    (out / "concat_relative.mp4").write_text(
        "ffconcat version 1.0\nfile '../victim-job/download.mp4'\n"
    )
    (out / "sdp.mp4").write_text(
        "v=0\no=- 0 0 IN IP4 127.0.0.1\ns=voxtrace\nc=IN IP4 127.0.0.1\nt=0 0\n"
        "m=audio 45004 RTP/AVP 0\na=rtpmap:0 PCMU/8000\n"
    )


def make_corpus(out: Path, speech: Path = DEFAULT_SPEECH) -> tuple[CorpusItem, ...]:
    """Write every file of `ITEMS` into `out` (and `corpus.json`); returns `ITEMS`."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "zero.mp4").write_bytes(b"")
    (out / "page.mp4").write_text(
        "<!doctype html><html><head><title>404</title></head>"
        "<body><h1>Not Found</h1><p>The video you asked for is not here.</p></body></html>\n"
    )
    tiny_video = ["-f", "lavfi", "-i", "testsrc=size=64x64:rate=5"]
    x264 = ["-c:v", "libx264", "-preset", "ultrafast"]
    _ffmpeg(*tiny_video, "-i", str(speech), "-shortest", *x264, "-c:a", "aac", "-b:a", "48k",
            str(out / "speech_video.mp4"))  # fmt: skip
    # ffmpeg writes the moov atom at the end unless told otherwise: cut it off.
    whole = (out / "speech_video.mp4").read_bytes()
    (out / "truncated.mp4").write_bytes(whole[: len(whole) * 2 // 3])
    _ffmpeg(*tiny_video, "-t", "3", *x264, str(out / "no_audio.mp4"))

    _ffmpeg("-i", str(speech), "-ac", "1", "-ar", "16000", str(out / "speech.wav"))
    _ffmpeg("-i", str(speech), "-c:a", "libmp3lame", "-b:a", "64k", str(out / "speech.mp3"))
    _ffmpeg("-i", str(speech), "-c:a", "aac", "-b:a", "64k", str(out / "speech.m4a"))
    shutil.copyfile(out / "speech.mp3", out / "mp3_named.mp4")
    _ffmpeg(*tiny_video, "-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-i", str(speech),
            "-map", "0:v", "-map", "1:a", "-map", "2:a", "-shortest", *x264, "-c:a", "aac",
            "-b:a", "48k", str(out / "second_track.mp4"))  # fmt: skip

    _ffmpeg("-ss", "1.0", "-t", "0.2", "-i", str(speech), "-ac", "1", str(out / "short.wav"))
    _ffmpeg("-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "6", str(out / "silence.wav"))
    _ffmpeg("-f", "lavfi", "-i", "anoisesrc=r=16000:color=white:amplitude=0.3:seed=7",
            "-t", "6", str(out / "noise.wav"))  # fmt: skip

    _ffmpeg("-f", "lavfi", "-i", "anullsrc=r=8000:cl=mono", "-t", str(BOMB_CLAIMED_S),
            "-c:a", "flac", "-compression_level", "12", "-frame_size", "65535",
            str(out / "bomb.flac"))  # fmt: skip
    _zero_flac_length(out / "bomb.flac", out / "bomb_nolen.flac")
    _ffmpeg("-f", "lavfi", "-i", "anullsrc=r=8000:cl=mono", "-t", "120",
            "-c:a", "flac", str(out / "two_minutes.flac"))  # fmt: skip

    _reads_other_files(out, speech)

    missing = [item.name for item in ITEMS if not (out / item.name).is_file()]
    if missing:
        raise RuntimeError(f"corpus incomplete: {missing}")
    (out / "corpus.json").write_text(json.dumps([asdict(i) for i in ITEMS], indent=2) + "\n")
    return ITEMS


def load_manifest(out: Path) -> list[CorpusItem]:
    return [CorpusItem(**row) for row in json.loads((out / "corpus.json").read_text())]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--speech", type=Path, default=DEFAULT_SPEECH)
    args = parser.parse_args(argv)
    items = make_corpus(args.outdir, args.speech)
    for item in items:
        size = (args.outdir / item.name).stat().st_size
        expect = item.outcome + (f" {item.error_code}" if item.error_code else "")
        print(f"{item.name:18} {size:>9} B  {expect:32} {item.what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
