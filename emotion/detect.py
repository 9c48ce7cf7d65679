"""Face detection with MediaPipe's BlazeFace (short range), run by OpenCV's DNN module from the bundled .tflite file.

BlazeFace is fully convolutional: at 128 px (its native size) it sees faces that fill a good part of the picture, and
on a larger copy it sees smaller ones. `FaceDetector.detect` runs it on a small pyramid of copies, just as many as the
wanted minimum face size needs, and merges the boxes.
"""

import threading
from pathlib import Path

import cv2
import numpy as np

from .preprocess import to_rgb

Box = tuple[int, int, int, int]  # x, y, w, h in image pixels

MODEL_FILE = Path(__file__).resolve().parent.parent / "models" / "face_detection_short_range.tflite"
NATIVE_SIDE = 128  # the model's training input size; every pass is this size times a power of two
STRIDE = 16  # the coarsest anchor grid: pass sizes are padded to multiples of it
ANCHORS_PER_CELL = ((8, 2), (16, 6))  # (stride, anchors per grid cell) of the two output maps
DETECT_SIZE = 18  # the smallest wanted face is at least this many pixels wide in the finest pass
SMALLEST_FACE = 24  # the smallest min_face_size accepted (below it the pyramid grows past the image size)
DEFAULT_MIN_FACE = 48
NMS_IOU = 0.3
SURE_SCORE = 0.7  # a face scoring less than this is looked at again on its own before it is reported
CONFIRM_SCORE = 0.6  # ... and kept if found again with at least this score
MAX_NETS = 16
# BlazeFace's box spans brows to chin; the classifier was trained on FER2013 crops, which reach higher and wider.
# Measured on 458 val/ faces pasted into 640x480 frames: the crop's centre is 0.09 box heights above the box centre
# (median; IQR 0.04-0.14) and its side is 1.24x the box (IQR 1.14-1.41). Boxes are reported in that FER framing.
FER_SHIFT_UP = 0.09
FER_SCALE = 1.24


