"""Per-face smoothing across video frames, so that labels do not flicker, and detection every N frames."""

from dataclasses import dataclass

import numpy as np

from .detect import Box
from .labels import LABELS
from .recognizer import EmotionRecognizer, Face, face_from_probs


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    inter_w = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    inter_h = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = inter_w * inter_h
    union = aw * ah + bw * bh - inter
    return inter / union if union else 0.0


@dataclass
class _Track:
    box: np.ndarray  # float (x, y, w, h)
    probs: np.ndarray | None  # (7,) smoothed probabilities; None until the track's first classification
    missed: int = 0


class FaceTracker:
    """Follows faces through a stream: boxes matched by overlap, probabilities averaged exponentially.

    `smoothing` in [0, 1) is the weight kept from the past per frame (0 = no smoothing). With `detect_every=N`
    the detector runs on every Nth frame and the other frames reuse the tracked boxes (classification still runs
    on each frame). A track not seen for `max_missed` detections is dropped.
    """

    def __init__(self, recognizer: EmotionRecognizer, smoothing: float = 0.6, detect_every: int = 1, max_missed: int = 2):
        assert 0 <= smoothing < 1 and detect_every >= 1
        self.recognizer = recognizer
        self.smoothing = smoothing
        self.detect_every = detect_every
        self.max_missed = max_missed
        self.tracks: list[_Track] = []
        self.frames = 0

    def update(self, rgb: np.ndarray, min_face_size: int | None = None) -> list[Face]:
        """Detect (or reuse boxes), classify and smooth; returns the faces to draw on this frame."""
        if self.frames % self.detect_every == 0 or not self.tracks:
            boxes = self.recognizer.detector.detect(rgb, min_face_size)
            self._match(boxes)
        self.frames += 1
        boxes = [tuple(int(round(v)) for v in track.box) for track in self.tracks]
        faces = self.recognizer.classify_boxes(rgb, boxes)
        keep = self.smoothing
        for track, face in zip(self.tracks, faces):
            fresh = np.array([face.probabilities[label] for label in LABELS])
            track.probs = fresh if track.probs is None else keep * track.probs + (1 - keep) * fresh
        return [face_from_probs(box, track.probs) for box, track in zip(boxes, self.tracks)]

    def _match(self, boxes: list[Box]) -> None:
        """Greedy IoU matching of new detections to tracks; unmatched detections start tracks."""
        unmatched = list(range(len(boxes)))
        for track in self.tracks:
            scores = [iou(tuple(track.box), boxes[i]) for i in unmatched]
            if scores and max(scores) > 0.3:
                best = unmatched.pop(int(np.argmax(scores)))
                # Light box smoothing too: detector boxes jitter by a few pixels between frames.
                track.box = 0.5 * track.box + 0.5 * np.asarray(boxes[best], dtype=float)
                track.missed = 0
            else:
                track.missed += 1
        self.tracks = [t for t in self.tracks if t.missed <= self.max_missed]
        self.tracks += [_Track(np.asarray(boxes[i], dtype=float), None) for i in unmatched]

    def reset(self) -> None:
        """Forget all faces (a new stream starts)."""
        self.tracks, self.frames = [], 0
