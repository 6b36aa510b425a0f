"""Find the face in a raw photo and crop it the way training frames are cropped.

The models are trained on face crops, so a whole photo (a room, a body, a background)
must be cut down to the face first. OpenCV's frontal-face Haar cascade does this with no
download: OpenCV 4 ships the cascade files in ``cv2.data.haarcascades``. OpenCV 5 dropped
both the files and ``cv2.CascadeClassifier`` from its main wheel; there the detector
reports itself unavailable (the server answers 501) unless ``AFFECTLAB_FACE_CASCADE``
names a cascade file and the OpenCV build still has the classifier.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

CASCADE_ENV = "AFFECTLAB_FACE_CASCADE"
CASCADE_FILE = "haarcascade_frontalface_default.xml"
DETECT_SIDE = 640  # detect on a copy no larger than this: fast on big photos, faces stay findable
MARGIN = 0.25  # context kept around the detected box, as a fraction of its side


def default_cascade_path() -> Path:
    """``AFFECTLAB_FACE_CASCADE`` when set, else the file OpenCV ships."""
    if os.environ.get(CASCADE_ENV):
        return Path(os.environ[CASCADE_ENV])
    return Path(getattr(getattr(cv2, "data", None), "haarcascades", "")) / CASCADE_FILE


class FaceDetector:
    """The largest frontal face in an RGB image, as ``(x, y, w, h)`` pixels."""

    def __init__(self, cascade_path: str | Path | None = None):
        path = Path(cascade_path) if cascade_path else default_cascade_path()
        self.cascade, self.unavailable_reason = None, None
        if not hasattr(cv2, "CascadeClassifier"):
            self.unavailable_reason = (
                f"OpenCV {cv2.__version__} has no Haar cascade classifier (OpenCV 5 moved it out); "
                "install opencv-python-headless<5"
            )
        elif not path.is_file():
            self.unavailable_reason = f"no face cascade file at {path}; set {CASCADE_ENV} or install opencv-python-headless<5"
        else:
            cascade = cv2.CascadeClassifier(str(path))
            if cascade.empty():
                self.unavailable_reason = f"{path} is not a readable Haar cascade"
            else:
                self.cascade = cascade

    @property
    def available(self) -> bool:
        return self.cascade is not None

    def largest_face(self, rgb: np.ndarray) -> tuple[int, int, int, int] | None:
        if self.cascade is None:
            raise RuntimeError(f"face detection is unavailable: {self.unavailable_reason}")
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        scale = min(1.0, DETECT_SIDE / max(gray.shape))
        if scale < 1.0:
            gray = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        gray = cv2.equalizeHist(gray)
        smallest = max(20, int(0.08 * min(gray.shape)))
        faces = self.cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(smallest, smallest))
        if len(faces) == 0:
            return None
        x, y, w, h = max(faces, key=lambda f: f[2] * f[3])
        return tuple(int(round(v / scale)) for v in (x, y, w, h))


def crop_square(rgb: np.ndarray, box: tuple[int, int, int, int], margin: float = MARGIN) -> np.ndarray:
    """A square crop centred on ``box``, widened by ``margin`` on each side, clipped to the image."""
    x, y, w, h = box
    side = int(round(max(w, h) * (1 + 2 * margin)))
    cx, cy = x + w / 2, y + h / 2
    x0, y0 = max(0, int(round(cx - side / 2))), max(0, int(round(cy - side / 2)))
    x1, y1 = min(rgb.shape[1], x0 + side), min(rgb.shape[0], y0 + side)
    return np.ascontiguousarray(rgb[y0:y1, x0:x1])