class FaceDetector:
    """Finds faces at least `min_face_size` pixels wide; boxes are square, in FER2013 framing, largest first."""

    def __init__(self, min_face_size: int = DEFAULT_MIN_FACE, score_threshold: float = 0.5):
        if min_face_size < SMALLEST_FACE:
            raise ValueError(f"min_face_size must be at least {SMALLEST_FACE} pixels, got {min_face_size}")
        if not MODEL_FILE.is_file():
            raise RuntimeError(f"the face detector model {MODEL_FILE} is missing; it ships in models/ with the repo")
        self.min_face_size = int(min_face_size)
        self.score_threshold = float(score_threshold)
        # One network per input size: a cv2.dnn.Net re-plans all its layers whenever the input shape changes, which
        # costs more than the pass itself when the pyramid's sizes alternate. Each holds a 229 KB model.
        self._nets: dict[tuple[int, int], cv2.dnn.Net] = {}
        self._anchors: dict[tuple[int, int], np.ndarray] = {}
        # A cv2.dnn.Net keeps its blobs between calls: the app serves requests from several threads. One at a time.
        self._lock = threading.Lock()

    def detect(self, image: np.ndarray, min_face_size: int | None = None) -> list[Box]:
        """Boxes (x, y, w, h) of the faces in an RGB or grayscale image, largest first, clipped to the image."""
        rgb = to_rgb(image)
        height, width = rgb.shape[:2]
        min_face = max(int(min_face_size or self.min_face_size), SMALLEST_FACE)
        if min_face > max(height, width):  # no face that large fits
            return []
        boxes, scores = [], []
        copy = rgb
        for side in reversed(pass_sides(max(height, width), min_face)):  # finest first: each copy is made from the last
            copy = rescale(copy, side / max(height, width), width, height)
            found, score = self._run(copy, side / max(height, width))
            boxes.append(found)
            scores.append(score)
        boxes, scores = np.concatenate(boxes), np.concatenate(scores)
        keep = np.asarray(cv2.dnn.NMSBoxes(boxes.tolist(), scores.tolist(), self.score_threshold, NMS_IOU)).reshape(-1)
        keep = [i for i in keep if scores[i] >= SURE_SCORE or self._confirm(rgb, boxes[i])]
        result = [fer_framing(boxes[i], width, height) for i in keep]
        result = [box for box in result if max(box[2], box[3]) >= min_face]
        return sorted(result, key=lambda b: b[2] * b[3], reverse=True)

    def looks_like_face_crop(self, image: np.ndarray) -> bool:
        """True when the image is itself a tight crop of one face (a detector misses faces cut off by the border)."""
        rgb = to_rgb(image)
        height, width = rgb.shape[:2]
        if not 0.6 <= width / height <= 1.6:
            return False
        # Give the face its surroundings back (a third of its side on every side), at the model's native size.
        side = round(NATIVE_SIDE * 3 / 5)
        scale = side / max(height, width)
        small = cv2.resize(rgb, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_AREA)
        pad = (NATIVE_SIDE - side) // 2
        padded = cv2.copyMakeBorder(small, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        boxes, _ = self._run(padded, 1.0)
        return any(box[2] >= 0.4 * side for box in boxes)

    def _confirm(self, rgb: np.ndarray, box: np.ndarray) -> bool:
        """Look again at a doubtful face on its own: a crop twice its size, at the model's native 128 px.

        In the finer passes, textures (flag stars, a microphone, a badge) score 0.5-0.7; a face, seen at the size
        BlazeFace was trained for, is found again, and they are not. Measured on the example photos (full size and
        640x480) and on 300 val/ faces pasted into frames, SURE_SCORE 0.7 / CONFIRM_SCORE 0.6 removed every false
        face in the examples and kept 85 % of the val/ faces at 200 px (91 % without this check).
        """
        x, y, w, h = box
        side = 2 * max(w, h)
        crop = crop_face(rgb, (round(x + w / 2 - side / 2), round(y + h / 2 - side / 2), round(side), round(side)), 0.0)
        if crop.size == 0:
            return False
        scale = NATIVE_SIDE / crop.shape[0]
        found, scores = self._run(rescale(crop, scale, crop.shape[1], crop.shape[0]), scale)
        found = found[scores >= CONFIRM_SCORE]
        centres = found[:, :2] + found[:, 2:] / 2
        # The same face: centred within a quarter of the crop's middle, and not much smaller or larger.
        near = np.abs(centres - side / 2).max(axis=1, initial=0) < side / 4 if len(found) else np.zeros(0, bool)
        return bool(np.any(near & (found[:, 2] > 0.3 * side) & (found[:, 2] < 0.9 * side)))

    def _run(self, small: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
        """One pass on `small`, a copy of the image scaled by `scale`: raw (N, 4) boxes in image pixels, and scores."""
        small_h, small_w = small.shape[:2]
        pad_w, pad_h = -(-small_w // STRIDE) * STRIDE, -(-small_h // STRIDE) * STRIDE
        canvas = cv2.copyMakeBorder(small, 0, pad_h - small_h, 0, pad_w - small_w, cv2.BORDER_CONSTANT, value=0)
        blob = cv2.dnn.blobFromImage(canvas, 1 / 127.5, (pad_w, pad_h), (127.5, 127.5, 127.5))  # to [-1, 1], NCHW
        with self._lock:
            net = self._net(pad_w, pad_h)
            net.setInput(blob)
            outputs = net.forward(net.getUnconnectedOutLayersNames())
        regressors, logits = sorted(outputs, key=lambda out: out.shape[-1], reverse=True)
        regressors, logits = regressors.reshape(-1, 16), logits.reshape(-1)
        keep = logits > np.log(self.score_threshold / (1 - self.score_threshold))  # sigmoid(logit) > threshold
        anchors, reg = self.anchors(pad_w, pad_h)[keep], regressors[keep]
        scores = 1 / (1 + np.exp(-logits[keep]))
        # Each anchor regresses its box centre offset and size, in input pixels (keypoints, columns 4-15, are unused).
        centres, sizes = anchors + reg[:, :2], reg[:, 2:4]
        boxes = np.concatenate([centres - sizes / 2, sizes], axis=1) / scale
        return boxes, scores

    def _net(self, width: int, height: int) -> cv2.dnn.Net:
        if (width, height) not in self._nets:
            if len(self._nets) >= MAX_NETS:  # images of many sizes (uploads): drop the oldest
                self._nets.pop(next(iter(self._nets)))
            self._nets[(width, height)] = cv2.dnn.readNetFromTFLite(str(MODEL_FILE))
        return self._nets[(width, height)]

    def anchors(self, width: int, height: int) -> np.ndarray:
        """Anchor centres (N, 2) in pixels for an input of this size, in the order of the model's outputs."""
        if (width, height) not in self._anchors:
            grids = []
            for stride, count in ANCHORS_PER_CELL:
                ys, xs = np.mgrid[0 : height // stride, 0 : width // stride]
                centres = np.stack([(xs + 0.5) * stride, (ys + 0.5) * stride], axis=-1).reshape(-1, 2)
                grids.append(np.repeat(centres, count, axis=0))
            self._anchors[(width, height)] = np.concatenate(grids).astype(np.float32)
        return self._anchors[(width, height)]


def rescale(image: np.ndarray, scale: float, width: int, height: int) -> np.ndarray:
    """The `width` x `height` image scaled by `scale` (`image` may be an already scaled copy of it)."""
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if image.shape[1::-1] == size:
        return image
    shrinking = size[0] < image.shape[1]
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def pass_sides(long_side: int, min_face: int) -> list[int]:
    """Input sizes of the pyramid: 128, 256, ... until a `min_face` face is DETECT_SIZE px in the finest pass.

    A 640x480 frame with the default 48 px minimum runs at 128 and 256 (a 48 px face is 19 px there).
    """
    sides = [NATIVE_SIDE]
    while sides[-1] * min_face / long_side < DETECT_SIZE:
        sides.append(sides[-1] * 2)
    return sides


def fer_framing(box: np.ndarray, width: int, height: int) -> Box:
    """A detector box moved and grown into FER2013's framing (square), then clipped to the image."""
    x, y, w, h = (float(v) for v in box)
    side = max(w, h) * FER_SCALE
    cx, cy = x + w / 2, y + h / 2 - FER_SHIFT_UP * h
    x0, y0 = max(0, round(cx - side / 2)), max(0, round(cy - side / 2))
    x1, y1 = min(width, round(cx + side / 2)), min(height, round(cy + side / 2))
    return (int(x0), int(y0), int(x1 - x0), int(y1 - y0))


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
