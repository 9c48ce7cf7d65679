"""Face detection with MediaPipe's BlazeFace (short range) on ONNX Runtime, from the bundled .onnx conversion.

BlazeFace is fully convolutional: at 128 px (its native size) it sees faces that fill a good part of the picture, and
on a larger copy it sees smaller ones. `FaceDetector.detect` runs it on a small pyramid of copies, just as many as the
wanted minimum face size needs, and merges the boxes. The .onnx file is the .tflite one converted (see
models/face_detector.md); ONNX Runtime ran it faster than OpenCV's DNN module ran the .tflite (README, Performance).
"""

from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

from .preprocess import Box, crop_face, face_square, to_rgb


MODEL_FILE = Path(__file__).resolve().parent.parent / "models" / "face_detection_short_range.onnx"
NATIVE_SIDE = 128  # the model's training input size; every pass is this size times a power of two
STRIDE = 16  # the coarsest anchor grid: pass sizes are padded to multiples of it
ANCHORS_PER_CELL = ((8, 2), (16, 6))  # (stride, anchors per grid cell) of the two output maps
DETECT_SIZE = 18  # the smallest wanted face is at least this many pixels wide in the finest pass
SMALLEST_FACE = 24  # the smallest min_face_size accepted
MAX_PASS_SIDE = 1024  # the finest pass: a larger one costs seconds and GBs (faces under min_face_size may be missed)
KEPT_PIXELS = 512 * 384  # ONNX Runtime keeps the buffers of passes up to this size; larger ones give theirs back
DEFAULT_MIN_FACE = 48
NMS_IOU = 0.3
SURE_SCORE = 0.7  # a face scoring less than this is looked at again on its own before it is reported
CONFIRM_SCORE = 0.7  # ... and kept if found again with at least this score
CONFIRM_CROP = 2.0  # ... in a crop this many times its size


