"""Bystander protection's price (egovlm.edge.faces): what face blurring costs per keyframe on this
CPU with one thread, and what blurring the model's input does to its answers.

- **cost**: ``blur_faces`` (detection + pixelation) per keyframe at the device profiles' keyframe
  size (448x336, every configs/edge profile) and at the demo model's (egovlm-mini, 112x84), on
  EgoSynth frames (no face: detection only) and on a real photograph with a face (detection +
  pixelation); medians and p95 over many frames after warm-up, OpenCV on one thread.
- **answers**: egovlm-mini (the demo's model, trained on EgoSynth) answers the demo's
  multiple-choice question about the last pick-up on EgoSynth clips, with the keyframes blurred
  before the model (``EngineParams.blur_faces``) and without; the fraction of identical answers
  and the accuracy of each. EgoSynth has no people, so on its own frames blurring changes no byte
  and no answer: that shows the switch costs nothing where there is no face (no false positive),
  not what blurring a face costs the model. A second condition pastes a real face (the
  photograph's) into one keyframe of each clip as a bystander, so the input does change there.

Run: ``python -m egovlm.benchmarks.faces --out bench [--clips 12]``; writes bench/faces.json and
bench/faces.md (egovlm/benchmarks/report.py).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from egovlm import paths
from egovlm.benchmarks.report import Report, percentiles
from egovlm.frames import resize_for_model

PROFILE_SIZE = (448, 336)  # every configs/edge/*.yaml keyframes.size
DEMO_MODEL = paths.DEMO_MODEL
CAMERA = (640, 480)  # the synthetic camera's frames, before the engine resizes them


def _photo(size: tuple[int, int]) -> np.ndarray:
    from skimage import data

    return resize_for_model(data.astronaut(), size)


def _synth_frames(size: tuple[int, int], n: int, seed: int) -> list[np.ndarray]:
    from egovlm.synth.live import LiveSynth

    src = LiveSynth(size, fps=5, seed=seed, realtime=False)
    frames = [item[1] for item in (src.read() for _ in range(n)) if item is not None]
    src.stop()
    return frames


def cost(frames: int, sizes: list[tuple[int, int]]) -> list[dict[str, Any]]:
    """ms per ``blur_faces`` call, per size and frame kind, one OpenCV thread."""
    from egovlm.edge.faces import FaceBlurrer

    cv2.setNumThreads(1)
    blurrer = FaceBlurrer().load()
    rows = []
    for size in sizes:
        kinds = {
            "EgoSynth (no face)": _synth_frames(size, frames, seed=3),
            "photograph (1 face)": [_photo(size)],
        }
        for kind, imgs in kinds.items():
            for img in imgs[:3]:
                blurrer.blur(img)  # warm-up
            samples = []
            for i in range(frames):
                img = imgs[i % len(imgs)]
                t0 = time.perf_counter()
                blurrer.blur(img)
                samples.append(time.perf_counter() - t0)
            med, p95 = percentiles(samples)
            rows.append(
                {
                    "keyframe": f"{size[0]}x{size[1]}",
                    "frames": kind,
                    "n": frames,
                    "median_ms": round(med * 1000, 2),
                    "p95_ms": round(p95 * 1000, 2),
                }
            )
    return rows


def _with_bystander(frame: np.ndarray, face: np.ndarray) -> np.ndarray:
    """``frame`` with the photograph's face pasted in its upper right third (a passer-by)."""
    out = frame.copy()
    h, w = out.shape[:2]
    side = h // 2
    patch = cv2.resize(face, (side, side), interpolation=cv2.INTER_AREA)
    out[0:side, w - side : w] = patch
    return out


