"""`make bench`: run every benchmark and write docs/benchmarks.md.

.venv/bin/python -m bench [FIXTURES_DIR]      (default: ../shared/fixtures)
"""

from __future__ import annotations

import datetime
import os
import platform
import sys
from pathlib import Path

from bench import SHARED_FIXTURES, api, captions, diarization, emotion, media, pipeline

OUT = Path("docs/benchmarks.md")


def main(argv: list[str]) -> int:
    fixtures = Path(argv[0]) if argv else SHARED_FIXTURES
    sections = [
        pipeline.run(fixtures),
        captions.run(fixtures),
        diarization.run(fixtures / "diarization"),
        emotion.run(fixtures / "emotion", fixtures),
        api.run(),
        media.run(),
    ]
    header = [
        "# Benchmarks",
        "",
        f"Produced by `make bench` (`.venv/bin/python -m bench`) on"
        f" {datetime.date.today().isoformat()}: {os.cpu_count()} cores, no GPU,"
        f" {platform.python_implementation()} {platform.python_version()}.",
        "Every number below comes from that run; rerun it after changing the pipeline.",
        "",
    ]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(header) + "\n".join(s.rstrip() + "\n\n" for s in sections))
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