class FaceDetector:
    """Finds faces whose box is at least `min_face_size` pixels wide, largest first.

    Boxes are BlazeFace's own (brows to chin), in image pixels; a face cut by the border gets a box that reaches past
    it. `emotion.preprocess.crop_face` frames a box as the classifier's input; `clip_box` fits it to the image.
    """

    def __init__(self, min_face_size: int = DEFAULT_MIN_FACE, score_threshold: float = 0.5):
        if min_face_size < SMALLEST_FACE:
            raise ValueError(f"min_face_size must be at least {SMALLEST_FACE} pixels, got {min_face_size}")
        if not 0 < score_threshold < 1:
            raise ValueError(f"score_threshold must be between 0 and 1, got {score_threshold}")
        self.min_face_size = int(min_face_size)
        self.score_threshold = float(score_threshold)
        self._session = detector_session()

    def detect(self, image: np.ndarray, min_face_size: int | None = None) -> list[Box]:
        """Boxes (x, y, w, h) of the faces in an RGB or grayscale image, largest first (not clipped to the image)."""
        rgb = to_rgb(image)
        height, width = rgb.shape[:2]
        long_side = max(height, width)
        min_face = max(int(min_face_size or self.min_face_size), SMALLEST_FACE)
        if min_face > long_side:  # no face that large fits
            return []
        passes, copy = [], rgb
        for side in reversed(pass_sides(long_side, min_face)):  # finest first: each copy is made from the last
            copy = rescale(copy, side / long_side, width, height)
            passes.append(self._run(copy, side / long_side))
        boxes, scores = (np.concatenate(parts) for parts in zip(*passes))
        keep = np.asarray(cv2.dnn.NMSBoxes(boxes.tolist(), scores.tolist(), self.score_threshold, NMS_IOU)).reshape(-1)
        keep = drop_nested(boxes, keep)
        boxes, scores = boxes[keep], scores[keep]
        rounded = np.round(boxes).astype(int).reshape(-1, 4)
        # Size first: a doubtful face too small to report is not worth a confirmation pass.
        wanted = (rounded[:, 2:].min(axis=1) > 0) & (rounded[:, 2:].max(axis=1) >= min_face)
        boxes, scores, rounded = boxes[wanted], scores[wanted], rounded[wanted]
        sure = scores >= SURE_SCORE
        sure[~sure] = self._confirm(rgb, boxes[~sure])
        result = [tuple(int(v) for v in box) for box in rounded[sure]]
        return sorted(result, key=lambda b: b[2] * b[3], reverse=True)

    def looks_like_face_crop(self, image: np.ndarray) -> bool:
        """True when the image is itself a tight crop of one face (a detector misses faces cut off by the border)."""
        rgb = to_rgb(image)
        height, width = rgb.shape[:2]
        if height == 0 or width == 0 or not 0.6 <= width / height <= 1.6:
            return False
        # Give the face its surroundings back (a third of its side on every side), at the model's native size.
        side = round(NATIVE_SIDE * 3 / 5)
        scale = side / max(height, width)
        pad = (NATIVE_SIDE - side) // 2
        padded = cv2.copyMakeBorder(rescale(rgb, scale, width, height), pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        boxes, _ = self._run(padded, 1.0)
        # A face crop holds one face that fills it (BlazeFace's box is about 0.8 of a FER2013 crop), in the middle.
        centre = NATIVE_SIDE / 2
        return any(
            w >= 0.55 * side and abs(x + w / 2 - centre) < 0.2 * side and abs(y + h / 2 - centre) < 0.25 * side
            for x, y, w, h in boxes
        )

    def _confirm(self, rgb: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Look again at doubtful faces, each on its own: a crop twice its size, at the model's native 128 px (all in
        one batched call). Returns (K,) bools: found again.

        In the finer passes, textures (flag stars, a microphone, a badge) score 0.5-0.7; a face, seen at the size
        BlazeFace was trained for, is found again (IoU >= 0.5) with a score of at least CONFIRM_SCORE, and they are
        not. Measured on the example photos, full size and at 640x480, with minimum faces of 24 and 48 px: the false
        faces re-scored 0.55-0.66, and none is left. The price, on 300 val/ faces pasted into 640x480 frames: 80 %
        found at 200 px instead of 91 %; and a 48 px face in a photo is found 2 times in 3.
        """
        crops, checked = [], []
        for box in boxes:
            x, y, w, h = box
            *corner, side = face_square(box, CONFIRM_CROP, shift_up=0.0)
            crops.append(rescale(crop_face(rgb, box, CONFIRM_CROP, shift_up=0.0), NATIVE_SIDE / side, side, side))
            checked.append(np.array([x - corner[0], y - corner[1], w, h]) * NATIVE_SIDE / side)
        if not crops:
            return np.zeros(0, bool)
        regressors, logits = self._infer(np.stack(crops))
        anchors = anchor_centres(NATIVE_SIDE, NATIVE_SIDE)
        found = []
        for reg, logit, box in zip(regressors, logits, checked):
            candidates, scores = self._decode(reg, logit, anchors, 1.0)
            found.append(any(score >= CONFIRM_SCORE and iou(c, box) >= 0.5 for c, score in zip(candidates, scores)))
        return np.array(found, bool)

    def _run(self, small: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
        """One pass on `small`, a copy of the image scaled by `scale`: raw (N, 4) boxes in image pixels, and scores."""
        small_h, small_w = small.shape[:2]
        pad_w, pad_h = -(-small_w // STRIDE) * STRIDE, -(-small_h // STRIDE) * STRIDE
        canvas = cv2.copyMakeBorder(small, 0, pad_h - small_h, 0, pad_w - small_w, cv2.BORDER_CONSTANT, value=0)
        regressors, logits = self._infer(canvas[None])
        return self._decode(regressors[0], logits[0], anchor_centres(pad_w, pad_h), scale)

    def _infer(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """BlazeFace on (N, H, W, 3) uint8 RGB images (sides multiples of STRIDE): regressors (N, A, 16), logits (N, A)."""
        inputs = images.astype(np.float32)
        inputs *= 1 / 127.5
        inputs -= 1  # to [-1, 1]
        large = images.shape[0] * images.shape[1] * images.shape[2] > KEPT_PIXELS
        regressors, logits = self._session.run(None, {"input": inputs}, _SHRINK_ARENA if large else None)
        return regressors, logits[..., 0]

    def _decode(self, regressors: np.ndarray, logits: np.ndarray, anchors: np.ndarray,
                scale: float) -> tuple[np.ndarray, np.ndarray]:
        """Boxes (N, 4) in image pixels and scores of the anchors above the score threshold."""
        keep = logits > np.log(self.score_threshold / (1 - self.score_threshold))  # sigmoid(logit) > threshold
        anchors, reg = anchors[keep], regressors[keep]
        scores = 1 / (1 + np.exp(-logits[keep]))
        # Each anchor regresses its box centre offset and size, in input pixels (keypoints, columns 4-15, are unused).
        centres, sizes = anchors + reg[:, :2], reg[:, 2:4]
        boxes = np.concatenate([centres - sizes / 2, sizes], axis=1) / scale
        return boxes, scores


@lru_cache(maxsize=1)
def detector_session() -> ort.InferenceSession:
    """The BlazeFace session, one per process (ONNX Runtime sessions take concurrent calls, of any input size)."""
    if not MODEL_FILE.is_file():
        raise RuntimeError(f"the face detector model {MODEL_FILE} is missing; it ships in models/ with the repo")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    # One thread per call: a second one made a 256x192 pass slower even on an idle machine (3.50 against 3.24 ms,
    # timed alternately), and the app runs several calls at once on its 2 cores.
    options.intra_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(MODEL_FILE), options, providers=["CPUExecutionProvider"])


# The memory arena made a 256x192 pass 19% faster than fresh allocations (3.67 against 4.55 ms, timed alternately),
# but it keeps the buffers of the largest pass it ever ran: after a 1024x768 pass (an upload) a process held 175 MB
# instead of 94. Passes over KEPT_PIXELS shrink the arena back when they end.
_SHRINK_ARENA = ort.RunOptions()
_SHRINK_ARENA.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")


@lru_cache(maxsize=32)
def anchor_centres(width: int, height: int) -> np.ndarray:
    """Anchor centres (N, 2) in pixels for an input of this size, in the order of the model's outputs (read-only)."""
    grids = []
    for stride, count in ANCHORS_PER_CELL:
        ys, xs = np.mgrid[0 : height // stride, 0 : width // stride]
        centres = np.stack([(xs + 0.5) * stride, (ys + 0.5) * stride], axis=-1).reshape(-1, 2)
        grids.append(np.repeat(centres, count, axis=0))
    anchors = np.concatenate(grids).astype(np.float32)
    anchors.flags.writeable = False
    return anchors


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
    while sides[-1] * min_face / long_side < DETECT_SIZE and sides[-1] * 2 <= MAX_PASS_SIDE:
        sides.append(sides[-1] * 2)
    return sides


def iou(a, b) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = a[2] * a[3] + b[2] * b[3] - inter
    return float(inter / union) if union > 0 else 0.0


def drop_nested(boxes: np.ndarray, order: np.ndarray) -> list[int]:
    """Indices of `order` (best first) minus boxes whose centre lies inside a better box: NMS keeps a box nested
    in a face when their IoU is low (a smaller box on the same face, from another pass)."""
    kept: list[int] = []
    for i in order:
        cx, cy = boxes[i][0] + boxes[i][2] / 2, boxes[i][1] + boxes[i][3] / 2
        if not any(b[0] <= cx <= b[0] + b[2] and b[1] <= cy <= b[1] + b[3] for b in boxes[kept]):
            kept.append(int(i))
    return kept


def clip_box(box: Box, width: int, height: int) -> Box:
    """The part of `box` inside a `width` x `height` image (at least one pixel wide and tall)."""
    x, y, w, h = box
    x0, y0 = min(max(0, x), width - 1), min(max(0, y), height - 1)
    x1, y1 = max(min(width, x + w), x0 + 1), max(min(height, y + h), y0 + 1)
    return (int(x0), int(y0), int(x1 - x0), int(y1 - y0))