def answers(model: Path, clips: int, keyframes: int = 8) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(per-question rows, per-condition summary) for the demo model with and without blurring."""
    from skimage import data

    from egovlm.edge.backends import GenerationParams, create_backend
    from egovlm.edge.buffer import KeyframeBuffer
    from egovlm.edge.demo import demo_questions
    from egovlm.edge.engine import Engine, EngineParams
    from egovlm.edge.faces import default_blurrer
    from egovlm.synth.live import LiveSynth

    face = data.astronaut()[20:220, 120:320]  # the astronaut's head and shoulders, 200x200
    backend = create_backend("torch", model, threads=1)
    engines = {
        b: Engine(
            backend,
            KeyframeBuffer(keyframes, None),
            EngineParams(GenerationParams(max_new_tokens=48), blur_faces=b),
        )
        for b in (False, True)
    }
    rows: list[dict[str, Any]] = []
    for seed in range(clips):
        src = LiveSynth(CAMERA, fps=2, seed=100 + seed, realtime=False)
        items = [src.read() for _ in range(60)]  # 30 s of stream
        src.stop()
        events = [e for it in items if it is not None for e in it[2]]
        qs = [q for q in demo_questions(events) if q[1] is not None]
        if not qs:
            continue
        question, options, correct = qs[0]
        picks = np.linspace(0, len(items) - 1, keyframes).round().astype(int)
        frames = [(items[i][0], items[i][1]) for i in picks if items[i] is not None]
        for condition in ("EgoSynth", "EgoSynth + pasted face"):
            got: dict[bool, Any] = {}
            changed = 0
            for blur, engine in engines.items():
                engine.forget()
                for j, (t, rgb) in enumerate(frames):
                    if condition != "EgoSynth" and j == len(frames) // 2:
                        rgb = _with_bystander(rgb, face)
                    kf = engine.add_keyframe(t, rgb)
                    if blur and kf is not None:
                        plain = resize_for_model(rgb, backend.keyframe_size)
                        changed += not np.array_equal(kf.image, plain)
                engine.refresh()
                got[blur] = engine.ask(question, options)
            bystander = resize_for_model(
                _with_bystander(frames[len(frames) // 2][1], face), backend.keyframe_size
            )
            detected = condition != "EgoSynth" and bool(default_blurrer().detect(bystander))
            rows.append(
                {
                    "clip": seed,
                    "condition": condition,
                    "keyframes_changed_by_blur": changed,
                    "face_detected_at_model_size": detected,
                    "answer_plain": got[False].parsed.answer,
                    "answer_blurred": got[True].parsed.answer,
                    "correct": correct,
                    "identical_text": got[False].text == got[True].text,
                }
            )
    summary = []
    for condition in ("EgoSynth", "EgoSynth + pasted face"):
        sel = [r for r in rows if r["condition"] == condition]
        if not sel:
            continue
        summary.append(
            {
                "condition": condition,
                "questions": len(sel),
                "identical_answers": round(float(np.mean([r["identical_text"] for r in sel])), 3),
                "accuracy_plain": round(float(np.mean([r["answer_plain"] == r["correct"] for r in sel])), 3),
                "accuracy_blurred": round(
                    float(np.mean([r["answer_blurred"] == r["correct"] for r in sel])), 3
                ),
                "keyframes_changed": int(sum(r["keyframes_changed_by_blur"] for r in sel)),
            }
        )
    return rows, summary


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("bench"))
    ap.add_argument("--frames", type=int, default=200, help="timed frames per size and kind")
    ap.add_argument("--clips", type=int, default=12, help="EgoSynth clips for the answer comparison")
    ap.add_argument("--model", type=Path, default=DEMO_MODEL)
    args = ap.parse_args(argv)
    from egovlm.models.files import keyframe_size_of

    report = Report(
        "faces", params={"frames": args.frames, "clips": args.clips, "model": str(args.model), "threads": 1}
    )
    report.rows = cost(args.frames, [PROFILE_SIZE, keyframe_size_of(args.model)])
    rows, report.summary = answers(args.model, args.clips)
    report.notes = [
        "cost: egovlm.edge.faces.blur_faces per keyframe, OpenCV DNN (CenterFace) on 1 thread.",
        "answers: "
        + "; ".join(
            f"{r['condition']}: {r['identical_answers']:.0%} identical answers of {r['questions']}"
            for r in report.summary
        ),
        "EgoSynth has no people: identical answers there show that blurring changes nothing without faces "
        "(no false positives), not its effect on the model when faces are present.",
    ]
    report.notes += [str(r) for r in rows]
    print(report.markdown())
    print(report.write(args.out))


if __name__ == "__main__":
    main()
