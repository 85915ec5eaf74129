"""Emotion benchmark: held-out GoEmotions accuracy, speed, and what the voice adjustment does.

    .venv/bin/python -m bench.emotion [--data DIR] [--limit N]

`run()` returns a markdown section. Everything goes through the runtime path
(`load_emotion_model()`: numpy encoder + packaged head), never the training cache, so
the numbers are what a job gets. The test split was used for no choice in training.

There is no labelled emotional *speech* here, so the voice adjustment cannot be scored
for accuracy; the section shows what it does instead: how predictions move on the test
texts when the same text is spoken louder/higher or quieter/lower than usual.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt

from scripts.train_emotion import expected_calibration_error, f1_scores
from voxtrace.models.emotion import EMOTION_LABELS, load_emotion_model
from voxtrace.pipeline.emotion import (
    MAX_AROUSAL,
    SegmentArousal,
    adjust_for_arousal,
    classify_segments,
)

__all__ = ["main", "run"]

DEFAULT_DATA = Path("/work/shared/fixtures/emotion")
EXAMPLES = (
    "I am so happy, this is wonderful!",
    "I hate you, get out!",
    "Are you serious right now?",
    "I can't believe we actually did it.",
    "The meeting is at three o'clock.",
    "This is so sad, I miss her",
)


def _read_test(data_dir: Path) -> tuple[list[str], npt.NDArray[np.int64]]:
    """Test rows whose labels map to exactly one of the seven classes (as in training)."""
    fine = (data_dir / "emotions.txt").read_text(encoding="utf-8").split()
    mapping = json.loads((data_dir / "ekman_mapping.json").read_text(encoding="utf-8"))
    coarse = {f: c for c, fs in mapping.items() for f in fs} | {"neutral": "neutral"}
    texts, labels = [], []
    with (data_dir / "test.tsv").open(encoding="utf-8", newline="") as fh:
        for text, ids, _ in csv.reader(fh, delimiter="\t"):
            classes = {coarse[fine[int(i)]] for i in ids.split(",")}
            if len(classes) == 1:
                texts.append(text)
                labels.append(EMOTION_LABELS.index(classes.pop()))
    return texts, np.array(labels, dtype=np.int64)


def _fmt(probs: dict[str, float]) -> str:
    top = sorted(probs.items(), key=lambda kv: -kv[1])[:3]
    return ", ".join(f"{k} {v:.2f}" for k, v in top)


def run(data_dir: Path = DEFAULT_DATA, limit: int | None = None) -> str:
    model = load_emotion_model()
    lines = ["## Emotion", ""]

    texts, true = _read_test(data_dir)
    if limit is not None:
        texts, true = texts[:limit], true[:limit]
    started = time.perf_counter()
    probs = model.predict_proba(texts)
    ms = 1000 * (time.perf_counter() - started) / len(texts)
    pred = probs.argmax(axis=1)
    f1 = [float(x) for x in f1_scores(true, pred)]
    lines += [
        f"GoEmotions test, rows with one Ekman-7 class: {len(texts)} "
        f"(held out; head chosen on dev, temperature {model.head.temperature:.2f} fitted on dev).",
        "",
        f"- accuracy **{np.mean(pred == true):.3f}**, macro-F1 **{np.mean(f1):.3f}**, "
        f"expected calibration error {expected_calibration_error(probs, true):.3f}",
        f"- majority-class baseline accuracy {np.mean(true == np.bincount(true).argmax()):.3f}",
        f"- speed: {ms:.1f} ms per sentence (batched, numpy encoder + head, this CPU)",
        "",
        "| class | F1 | test rows |",
        "| --- | --- | --- |",
    ]
    lines += [
        f"| {label} | {score:.3f} | {int(np.sum(true == c))} |"
        for c, (label, score) in enumerate(zip(EMOTION_LABELS, f1, strict=True))
    ]

    lines += ["", "### Voice adjustment (no labelled speech: effect only, not accuracy)", ""]
    for arousal in (-1.0, 1.0, MAX_AROUSAL):
        moved = np.array([adjust_for_arousal(p.astype(np.float64), arousal) for p in probs])
        changed = moved.argmax(axis=1) != pred
        mean_delta = (moved - probs).mean(axis=0)
        deltas = ", ".join(
            f"{lb} {d:+.3f}" for lb, d in zip(EMOTION_LABELS, mean_delta, strict=True)
        )
        lines.append(
            f"- arousal {arousal:+.1f}: {100 * changed.mean():.1f} % of labels change, "
            f"accuracy {np.mean(moved.argmax(axis=1) == true):.3f}; mean Δp: {deltas}"
        )
    lines += [
        "",
        "Examples (arousal 0 = the speaker's usual voice; +2 ≈ 12 dB louder and 6 semitones "
        "higher; −2 the reverse):",
        "",
        "| text | −2 (quiet, low) | 0 | +2 (loud, high) |",
        "| --- | --- | --- | --- |",
    ]
    voices = [
        SegmentArousal(-12.0, 2 ** (-6 / 12)),
        None,
        SegmentArousal(12.0, 2 ** (6 / 12)),
    ]
    for text in EXAMPLES:
        cells = [
            f"{e.label} ({_fmt(e.probabilities)})"
            for e in classify_segments([text] * 3, voices, "en", model)
        ]
        lines.append(f"| {text} | " + " | ".join(cells) + " |")
    no_text = classify_segments(["—"] * 3, voices, "ko", model)
    lines += [
        "",
        "Without a text model (non-English), voice only: "
        + "; ".join(
            f"{name}: {e.label} {e.confidence:.2f} ({_fmt(e.probabilities)})"
            for name, e in zip(("quiet/low", "usual", "loud/high"), no_text, strict=True)
        ),
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--limit", type=int, default=None, help="first N test rows only")
    args = parser.parse_args()
    print(run(args.data, args.limit))


if __name__ == "__main__":
    main()
