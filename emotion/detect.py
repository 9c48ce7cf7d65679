"""Face detection with OpenCV's Haar cascade (ships inside opencv-python-headless 4.x, so it works offline)."""

import threading
from pathlib import Path

import cv2
import numpy as np

from .preprocess import to_gray

Box = tuple[int, int, int, int]  # x, y, w, h in image pixels

CASCADE_FILE = "haarcascade_frontalface_default.xml"
CASCADE_WINDOW = 24  # the cascade's training window: it cannot see faces smaller than this
# Speed/recall trade-off, measured on the 8 example photos letterboxed to 640x480 (CPU ms per frame, one thread):
# scaleFactor 1.1 at 36 px: 47 ms, 6/8 right face counts; 1.2 at 36 px: 26 ms, 8/8; 1.2 at 30 px: 21.5 ms, 8/8.
DETECT_SIZE = 30  # the smallest wanted face is shrunk to about this many pixels before detection
DEFAULT_MIN_FACE = 48


def _cascade_path() -> str:
    folder = getattr(getattr(cv2, "data", None), "haarcascades", "") or ""
    path = Path(folder) / CASCADE_FILE
    if not path.is_file():
        raise RuntimeError(
            f"OpenCV's {CASCADE_FILE} is missing (opencv {cv2.__version__}); opencv-python-headless 5 dropped the "
            "Haar cascades, so install the 4.x pin from requirements.txt"
        )
    return str(path)


class FaceDetector:
    """Finds frontal faces at least `min_face_size` pixels wide.

    Detection runs on a copy shrunk so that the smallest wanted face is about DETECT_SIZE pixels: a 640x480 frame
    with the default 48 px minimum is searched at 400x300, and boxes are mapped back to full-size pixels.
    """

    def __init__(self, min_face_size: int = DEFAULT_MIN_FACE, scale_factor: float = 1.2, min_neighbors: int = 5):
        if min_face_size < CASCADE_WINDOW:
            raise ValueError(f"min_face_size must be at least {CASCADE_WINDOW} pixels, got {min_face_size}")
        self.min_face_size = int(min_face_size)
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self._cascade = cv2.CascadeClassifier(_cascade_path())
        # detectMultiScale keeps per-call scratch data in the classifier: concurrent calls (the app serves requests
        # from several threads) fail with "scaleIdx < scaleData->size()" or crash. One call at a time.
        self._lock = threading.Lock()

    def detect(self, image: np.ndarray, min_face_size: int | None = None) -> list[Box]:
        """Boxes (x, y, w, h) of the faces in an RGB or grayscale image, largest first."""
        gray = to_gray(image)
        min_face = max(int(min_face_size or self.min_face_size), CASCADE_WINDOW)
        if min_face > max(gray.shape):  # no face that large fits (and the shrunk copy would be empty)
            return []
        scale = min(1.0, DETECT_SIZE / min_face)
        small = gray if scale == 1.0 else cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        small = cv2.equalizeHist(small)
        window = max(CASCADE_WINDOW, int(round(min_face * scale)))
        with self._lock:
            found = self._cascade.detectMultiScale(
                small, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors, minSize=(window, window)
            )
        boxes = [tuple(int(round(v / scale)) for v in box) for box in np.asarray(found).reshape(-1, 4)]
        return sorted(boxes, key=lambda b: b[2] * b[3], reverse=True)

    def looks_like_face_crop(self, image: np.ndarray) -> bool:
        """True when the image is itself a tight crop of one face (the cascade misses faces that fill the frame)."""
        gray = to_gray(image)
        h, w = gray.shape
        if not 0.6 <= w / h <= 1.6:
            return False
        # Pad so the face no longer touches the border, then look for one face covering most of the original.
        pad = max(h, w) // 3
        padded = cv2.copyMakeBorder(gray, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        side = max(h, w)
        target = 96 / (side + 2 * pad)
        if target < 1:
            padded = cv2.resize(padded, None, fx=target, fy=target, interpolation=cv2.INTER_AREA)
        else:
            target = 1.0
        with self._lock:
            found = self._cascade.detectMultiScale(
                cv2.equalizeHist(padded), scaleFactor=1.05, minNeighbors=2, minSize=(int(side * target * 0.4),) * 2
            )
        return len(found) > 0


def crop_face(image: np.ndarray, box: Box, margin: float) -> np.ndarray:
    """The square crop around `box`, grown by `margin` of its size on every side; edges beyond the image replicate."""
    x, y, w, h = box
    side = max(w, h) * (1 + 2 * margin)
    cx, cy = x + w / 2, y + h / 2
    x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
    x1, y1 = x0 + int(round(side)), y0 + int(round(side))
    ih, iw = image.shape[:2]
    pads = (max(0, -y0), max(0, y1 - ih), max(0, -x0), max(0, x1 - iw))
    crop = image[max(0, y0) : min(ih, y1), max(0, x0) : min(iw, x1)]
    if any(pads):
        crop = cv2.copyMakeBorder(crop, *pads, cv2.BORDER_REPLICATE)
    return crop
